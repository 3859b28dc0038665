"""Streaming AEAD contexts: authenticated encryption of data of any size, segment by segment.

The key never leaves the daemon; the daemon seals or opens the stream segment by segment
(Tink's AES-GCM-HKDF streaming format, docs/streaming-aead.md) and holds at most one
segment, so a file of any size goes through in bounded memory on both sides.
"""

from __future__ import annotations

from typing import IO, Self

from cryptostack_core.client.arguments import enum_arg, wrong_type
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
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CipherDirection

READ_SIZE = 4 * 1024 * 1024
"""Bytes :meth:`StreamingAeadContext.process_stream` reads at a time."""


class StreamingAeadContextConfig(AlgorithmSetting, KeySetting, ContextConfig):
    """Settings for :meth:`CryptoContext.create_streaming_aead_context`: the algorithm
    (``"AES-256-GCM-HKDF-1MB"``, ``"AES-128-GCM-HKDF-4KB"`` ...), an AES key of the matching
    size, and the direction."""

    def __init__(self) -> None:
        super().__init__()
        self.algorithm: str | None = None
        self.key: ResourceLike | None = None
        self.direction: CipherDirection | None = None

    def set_direction(self, direction: CipherDirection) -> Self:
        """Encrypt or decrypt."""
        self.direction = enum_arg(direction, CipherDirection, "direction")
        return self


class StreamingAeadContext(StreamContext):
    """Seal or open one stream at a time: ``init(associated_data)``, ``update`` (any size;
    returns the segments completed so far), ``finalize`` (the final segment).

    Decryption returns a segment's plaintext only after its tag verified, but a stream is
    complete only when ``finalize`` succeeds: a truncated or altered stream fails there (or
    earlier) with ``AUTHENTICATION_FAILED``, and whatever was already returned must then be
    discarded. :meth:`process_stream` does a whole file object.
    """

    _family = "streaming_aead"

    def __init__(self, parent: ContextParent, config: StreamingAeadContextConfig) -> None:
        super().__init__(parent, config)
        if config.algorithm is None or config.key is None or config.direction is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              "StreamingAeadContextConfig needs set_algorithm(), set_key() and "
                              "set_direction()")
        info = self._call("streaming_aead.create", {
            "algorithm": config.algorithm, "key": wire_rid(config.key, "key"),
            "direction": config.direction.value, "provider": config.provider})
        self._handle = info["ctx"]
        self.algorithm: str = info["algorithm"]
        self.provider: int = info["provider"]
        self.direction = config.direction
        self.segment_size: int = info["segment_size"]
        self.header_size: int = info["header_size"]

    def init(self, associated_data: BytesLike = b"") -> None:
        """Start a stream bound to ``associated_data`` (sent with the next call)."""
        self._start({"aad": bytes(byte_view(associated_data, "associated_data"))})

    def update(self, data: BytesLike) -> bytes:
        """Feed data of any size; returns the output of the segments completed so far."""
        view = byte_view(data)
        self._need_active("update")
        outputs = self._send_data("streaming_aead.update", view,
                                  lambda piece: {"ctx": self._handle, "data": piece})
        return outputs[0] if len(outputs) == 1 else b"".join(outputs)

    def finalize(self) -> bytes:
        """The final segment: its ciphertext, or its plaintext once verified."""
        out: bytes = self._finish({})
        return out

    def process_stream(self, source: IO[bytes], sink: IO[bytes],
                       associated_data: BytesLike = b"") -> int:
        """Encrypt or decrypt everything ``source`` yields into ``sink``; returns the bytes
        written. On ``AUTHENTICATION_FAILED`` the bytes already written to ``sink`` belong to
        a stream that turned out altered or incomplete: discard them."""
        if not callable(getattr(source, "read", None)):
            raise wrong_type("source", "a binary file object (with read())", source)
        if not callable(getattr(sink, "write", None)):
            raise wrong_type("sink", "a binary file object (with write())", sink)
        self.init(associated_data)
        written = 0
        while True:
            block = source.read(READ_SIZE)
            if not block:
                break
            out = self.update(block)
            sink.write(out)
            written += len(out)
        out = self.finalize()
        sink.write(out)
        return written + len(out)
