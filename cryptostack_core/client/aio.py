"""The asyncio transport: one unix-socket connection, the requests of many tasks in flight on
it together (docs/protocol.md allows 64), answers matched to requests by id.

It drives the same sans-I/O :class:`~cryptostack_core.client.protocol.ClientProtocol` and
:class:`~cryptostack_core.client.shm.SharedMemory` as the blocking transport, so both speak
the same protocol; only the waiting is asyncio's. Each call has its own deadline: the
caller gets ``OPERATION_TIMED_OUT`` when it passes, and a late answer is dropped without
disturbing the other requests.
"""

from __future__ import annotations

import array
import asyncio
import collections
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from cryptostack_core.client.channel import AsyncTransport, SyncTransportInLoop
from cryptostack_core.client.protocol import (
    ClientProtocol,
    late_cleanup,
    makes_something,
    remember_late,
    result_of,
    shm_refused,
)
from cryptostack_core.client.shm import Offload, SharedMemory, inline_views, wants_region
from cryptostack_core.client.transport import registered_transport, split_endpoint
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.transport import timed_out


class _Reader(asyncio.Protocol):
    """Hands what the socket delivers to its :class:`AsyncUnixTransport`."""

    def __init__(self, owner: AsyncUnixTransport) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(f"connection lost: {exc}" if exc else "the daemon closed the connection")


class AsyncUnixTransport:
    """A connection to a daemon's unix socket for asyncio tasks (create with :meth:`open`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.protocol = ClientProtocol()
        self.shm = SharedMemory(not os.environ.get("CRYPTOSTACK_NO_SHM"))
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._order: collections.deque[int] = collections.deque()
        self._broken: str | None = None
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._in_flight = 0
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()
        self._gate: asyncio.Future[None] | None = None  # set while the region is attached
        self._attach_lock: asyncio.Lock | None = None
        self._abandoned: dict[int, Offload] = {}
        self._gave_up: dict[int, tuple[str, Mapping[str, Any]]] = {}  # timed out, may make
        self.on_late_cleanup: Callable[[list[dict[str, Any]]], None] | None = None

    @classmethod
    async def open(cls, path: str, connect_timeout: float | None = 5.0) -> AsyncUnixTransport:
        """Connect and say hello."""
        self = cls(path)
        loop = self._loop = asyncio.get_running_loop()
        self._attach_lock = asyncio.Lock()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_unix_connection(lambda: _Reader(self), path), connect_timeout
            )
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise CryptoError(
                ErrorCode.CONNECTION_FAILED, f"no cryptostack daemon at {path}: {exc.strerror}"
            ) from None
        except PermissionError:
            raise CryptoError(
                ErrorCode.ACCESS_DENIED, f"not allowed to connect to {path} (socket permissions)"
            ) from None
        except TimeoutError:
            raise CryptoError(
                ErrorCode.CONNECTION_FAILED, f"the daemon at {path} did not accept the connection"
            ) from None
        except OSError as exc:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, f"cannot connect to {path}: {exc}") from None
        self._transport = transport
        self._hello = loop.create_future()
        transport.write(self.protocol.hello())
        try:
            reply = await asyncio.wait_for(self._hello, connect_timeout)
            self.protocol.accept_hello(reply)
        except TimeoutError:
            transport.close()
            raise CryptoError(
                ErrorCode.CONNECTION_FAILED, f"the daemon at {path} did not answer the hello"
            ) from None
        except BaseException:
            transport.close()
            raise
        return self

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

    # --- answers ---------------------------------------------------------------------------
    def _received(self, data: bytes) -> None:
        try:
            messages = self.protocol.feed(data)
        except CryptoError as exc:
            self._lost(exc.message)
            if self._transport is not None:
                self._transport.close()
            return
        for message in messages:
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(message)
                continue
            request_id = message.get("id")
            if request_id is None and self._order:
                request_id = self._order[0]  # a frame the daemon could not read: the oldest
            future = self._pending.pop(request_id, None)  # type: ignore[arg-type]
            if future is None:
                late = self._abandoned.pop(request_id, None)  # type: ignore[arg-type]
                if late is not None:
                    self.shm.done(late, None)
                made = self._gave_up.pop(request_id, None)  # type: ignore[arg-type]
                if made is not None:
                    late_cleanup(self.on_late_cleanup, made, message)
                continue  # a late answer to a call we gave up on
            self._forget_order(request_id)  # type: ignore[arg-type]
            if not future.done():
                future.set_result(message)

    def _forget_order(self, request_id: int) -> None:
        if self._order and self._order[0] == request_id:
            self._order.popleft()
        else:
            try:
                self._order.remove(request_id)
            except ValueError:
                pass

    def _lost(self, why: str) -> None:
        self._broken = self._broken or why
        error = CryptoError(ErrorCode.CONNECTION_FAILED, f"connection lost: {self._broken}")
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(error)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self._order.clear()

    # --- requests ----------------------------------------------------------------------------
    async def _slot(self) -> None:
        """Wait for room among the daemon's requests in flight on this connection."""
        while self._in_flight >= self.protocol.max_in_flight:
            assert self._loop is not None
            waiter = self._loop.create_future()
            self._slots.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # woken but leaving: the room goes to the next one
                raise
        self._in_flight += 1

    def _free_slot(self) -> None:
        self._in_flight -= 1
        self._wake_next()

    def _wake_next(self) -> None:
        while self._slots:
            waiter = self._slots.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """Run ``op``; OPERATION_TIMED_OUT after ``timeout`` seconds (None: never)."""
        if self._broken:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, f"connection unusable: {self._broken}")
        offload = (
            self.shm.plan(op, args, self.protocol.max_frame)
            if self.shm.usable and wants_region(op, args)
            else None
        )
        if offload is not None:
            answer = await self._call_offloaded(op, offload, timeout)
            if answer is not None:
                return answer[0]
        await self._slot()
        try:
            message = await self._exchange(op, inline_views(op, args), timeout)
        finally:
            self._free_slot()
        return result_of(message)

    async def _exchange(
        self,
        op: str,
        args: Mapping[str, Any],
        timeout: float | None,
        fds: list[int] | None = None,
        gated: bool = False,
        offload: Offload | None = None,
    ) -> dict[str, Any]:
        """Send one request and wait for its answer."""
        assert self._loop is not None and self._transport is not None
        while self._gate is not None and not gated:
            await asyncio.shield(self._gate)  # the region is being attached: wait
        request_id, frame = self.protocol.request(op, args, timeout)
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[request_id] = future
        self._order.append(request_id)
        if fds:
            await self._send_with_fds(frame, fds)
        else:
            self._transport.write(frame)
        if timeout is None:
            handle = None
        else:
            handle = self._loop.call_later(timeout, _expire, future, timeout)
        try:
            return await future
        except BaseException as exc:
            # Timed out or cancelled: a late answer is dropped; a region part waits for it.
            if self._pending.pop(request_id, None) is not None:
                self._forget_order(request_id)
                if makes_something(op, args):
                    remember_late(self._gave_up, request_id, (op, args))
                if offload is not None and not (
                    isinstance(exc, CryptoError) and exc.code is ErrorCode.CONNECTION_FAILED
                ):
                    self._abandoned[request_id] = offload
            raise
        finally:
            if handle is not None:
                handle.cancel()

    async def _call_offloaded(self, op: str, offload: Offload, timeout: float | None) -> tuple[Any] | None:
        """A request with its large buffers in the region: (result,), or None when the
        daemon refused the region (the caller then sends the request inline)."""
        await self._slot()
        abandoned = False
        try:
            if offload.attach:
                message = await self._attach_and_send(op, offload, timeout)
                if message is None or shm_refused(message):
                    self.shm.refuse()
                    self.shm.done(offload, None)
                    return None
                self.shm.attached_now(offload.region)
            else:
                message = await self._exchange(op, offload.args, timeout, offload=offload)
                self.shm.used()
        except CryptoError as exc:
            abandoned = exc.code is ErrorCode.OPERATION_TIMED_OUT
            if not abandoned:
                self.shm.done(offload, None)
            raise
        finally:
            self._free_slot()
        return (self.shm.done(offload, result_of(message)),)

    async def _attach_and_send(
        self, op: str, offload: Offload, timeout: float | None
    ) -> dict[str, Any] | None:
        """``shm.attach``, then the request's frame carrying the region's descriptor; no
        other request is written in between. None when the daemon does not take it."""
        assert self._loop is not None and self._attach_lock is not None
        async with self._attach_lock:
            while self._gate is not None:
                await asyncio.shield(self._gate)
            gate = self._gate = self._loop.create_future()
            try:
                ready = await self._exchange("shm.attach", {}, timeout, gated=True)
                if not (
                    ready.get("ok")
                    and isinstance(ready.get("result"), Mapping)
                    and ready["result"].get("ready") is True
                ):
                    return None
                return await self._exchange(
                    op, offload.args, timeout, fds=[offload.region.fd], gated=True, offload=offload
                )
            except CryptoError as exc:
                if exc.code is ErrorCode.OPERATION_TIMED_OUT:
                    self._lost("a shared-memory attach timed out")  # the stream is out of step
                    if self._transport is not None:
                        self._transport.close()
                raise
            finally:
                self._gate = None
                gate.set_result(None)

    async def _send_with_fds(self, frame: bytes, fds: list[int]) -> None:
        """Write ``frame`` with ``fds`` riding on its first byte (the transport has nothing
        buffered, and nothing else is written meanwhile)."""
        assert self._loop is not None and self._transport is not None
        while self._transport.get_write_buffer_size():
            await asyncio.sleep(0)
        sock = self._transport.get_extra_info("socket")
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            raw.setblocking(False)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            view = memoryview(frame)
            while view:
                try:
                    sent = raw.sendmsg([view], ancillary) if ancillary else raw.send(view)
                except BlockingIOError:
                    writable = self._loop.create_future()
                    self._loop.add_writer(raw.fileno(), writable.set_result, None)
                    try:
                        await writable
                    finally:
                        self._loop.remove_writer(raw.fileno())
                    continue
                ancillary = []
                view = view[sent:]
        finally:
            raw.close()

    async def close(self) -> None:
        """Disconnect; the daemon frees everything this client held."""
        if self._transport is not None:
            self._transport.close()
        self._lost("closed")
        self.shm.close()


def _expire(future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(timed_out(timeout))


async def connect_async(
    endpoint: str, daemon_config: Any = None, connect_timeout: float | None = 5.0
) -> AsyncTransport:
    """An asyncio transport for ``unix://PATH``; another registered scheme (``inproc://``)
    gets its blocking transport behind :class:`SyncTransportInLoop`."""
    scheme, rest = split_endpoint(endpoint)
    if scheme == "unix":
        return await AsyncUnixTransport.open(rest, connect_timeout)
    loop = asyncio.get_running_loop()
    transport = await loop.run_in_executor(None, registered_transport, endpoint, scheme, rest, daemon_config)
    return SyncTransportInLoop(transport)
