"""Symmetric cipher contexts (block modes and AEAD), blocking and asyncio."""

from __future__ import annotations

from typing import Self

from cryptostack_core.client.arguments import bytes_arg, enum_arg, int_arg
from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    AsyncStreamContext,
    BytesLike,
    ContextConfig,
    ContextParent,
    KeySetting,
    ResourceLike,
    StreamContext,
    StreamCore,
    byte_view,
    wire_rid,
)
from cryptostack_core.client.plans import Plan
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmKind
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CipherDirection


class CipherContextConfig(AlgorithmSetting, KeySetting, ContextConfig):
    """Settings for :meth:`CryptoContext.create_cipher_context`: algorithm (``"AES-256-GCM"``
    ...), key, direction, AEAD tag length."""

    def __init__(self) -> None:
        super().__init__()
        self.algorithm: str | None = None
        self.key: ResourceLike | None = None
        self.direction: CipherDirection | None = None
        self.tag_length: int | None = None

    def set_direction(self, direction: CipherDirection) -> Self:
        """Encrypt or decrypt."""
        self.direction = enum_arg(direction, CipherDirection, "direction")
        return self

    def set_tag_length(self, length: int) -> Self:
        """AEAD tag length in bytes (default 16)."""
        self.tag_length = int_arg(length, "length")
        return self


class CipherCore(StreamCore):
    """The cipher context's plans, shared by :class:`CipherContext` and
    :class:`AsyncCipherContext`."""

    _family = "cipher"
    algorithm: str
    provider: int
    direction: CipherDirection

    def _p_create(self, config: CipherContextConfig) -> Plan[None]:
        if config.algorithm is None or config.key is None or config.direction is None:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                "CipherContextConfig needs set_algorithm(), set_key() and set_direction()",
            )
        algorithm = yield from self._channel._p_canonical(config.algorithm)
        info = yield from self._call(
            "cipher.create",
            {
                "algorithm": algorithm,
                "key": wire_rid(config.key, "key"),
                "direction": config.direction.value,
                "tag_length": config.tag_length,
                "provider": config.provider,
            },
        )
        self._handle = info["ctx"]
        self.algorithm = info["algorithm"]
        self.provider = info["provider"]
        self.direction = config.direction
        spec = REGISTRY.find(self.algorithm)
        self._aead = spec is not None and spec.kind is AlgorithmKind.AEAD
        self._tag_length = (
            config.tag_length if config.tag_length is not None else (spec.tag_size if spec is not None else 0)
        )
        self._message_size = 0

    def _init(self, iv: BytesLike) -> None:
        self._start({"iv": bytes_arg(iv, "iv")})
        self._message_size = 0

    def _reset(self) -> None:
        super()._reset()
        self._message_size = 0

    def _check_aead_limit(self, size: int) -> None:
        """RESOURCE_EXHAUSTED before sending, when the AEAD message would outgrow what the
        daemon can decrypt (ciphertext and tag held at once); the message is discarded."""
        limit = self._channel.limit("max_buffered_message")
        if not self._aead or limit is None:
            return
        encrypting = self.direction is CipherDirection.ENCRYPT
        size += self._message_size
        if size + (self._tag_length if encrypting else 0) > limit:
            self._reset()
            raise CryptoError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"refusing to {'encrypt' if encrypting else 'decrypt'} an "
                f"{self.algorithm} message of more than {limit} bytes with its "
                "tag: the daemon decrypts an AEAD message whole and holds at most "
                "that much (max_buffered_message); use a streaming AEAD such as "
                "AES-256-GCM-HKDF-1MB for large data. The message was discarded",
            )
        self._message_size = size

    def _p_update_aad(self, aad: BytesLike) -> Plan[None]:
        view = byte_view(aad, "aad")
        self._need_active("update_aad")
        if len(view) <= self._channel.max_chunk:
            self._defer("cipher.update_aad", {"ctx": self._handle, "data": bytes(view)})
            return
        yield from self._send_data(
            "cipher.update_aad", view, lambda piece: {"ctx": self._handle, "data": piece}
        )

    def _p_update(self, data: BytesLike) -> Plan[bytes]:
        view = byte_view(data)
        self._need_active("update")
        self._check_aead_limit(len(view))
        outputs = yield from self._send_data(
            "cipher.update", view, lambda piece: {"ctx": self._handle, "data": piece}
        )
        return outputs[0] if len(outputs) == 1 else b"".join(outputs)

    def _p_finalize(self) -> Plan[bytes]:
        out: bytes = yield from self._p_finish({})
        return out

    def _p_message(
        self, direction: CipherDirection, iv: BytesLike, data: BytesLike, aad: BytesLike | None
    ) -> Plan[bytes]:
        """A whole message: one request when it fits in one, else init/update/finalize."""
        what = "encrypt" if direction is CipherDirection.ENCRYPT else "decrypt"
        iv_bytes = bytes_arg(iv, "iv")
        view = byte_view(data)
        aad_view = byte_view(aad, "aad") if aad is not None else None
        if self.direction is not direction:
            raise CryptoError(
                ErrorCode.INVALID_STATE,
                f"{what}() on a context created for "
                f"{self.direction.value.lower()}ion; create one with "
                f"set_direction(CipherDirection.{direction.value})",
            )
        if aad_view is not None and len(aad_view) and not self._aead:
            raise CryptoError(
                ErrorCode.INVALID_STATE, f"{self.algorithm} is not an AEAD; it takes no associated data"
            )
        self._need_idle(what)
        self._message_size = 0
        self._check_aead_limit(len(view))
        size = len(view) + (len(aad_view) if aad_view is not None else 0)
        args: dict[str, object] = {"iv": iv_bytes, "data": data if type(data) is bytes else view}
        if aad_view is not None and len(aad_view):
            args["aad"] = bytes(aad_view)
        whole = self._p_whole("cipher.single_shot", what, args, size)
        if whole is not None:
            out: bytes = yield from whole
            return out
        self._init(iv_bytes)
        if aad_view is not None and len(aad_view):
            yield from self._p_update_aad(aad_view)
        first = yield from self._p_update(view)
        last = yield from self._p_finalize()
        return first + last


class CipherContext(CipherCore, StreamContext):
    """Encrypt or decrypt one message at a time.

    AEAD: encryption yields ciphertext followed by the tag; decryption takes ciphertext
    followed by the tag and returns no plaintext until ``finalize`` has verified the tag
    (``AUTHENTICATION_FAILED`` otherwise). Decryption holds the whole message in the daemon,
    so both directions are bounded by the daemon's ``max_buffered_message``: encryption
    refuses up front a message that decryption could not take. For larger data use a
    streaming AEAD (:class:`StreamingAeadContext`).

    ``update`` takes buffers of any size: the client sends them in pieces. ``encrypt`` and
    ``decrypt`` do a whole message in one round trip.
    """

    def __init__(self, parent: ContextParent, config: CipherContextConfig) -> None:
        super().__init__(parent, config)
        self._run(self._p_create(config))

    def init(self, iv: BytesLike = b"") -> None:
        """Start a message with this IV/nonce (sent with the next call)."""
        self._init(iv)

    def update_aad(self, aad: BytesLike) -> None:
        """Associated data (AEAD; after init, before update)."""
        self._run(self._p_update_aad(aad))

    def update(self, data: BytesLike) -> bytes:
        """Process data of any size; returns the output ready so far."""
        return self._run(self._p_update(data))

    def finalize(self) -> bytes:
        """Finish the message (padding, tag check) and return the rest of the output."""
        return self._run(self._p_finalize())

    def encrypt(self, iv: BytesLike, data: BytesLike, aad: BytesLike | None = None) -> bytes:
        """A whole message: ``init(iv)``, ``update_aad(aad)``, ``update(data)`` and
        ``finalize()`` in one round trip (AEAD: ciphertext followed by the tag). The context
        must have been created for encryption."""
        return self._run(self._p_message(CipherDirection.ENCRYPT, iv, data, aad))

    def decrypt(self, iv: BytesLike, data: BytesLike, aad: BytesLike | None = None) -> bytes:
        """A whole message decrypted in one round trip (AEAD: ``data`` is ciphertext followed
        by the tag; a bad tag raises ``AUTHENTICATION_FAILED`` and returns nothing)."""
        return self._run(self._p_message(CipherDirection.DECRYPT, iv, data, aad))


class AsyncCipherContext(CipherCore, AsyncStreamContext):
    """:class:`CipherContext` for asyncio stacks (the same calls, awaited)."""

    async def init(self, iv: BytesLike = b"") -> None:
        """Start a message with this IV/nonce (sent with the next call)."""
        self._init(iv)

    async def update_aad(self, aad: BytesLike) -> None:
        """Associated data (AEAD; after init, before update)."""
        await self._run(self._p_update_aad(aad))

    async def update(self, data: BytesLike) -> bytes:
        """Process data of any size; returns the output ready so far."""
        return await self._run(self._p_update(data))

    async def finalize(self) -> bytes:
        """Finish the message (padding, tag check) and return the rest of the output."""
        return await self._run(self._p_finalize())

    async def encrypt(self, iv: BytesLike, data: BytesLike, aad: BytesLike | None = None) -> bytes:
        """A whole message encrypted in one round trip (see :meth:`CipherContext.encrypt`)."""
        return await self._run(self._p_message(CipherDirection.ENCRYPT, iv, data, aad))

    async def decrypt(self, iv: BytesLike, data: BytesLike, aad: BytesLike | None = None) -> bytes:
        """A whole message decrypted in one round trip (see :meth:`CipherContext.decrypt`)."""
        return await self._run(self._p_message(CipherDirection.DECRYPT, iv, data, aad))
