"""Resource guards: the client's handle on a key, certificate, CRL or trust store that lives
in the daemon, and the key slot's metadata object."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping
from typing import Any, Self

from cryptostack_core.client.channel import AsyncChannel, Channel, ChannelCore
from cryptostack_core.wire.permissions import KeyOperationPermission
from cryptostack_core.wire.protocol import rid_from_wire
from cryptostack_core.wire.resources import (
    CryptoResourceId,
    KeySlotInfo,
    ResourcePersistence,
    ResourceType,
)


class GuardCore:
    """What both kinds of guard share: the id they own, its metadata, the finalizer that
    queues the release of a guard dropped unreleased."""

    def __init__(
        self,
        channel: ChannelCore,
        rid: CryptoResourceId,
        persistence: ResourcePersistence,
        permitted: KeyOperationPermission,
        algorithm: str | None = None,
        provider: int | None = None,
    ) -> None:
        self._channel = channel
        self._rid = rid
        self._persistence = persistence
        self._permitted = permitted
        self.algorithm = algorithm
        self.provider = provider
        self.components: list[dict[str, Any]] = []
        """A hybrid key split across providers: each half's ``role``, ``provider`` and
        ``algorithm`` (``provider`` is then the pq half's); empty otherwise."""
        self.version: int | None = None
        """The key slot version a loaded key comes from (None: not from a slot)."""
        self._released = False
        self._finalizer = weakref.finalize(self, _release_dropped, channel, rid, algorithm)
        self._finalizer.atexit = False

    @classmethod
    def _from_wire(cls, channel: Any, info: Mapping[str, Any]) -> Self:
        guard = cls(
            channel,
            rid_from_wire(info["id"], info.get("label")),
            ResourcePersistence(info.get("persistence", "EPHEMERAL")),
            KeyOperationPermission(info.get("permissions") or 0),
            info.get("algorithm"),
            info.get("provider"),
        )
        guard.components = [dict(c) for c in info.get("components") or ()]
        version = info.get("version")
        guard.version = version if isinstance(version, int) else None
        return guard

    @property
    def resource_id(self) -> CryptoResourceId:
        """The id this guard owns."""
        return self._rid

    @property
    def type(self) -> ResourceType:
        """Resource type (KEY, CERTIFICATE, CRL, VERIFICATION_TRUST_STORE)."""
        return self._rid.type

    @property
    def persistence(self) -> ResourcePersistence:
        """EPHEMERAL or PERSISTENT (loaded from a slot)."""
        return self._persistence

    @property
    def permitted_operations(self) -> KeyOperationPermission:
        """What the key may be used for."""
        return self._permitted

    @property
    def released(self) -> bool:
        """True once released."""
        return self._released

    def _releasing(self) -> bool:
        """Mark released; True if it was not yet (the caller then frees it in the daemon)."""
        if self._released:
            return False
        self._released = True
        self._finalizer.detach()
        return True

    def __repr__(self) -> str:
        state = "released" if self._released else self._persistence.value.lower()
        return f"<{type(self).__name__} {self._rid!r} {self.algorithm or ''} {state}>"


class CryptoResourceGuard(GuardCore):
    """Owns a daemon-side resource (key, certificate, CRL, trust store) until released.

    Accepted everywhere a :class:`CryptoResourceId` is. ``release()`` is idempotent; a guard
    that becomes unreachable unreleased is released with the stack's next request, with a
    ``ResourceWarning`` (like an unclosed file).
    """

    _channel: Channel

    def release(self) -> None:
        """Free the resource in the daemon; harmless if already released."""
        if self._releasing():
            self._channel.release(self._rid)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class AsyncCryptoResourceGuard(GuardCore):
    """:class:`CryptoResourceGuard` of an asyncio stack (``await release()``,
    ``async with``)."""

    _channel: AsyncChannel

    async def release(self) -> None:
        """Free the resource in the daemon; harmless if already released."""
        if self._releasing():
            await self._channel.release(self._rid)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


def _release_dropped(channel: ChannelCore, rid: CryptoResourceId, algorithm: str | None) -> None:
    """Finalizer of an unreleased guard: queue its release (no I/O here) and warn."""
    if channel.closed:
        return  # disconnecting freed it
    channel.queue_release(rid)
    warnings.warn(
        f"cryptostack: {rid.type.value} guard #{rid.handle} ({algorithm or 'no algorithm'})"
        " was never released; it is released with the stack's next request (use "
        "'with' or release())",
        ResourceWarning,
        stacklevel=2,
    )


class KeySlotObject:
    """A key slot's stored metadata, as the design's ``GetKeySlotObject``."""

    def __init__(self, info: KeySlotInfo) -> None:
        self.info = info

    def get_permitted_operations(self) -> KeyOperationPermission:
        """Permissions of the key in the slot (or declared for an empty slot)."""
        return KeyOperationPermission(self.info.permissions)

    @property
    def algorithm(self) -> str | None:
        """Key algorithm."""
        return self.info.algorithm
