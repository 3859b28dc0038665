"""The memory budget: how many bytes clients may make the daemon hold, per connection and in
all, reserved *before* the memory is allocated.

What counts (each a :data:`KINDS` entry): request frames from the moment their header
announces them until their request is answered; answers written but not yet read by the
client; messages a context buffers whole (AEAD decryption, one-shot signatures); the results
a batch accumulates. A reservation that would pass either limit fails with
``RESOURCE_EXHAUSTED`` naming the limit, its size and what holds the memory.
"""

from __future__ import annotations

import threading
from collections import Counter

from cryptostack_core.wire.errors import CryptoError, ErrorCode

KINDS = ("request frames", "unread answers", "buffered messages", "batch results")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class MemoryBudget:
    """The daemon-wide limit; hands out one :class:`Account` per connection."""

    def __init__(self, total: int, per_connection: int) -> None:
        self.total = total
        self.per_connection = per_connection
        self.held = 0
        self._by_kind: Counter[str] = Counter()
        self._lock = threading.Lock()

    def account(self) -> Account:
        """A new connection's account."""
        return Account(self)

    def snapshot(self) -> dict[str, int]:
        """Bytes held, in all and per kind (for ``status``)."""
        with self._lock:
            return {"held": self.held, **{k: self._by_kind[k] for k in KINDS}}


class Account:
    """One connection's share. Thread-safe; never goes below zero."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0
        self.by_kind: Counter[str] = Counter()

    def _fits(self, size: int) -> bool:
        return self.held + size <= self.budget.per_connection and self.budget.held + size <= self.budget.total

    def _refusal(self, size: int, kind: str) -> CryptoError:
        # Raised straight from the caller's expression, never kept in a local: a local
        # would tie the exception to its own traceback, and the frames of that traceback
        # (an answer being refused) would wait for the cyclic garbage collector.
        budget = self.budget
        if self.held + size > budget.per_connection:
            detail = ", ".join(f"{k} {_mib(v)}" for k, v in self.by_kind.items() if v)
            return CryptoError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"connection_memory_budget of {_mib(budget.per_connection)} "
                f"reached: {_mib(size)} more of {kind} refused (this "
                f"connection holds {detail or 'nothing'})",
            )
        return CryptoError(
            ErrorCode.RESOURCE_EXHAUSTED,
            f"memory_budget of {_mib(budget.total)} for all clients "
            f"reached: {_mib(size)} more of {kind} refused (all clients "
            f"hold {_mib(budget.held)}); try again later",
        )

    def check(self, size: int, kind: str) -> None:
        """RESOURCE_EXHAUSTED if ``size`` more bytes of ``kind`` would not fit now; nothing is
        held. For memory that is used and given back within one step on the event loop (a
        small request that arrived whole and is answered at once): refused exactly when a
        reservation would be, without the lock and the bookkeeping."""
        if size > 0 and not self._fits(size):
            raise self._refusal(size, kind)

    def reserve(self, size: int, kind: str) -> None:
        """Hold ``size`` more bytes of ``kind``, or raise RESOURCE_EXHAUSTED (nothing held)."""
        if size <= 0:
            return
        budget = self.budget
        with budget._lock:
            if not self._fits(size):
                raise self._refusal(size, kind)
            self.held += size
            self.by_kind[kind] += size
            budget.held += size
            budget._by_kind[kind] += size

    def release(self, size: int, kind: str) -> None:
        """Give back ``size`` bytes of ``kind`` (at most what is held)."""
        if size <= 0:
            return
        budget = self.budget
        with budget._lock:
            size = min(size, self.by_kind[kind])
            self.held -= size
            self.by_kind[kind] -= size
            budget.held -= size
            budget._by_kind[kind] -= size

    def set(self, size: int, kind: str) -> None:
        """Make the amount of ``kind`` exactly ``size``, even past the limits (for memory
        that exists already, such as the transport's unsent data)."""
        if self.by_kind[kind] == max(0, size):  # the common case: nothing changed, no lock
            return
        budget = self.budget
        with budget._lock:
            delta = max(0, size) - self.by_kind[kind]
            self.held += delta
            self.by_kind[kind] += delta
            budget.held += delta
            budget._by_kind[kind] += delta

    def release_all(self) -> None:
        """The connection is gone: give everything back."""
        budget = self.budget
        with budget._lock:
            for kind, size in self.by_kind.items():
                budget._by_kind[kind] -= size
            budget.held -= self.held
            self.held = 0
            self.by_kind.clear()


UNLIMITED = MemoryBudget(1 << 62, 1 << 62)
"""For sessions outside a daemon's budget (tests, tools)."""
