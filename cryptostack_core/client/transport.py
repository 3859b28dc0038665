"""The unix-socket transport, and endpoint resolution.

``unix://PATH`` speaks the wire protocol (docs/protocol.md) to a daemon. Other schemes come
from the ``cryptostack.transports`` entry points; the core registers ``inproc://``, which runs
the service inside the calling process (:mod:`cryptostack_core.server.inproc`). Every
transport bounds each call by its deadline: the caller gets ``OPERATION_TIMED_OUT`` at the
deadline even if the work never finishes.

:class:`UnixTransport` may be shared by threads: each sends its request when it is ready
(up to the daemon's 64 in flight), and whichever caller is waiting reads the socket and
hands every answer to the caller it belongs to. A lone caller reads its own answer, spinning
briefly before it sleeps (a small answer arrives faster than the scheduler wakes a thread).
"""

from __future__ import annotations

import array
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from cryptostack_core.client.protocol import (
    ClientProtocol,
    late_cleanup,
    makes_something,
    remember_late,
    result_of,
    shm_refused,
)
from cryptostack_core.client.shm import Offload, SharedMemory, inline_views, wants_region
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.transport import Transport, timed_out

DEFAULT_SPIN = float(os.environ.get("CRYPTOSTACK_SPIN_US", "100")) / 1e6
_SPIN_PAUSE = 64
"""Waits without spinning after answers missed the spin window twice in a row."""
_READ_SIZE = 1 << 20
_monotonic = time.monotonic
_perf_counter = time.perf_counter
# Callers of this process currently waiting for a daemon (spinning is for the lone caller).
_waiting = [0]
_waiting_lock = threading.Lock()


class _Waiter:
    """One request in flight: its answer once it arrives, and a bell to wake its caller (a
    lock held while nobody rang: cheaper than an Event)."""

    __slots__ = ("answer", "bell", "request")

    def __init__(self) -> None:
        self.answer: dict[str, Any] | None = None
        self.bell: threading.Lock | None = None
        self.request: tuple[str, Mapping[str, Any]] | None = None  # for a late answer

    def arm(self) -> None:
        bell = self.bell = threading.Lock()
        bell.acquire()

    def ring(self) -> None:
        """Wake the caller (the transport's state lock is held: no two rings race)."""
        bell = self.bell
        if bell is not None and bell.locked():
            bell.release()


class UnixTransport(Transport):
    """A connection to a daemon's unix socket, shared by any number of threads."""

    def __init__(self, path: str, connect_timeout: float | None = 5.0, spin: float = DEFAULT_SPIN) -> None:
        self.path = path
        self.spin = spin
        self._spin_misses = 0
        self._spin_skip = 0
        self.protocol = ClientProtocol()
        self._broken: str | None = None
        self._pending: dict[int, _Waiter] = {}
        self._order: list[int] = []  # ids in the order sent (id-less errors go to the oldest)
        self._state = threading.Lock()
        self._send_lock = threading.Lock()
        self._reading = False
        self._abandoned: dict[int, Offload] = {}  # timed out, still holding shared memory
        self._gave_up: dict[int, tuple[str, Mapping[str, Any]]] = {}  # timed out, may make
        self.on_late_cleanup: Callable[[list[dict[str, Any]]], None] | None = None
        self.shm = SharedMemory(not os.environ.get("CRYPTOSTACK_NO_SHM"))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise CryptoError(
                ErrorCode.CONNECTION_FAILED, f"no cryptostack daemon at {path}: {exc.strerror}"
            ) from None
        except PermissionError:
            sock.close()
            raise CryptoError(
                ErrorCode.ACCESS_DENIED, f"not allowed to connect to {path} (socket permissions)"
            ) from None
        except OSError as exc:
            sock.close()
            raise CryptoError(ErrorCode.CONNECTION_FAILED, f"cannot connect to {path}: {exc}") from None
        self._sock = sock
        sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._writable = select.poll()
        self._writable.register(sock, select.POLLOUT)
        deadline = None if connect_timeout is None else _monotonic() + connect_timeout
        try:
            self._send_frame(self.protocol.hello(), deadline)
            self.protocol.accept_hello(self._read_one(deadline))
        except CryptoError:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise CryptoError(
                ErrorCode.CONNECTION_FAILED, f"the daemon at {path} did not answer the hello"
            ) from None

    @property
    def server(self) -> dict[str, Any]:
        """The daemon's hello (version, limits)."""
        return self.protocol.server

    @property
    def max_frame(self) -> int:
        """The largest frame the daemon takes."""
        return self.protocol.max_frame

    @property
    def shm_transfers(self) -> int:
        """Requests whose large buffers went through shared memory."""
        return self.shm.transfers

    # --- calls ---------------------------------------------------------------------------
    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        deadline = None if timeout is None else _monotonic() + timeout
        if self._broken:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, f"connection unusable: {self._broken}")
        offload = (
            self.shm.plan(op, args, self.protocol.max_frame)
            if self.shm.usable and wants_region(op, args)
            else None
        )
        if offload is not None:
            answer = self._call_offloaded(op, offload, timeout, deadline)
            if answer is not None:
                return answer[0]
        request_id, frame = self.protocol.request(op, inline_views(op, args), timeout)
        waiter = self._register(request_id)
        waiter.request = (op, args)  # looked at only if the call times out
        with self._send_lock:
            self._send_frame(frame, deadline, request_id)
        return result_of(self._wait(request_id, waiter, timeout, deadline))

    def _call_offloaded(
        self, op: str, offload: Offload, timeout: float | None, deadline: float | None
    ) -> tuple[Any] | None:
        """A request with its large buffers in the region: (result,), or None when the
        daemon refused the region (the caller sends the request inline)."""
        request_id, frame = self.protocol.request(op, offload.args, timeout)
        try:
            with self._send_lock:
                if offload.attach and not self._attach(timeout, deadline):
                    self.shm.refuse()
                    self.shm.done(offload, None)
                    return None
                waiter = self._register(request_id)
                fds = [offload.region.fd] if offload.attach else None
                self._send_frame(frame, deadline, request_id, fds)
        except BaseException:
            self.shm.done(offload, None)
            raise
        try:
            message = self._wait(request_id, waiter, timeout, deadline)
        except CryptoError as exc:
            if exc.code is ErrorCode.OPERATION_TIMED_OUT:
                # The daemon may still read the region: its parts wait for the late answer.
                with self._state:
                    self._abandoned[request_id] = offload
            else:
                self.shm.done(offload, None)
            raise
        if offload.attach:
            if shm_refused(message):
                self.shm.refuse()
                self.shm.done(offload, None)
                return None
            self.shm.attached_now(offload.region)
        else:
            self.shm.used()
        return (self.shm.done(offload, result_of(message)),)

    def _attach(self, timeout: float | None, deadline: float | None) -> bool:
        """The ``shm.attach`` step (the send lock is held: nothing else is sent until the
        descriptor's frame). False when the daemon does not take shared memory."""
        request_id, frame = self.protocol.request("shm.attach", {}, timeout)
        waiter = self._register(request_id)
        self._send_frame(frame, deadline, request_id)
        try:
            message = self._wait(request_id, waiter, timeout, deadline)
        except CryptoError as exc:
            if exc.code is ErrorCode.OPERATION_TIMED_OUT:
                # The daemon may be waiting for the descriptor: the stream is out of step.
                self._fail("a shared-memory attach timed out")
            raise
        if (
            message.get("ok")
            and isinstance(message.get("result"), Mapping)
            and message["result"].get("ready") is True
        ):
            return True
        return False

    # --- requests and answers -----------------------------------------------------------
    def _register(self, request_id: int) -> _Waiter:
        waiter = _Waiter()
        with self._state:
            if self._broken:
                raise CryptoError(ErrorCode.CONNECTION_FAILED, f"connection unusable: {self._broken}")
            self._pending[request_id] = waiter
            self._order.append(request_id)
        return waiter

    def _forget(self, request_id: int) -> None:
        self._pending.pop(request_id, None)
        try:
            self._order.remove(request_id)
        except ValueError:
            pass

    def _wait(
        self, request_id: int, waiter: _Waiter, timeout: float | None, deadline: float | None
    ) -> dict[str, Any]:
        """The answer to ``request_id``: read it ourselves, or wait for the thread that is
        reading to hand it over."""
        with _waiting_lock:
            _waiting[0] += 1
        try:
            while True:
                with self._state:
                    if waiter.answer is not None:
                        return waiter.answer
                    if self._broken:
                        self._forget(request_id)
                        raise CryptoError(ErrorCode.CONNECTION_FAILED, f"connection lost: {self._broken}")
                    reader = not self._reading
                    if reader:
                        self._reading = True
                    elif waiter.bell is None:
                        waiter.arm()
                if reader:
                    try:
                        self._read_until(waiter, deadline)
                    except TimeoutError:
                        pass
                    finally:
                        self._hand_over_reading()
                    if waiter.answer is not None:
                        return waiter.answer
                else:
                    assert waiter.bell is not None
                    remaining = None if deadline is None else deadline - _monotonic()
                    if remaining is None or remaining > 0:
                        waiter.bell.acquire(True, -1 if remaining is None else remaining)
                        continue
                if deadline is not None and _monotonic() >= deadline:
                    with self._state:
                        if waiter.answer is not None:
                            return waiter.answer
                        self._forget(request_id)
                        if waiter.request is not None and makes_something(*waiter.request):
                            remember_late(self._gave_up, request_id, waiter.request)
                    raise timed_out(timeout)
        finally:
            with _waiting_lock:
                _waiting[0] -= 1

    def _hand_over_reading(self) -> None:
        """Stop reading; wake a caller still waiting so it reads next."""
        with self._state:
            self._reading = False
            for other in self._pending.values():
                if other.answer is None and other.bell is not None:
                    other.ring()
                    break

    def _read_until(self, waiter: _Waiter, deadline: float | None) -> None:
        """Read and deliver answers until ``waiter`` has its own (TimeoutError at the
        deadline; CryptoError when the connection breaks)."""
        while waiter.answer is None:
            try:
                data = self._sock.recv(_READ_SIZE)
            except BlockingIOError:
                self._wait_readable(deadline)
                continue
            except OSError as exc:
                self._fail(f"connection lost: {exc}")
                raise CryptoError(
                    ErrorCode.CONNECTION_FAILED, f"connection to the daemon lost: {exc}"
                ) from None
            if not data:
                self._fail("the daemon closed the connection")
                raise CryptoError(ErrorCode.CONNECTION_FAILED, "the daemon closed the connection")
            try:
                messages = self.protocol.feed(data)
            except CryptoError as exc:
                self._fail(exc.message)
                raise
            if messages:
                self._deliver(messages)

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        with self._state:
            pending = self._pending
            for message in messages:
                request_id = message.get("id")
                if request_id is None and self._order:
                    # A frame the daemon could not read as a request: it answers for the
                    # oldest request still waiting (exact for a lone caller).
                    request_id = self._order[0]
                waiter = pending.pop(request_id, None)  # type: ignore[arg-type]
                if waiter is None:
                    late = self._abandoned.pop(request_id, None)  # type: ignore[arg-type]
                    if late is not None:
                        self.shm.done(late, None)
                    made = self._gave_up.pop(request_id, None)  # type: ignore[arg-type]
                    if made is not None:
                        late_cleanup(self.on_late_cleanup, made, message)
                    continue  # a late answer to a call we gave up on
                if self._order and self._order[0] == request_id:
                    del self._order[0]
                else:
                    self._order.remove(request_id)  # type: ignore[arg-type]
                waiter.answer = message
                waiter.ring()

    def _read_one(self, deadline: float | None) -> dict[str, Any]:
        """The first answer (the hello), read directly."""
        while True:
            self._wait_readable(deadline)
            data = self._sock.recv(_READ_SIZE)
            if not data:
                raise CryptoError(ErrorCode.CONNECTION_FAILED, "the daemon closed the connection")
            messages = self.protocol.feed(data)
            if messages:
                return messages[0]

    def _wait_readable(self, deadline: float | None) -> None:
        """Block until the socket is readable; TimeoutError at the deadline."""
        if self._spin_skip:
            self._spin_skip -= 1
        elif self.spin > 0 and _waiting[0] <= 1:
            # A small answer usually comes back within tens of microseconds; polling for it
            # briefly avoids the scheduler's wake-up latency, which on a small VM costs more
            # than the daemon's whole work. Past the spin window we sleep in poll(). When
            # other threads of this process are waiting too, spinning would only steal
            # their CPU (and the GIL), so we sleep at once. Answers that keep missing the
            # window (a provider behind a worker process: three processes share the CPUs)
            # would only lose CPU to the spin: after two misses in a row we sleep at once
            # for the next calls, and try spinning again later.
            poll = self._poll.poll
            end = _perf_counter() + self.spin
            while _perf_counter() < end:
                if poll(0):
                    self._spin_misses = 0
                    return
            self._spin_misses += 1
            if self._spin_misses >= 2:
                self._spin_misses, self._spin_skip = 0, _SPIN_PAUSE
        if deadline is None:
            timeout_ms = -1
        else:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise TimeoutError
            timeout_ms = max(1, int(remaining * 1000 + 0.999))
        if not self._poll.poll(timeout_ms):
            raise TimeoutError

    def _send_frame(
        self,
        frame: bytes,
        deadline: float | None,
        request_id: int | None = None,
        fds: list[int] | None = None,
    ) -> None:
        """Write one whole frame (the send lock is held, or nobody else sends yet)."""
        if fds:
            view = memoryview(frame)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        else:
            try:
                sent = self._sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._lost_while_sending(request_id, exc)
            if sent == len(frame):
                return
            view = memoryview(frame)[sent:]
            ancillary = []
        try:
            while view:
                try:
                    if ancillary:  # the descriptors ride on the frame's first byte
                        sent = self._sock.sendmsg([view], ancillary)
                        ancillary = []
                    else:
                        sent = self._sock.send(view)
                except BlockingIOError:
                    # Its own poll object: the reading thread may be polling for answers.
                    remaining = None if deadline is None else deadline - _monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError from None
                    if not self._writable.poll(-1 if remaining is None else max(1, int(remaining * 1000))):
                        raise TimeoutError from None
                    continue
                view = view[sent:]
        except TimeoutError:
            # Part of a frame may be on the wire: the stream can no longer be trusted.
            self._fail("a request could not be sent before its deadline")
            raise timed_out(None) from None
        except OSError as exc:
            self._lost_while_sending(request_id, exc)

    def _lost_while_sending(self, request_id: int | None, exc: OSError) -> None:
        self._fail(f"connection lost: {exc}")
        raise CryptoError(ErrorCode.CONNECTION_FAILED, f"connection to the daemon lost: {exc}") from None

    def _fail(self, why: str) -> None:
        """The connection is unusable: every caller still waiting hears so."""
        with self._state:
            self._broken = self._broken or why
            for waiter in self._pending.values():
                waiter.ring()

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
        self._fail("closed")
        self.shm.close()


TRANSPORT_ENTRY_POINTS = "cryptostack.transports"
"""Entry-point group of the other endpoint schemes (the core registers ``inproc``)."""


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """``(scheme, rest)`` of an endpoint; INVALID_ARGUMENT when it has no scheme."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT, f"endpoint {endpoint!r} has no scheme: use unix://PATH or inproc://"
        )
    if scheme == "unix" and not rest:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, "unix:// endpoint needs a path")
    return scheme, rest


def registered_transport(endpoint: str, scheme: str, rest: str, daemon_config: Any) -> Transport:
    """A transport from the ``cryptostack.transports`` entry point named ``scheme``."""
    found = entry_points(group=TRANSPORT_ENTRY_POINTS, name=scheme)
    if not found:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT, f"unknown endpoint {endpoint!r}: use unix://PATH or inproc://"
        )
    factory = next(iter(found)).load()
    transport: Transport = factory(rest, daemon_config)
    return transport


def connect(
    endpoint: str, daemon_config: Any = None, connect_timeout: float | None = 5.0, spin: float = DEFAULT_SPIN
) -> Transport:
    """Open a transport for ``unix://PATH``, or for another scheme registered in the
    ``cryptostack.transports`` entry points (``inproc://`` runs the service in-process).

    An entry point names a callable ``(rest_of_endpoint, daemon_config) -> Transport``.
    """
    scheme, rest = split_endpoint(endpoint)
    if scheme == "unix":
        return UnixTransport(rest, connect_timeout, spin)
    return registered_transport(endpoint, scheme, rest, daemon_config)
