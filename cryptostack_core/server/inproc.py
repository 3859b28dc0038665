"""``inproc://``: the service inside the calling process, behind the same interface as a
daemon connection (sessions, deadlines, error states).

Registered as the ``inproc`` entry point of ``cryptostack.transports``, so the client finds it
without importing the server. ``inproc://`` gives each stack a private service;
``inproc://NAME`` shares one service between the stacks that name it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptostack_core.server.config import DaemonConfig
from cryptostack_core.server.defaults import default_config
from cryptostack_core.server.hooks import PeerIdentity
from cryptostack_core.server.request import Request
from cryptostack_core.server.service import Call, ContextBusy, Route, Service
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.transport import Transport, timed_out


class InprocTransport(Transport):
    """The service in this process; each stack is one session."""

    def __init__(self, service: Service, owns_service: bool) -> None:
        self.service = service
        self._owns = owns_service
        self.session = service.open_session(PeerIdentity(os.getpid(), os.getuid(), os.getgid()))
        config = service.core.config
        # The limits a daemon announces in its hello, so clients size their data the same way.
        self.server = {
            "limits": {
                "max_contexts": config.max_contexts_per_client,
                "max_resources": config.max_resources_per_client,
                "max_buffered_message": config.max_buffered_message,
            }
        }
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="cryptostack-inproc"
        )
        self._closed = False

    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        if self._closed:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, "stack is closed")
        request = Request.parse(op, args, self.service.config.max_batch_length)
        deadline = None if timeout is None else time.monotonic() + timeout
        call = Call(self.session, deadline)
        if self.service.runs_inline(self.session, request):
            return _copy_out(self.service.handle(call, request))
        loop = self.service.provider_loop(self.session, request)
        if (
            loop is not None
            and loop.is_running()
            and self.service.route(self.session, request, loop) is Route.AWAITED
        ):
            try:
                return self._awaited(call, request, loop, timeout)
            except ContextBusy:
                pass  # another call holds the context: wait for it on the thread path
        future = self._pool.submit(self.service.handle, call, request)
        try:
            return _copy_out(future.result(timeout))
        except concurrent.futures.TimeoutError:
            self.service.abandon(
                call, request, f"{op} timed out after {timeout * 1000:.0f} ms" if timeout else op
            )
            raise timed_out(timeout) from None

    async def call_async(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """:meth:`call` for an asyncio stack: cheap requests run here, on the caller's loop;
        the rest on the provider's loop or a thread, awaited without blocking the loop."""
        if self._closed:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, "stack is closed")
        request = Request.parse(op, args, self.service.config.max_batch_length)
        deadline = None if timeout is None else time.monotonic() + timeout
        call = Call(self.session, deadline)
        if self.service.runs_inline(self.session, request):
            return _copy_out(self.service.handle(call, request))
        future: asyncio.Future[Any] | None = None
        loop = self.service.provider_loop(self.session, request)
        if (
            loop is not None
            and loop.is_running()
            and self.service.route(self.session, request, loop) is Route.AWAITED
        ):
            future = asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self.service.handle_async(call, request), loop)
            )
            try:
                return _copy_out(await asyncio.wait_for(asyncio.shield(future), timeout))
            except ContextBusy:
                future = None  # another call holds the context: the thread path waits for it
            except TimeoutError:
                future.cancel()
                self.service.abandon(call, request, f"{op} timed out after {(timeout or 0) * 1000:.0f} ms")
                raise timed_out(timeout) from None
        future = asyncio.wrap_future(self._pool.submit(self.service.handle, call, request))
        try:
            return _copy_out(await asyncio.wait_for(asyncio.shield(future), timeout))
        except TimeoutError:
            self.service.abandon(
                call, request, f"{op} timed out after {timeout * 1000:.0f} ms" if timeout else op
            )
            raise timed_out(timeout) from None

    def _awaited(
        self, call: Call, request: Request, loop: asyncio.AbstractEventLoop, timeout: float | None
    ) -> Any:
        """A stream call on a worker-hosted provider, awaited on its host's loop: one hop to
        that loop instead of a thread plus a hop per worker call."""
        future = asyncio.run_coroutine_threadsafe(self.service.handle_async(call, request), loop)
        try:
            return _copy_out(future.result(timeout))
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.service.abandon(
                call, request, f"{request.op} timed out after {(timeout or 0) * 1000:.0f} ms"
            )
            raise timed_out(timeout) from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.service.close_session(self.session)
        if self._owns:
            self.service.close()


def _copy_out(value: Any) -> Any:
    # In-process results must not alias daemon-side buffers.
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


_shared_services: dict[str, Service] = {}
_shared_lock = threading.Lock()


def connect(
    name: str, daemon_config: DaemonConfig | Mapping[str, Any] | str | Path | None
) -> InprocTransport:
    """The ``cryptostack.transports`` entry point: a transport for ``inproc://[NAME]``."""
    if daemon_config is None:
        config = default_config()
    elif isinstance(daemon_config, DaemonConfig):
        config = daemon_config
    elif isinstance(daemon_config, Mapping):
        config = DaemonConfig.from_mapping(daemon_config)
    else:
        config = DaemonConfig.load(Path(daemon_config))
    if not name:
        return InprocTransport(Service(config), True)
    with _shared_lock:
        service = _shared_services.get(name)
        if service is None:
            service = _shared_services[name] = Service(config)
    return InprocTransport(service, False)
