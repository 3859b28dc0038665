"""Symmetric cipher contexts (block modes and AEAD)."""

from __future__ import annotations

from typing import Self

from cryptostack_core.client.arguments import bytes_arg, enum_arg, int_arg
from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    BytesLike,
    ContextConfig,
    ContextParent,
    KeySetting,
    ResourceLike,
    StreamContext,
    byte_view,
    wire_rid,
)
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


class CipherContext(StreamContext):
    """Encrypt or decrypt one message at a time.

    AEAD: encryption yields ciphertext followed by the tag; decryption takes ciphertext
    followed by the tag and returns no plaintext until ``finalize`` has verified the tag
    (``AUTHENTICATION_FAILED`` otherwise). Decryption holds the whole message in the daemon,
    so both directions are bounded by the daemon's ``max_buffered_message``: encryption
    refuses up front a message that decryption could not take. For larger data use a
    streaming AEAD (:class:`StreamingAeadContext`).

    ``update`` takes buffers of any size: the client sends them in pieces.
    """

    _family = "cipher"

    def __init__(self, parent: ContextParent, config: CipherContextConfig) -> None:
        super().__init__(parent, config)
        if config.algorithm is None or config.key is None or config.direction is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              "CipherContextConfig needs set_algorithm(), set_key() and "
                              "set_direction()")
        info = self._call("cipher.create", {
            "algorithm": self._channel.canonical_algorithm(config.algorithm),
            "key": wire_rid(config.key, "key"),
            "direction": config.direction.value, "tag_length": config.tag_length,
            "provider": config.provider})
        self._handle = info["ctx"]
        self.algorithm: str = info["algorithm"]
        self.provider: int = info["provider"]
        self.direction = config.direction
        spec = REGISTRY.find(self.algorithm)
        self._aead = spec is not None and spec.kind is AlgorithmKind.AEAD
        self._tag_length = config.tag_length if config.tag_length is not None else (
            spec.tag_size if spec is not None else 0)
        self._message_size = 0

    def init(self, iv: bytes | bytearray | memoryview = b"") -> None:
        """Start a message with this IV/nonce (sent with the next call)."""
        self._start({"iv": bytes_arg(iv, "iv")})
        self._message_size = 0

    def reset(self) -> None:
        """Discard any partial message; the context can be reused (no round trip now)."""
        super().reset()
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
            self.reset()
            raise CryptoError(ErrorCode.RESOURCE_EXHAUSTED,
                              f"refusing to {'encrypt' if encrypting else 'decrypt'} an "
                              f"{self.algorithm} message of more than {limit} bytes with its "
                              "tag: the daemon decrypts an AEAD message whole and holds at most "
                              "that much (max_buffered_message); use a streaming AEAD such as "
                              "AES-256-GCM-HKDF-1MB for large data. The message was discarded")
        self._message_size = size

    def update_aad(self, aad: bytes | bytearray | memoryview) -> None:
        """Associated data (AEAD; after init, before update)."""
        view = byte_view(aad, "aad")
        self._need_active("update_aad")
        if len(view) <= self._channel.max_chunk:
            self._defer("cipher.update_aad", {"ctx": self._handle, "data": bytes(view)})
            return
        self._send_data("cipher.update_aad", view,
                        lambda piece: {"ctx": self._handle, "data": piece})

    def update(self, data: BytesLike) -> bytes:
        """Process data of any size; returns the output ready so far."""
        view = byte_view(data)
        self._need_active("update")
        self._check_aead_limit(len(view))
        outputs = self._send_data("cipher.update", view,
                                  lambda piece: {"ctx": self._handle, "data": piece})
        return outputs[0] if len(outputs) == 1 else b"".join(outputs)

    def finalize(self) -> bytes:
        """Finish the message (padding, tag check) and return the rest of the output."""
        out: bytes = self._finish({})
        return out
