"""The channel every client object talks through: one transport, the stack's default
deadline, and the releases that garbage-collected guards and contexts left behind.

Contexts and guards hold the channel, not the stack, so the stack can build them without
an import loop.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

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


class Channel:
    """Sends requests over a transport; queued releases ride along with the next one."""

    close_timeout = 5.0
    """Deadline of the calls that free resources (close, release)."""

    def __init__(self, transport: Transport, default_timeout: float | None) -> None:
        self.transport = transport
        self.default_timeout = default_timeout
        self.closed = False
        self._queued: list[dict[str, Any]] = []
        self._queue_lock = threading.Lock()
        self._algorithms: list[dict[str, Any]] | None = None
        self._daemon_names: AlgorithmRegistry | None = None
        self._algorithms_lock = threading.Lock()

    # --- the daemon's algorithm names, learnt once per connection ----------------------
    def algorithms(self) -> list[dict[str, Any]]:
        """The daemon's ``algorithms`` table (asked once per connection, then cached)."""
        with self._algorithms_lock:
            if self._algorithms is None:
                table = self.call("algorithms", {}, self.default_timeout)
                names = AlgorithmRegistry()
                for entry in table:
                    try:
                        names.register(AlgorithmSpec.from_wire(entry))
                    except (KeyError, TypeError, ValueError):
                        continue  # a kind this client does not know yet: unusable here anyway
                self._algorithms, self._daemon_names = list(table), names
            return self._algorithms

    def canonical_algorithm(self, name: str) -> str:
        """Canonical spelling of ``name``: from this process's registry when it knows the
        name, else from the daemon's table (a provider's own algorithm)."""
        spec = REGISTRY.find(name)
        if spec is not None:
            return spec.name
        self.algorithms()
        assert self._daemon_names is not None
        served = self._daemon_names.find(name)
        if served is None:
            raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM,
                              f"unknown algorithm {name!r}: neither this client nor the "
                              "daemon knows it (`cryptostack algorithms` lists the daemon's)")
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

    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """Run one request (``timeout`` seconds, None: no deadline) and return its result."""
        if self.closed:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, "the stack is closed")
        if not self._queued:
            return self.transport.call(op, args, timeout)
        with self._queue_lock:
            queued, self._queued = self._queued, []
        # Releases of garbage-collected guards and contexts ride along with this request;
        # a long queue goes first in batches of its own, so no batch grows without bound.
        while len(queued) > RELEASES_PER_BATCH:
            head, queued = queued[:RELEASES_PER_BATCH], queued[RELEASES_PER_BATCH:]
            self.transport.call("batch", {"calls": head}, timeout)
        if op == "batch":
            results = self.transport.call("batch", {"calls": [*queued, *args["calls"]]},
                                          timeout)
            return results[len(queued):]
        results = self.transport.call("batch", {"calls": [*queued, {"op": op, "args": args}]},
                                      timeout)
        return results[-1]

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
