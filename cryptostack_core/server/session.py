"""Per-client state in the daemon: the handle table of resources and contexts.

Every handle a client sees (slot references, keys, certificates, contexts) is local to
its session, so one client can never name another client's objects. When the client
disconnects (or dies), :meth:`Session.close` releases everything it held.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptostack_core.sdk.provider import ProviderKey
from cryptostack_core.server.budget import UNLIMITED, Account
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.server.hooks import PeerIdentity
from cryptostack_core.server.selection import KeyPlacement
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission
from cryptostack_core.wire.resources import CryptoResourceId, ResourcePersistence, ResourceType


class KeyEntry:
    """A key loaded in the daemon, shared by guards and contexts through a reference count."""

    def __init__(
        self,
        *,
        algorithm: str,
        permissions: KeyOperationPermission,
        home: LoadedProvider,
        pkey: ProviderKey,
        persistence: ResourcePersistence,
        compatible: tuple[int, ...] = (),
        slot: str | None = None,
        export_uids: frozenset[int] | None = None,
        version: int | None = None,
        on_free: Callable[[], None] | None = None,
        components: Mapping[str, KeyEntry] | None = None,
        public_key: bytes | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.permissions = permissions
        self.export_uids = export_uids
        """uids that may export this material: the intersection of the export allow-lists of
        every slot it has been in since it was created or imported (None: it has been in none;
        the client that made it may export it if it carries EXPORT)."""
        self.home = home
        self.pkey = pkey
        self.persistence = persistence
        self.compatible = compatible
        self.slot = slot
        self.version = version
        """The slot version this key was loaded from (None: not from a slot)."""
        self.on_free = on_free
        """Called once the last reference is gone and the provider key freed (the service
        destroys a retired or cleared version's backend object then, not before)."""
        self.copies: dict[int, ProviderKey] = {}
        self.components = components
        """A hybrid key split across providers (:mod:`cryptostack_core.server.split`): its
        halves by role (``pq``, ``classical``), each an internal entry never handed to a
        client; ``home``/``pkey`` are then the pq half's provider and a stand-in that no
        provider accepts. None for every other key."""
        self.public_key = public_key
        """A split key's public key in its specification's encoding (None otherwise)."""
        self._refs = 1
        self._lock = threading.Lock()

    @property
    def placement(self) -> KeyPlacement:
        """Facts selection needs (a split key moves only half by half: never whole)."""
        return KeyPlacement(
            self.algorithm,
            self.home.id,
            self.compatible,
            self.components is None and bool(getattr(self.pkey, "extractable", False)),
        )

    def component_info(self) -> list[dict[str, Any]]:
        """A split key's halves for the wire: role, provider, algorithm (empty otherwise)."""
        return [
            {"role": role, "provider": half.home.id, "algorithm": half.algorithm}
            for role, half in (self.components or {}).items()
        ]

    @property
    def has_private(self) -> bool:
        """False for a public key alone."""
        return bool(getattr(self.pkey, "has_private", True))

    def retain(self) -> KeyEntry:
        """Take another reference."""
        with self._lock:
            if self._refs <= 0:
                raise CryptoError(ErrorCode.RESOURCE_NOT_FOUND, "key was released")
            self._refs += 1
        return self

    def release(self) -> None:
        """Drop a reference; the last one frees the key in its provider(s)."""
        with self._lock:
            self._refs -= 1
            if self._refs != 0:
                return
            copies = list(self.copies.items())
            self.copies.clear()
        for _pid, pkey in copies:
            _quiet_release(None, pkey)
        if self.components is not None:  # a split key: each half frees its own
            for half in self.components.values():
                half.release()
        else:
            _quiet_release(self.home, self.pkey)
        if self.on_free is not None:
            try:
                self.on_free()
            except Exception:  # noqa: BLE001 - logged by the callback's owner
                pass


def _quiet_release(provider: LoadedProvider | None, pkey: ProviderKey) -> None:
    # A copy's provider is looked up lazily by the service; releasing is best effort: a
    # provider that fails to free a transient key must not break the client's close().
    try:
        if provider is not None and provider.instance is not None:
            provider.instance.release_key(pkey)
        else:
            owner = getattr(pkey, "_cryptostack_owner", None)
            if owner is not None:
                owner.release_key(pkey)
    except Exception:  # noqa: BLE001
        pass


@dataclass
class SlotRef:
    """A resolved name: key slot, certificate slot or trust store."""

    type: ResourceType
    name: str


@dataclass
class BlobResource:
    """An ephemeral certificate, CRL or trust store held for a client."""

    type: ResourceType
    payload: Any
    label: str = ""


@dataclass
class Handle:
    """One entry in a session's table."""

    kind: str  # "slot", "key", "blob", "context"
    obj: Any
    resource_type: ResourceType | None = None
    persistence: ResourcePersistence = ResourcePersistence.EPHEMERAL


@dataclass
class Session:
    """One connected client."""

    id: int
    peer: PeerIdentity
    max_contexts: int
    max_resources: int
    handles: dict[int, Handle] = field(default_factory=dict)
    names: dict[tuple[ResourceType, str], int] = field(default_factory=dict)
    closed: bool = False
    shm: Any = None  # shm.DaemonRegion once the client attached one
    memory: Account = field(default_factory=UNLIMITED.account)
    """This client's share of the daemon's memory budget."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def counts(self) -> dict[str, int]:
        """Open contexts and resources (what ``status`` reports)."""
        with self.lock:
            contexts = sum(1 for h in self.handles.values() if h.kind == "context")
            return {
                "contexts": contexts,
                "resources": len(self.handles) - contexts,
                "guards": sum(1 for h in self.handles.values() if h.kind in ("key", "blob")),
            }

    def add(self, handle: Handle) -> int:
        """Register an object; RESOURCE_EXHAUSTED past the per-client limits."""
        with self.lock:
            if self.closed:
                raise CryptoError(ErrorCode.CONNECTION_FAILED, "session is closed")
            counts = self.counts()
            if handle.kind == "context" and counts["contexts"] >= self.max_contexts:
                raise CryptoError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"too many open contexts (limit {self.max_contexts}); close some first",
                )
            if handle.kind != "context" and counts["resources"] >= self.max_resources:
                raise CryptoError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"too many open resources (limit {self.max_resources}); release some first",
                )
            number = next(self._counter)
            self.handles[number] = handle
            return number

    def resolve_name(self, rtype: ResourceType, name: str) -> int:
        """Handle for a named slot/trust store, reusing an earlier one."""
        with self.lock:
            existing = self.names.get((rtype, name))
            if existing is not None and existing in self.handles:
                return existing
            number = self.add(Handle("slot", SlotRef(rtype, name), rtype, ResourcePersistence.PERSISTENT))
            self.names[(rtype, name)] = number
            return number

    def get(self, rid: CryptoResourceId) -> Handle:
        """Look up a resource; unknown or mismatched ids are RESOURCE_NOT_FOUND."""
        handle = self.handles.get(rid.handle)  # one dict read: atomic, no lock needed
        if handle is None or handle.kind == "context" or handle.resource_type is not rid.type:
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"no {rid.type.value} resource #{rid.handle} on this connection "
                "(released, or never created here)",
            )
        return handle

    def context(self, number: object) -> Any:
        """Look up a context by its handle number."""
        if type(number) is not int:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"'ctx' must be an integer, got {number!r}")
        handle = self.handles.get(number)  # one dict read: atomic, no lock needed
        if handle is None or handle.kind != "context":
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"no context #{number} on this connection (closed, or never created)",
            )
        return handle.obj

    def pop(self, number: int) -> Handle | None:
        """Remove an entry and return it."""
        with self.lock:
            handle = self.handles.pop(number, None)
            if handle is not None and handle.kind == "slot":
                self.names.pop((handle.obj.type, handle.obj.name), None)
            return handle

    def close(self, release: Callable[[Handle], None]) -> None:
        """Release everything the client held."""
        with self.lock:
            self.closed = True
            handles = list(self.handles.values())
            self.handles.clear()
            self.names.clear()
            region, self.shm = self.shm, None
        for handle in handles:
            release(handle)
        if region is not None:
            region.close()
