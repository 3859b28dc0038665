"""Seal and open: authenticated encryption on a key slot that is hard to misuse.

The daemon picks the nonce and records the key version in the output, so the caller
never handles either, and messages sealed before a key rotation open after it (until that
version is retired). The format is in docs/protocol.md ("Sealed messages").
"""

from __future__ import annotations

from typing import Any

from cryptostack_core.client.contexts.base import (
    AsyncOperationContext,
    BytesLike,
    ContextConfig,
    ContextCore,
    ContextParent,
    KeySetting,
    OperationContext,
    byte_view,
    wire_rid,
)
from cryptostack_core.client.plans import Plan
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import ResourceType

SEAL_OVERHEAD = 34
"""Bytes a sealed message adds to its plaintext: an 18-byte header (format, algorithm, key
version, nonce) and a 16-byte tag."""


class SealContextConfig(KeySetting, ContextConfig):
    """Settings for :meth:`CryptoContext.create_seal_context`: the key slot (AES-128/192/256
    or ChaCha20-Poly1305 keys; the AEAD follows from the key)."""

    def __init__(self) -> None:
        super().__init__()
        self.key = None


class SealCore(ContextCore):
    """The seal/open plans (blocking and asyncio); each call is one round trip and holds
    nothing in the daemon between calls."""

    def __init__(self, parent: ContextParent, config: SealContextConfig) -> None:
        super().__init__(parent, config)
        if config.key is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "SealContextConfig needs set_key(slot)")
        rid = getattr(config.key, "resource_id", None)
        if rid is not None and rid.type is not ResourceType.KEY_SLOT:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                f"seal and open take a key slot (the daemon picks the version), not a {rid.type.value}",
            )
        self._key = wire_rid(config.key, "key")

    def _p_close(self) -> Plan[None]:
        """Nothing to free in the daemon; later calls fail."""
        self._closed = True
        return
        yield  # a plan without requests

    def _limit(self, size: int, what: str) -> None:
        limit = self._channel.limit("max_buffered_message")
        if limit is not None and size > limit + SEAL_OVERHEAD:
            raise CryptoError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"{what} of {size} bytes is larger than the daemon's "
                f"max_buffered_message ({limit}); use a streaming AEAD "
                "(create_streaming_aead_context) for large data",
            )

    def _args(self, data: BytesLike, aad: BytesLike, what: str) -> dict[str, Any]:
        view = byte_view(data, what)
        self._limit(len(view), what)
        return {"key": self._key, "data": view, "aad": bytes(byte_view(aad, "aad"))}

    def _p_seal(self, plaintext: BytesLike, aad: BytesLike) -> Plan[bytes]:
        sealed: bytes = yield from self._call("aead.seal", self._args(plaintext, aad, "plaintext"))
        return sealed

    def _p_open(self, sealed: BytesLike, aad: BytesLike) -> Plan[bytes]:
        plaintext: bytes = yield from self._call("aead.open", self._args(sealed, aad, "sealed message"))
        return plaintext


class SealContext(SealCore, OperationContext):
    """``seal(plaintext, aad)`` and ``open(sealed, aad)`` on one key slot; each call is one
    round trip and holds nothing in the daemon between calls."""

    def seal(self, plaintext: BytesLike, aad: BytesLike = b"") -> bytes:
        """Encrypt and authenticate ``plaintext`` (and ``aad``, which is not included in the
        output) under the slot's primary version."""
        return self._run(self._p_seal(plaintext, aad))

    def open(self, sealed: BytesLike, aad: BytesLike = b"") -> bytes:
        """The plaintext of a message :meth:`seal` made under any version of this slot that
        is not retired. ``AUTHENTICATION_FAILED`` for anything altered (or other ``aad``);
        ``KEY_VERSION_RETIRED`` when its version was retired or is below the minimum."""
        return self._run(self._p_open(sealed, aad))


class AsyncSealContext(SealCore, AsyncOperationContext):
    """The asyncio twin of :class:`SealContext`."""

    async def seal(self, plaintext: BytesLike, aad: BytesLike = b"") -> bytes:
        """See :meth:`SealContext.seal`."""
        return await self._run(self._p_seal(plaintext, aad))

    async def open(self, sealed: BytesLike, aad: BytesLike = b"") -> bytes:
        """See :meth:`SealContext.open`."""
        return await self._run(self._p_open(sealed, aad))
