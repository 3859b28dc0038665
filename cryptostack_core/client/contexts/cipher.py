"""Symmetric cipher contexts (block modes and AEAD)."""

from __future__ import annotations

from typing import Self

from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    ContextConfig,
    ContextParent,
    KeySetting,
    ResourceLike,
    StreamContext,
    wire_rid,
)
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
        self.direction = CipherDirection(direction)
        return self

    def set_tag_length(self, length: int) -> Self:
        """AEAD tag length in bytes (default 16)."""
        self.tag_length = int(length)
        return self


class CipherContext(StreamContext):
    """Encrypt or decrypt one message at a time.

    AEAD: encryption yields ciphertext followed by the tag; decryption takes ciphertext
    followed by the tag and returns no plaintext until ``finalize`` has verified the tag
    (``AUTHENTICATION_FAILED`` otherwise).
    """

    _family = "cipher"

    def __init__(self, parent: ContextParent, config: CipherContextConfig) -> None:
        super().__init__(parent, config)
        if config.algorithm is None or config.key is None or config.direction is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              "CipherContextConfig needs set_algorithm(), set_key() and "
                              "set_direction()")
        info = self._call("cipher.create", {
            "algorithm": config.algorithm, "key": wire_rid(config.key, "key"),
            "direction": config.direction.value, "tag_length": config.tag_length,
            "provider": config.provider})
        self._handle = info["ctx"]
        self.algorithm: str = info["algorithm"]
        self.provider: int = info["provider"]
        self.direction = config.direction

    def init(self, iv: bytes | bytearray | memoryview = b"") -> None:
        """Start a message with this IV/nonce (sent with the next call)."""
        self._start({"iv": bytes(iv)})

    def update_aad(self, aad: bytes | bytearray | memoryview) -> None:
        """Associated data (AEAD; after init, before update)."""
        self._need_active("update_aad")
        self._defer("cipher.update_aad", {"ctx": self._handle, "data": bytes(aad)})

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Process data; returns the output ready so far."""
        self._need_active("update")
        out: bytes = self._call("cipher.update", {"ctx": self._handle, "data": bytes(data)})
        return out

    def finalize(self) -> bytes:
        """Finish the message (padding, tag check) and return the rest of the output."""
        out: bytes = self._finish({})
        return out
