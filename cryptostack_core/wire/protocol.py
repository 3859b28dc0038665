"""The wire protocol: length-prefixed CBOR frames (see docs/protocol.md).

A frame is a 4-byte big-endian unsigned length followed by that many bytes of one CBOR
data item (a map). The first frame each way is a hello; then the client sends requests
``{"id", "op", "args", "timeout_ms"}`` and the daemon answers each with
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"code", "message"}}``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from cryptostack_core.wire import cbor_subset
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CryptoResourceId, ResourceType

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
MAX_FRAME_LIMIT = 0xFFFFFFFF


class FrameTooLarge(CryptoError):
    """A peer announced a frame above the negotiated maximum."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            ErrorCode.PROTOCOL_ERROR, f"frame of {size} bytes exceeds the maximum of {limit} bytes"
        )


def encode(message: Mapping[str, Any]) -> bytes:
    """One complete frame (header and CBOR body) for ``message``."""
    body = cbor2.dumps(message)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes | memoryview) -> dict[str, Any]:
    """Decode one frame body from an untrusted peer; anything outside the CBOR subset of
    :mod:`.cbor_subset` (checked before decoding) or not a map is a PROTOCOL_ERROR."""
    try:
        message = cbor_subset.loads(body)
    except cbor_subset.SubsetError as exc:
        raise CryptoError(ErrorCode.PROTOCOL_ERROR, str(exc)) from None
    if not isinstance(message, dict):
        raise CryptoError(ErrorCode.PROTOCOL_ERROR, "a frame must hold a CBOR map")
    return message


class BodyDecoder:
    """:func:`decode_body` for one connection, reusing its CBOR decoders (not thread-safe)."""

    def __init__(self) -> None:
        self._loads = cbor_subset.Decoder().loads

    def __call__(self, body: bytes | memoryview) -> dict[str, Any]:
        """Decode one frame body; PROTOCOL_ERROR outside the subset or not a map."""
        try:
            message = self._loads(body)
        except cbor_subset.SubsetError as exc:
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, str(exc)) from None
        if type(message) is not dict:
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, "a frame must hold a CBOR map")
        return message


class FrameDecoder:
    """Incremental splitter of a byte stream into frame bodies.

    ``on_header(size)`` (optional) is called once per frame as soon as its length is known,
    before any of its body is buffered; returning False discards that frame's body as it
    arrives (the daemon does so when its memory budget refuses the frame).
    """

    def __init__(
        self, max_frame: int = DEFAULT_MAX_FRAME, on_header: Callable[[int], bool] | None = None
    ) -> None:
        self.max_frame = max_frame
        self.on_header = on_header
        self._buffer = bytearray()
        self._expect: int | None = None  # body size of the frame being received
        self._skip = 0  # body bytes of a refused frame still to discard

    def _header(self, size: int) -> bool:
        if size > self.max_frame:
            raise FrameTooLarge(size, self.max_frame)
        if self.on_header is not None and not self.on_header(size):
            self._skip = size
            return False
        return True

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete body. Raises :class:`FrameTooLarge`."""
        bodies: list[bytes] = []
        view = memoryview(data)
        buf = self._buffer
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            if self._expect is None:
                if not buf and len(view) >= HEADER_SIZE:
                    (size,) = HEADER.unpack_from(view)
                    view = view[HEADER_SIZE:]
                else:
                    need = HEADER_SIZE - len(buf)
                    buf += view[:need]
                    view = view[need:]
                    if len(buf) < HEADER_SIZE:
                        break
                    (size,) = HEADER.unpack_from(buf)
                    buf.clear()
                if not self._header(size):
                    continue
                if len(view) >= size:  # the whole body is here: no copy into the buffer
                    bodies.append(bytes(view[:size]))
                    view = view[size:]
                    continue
                self._expect = size
            need = self._expect - len(buf)
            buf += view[:need]
            view = view[need:]
            if len(buf) == self._expect:
                bodies.append(bytes(buf))
                buf.clear()
                self._expect = None
        return bodies

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """Whether a frame has begun and not fully arrived (or is still being discarded)."""
        return bool(self._buffer) or self._expect is not None or self._skip > 0


def error_body(code: ErrorCode, message: str) -> dict[str, str]:
    """The ``error`` member of a failed response."""
    return {"code": code.value, "message": message}


def error_response(request_id: object, exc: CryptoError) -> dict[str, Any]:
    """A failed response for ``request_id`` (None when the request could not be read)."""
    return {"id": request_id, "ok": False, "error": error_body(exc.code, exc.message)}


def raise_for_error(error: object) -> None:
    """Turn a response's ``error`` member into the matching :class:`CryptoError`."""
    if isinstance(error, Mapping):
        raise CryptoError(ErrorCode.from_wire(error.get("code")), str(error.get("message", "")))
    raise CryptoError(ErrorCode.PROTOCOL_ERROR, "malformed error response")


def rid_to_wire(rid: CryptoResourceId) -> dict[str, Any]:
    """Wire form of a resource id: ``{"type": "KEY", "handle": 7}``."""
    return {"type": rid.type.value, "handle": rid.handle}


def rid_from_wire(value: object, name: str | None = None) -> CryptoResourceId:
    """Parse a wire resource id; malformed ids are INVALID_ARGUMENT."""
    if isinstance(value, Mapping):
        type_name, handle = value.get("type"), value.get("handle")
        if isinstance(handle, int) and not isinstance(handle, bool):
            try:
                return CryptoResourceId(
                    ResourceType(type_name), handle, name if name is not None else value.get("name")
                )
            except ValueError:
                pass
    raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"malformed resource id {value!r}")
