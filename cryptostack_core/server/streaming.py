"""Streaming AEAD in the daemon: segments in, segments out, over a key that never leaves it.

The construction and byte format are Tink's AES-GCM-HKDF streaming AEAD
(docs/streaming-aead.md), so a stream sealed here opens with Tink and the other way round:

    header   = header_size (1 byte) || salt (key_size bytes) || nonce_prefix (7 bytes)
    key      = HKDF-SHA-256(ikm = the context's key, salt, info = associated data)
    segment i = AES-GCM(key, nonce_prefix || i (4 bytes, big-endian) || last (1 byte),
                        plaintext_i, no associated data) = ciphertext_i || tag_i (16 bytes)
    stream   = header || segment 0 || segment 1 || ... (only the final segment has last = 1)

Ciphertext segments are ``segment_size`` bytes (the first one ``segment_size -
header_size``), the final one may be shorter. Decryption releases a segment's plaintext only
after its tag verified; the segment number and the ``last`` flag in the nonce make
reordering, truncation and extension fail authentication. A segment is held back until a
later byte shows it is not the final one, so the daemon holds at most one segment per
context besides the data of the current request: memory is bounded whatever the stream's
length (at most 2^32 segments).

Only the primitives come from the provider (``derive`` with HKDF-SHA-256, ``create_cipher``
with AES-GCM): the per-message key is derived inside the provider holding the key, and
every provider with those two primitives serves streaming AEAD.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cryptostack_core.sdk.provider import Buffer, Provider, ProviderKey
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.server.session import KeyEntry
from cryptostack_core.server.states import StreamContextState
from cryptostack_core.wire.algorithms import AlgorithmSpec
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.resources import CipherDirection

NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
MAX_SEGMENTS = 2**32


@dataclass(frozen=True)
class StreamFormat:
    """The sizes and primitives of one streaming AEAD algorithm."""

    key_size: int
    segment_size: int
    aead: str
    kdf: str
    key_algorithm: str

    @classmethod
    def of(cls, spec: AlgorithmSpec) -> StreamFormat:
        """The format of a registered streaming AEAD algorithm."""
        extra: dict[str, Any] = spec.extra
        return cls(
            spec.key_size,
            int(extra["segment_size"]),
            str(extra["aead"]),
            str(extra["kdf"]),
            spec.key_algorithms[0],
        )

    @property
    def header_size(self) -> int:
        """Bytes before the first segment: the length byte, the salt and the nonce prefix."""
        return 1 + self.key_size + NONCE_PREFIX_SIZE

    def plaintext_size(self, index: int) -> int:
        """Plaintext bytes of a full segment ``index``."""
        first = self.header_size if index == 0 else 0
        return self.segment_size - TAG_SIZE - first

    def ciphertext_size(self, index: int) -> int:
        """Ciphertext bytes (tag included) of a full segment ``index``."""
        return self.segment_size - (self.header_size if index == 0 else 0)


class _Segments:
    """Common part of both directions: the derived key, nonces, one provider call per
    segment, and the segment held back until the stream shows whether it is the last."""

    def __init__(self, provider: Provider, key: ProviderKey, fmt: StreamFormat, aad: bytes) -> None:
        self.provider = provider
        self.key = key
        self.fmt = fmt
        self.aad = aad
        self.index = 0
        self.held = bytearray()
        self.prefix = b""
        self.derived: ProviderKey | None = None

    def _derive(self, salt: bytes, prefix: bytes) -> None:
        self.prefix = prefix
        self.derived = self.provider.derive(
            self.fmt.kdf,
            self.key,
            length=self.fmt.key_size,
            salt=salt,
            info=self.aad,
            output_algorithm=self.fmt.key_algorithm,
            permissions=P.ENCRYPT | P.DECRYPT,
        )

    def _nonce(self, last: bool) -> bytes:
        if self.index >= MAX_SEGMENTS:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"a stream has at most {MAX_SEGMENTS} segments")
        return self.prefix + self.index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")

    def _segment(self, data: Buffer, last: bool) -> bytes:
        raise NotImplementedError

    def _capacity(self) -> int:
        raise NotImplementedError

    def _feed(self, view: memoryview, out: bytearray) -> None:
        """Process every segment that is complete and known not to be the last one."""
        pos, size = 0, len(view)
        while pos < size:
            room = self._capacity()
            if self.held:
                need = room - len(self.held)
                if size - pos <= need:
                    break
                self.held += view[pos : pos + need]
                pos += need
                out += self._segment(self.held, last=False)
                self.held.clear()
            elif size - pos > room:
                out += self._segment(view[pos : pos + room], last=False)
                pos += room
            else:
                break
        self.held += view[pos:]

    def close(self) -> None:
        """Forget the derived key."""
        derived, self.derived = self.derived, None
        if derived is not None:
            try:
                self.provider.release_key(derived)
            except Exception:  # noqa: BLE001 - releasing is best effort
                pass


class SegmentEncryptor(_Segments):
    """Seals plaintext into header || segments."""

    def __init__(self, provider: Provider, key: ProviderKey, fmt: StreamFormat, aad: bytes) -> None:
        super().__init__(provider, key, fmt, aad)
        salt, prefix = os.urandom(fmt.key_size), os.urandom(NONCE_PREFIX_SIZE)
        self._derive(salt, prefix)
        self.header: bytes | None = bytes([fmt.header_size]) + salt + prefix

    def _capacity(self) -> int:
        return self.fmt.plaintext_size(self.index)

    def _segment(self, data: Buffer, last: bool) -> bytes:
        assert self.derived is not None
        op = self.provider.create_cipher(
            self.fmt.aead, self.derived, CipherDirection.ENCRYPT, self._nonce(last), TAG_SIZE
        )
        sealed = op.update(data) + op.finalize()
        self.index += 1
        return sealed

    def _start_output(self) -> bytearray:
        out = bytearray(self.header or b"")
        self.header = None
        return out

    def update(self, data: Buffer) -> bytearray:
        """Ciphertext of every segment completed by ``data`` (the header first)."""
        out = self._start_output()
        self._feed(memoryview(data), out)
        return out

    def finalize(self) -> bytearray:
        """The final segment (possibly of empty plaintext)."""
        try:
            out = self._start_output()
            out += self._segment(self.held, last=True)
            self.held.clear()
            return out
        finally:
            self.close()


class SegmentDecryptor(_Segments):
    """Opens header || segments, releasing each segment's plaintext once it verified."""

    def __init__(self, provider: Provider, key: ProviderKey, fmt: StreamFormat, aad: bytes) -> None:
        super().__init__(provider, key, fmt, aad)
        self.header = bytearray()

    def _capacity(self) -> int:
        return self.fmt.ciphertext_size(self.index)

    def _segment(self, data: Buffer, last: bool) -> bytes:
        assert self.derived is not None
        if len(data) < TAG_SIZE:
            raise CryptoError(
                ErrorCode.AUTHENTICATION_FAILED,
                f"segment {self.index} is shorter than its tag: the stream was truncated",
            )
        op = self.provider.create_cipher(
            self.fmt.aead, self.derived, CipherDirection.DECRYPT, self._nonce(last), TAG_SIZE
        )
        try:
            opened = op.update(data) + op.finalize()
        except CryptoError as exc:
            if exc.code is not ErrorCode.AUTHENTICATION_FAILED:
                raise
            raise CryptoError(
                ErrorCode.AUTHENTICATION_FAILED,
                f"segment {self.index}{' (the last)' if last else ''} failed "
                "authentication: the stream was altered, reordered, truncated or "
                "extended, or the key or associated data differ",
            ) from None
        self.index += 1
        return opened

    def update(self, data: Buffer) -> bytearray:
        """Plaintext of every segment completed, verified and known not to be the last."""
        view = memoryview(data)
        if self.derived is None:
            need = self.fmt.header_size - len(self.header)
            self.header += view[:need]
            view = view[need:]
            if len(self.header) < self.fmt.header_size:
                return bytearray()
            if self.header[0] != self.fmt.header_size:
                raise CryptoError(
                    ErrorCode.AUTHENTICATION_FAILED,
                    f"not a stream of this algorithm: its header says "
                    f"{self.header[0]} header bytes, expected {self.fmt.header_size}",
                )
            salt = bytes(self.header[1 : 1 + self.fmt.key_size])
            self._derive(salt, bytes(self.header[1 + self.fmt.key_size :]))
        out = bytearray()
        self._feed(view, out)
        return out

    def finalize(self) -> bytearray:
        """The final segment's plaintext, once its tag (with the ``last`` flag) verified."""
        try:
            if self.derived is None:
                raise CryptoError(
                    ErrorCode.AUTHENTICATION_FAILED, "the stream ends inside its header: it was truncated"
                )
            out = bytearray(self._segment(self.held, last=True))
            self.held.clear()
            return out
        finally:
            self.close()


class StreamingAeadState(StreamContextState):
    """A streaming AEAD context: ``init(aad)``, ``update`` -> completed segments,
    ``finalize`` -> the final segment; any number of messages one after the other."""

    kind = "streaming_aead"
    op: _Segments | None

    def __init__(
        self,
        spec: AlgorithmSpec,
        provider: LoadedProvider,
        key: KeyEntry,
        pkey: ProviderKey,
        direction: CipherDirection,
    ) -> None:
        # max_buffered does not apply: a stream never holds more than one segment.
        super().__init__(spec, provider, key, pkey, 0)
        self.direction = direction
        self.format = StreamFormat.of(spec)

    def _start(self, **params: Any) -> _Segments:
        assert self.pkey is not None
        aad = bytes(params.get("aad", b""))
        cls = SegmentEncryptor if self.direction is CipherDirection.ENCRYPT else SegmentDecryptor
        return cls(self.provider, self.pkey, self.format, aad)

    def abort(self) -> None:
        op = self.op
        super().abort()
        if op is not None:
            op.close()

    def reset(self) -> None:
        op = self.op
        super().reset()
        if op is not None:
            op.close()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(segment_size=self.format.segment_size, header_size=self.format.header_size)
        return info
