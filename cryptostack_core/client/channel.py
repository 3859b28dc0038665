"""The channel every client object talks through: one transport, the stack's default
deadline, and the releases that garbage-collected guards left behind.

Contexts and guards hold the channel, not the stack, so the stack can build them without
an import loop.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.protocol import rid_to_wire
from cryptostack_core.wire.resources import CryptoResourceId
from cryptostack_core.wire.transport import Transport


class Channel:
    """Sends requests over a transport; queued releases ride along with the next one."""

    close_timeout = 5.0
    """Deadline of the calls that free resources (close, release)."""

    def __init__(self, transport: Transport, default_timeout: float | None) -> None:
        self.transport = transport
        self.default_timeout = default_timeout
        self.closed = False
        self._releases: list[CryptoResourceId] = []
        self._release_lock = threading.Lock()

    def queue_release(self, rid: CryptoResourceId) -> None:
        """Release ``rid`` with the next request (safe from a finalizer: no I/O here)."""
        with self._release_lock:
            self._releases.append(rid)

    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """Run one request (``timeout`` seconds, None: no deadline) and return its result."""
        if self.closed:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, "the stack is closed")
        if not self._releases:
            return self.transport.call(op, args, timeout)
        with self._release_lock:
            queued, self._releases = self._releases, []
        # Releases of garbage-collected guards ride along with this request.
        releases = [{"op": "resource.release", "args": {"id": rid_to_wire(r), "quiet": True}}
                    for r in queued]
        if op == "batch":
            results = self.transport.call("batch", {"calls": [*releases, *args["calls"]]},
                                          timeout)
            return results[len(releases):]
        results = self.transport.call("batch", {"calls": [*releases, {"op": op, "args": args}]},
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
