"""The channel every client object talks through: one transport, the stack's default
deadline, and the releases that garbage-collected guards and contexts left behind.

Contexts and guards hold the channel, not the stack, so the stack can build them without
an import loop. :class:`Channel` blocks (any thread); :class:`AsyncChannel` is its asyncio
twin. Both share :class:`ChannelCore`, which decides what is sent; only the waiting differs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from cryptostack_core.client.plans import Plan, run, run_async
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmRegistry, AlgorithmSpec
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.protocol import rid_to_wire
from cryptostack_core.wire.resources import CryptoResourceId
from cryptostack_core.wire.transport import Transport

DATA_CHUNK = 8 * 1024 * 1024
"""Largest data argument of one request: bigger buffers are split by the contexts, so
nothing the caller passes can exceed the daemon's frame limit, and a deadline is checked
between the pieces."""
RELEASES_PER_BATCH = 64
"""Queued releases sent in one batch; a longer queue goes out in several."""


class AsyncTransport(Protocol):
    """What an asyncio stack needs from its transport (:mod:`cryptostack_core.client.aio`)."""

    @property
    def server(self) -> Any:
        """The service's hello (``limits`` ...)."""

    @property
    def max_frame(self) -> int:
        """The largest frame the service takes (0: no limit known)."""

    async def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """Run ``op``; ``timeout`` seconds (None: no deadline)."""

    async def close(self) -> None:
        """Disconnect; the daemon frees everything this client held."""


class ChannelCore:
    """What both channels share: limits, the default deadline and the queue of quiet
    releases that ride along with the next request (no I/O here)."""

    close_timeout = 5.0
    """Deadline of the calls that free resources (close, release)."""

    def __init__(self, transport: Any, default_timeout: float | None) -> None:
        self.transport = transport
        self.default_timeout = default_timeout
        self.closed = False
        self._queued: list[dict[str, Any]] = []
        self._queue_lock = threading.Lock()
        self._algorithms: list[dict[str, Any]] | None = None
        self._daemon_names: AlgorithmRegistry | None = None
        self._algorithms_lock = threading.Lock()
        if hasattr(transport, "on_late_cleanup"):
            # What an answer that came after its caller gave up made is freed with the
            # next request (a timed-out key.generate must not leave a key in the daemon).
            transport.on_late_cleanup = self._queue_calls

    # --- the daemon's algorithm names, learnt once per connection ----------------------
    def _p_algorithms(self) -> Plan[list[dict[str, Any]]]:
        """The daemon's ``algorithms`` table (asked once per connection, then cached)."""
        if self._algorithms is None:
            table = yield "algorithms", {}, self.default_timeout
            names = AlgorithmRegistry()
            for entry in table:
                try:
                    names.register(AlgorithmSpec.from_wire(entry))
                except (KeyError, TypeError, ValueError):
                    continue  # a kind this client does not know yet: unusable here anyway
            with self._algorithms_lock:
                self._algorithms, self._daemon_names = list(table), names
        return self._algorithms

    def _p_canonical(self, name: str) -> Plan[str]:
        """Canonical spelling of ``name``: from this process's registry when it knows the
        name (no request), else from the daemon's table (a provider's own algorithm)."""
        spec = REGISTRY.find(name)
        if spec is not None:
            return spec.name
        yield from self._p_algorithms()
        assert self._daemon_names is not None
        served = self._daemon_names.find(name)
        if served is None:
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"unknown algorithm {name!r}: neither this client nor the "
                "daemon knows it (`cryptostack algorithms` lists the daemon's)",
            )
        return served.name

    @property
    def max_chunk(self) -> int:
        """The largest data argument to send in one request (well below the frame limit)."""
        max_frame = getattr(self.transport, "max_frame", None)
        if isinstance(max_frame, int) and max_frame > 0:
            return max(512, min(DATA_CHUNK, max_frame // 2))
        return DATA_CHUNK

    def limit(self, name: str) -> int | None:
        """A limit the service announced (``max_buffered_message`` ...), if known."""
        server = getattr(self.transport, "server", None)
        limits = server.get("limits") if isinstance(server, Mapping) else None
        value = limits.get(name) if isinstance(limits, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def queue_release(self, rid: CryptoResourceId) -> None:
        """Release ``rid`` with the next request (safe from a finalizer: no I/O here)."""
        self.queue_call("resource.release", {"id": rid_to_wire(rid), "quiet": True})

    def queue_call(self, op: str, args: Mapping[str, Any]) -> None:
        """Send a request that must not fail (a quiet release or close) with the next one."""
        with self._queue_lock:
            self._queued.append({"op": op, "args": args})

    def _queue_calls(self, calls: list[dict[str, Any]]) -> None:
        with self._queue_lock:
            self._queued.extend(calls)

    def _take_queued(self) -> list[dict[str, Any]]:
        with self._queue_lock:
            queued, self._queued = self._queued, []
        return queued

    def _check_open(self) -> None:
        if self.closed:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, "the stack is closed")

    @staticmethod
    def _plan(
        op: str, args: Mapping[str, Any], queued: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any], Callable[[Any], Any]]:
        """Releases of garbage-collected guards and contexts ride along with a request; a
        long queue goes first in batches of its own, so no batch grows without bound.
        Returns the batches to send first, the batch to send, and how to get the caller's
        result out of that batch's results."""
        first = []
        while len(queued) > RELEASES_PER_BATCH:
            first.append({"calls": queued[:RELEASES_PER_BATCH]})
            queued = queued[RELEASES_PER_BATCH:]
        n = len(queued)
        if op == "batch":
            return first, {"calls": [*queued, *args["calls"]]}, lambda results: results[n:]
        return first, {"calls": [*queued, {"op": op, "args": args}]}, lambda results: results[-1]


class Channel(ChannelCore):
    """Sends requests over a blocking transport; queued releases ride along with the next."""

    transport: Transport

    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """Run one request (``timeout`` seconds, None: no deadline) and return its result."""
        if self.closed:
            self._check_open()
        if not self._queued:
            return self.transport.call(op, args, timeout)
        first, batch, unwrap = self._plan(op, args, self._take_queued())
        for head in first:
            self.transport.call("batch", head, timeout)
        return unwrap(self.transport.call("batch", batch, timeout))

    def algorithms(self) -> list[dict[str, Any]]:
        """The daemon's ``algorithms`` table (asked once per connection, then cached)."""
        return run(self, self._p_algorithms())

    def canonical_algorithm(self, name: str) -> str:
        """Canonical spelling of ``name`` (the daemon's table for names this client does not
        know)."""
        return run(self, self._p_canonical(name))

    def release(self, rid: CryptoResourceId) -> None:
        """Free ``rid`` now; a resource already gone (or a lost connection) is not an error."""
        if self.closed:
            return
        try:
            self.call("resource.release", {"id": rid_to_wire(rid)}, self.close_timeout)
        except CryptoError as exc:
            if exc.code not in (ErrorCode.RESOURCE_NOT_FOUND, ErrorCode.CONNECTION_FAILED):
                raise

    def close(self) -> None:
        """Disconnect; the daemon frees everything this client held."""
        if self.closed:
            return
        self.closed = True
        self.transport.close()


class AsyncChannel(ChannelCore):
    """:class:`Channel` for asyncio: requests of many tasks in flight on one connection."""

    transport: AsyncTransport

    async def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """Run one request (``timeout`` seconds, None: no deadline) and return its result."""
        if self.closed:
            self._check_open()
        if not self._queued:
            return await self.transport.call(op, args, timeout)
        first, batch, unwrap = self._plan(op, args, self._take_queued())
        for head in first:
            await self.transport.call("batch", head, timeout)
        return unwrap(await self.transport.call("batch", batch, timeout))

    async def algorithms(self) -> list[dict[str, Any]]:
        """The daemon's ``algorithms`` table (asked once per connection, then cached)."""
        return await run_async(self, self._p_algorithms())

    async def release(self, rid: CryptoResourceId) -> None:
        """Free ``rid`` now; a resource already gone (or a lost connection) is not an error."""
        if self.closed:
            return
        try:
            await self.call("resource.release", {"id": rid_to_wire(rid)}, self.close_timeout)
        except CryptoError as exc:
            if exc.code not in (ErrorCode.RESOURCE_NOT_FOUND, ErrorCode.CONNECTION_FAILED):
                raise

    async def close(self) -> None:
        """Disconnect; the daemon frees everything this client held."""
        if self.closed:
            return
        self.closed = True
        await self.transport.close()


class SyncTransportInLoop:
    """An asyncio face for a blocking transport (``inproc://`` and other registered
    schemes): calls it offers a coroutine for (``call_async``) run on the loop, the rest on
    a thread, so the event loop never blocks on them."""

    def __init__(self, transport: Transport) -> None:
        self.inner = transport
        self._native: Callable[..., Awaitable[Any]] | None = getattr(transport, "call_async", None)

    @property
    def server(self) -> Any:
        """The service's limits, as the inner transport announces them."""
        return getattr(self.inner, "server", None)

    @property
    def max_frame(self) -> int:
        """The inner transport's frame limit (if it has one)."""
        value = getattr(self.inner, "max_frame", 0)
        return value if isinstance(value, int) else 0

    async def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """Run ``op`` without blocking the loop."""
        if self._native is not None:
            return await self._native(op, args, timeout)
        return await asyncio.get_running_loop().run_in_executor(None, self.inner.call, op, args, timeout)

    async def close(self) -> None:
        """Close the inner transport (on a thread: it may wait for its workers)."""
        await asyncio.get_running_loop().run_in_executor(None, self.inner.close)
