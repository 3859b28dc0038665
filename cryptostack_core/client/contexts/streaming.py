"""Streaming AEAD contexts: authenticated encryption of data of any size, segment by segment.

The key never leaves the daemon; the daemon seals or opens the stream segment by segment
(Tink's AES-GCM-HKDF streaming format, docs/streaming-aead.md) and holds at most one
segment, so a file of any size goes through in bounded memory on both sides.
"""

from __future__ import annotations

from typing import IO, Self

from cryptostack_core.client.arguments import bytes_arg, enum_arg, wrong_type
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


class StreamingAeadCore(StreamCore):
    """The streaming AEAD plans (blocking and asyncio)."""

    _family = "streaming_aead"
    algorithm: str
    provider: int
    direction: CipherDirection
    segment_size: int
    header_size: int

    def _p_create(self, config: StreamingAeadContextConfig) -> Plan[None]:
        if config.algorithm is None or config.key is None or config.direction is None:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                "StreamingAeadContextConfig needs set_algorithm(), set_key() and set_direction()",
            )
        algorithm = yield from self._channel._p_canonical(config.algorithm)
        info = yield from self._call(
            "streaming_aead.create",
            {
                "algorithm": algorithm,
                "key": wire_rid(config.key, "key"),
                "direction": config.direction.value,
                "provider": config.provider,
            },
        )
        self._handle = info["ctx"]
        self.algorithm = info["algorithm"]
        self.provider = info["provider"]
        self.direction = config.direction
        self.segment_size = info["segment_size"]
        self.header_size = info["header_size"]

    def _init(self, associated_data: BytesLike) -> None:
        self._start({"aad": bytes_arg(associated_data, "associated_data")})

    def _p_update(self, data: BytesLike) -> Plan[bytes]:
        view = byte_view(data)
        self._need_active("update")
        outputs = yield from self._send_data(
            "streaming_aead.update", view, lambda piece: {"ctx": self._handle, "data": piece}
        )
        return outputs[0] if len(outputs) == 1 else b"".join(outputs)

    def _p_finalize(self) -> Plan[bytes]:
        out: bytes = yield from self._p_finish({})
        return out


class StreamingAeadContext(StreamingAeadCore, StreamContext):
    """Seal or open one stream at a time: ``init(associated_data)``, ``update`` (any size;
    returns the segments completed so far), ``finalize`` (the final segment).

    Decryption returns a segment's plaintext only after its tag verified, but a stream is
    complete only when ``finalize`` succeeds: a truncated or altered stream fails there (or
    earlier) with ``AUTHENTICATION_FAILED``, and whatever was already returned must then be
    discarded. :meth:`process_stream` does a whole file object.
    """

    def __init__(self, parent: ContextParent, config: StreamingAeadContextConfig) -> None:
        super().__init__(parent, config)
        self._run(self._p_create(config))

    def init(self, associated_data: BytesLike = b"") -> None:
        """Start a stream bound to ``associated_data`` (sent with the next call)."""
        self._init(associated_data)

    def update(self, data: BytesLike) -> bytes:
        """Feed data of any size; returns the output of the segments completed so far."""
        return self._run(self._p_update(data))

    def finalize(self) -> bytes:
        """The final segment: its ciphertext, or its plaintext once verified."""
        return self._run(self._p_finalize())

    def process_stream(self, source: IO[bytes], sink: IO[bytes], associated_data: BytesLike = b"") -> int:
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


class AsyncStreamingAeadContext(StreamingAeadCore, AsyncStreamContext):
    """:class:`StreamingAeadContext` for asyncio stacks (the same calls, awaited)."""

    async def init(self, associated_data: BytesLike = b"") -> None:
        """Start a stream bound to ``associated_data`` (sent with the next call)."""
        self._init(associated_data)

    async def update(self, data: BytesLike) -> bytes:
        """Feed data of any size; returns the output of the segments completed so far."""
        return await self._run(self._p_update(data))

    async def finalize(self) -> bytes:
        """The final segment: its ciphertext, or its plaintext once verified."""
        return await self._run(self._p_finalize())
