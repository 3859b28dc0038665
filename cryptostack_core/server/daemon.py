"""The daemon: the service behind a unix socket (asyncio, uvloop when available).

Each connection is a session identified by SO_PEERCRED. A request runs one of three ways:

* cheap requests (control calls, small software operations) run on the event loop;
* stream calls on a provider whose backend is a worker process (PKCS#11, TPM: the SDK's
  worker hosts run on this same loop) are awaited on the loop: the request goes from the
  client's socket to the worker's socket and back without any thread in between;
* everything else runs in a thread pool per provider (a stuck backend cannot starve the
  others).

Every request is bounded by its deadline: at the deadline the client gets
OPERATION_TIMED_OUT, the context enters its error state and the result, if it ever comes,
is dropped. The socket appears (mode 0660 by default) only once the daemon is ready, and
is removed on SIGTERM/SIGINT.

Lifecycle for operators (docs/operations.md): the daemon refuses to run as root unless
``allow_root = true``; under systemd it takes a socket-activated listener
(``LISTEN_FDS``) instead of binding its own, and reports ``READY=1`` / ``RELOADING=1`` /
``STOPPING=1`` (:mod:`.systemd`); SIGHUP reloads what is safe (:mod:`.reload`).
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptostack_core.sdk.workers import use_event_loop
from cryptostack_core.server import paths
from cryptostack_core.server.config import DaemonConfig
from cryptostack_core.server.hooks import PeerIdentity
from cryptostack_core.server.reload import Reloader
from cryptostack_core.server.request import Request
from cryptostack_core.server.service import Call, ContextBusy, Route, Service
from cryptostack_core.server.session import Session
from cryptostack_core.server.systemd import Notifier, listen_sockets, unix_stream_listener
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.protocol import (
    HEADER,
    HEADER_SIZE,
    SUPPORTED_VERSIONS,
    BodyDecoder,
    FrameDecoder,
    FrameTooLarge,
    encode,
    error_response,
)
from cryptostack_core.wire.shm import DaemonRegion
from cryptostack_core.wire.version import __version__

log = logging.getLogger("cryptostack.daemon")
MAX_IN_FLIGHT = 64  # requests one client may have outstanding
MAX_PASSED_FDS = 4  # room for descriptors in one recvmsg; more than one is refused anyway
SMALL_ANSWER = 65536  # written at once to a reading client without a budget reservation
MAX_TIMEOUT_MS = 0xFFFFFFFF  # about 49.7 days; larger deadlines are a protocol error


class DaemonStartError(Exception):
    """The daemon refuses to start (root without ``allow_root``, no usable socket): the
    command exits with status 2 and this message."""


def peer_identity(sock: socket.socket | None) -> PeerIdentity:
    """uid/gid/pid of the process at the other end (SO_PEERCRED)."""
    if sock is None:
        return PeerIdentity(-1, -1, -1)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return PeerIdentity(pid, uid, gid)
    except OSError:
        return PeerIdentity(-1, -1, -1)


class Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: DaemonServer) -> None:
        self.server = server
        self.service = server.service
        self.decoder = FrameDecoder(server.config.max_frame_size, self._frame_announced)
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.greeted = False
        self.in_flight: set[asyncio.Task[None]] = set()
        self._hello_timer: asyncio.TimerHandle | None = None
        self._fd_reader: _FdFrameReader | None = None  # between shm.attach and its frame
        self._passed_fds: list[int] = []  # descriptors that came with the current frame
        self._last_in_chunk = True
        # Bytes of the memory budget each complete frame holds until its request is answered,
        # in arrival order (frames complete in the order their headers arrive).
        self._frame_sizes: list[int] = []
        self.frame_started: float | None = None  # when the frame now arriving began
        self.last_activity = time.monotonic()
        self._unread = 0  # bytes of answers charged as unread (the transport's buffer)
        self._decode = BodyDecoder()
        # The last task started for each context number: a later request on that context
        # waits for it, so requests on one context run in the order they arrived.
        self._tails: dict[int, asyncio.Future[Any]] = {}

    # --- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it.
        self.transport = transport  # type: ignore[assignment]
        peer = peer_identity(transport.get_extra_info("socket"))
        try:
            self.session = self.service.open_session(peer)
        except CryptoError as exc:
            self._send(error_response(None, exc))
            transport.close()
            return
        self.server.connections.add(self)
        # A connection that never says hello must not hold a client slot forever.
        self._hello_timer = self.server.loop.call_later(self.server.config.hello_timeout, self._hello_overdue)
        log.debug("client connected: pid=%d uid=%d", peer.pid, peer.uid)

    def _hello_overdue(self) -> None:
        if not self.greeted:
            self._fatal(
                CryptoError(ErrorCode.PROTOCOL_ERROR, f"no hello within {self.server.config.hello_timeout} s")
            )

    # Backpressure: a client that sends requests but does not read the answers stops being
    # read once its unsent answers pass the transport's high-water mark.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        now = self.last_activity = time.monotonic()
        if self._unread:
            self._sync_unread()
        decoder = self.decoder
        size = len(data) - HEADER_SIZE
        if size >= 0 and not decoder.in_frame and HEADER.unpack_from(data)[0] == size:
            # Exactly one whole frame (a client waiting for each answer sends nothing else):
            # no buffering, and nothing reserved while it is served here; a request that
            # leaves for a task reserves its frame then (see _on_message).
            self.frame_started = None
            self._last_in_chunk = True
            if size > decoder.max_frame:
                self._fatal(FrameTooLarge(size, decoder.max_frame))
                return
            if self._frame_refused(size):
                return
            self._on_frame(data[HEADER_SIZE:], 0, HEADER_SIZE + size)
            return
        try:
            bodies = decoder.feed(data)
        except FrameTooLarge as exc:
            self._fatal(exc)
            return
        if not decoder.in_frame:
            self.frame_started = None
        elif bodies or self.frame_started is None:
            self.frame_started = now
        for i, body in enumerate(bodies):
            size = self._frame_sizes.pop(0) if self._frame_sizes else 0
            if self.transport is None or self.transport.is_closing():
                self._release_frame(size)
                return
            self._last_in_chunk = i == len(bodies) - 1 and not decoder.in_frame
            self._on_frame(body, size, size)

    # --- the memory budget (budget.py) and timeouts ----------------------------------------
    def _frame_announced(self, size: int) -> bool:
        """A frame header arrived: reserve the frame before any of it is buffered."""
        session = self.session
        if session is None:
            return True
        try:
            session.memory.reserve(HEADER_SIZE + size, "request frames")
        except CryptoError as exc:
            # Answered now; its body is discarded as it arrives, never buffered.
            self._send(error_response(None, exc))
            return False
        self._frame_sizes.append(HEADER_SIZE + size)
        return True

    def _frame_refused(self, size: int) -> bool:
        """A whole frame that arrived in one piece: refused (and answered) if the budget could
        not take it, exactly as :meth:`_frame_announced` would; nothing is reserved."""
        session = self.session
        if session is None:
            return False
        try:
            session.memory.check(HEADER_SIZE + size, "request frames")
        except CryptoError as exc:
            self._send(error_response(None, exc))
            return True
        return False

    def _release_frame(self, size: int) -> None:
        if self.session is not None:
            self.session.memory.release(size, "request frames")

    def _sync_unread(self) -> None:
        """Charge the connection for the answers the client has not read yet."""
        if self.session is not None and self.transport is not None:
            self._unread = self.transport.get_write_buffer_size()
            self.session.memory.set(self._unread, "unread answers")

    def check_timeouts(self, now: float) -> None:
        """Called about every second: close half-sent frames and idle connections."""
        if self.transport is None or self.transport.is_closing():
            return
        self._sync_unread()
        config = self.server.config
        if self.frame_started is not None and now - self.frame_started > config.frame_timeout:
            self._fatal(
                CryptoError(
                    ErrorCode.PROTOCOL_ERROR,
                    f"a frame stayed incomplete for more than {config.frame_timeout:g} s (frame_timeout)",
                )
            )
        elif (
            config.idle_timeout
            and self.greeted
            and not self.in_flight
            and self._fd_reader is None
            and not self.decoder.in_frame
            and now - self.last_activity > config.idle_timeout
        ):
            self._fatal(
                CryptoError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"the connection was idle for more than "
                    f"{config.idle_timeout:g} s (idle_timeout); reconnect",
                )
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if self._fd_reader is not None:
            self._fd_reader.stop()
            self._fd_reader = None
        for task in self.in_flight:
            task.cancel()
        session, self.session = self.session, None
        if session is not None:
            self.service.core.detach_session(session)
            # Releasing may call providers (flush a TPM object): not on the loop.
            self.server.loop.run_in_executor(self.server.control_pool, self.service.close_session, session)

    # --- frames ------------------------------------------------------------------------
    def _send(self, message: Mapping[str, Any]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.last_activity = time.monotonic()
        try:
            frame = encode(message)
        except Exception as exc:  # a provider returned something CBOR cannot carry
            log.error("cannot encode a response: %s", exc)
            frame = encode(
                error_response(
                    message.get("id"),
                    CryptoError(ErrorCode.INTERNAL_ERROR, "the daemon could not encode its answer"),
                )
            )
        limit = self.server.config.max_frame_size
        if len(frame) - HEADER_SIZE > limit:
            frame = encode(
                error_response(
                    message.get("id"),
                    CryptoError(
                        ErrorCode.RESOURCE_EXHAUSTED,
                        f"the answer would be a frame of {len(frame) - HEADER_SIZE} bytes, above "
                        f"max_frame_size ({limit}); ask for less at a time",
                    ),
                )
            )
        memory = self.session.memory if self.session is not None else None
        if memory is None:
            transport.write(frame)
            return
        if len(frame) > SMALL_ANSWER or self._unread or transport.get_write_buffer_size():
            # A large answer, or answers waiting unread: it must fit the budget.
            self._sync_unread()
            try:
                memory.reserve(len(frame), "unread answers")
            except CryptoError as exc:  # the client is not reading: a short answer instead
                frame = encode(error_response(message.get("id"), exc))
            transport.write(frame)
            self._sync_unread()  # what the socket did not take at once stays charged
            return
        # A small answer to a client that reads: written without a reservation; whatever the
        # socket does not take at once is charged now.
        transport.write(frame)
        if transport.get_write_buffer_size():
            self._sync_unread()

    def _fatal(self, exc: CryptoError) -> None:
        """A broken stream: say why, then close."""
        self._send(error_response(None, exc))
        if self.transport is not None:
            self.transport.close()

    def _on_frame(self, body: bytes, held: int, size: int) -> None:
        """One complete frame of ``size`` bytes (header included); ``held`` bytes of the budget
        are reserved for it until it is answered (0: nothing was reserved, the frame arrived
        whole and is served at once unless it leaves for a task)."""
        fds, self._passed_fds = self._passed_fds, []
        try:
            try:
                message = self._decode(body)
            except CryptoError as exc:
                self._fd_frame = False
                if not self.greeted:
                    self._fatal(exc)
                else:
                    self._send(error_response(None, exc))
                return
            held = self._on_message(message, fds, held, size)
        finally:
            for fd in fds:
                os.close(fd)
            if held:
                self._release_frame(held)

    def _on_message(self, message: dict[str, Any], fds: list[int], held: int, size: int) -> int:
        """Serve one request; returns the budget its caller should release now (0 when a
        task running the request releases it later)."""
        if not self.greeted:
            self._hello(message)
            return held
        request_id = message.get("id")
        if type(request_id) is not int:  # exactly an integer: not a bool, not a float
            self._send(
                error_response(None, CryptoError(ErrorCode.PROTOCOL_ERROR, "a request needs an integer 'id'"))
            )
            return held
        timeout_ms = message.get("timeout_ms")
        if not (timeout_ms is None or (type(timeout_ms) is int and 0 < timeout_ms <= MAX_TIMEOUT_MS)):
            self._send(
                error_response(
                    request_id,
                    CryptoError(
                        ErrorCode.PROTOCOL_ERROR,
                        f"'timeout_ms' must be an integer from 1 to {MAX_TIMEOUT_MS} when given",
                    ),
                )
            )
            return held
        try:
            request = Request.parse(
                message.get("op"), message.get("args", {}), self.server.config.max_batch_length
            )
        except CryptoError as exc:
            self._send(error_response(request_id, exc))
            return held
        session = self.session
        if session is None:
            return held
        if request.op == "shm.attach":
            self._shm_attach(request_id)
            return held
        if self._fd_frame:
            # The frame after an shm.attach: its descriptor becomes the shared memory the
            # request's {"shm": [offset, length]} references name. Refused: not run.
            self._fd_frame = False
            try:
                self._install_region(session, fds)
            except CryptoError as exc:
                refused = error_response(request_id, exc)
                refused["error"]["shm_refused"] = True  # not run: the client may send inline
                self._send(refused)
                return held
        elif fds:
            self._send(
                error_response(
                    request_id,
                    CryptoError(
                        ErrorCode.PROTOCOL_ERROR,
                        "file descriptors are accepted only on the frame after shm.attach",
                    ),
                )
            )
            return held
        if request.references and session.shm is not None:
            try:  # what the references name is fixed now, whatever is attached later
                request = request.bind(session.shm)
            except CryptoError as exc:
                self._send(error_response(request_id, exc))
                return held
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        call = Call(session, deadline)
        tails = self._tails
        waits = None
        if tails and request.contexts:
            # An earlier request on one of these contexts is still running: this one runs
            # after it (requests on one context are served in the order they arrive).
            waits = [t for t in (tails.get(c) for c in request.contexts) if t is not None and not t.done()]
        if not waits:
            route = self.service.route(session, request)
            if route is Route.INLINE:
                self._send(self._run(call, request_id, request))
                return held
        else:
            route = None
        if len(self.in_flight) >= MAX_IN_FLIGHT:
            # Tasks that have answered but whose done-callbacks have not run yet (an event
            # loop may read the client's next request first) are not in flight any more.
            self.in_flight.difference_update([t for t in self.in_flight if t.done()])
        if len(self.in_flight) >= MAX_IN_FLIGHT:
            self._send(
                error_response(
                    request_id,
                    CryptoError(
                        ErrorCode.RESOURCE_EXHAUSTED,
                        f"more than {MAX_IN_FLIGHT} requests in flight on one connection",
                    ),
                )
            )
            return held
        if not held:  # arrived whole and unreserved: it is held until its task ends
            try:
                session.memory.reserve(size, "request frames")
            except CryptoError as exc:
                self._send(error_response(request_id, exc))
                return 0
            held = size
        task = asyncio.ensure_future(
            self._serve_task(call, request_id, request, timeout_ms, held, route, waits)
        )
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        if request.contexts and request.op != "context.close":
            for number in request.contexts:
                tails[number] = task
            task.add_done_callback(self._forget_tail)
        return 0

    def _forget_tail(self, task: asyncio.Future[Any]) -> None:
        stale = [c for c, t in self._tails.items() if t is task]
        for number in stale:
            del self._tails[number]

    async def _serve_task(
        self,
        call: Call,
        request_id: int,
        request: Request,
        timeout_ms: int | None,
        size: int,
        route: Route | None,
        waits: list[asyncio.Future[Any]] | None,
    ) -> None:
        """A request that does not run at once: after the requests it must follow, inline,
        awaited on this loop, or on its provider's pool."""
        if waits:
            try:
                remaining = None if call.deadline is None else call.deadline - time.monotonic()
                # asyncio.wait, not wait_for: the earlier requests must not be cancelled
                # when this one's deadline passes.
                _, pending = await asyncio.wait(waits, timeout=remaining)
            except asyncio.CancelledError:
                self._release_frame(size)
                call.abandoned = True
                return
            if pending:
                self._release_frame(size)
                self._send(await self._timed_out(call, request_id, request, timeout_ms))
                return
            if self.session is None:
                self._release_frame(size)
                return
            route = self.service.route(call.session, request)
            if route is Route.INLINE:
                try:
                    self._send(self._run(call, request_id, request))
                finally:
                    self._release_frame(size)
                return
        if route is Route.AWAITED:
            await self._run_awaited(call, request_id, request, timeout_ms, size)
        else:
            await self._run_async(call, request_id, request, timeout_ms, size)

    # --- shared memory: a descriptor passed with SCM_RIGHTS (see shm.py) ------------------
    _fd_frame = False
    _fds_truncated = False

    def _shm_attach(self, request_id: int) -> None:
        """Read the client's next frame with recvmsg, so the descriptor it carries survives.

        asyncio transports read with recv(), which drops ancillary data (the kernel closes
        passed descriptors); so the transport stops reading here and :class:`_FdFrameReader`
        takes exactly one frame off the socket before handing it back.
        """
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if not self._last_in_chunk or sock is None:
            self._send(
                error_response(
                    request_id,
                    CryptoError(
                        ErrorCode.PROTOCOL_ERROR, "send nothing after shm.attach until its answer has arrived"
                    ),
                )
            )
            return
        assert self.transport is not None
        self.transport.pause_reading()
        self._fd_reader = _FdFrameReader(self, sock.fileno())
        self._send({"id": request_id, "ok": True, "result": {"ready": True}})

    def _fd_frame_read(self, body: bytes, fds: list[int], truncated: bool) -> None:
        """The frame after shm.attach, with the descriptors that came with it."""
        self._fd_reader = None
        self._fd_frame = True
        self._fds_truncated = truncated
        self._passed_fds = fds
        self._last_in_chunk = True
        size = self._frame_sizes.pop(0) if self._frame_sizes else 0
        self._on_frame(body, size, size)
        self._fd_frame = False
        if self._fd_reader is None and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _install_region(self, session: Session, fds: list[int]) -> None:
        if len(fds) != 1 or self._fds_truncated:
            raise CryptoError(
                ErrorCode.PROTOCOL_ERROR,
                f"the frame after shm.attach must carry exactly one file "
                f"descriptor (SCM_RIGHTS), not {len(fds)}",
            )
        region = DaemonRegion(fds[0], self.server.config.max_frame_size)
        with session.lock:
            old, session.shm = session.shm, region
        if old is not None:
            old.close()

    def _hello(self, message: Mapping[str, Any]) -> None:
        hello = message.get("hello")
        versions = hello.get("versions") if isinstance(hello, Mapping) else None
        if not isinstance(versions, list):
            self._fatal(
                CryptoError(
                    ErrorCode.PROTOCOL_ERROR, 'the first frame must be a hello: {"hello": {"versions": [1]}}'
                )
            )
            return
        # Exactly integers: 1.0 and true compare equal to 1 in Python, but are not versions.
        common = [v for v in versions if type(v) is int and v in SUPPORTED_VERSIONS]
        if not common:
            self._fatal(
                CryptoError(
                    ErrorCode.PROTOCOL_ERROR,
                    f"no common protocol version (daemon speaks {SUPPORTED_VERSIONS})",
                )
            )
            return
        self.greeted = True
        config = self.server.config
        self._send(
            {
                "hello": {
                    "version": max(common),
                    "server": f"cryptostack/{__version__}",
                    "max_frame": config.max_frame_size,
                    "limits": {
                        "max_contexts": config.max_contexts_per_client,
                        "max_resources": config.max_resources_per_client,
                        "max_in_flight": MAX_IN_FLIGHT,
                        "max_buffered_message": config.max_buffered_message,
                        "max_batch_length": config.max_batch_length,
                        "connection_memory_budget": config.connection_memory_budget,
                    },
                }
            }
        )

    def _run(
        self, call: Call, request_id: int, request: Request, provider: int | None = None
    ) -> dict[str, Any]:
        self.service.core.running_on.provider = provider
        try:
            return {"id": request_id, "ok": True, "result": self.service.handle(call, request)}
        except CryptoError as exc:
            return error_response(request_id, exc)
        except Exception as exc:  # provider bugs become PROVIDER_ERROR, never a crash
            log.exception("request %s failed", request.op)
            return error_response(
                request_id, CryptoError(ErrorCode.PROVIDER_ERROR, f"{type(exc).__name__}: {exc}")
            )

    async def _run_awaited(
        self, call: Call, request_id: int, request: Request, timeout_ms: int | None, size: int
    ) -> None:
        """A request the service runs awaited on this loop (a worker-hosted provider); one
        whose context another call holds goes to the thread path instead."""
        busy = False
        try:
            busy = await self._serve_awaited(call, request_id, request, timeout_ms)
        finally:
            if not busy:
                self._release_frame(size)
        if busy:
            await self._run_async(call, request_id, request, timeout_ms, size)

    async def _serve_awaited(
        self, call: Call, request_id: int, request: Request, timeout_ms: int | None
    ) -> bool:
        """Serve and answer; True (nothing done) when the context is busy."""
        expired = False
        timer: asyncio.TimerHandle | None = None
        task = asyncio.current_task()
        if call.deadline is not None and task is not None:
            # The worker host answers OPERATION_TIMED_OUT at the deadline by itself; this
            # timer only backs it up, for anything else an awaited call might wait for.
            def expire() -> None:
                nonlocal expired
                expired = True
                task.cancel()

            timer = self.server.loop.call_later(max(0.0, call.deadline - time.monotonic()), expire)
        try:
            reply = {"id": request_id, "ok": True, "result": await self.service.handle_async(call, request)}
        except ContextBusy:
            if timer is not None:
                timer.cancel()
            return True
        except CryptoError as exc:
            if exc.code is not ErrorCode.OPERATION_TIMED_OUT:
                reply = error_response(request_id, exc)
            else:
                reply = await self._timed_out(call, request_id, request, timeout_ms)
        except asyncio.CancelledError:
            if not expired:
                call.abandoned = True  # the connection went away
                raise
            reply = await self._timed_out(call, request_id, request, timeout_ms)
        finally:
            if timer is not None:
                timer.cancel()
        self._send(reply)
        return False

    async def _timed_out(
        self, call: Call, request_id: int, request: Request, timeout_ms: int | None
    ) -> dict[str, Any]:
        reason = f"{request.op} timed out after {timeout_ms} ms"
        await self.server.loop.run_in_executor(
            self.server.control_pool, self.service.abandon, call, request, reason
        )
        return error_response(request_id, CryptoError(ErrorCode.OPERATION_TIMED_OUT, reason))

    async def _run_async(
        self, call: Call, request_id: int, request: Request, timeout_ms: int | None, size: int
    ) -> None:
        loop = self.server.loop
        provider = self.service.provider_for(call.session, request)
        pool = self.server.pool_for(provider)
        future = loop.run_in_executor(pool, self._run, call, request_id, request, provider)
        # The request's memory is held until the work ends, even past an abandoned deadline.
        future.add_done_callback(lambda _: self._release_frame(size))
        try:
            if timeout_ms is None:
                reply = await future
            else:
                reply = await asyncio.wait_for(asyncio.shield(future), timeout_ms / 1000)
        except TimeoutError:
            reply = await self._timed_out(call, request_id, request, timeout_ms)
        except asyncio.CancelledError:
            call.abandoned = True
            return
        self._send(reply)


class _FdFrameReader:
    """Reads one frame and its SCM_RIGHTS descriptors off a connection's socket.

    It watches a duplicate of the socket's descriptor (the transport's own is registered
    with the loop) while the transport is paused, and reads no byte beyond the frame.
    """

    def __init__(self, conn: Connection, fileno: int) -> None:
        self.conn = conn
        self.loop = conn.server.loop
        self.sock = socket.socket(fileno=os.dup(fileno))
        self.buf = bytearray()
        self.fds: list[int] = []
        self.truncated = False
        self.announced = False
        self.loop.add_reader(self.sock.fileno(), self._readable)
        timeout = conn.server.config.hello_timeout
        self.timer = self.loop.call_later(
            timeout,
            self._fail,
            CryptoError(ErrorCode.PROTOCOL_ERROR, f"no frame within {timeout} s after shm.attach"),
        )

    def stop(self) -> None:
        """Stop watching; close descriptors not handed over."""
        self.timer.cancel()
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def _fail(self, exc: CryptoError) -> None:
        self.stop()
        self.conn._fd_reader = None
        self.conn._fatal(exc)

    def _wanted(self) -> int:
        if len(self.buf) < HEADER_SIZE:
            return HEADER_SIZE - len(self.buf)
        size: int = HEADER.unpack_from(self.buf)[0]
        return HEADER_SIZE + size - len(self.buf)

    def _readable(self) -> None:
        if len(self.buf) >= HEADER_SIZE and not self.announced:
            (size,) = HEADER.unpack_from(self.buf)
            if size > self.conn.decoder.max_frame:
                self._fail(FrameTooLarge(size, self.conn.decoder.max_frame))
                return
            self.announced = True
            if not self.conn._frame_announced(size):  # refused by the memory budget
                self._fail(
                    CryptoError(ErrorCode.RESOURCE_EXHAUSTED, "the frame after shm.attach was refused")
                )
                return
        wanted = self._wanted()
        try:
            data, ancillary, flags, _ = self.sock.recvmsg(
                min(wanted, 1 << 20),
                socket.CMSG_SPACE(MAX_PASSED_FDS * 4),
                socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC,
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(CryptoError(ErrorCode.CONNECTION_FAILED, f"connection lost: {exc}"))
            return
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                self.fds.extend(received)
        if flags & socket.MSG_CTRUNC:
            self.truncated = True
        if not data:
            self.stop()
            self.conn._fd_reader = None
            if self.conn.transport is not None:
                self.conn.transport.close()
            return
        self.buf += data
        if len(self.buf) >= HEADER_SIZE and self._wanted() == 0:
            fds = self.fds
            self.fds = []
            self.stop()
            body = bytes(self.buf[HEADER_SIZE:])
            # Truncated: more descriptors than we take (the kernel closed the rest).
            self.conn._fd_frame_read(body, fds, self.truncated)


class DaemonServer:
    """Owns the listening socket, the worker pools and the service."""

    def __init__(
        self,
        config: DaemonConfig,
        service: Service | None = None,
        *,
        listener: socket.socket | None = None,
        notifier: Notifier | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        if config.socket is None and listener is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{config.source}: [daemon] socket is not set")
        self.config = config
        self.listener = listener
        self.notifier = notifier or Notifier(None)
        self.service = service or Service(config)
        self.reloader = reloader or Reloader(self.service.core, None)
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self.connections: set[Connection] = set()
        self.control_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="cryptostack-control"
        )
        self.provider_pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {
            pid: concurrent.futures.ThreadPoolExecutor(
                max_workers=config.worker_threads, thread_name_prefix=f"cryptostack-p{pid}"
            )
            for pid in self.service.core.providers.by_id
        }
        self.service.core.provider_executor = self.provider_pools.get
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop_policy().get_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._stopping: asyncio.Event | None = None

    def pool_for(self, provider: int | None) -> concurrent.futures.ThreadPoolExecutor:
        """The worker pool of the provider a request will touch (bulkheads per provider: a
        hung provider holds up only its own clients); the control pool for the rest."""
        if provider is not None:
            return self.provider_pools.get(provider, self.control_pool)
        return self.control_pool

    async def serve(self) -> None:
        """Listen until SIGTERM/SIGINT; SIGHUP reloads."""
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self.listener is not None:
            # Socket activation: systemd bound the socket and owns its path.
            path = Path(self.listener.getsockname())
            self.listener.setblocking(False)
            self._server = await self.loop.create_unix_server(lambda: Connection(self), sock=self.listener)
            owned: Path | None = None
            log.info("serving the socket passed by socket activation (%s)", path)
        else:
            try:
                path = await self._bind()
            except BaseException:
                await self.loop.run_in_executor(None, self.service.close)
                raise
            owned = path
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._stopping.set)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        sweeper = self.loop.create_task(self._sweep())
        log.info("cryptostack daemon %s ready on %s (pid %d)", __version__, path, os.getpid())
        print(f"cryptostack daemon ready on unix://{path}", flush=True)
        self.notifier.notify("READY=1", f"STATUS=serving on {path}", f"MAINPID={os.getpid()}")
        try:
            await self._stopping.wait()
        finally:
            sweeper.cancel()
            self.notifier.notify("STOPPING=1", "STATUS=shutting down")
            await self._shutdown(owned)

    async def _bind(self) -> Path:
        """Create the configured socket; it appears only when ready, with its final mode."""
        path = Path(self.config.socket)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if _socket_alive(path):
                raise CryptoError(
                    ErrorCode.INVALID_STATE, f"another daemon is serving {path}; refusing to replace it"
                )
            path.unlink()
        # Bind under a temporary name, fix the mode, then rename: clients never see a
        # socket that is not ready or has the wrong permissions.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if tmp.exists():
            tmp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(tmp))
        os.chmod(tmp, self.config.socket_mode)
        sock.listen(128)
        self._server = await self.loop.create_unix_server(lambda: Connection(self), sock=sock)
        os.rename(tmp, path)
        return path

    def _on_sighup(self) -> None:
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True  # one more pass once the running reload ends
            return
        self._reload_task = self.loop.create_task(self._reload())

    async def _reload(self) -> None:
        """Reload on the control pool (file reads, provisioning); serving goes on."""
        while True:
            self._reload_again = False
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")
            log.info("SIGHUP: reloading %s", self.config.source)
            try:
                changes = await self.loop.run_in_executor(self.control_pool, self.reloader.reload)
                log.info("reload complete: %d change(s)", len(changes))
            except Exception:
                log.exception("reload failed; the running configuration stays")
            self.notifier.notify("READY=1", "STATUS=serving")
            if not self._reload_again:
                return

    async def _sweep(self) -> None:
        """Every so often: half-sent frames, idle connections, unread answers (budget)."""
        config = self.config
        tick = min(1.0, config.frame_timeout / 4, config.idle_timeout / 4 if config.idle_timeout else 1.0)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in list(self.connections):
                try:
                    conn.check_timeouts(now)
                except Exception:  # one connection's trouble must not stop the sweeper
                    log.exception("checking a connection's timeouts failed")

    def stop(self) -> None:
        """Ask :meth:`serve` to return."""
        if self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)

    async def _shutdown(self, path: Path | None) -> None:
        log.info("shutting down")
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)
        for pool in (*self.provider_pools.values(), self.control_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        await self.loop.run_in_executor(None, self.service.close)


def _socket_alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


ROOT_REFUSAL = (
    "refusing to run as root: a flaw in the daemon or a provider would then own "
    "the machine; run it as a dedicated user (contrib/systemd has the units) or set "
    "[daemon] allow_root = true"
)


def run_daemon(config: DaemonConfig) -> None:
    """Run in the foreground until SIGTERM/SIGINT (uses uvloop when installed).

    The event loop is created first and given to the SDK's worker hosts (see
    :func:`~cryptostack_core.sdk.workers.use_event_loop`) before the providers start.

    Refuses root unless ``allow_root``; takes a socket-activated listener when systemd
    passes one; fills in the default state directory and key store (:mod:`.paths`).
    """
    if os.geteuid() == 0 and not config.allow_root:
        raise DaemonStartError(ROOT_REFUSAL)
    activated = listen_sockets()
    listener = unix_stream_listener(activated)
    for sock in activated:
        if sock is not listener:
            sock.close()
    if activated and listener is None:
        raise DaemonStartError("socket activation passed no listening unix stream socket")
    socket_path = Path(listener.getsockname()) if listener is not None else None
    notifier = Notifier.from_environment()

    def normalise(c: DaemonConfig) -> DaemonConfig:
        return paths.daemon_defaults(c, socket_path=socket_path)

    config = normalise(config)
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        # The loop exists before the providers start, so the worker hosts of out-of-process
        # providers bind to it: the daemon then reaches their workers without a thread.
        use_event_loop(runner.get_loop())
        try:
            service = Service(config)
            source = None if config.source.startswith("<") else Path(config.source)
            server = DaemonServer(
                config,
                service,
                listener=listener,
                notifier=notifier,
                reloader=Reloader(service.core, source, normalise),
            )
            runner.run(server.serve())
        finally:
            use_event_loop(None)


__all__ = ["Connection", "DaemonServer", "DaemonStartError", "peer_identity", "run_daemon"]
