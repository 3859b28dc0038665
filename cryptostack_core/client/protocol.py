"""The client's side of the wire protocol, without any I/O (docs/protocol.md).

:class:`ClientProtocol` turns requests into frames and received bytes into answers; it
knows nothing of sockets, threads or event loops. The blocking transport
(:mod:`.transport`, shared by threads) and the asyncio transport (:mod:`.aio`) drive the
same object, so both speak exactly the same protocol: request ids, the hello, the frame
limit, errors, and which answer belongs to which request.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import cbor2

from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    raise_for_error,
)
from cryptostack_core.wire.version import __version__

CLIENT_NAME = f"cryptostack-python/{__version__}"
_dumps = cbor2.dumps
_loads = cbor2.loads
_pack = HEADER.pack
_unpack = HEADER.unpack_from


class ClientProtocol:
    """Frames out, answers in. One per connection; :meth:`request` is thread-safe (ids come
    from an atomic counter), :meth:`feed` is called by one reader at a time."""

    def __init__(self) -> None:
        self.max_frame = DEFAULT_MAX_FRAME
        self.server: dict[str, Any] = {}
        """The daemon's hello: ``version``, ``server``, ``max_frame`` and ``limits``."""
        self._ids = itertools.count(1)
        self._buffer = bytearray()

    # --- the hello ----------------------------------------------------------------------
    def hello(self) -> bytes:
        """The first frame a client sends."""
        return self.frame({"hello": {"versions": list(SUPPORTED_VERSIONS),
                                     "client": CLIENT_NAME}})

    def accept_hello(self, reply: Mapping[str, Any]) -> None:
        """Check the daemon's hello and learn its limits; CryptoError if it refused us."""
        hello = reply.get("hello")
        if not isinstance(hello, Mapping):
            if reply.get("ok") is False:
                raise_for_error(reply.get("error"))
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, "the daemon did not answer the hello")
        if hello.get("version") != PROTOCOL_VERSION:
            raise CryptoError(ErrorCode.PROTOCOL_ERROR,
                              f"daemon speaks protocol {hello.get('version')}, we speak "
                              f"{PROTOCOL_VERSION}")
        self.server = dict(hello)
        self.max_frame = int(hello.get("max_frame", DEFAULT_MAX_FRAME))

    @property
    def max_in_flight(self) -> int:
        """Requests the daemon accepts outstanding on one connection (64 by default)."""
        limits = self.server.get("limits")
        value = limits.get("max_in_flight") if isinstance(limits, Mapping) else None
        return value if isinstance(value, int) and value > 0 else 64

    # --- requests -----------------------------------------------------------------------
    def frame(self, message: Mapping[str, Any]) -> bytes:
        """One frame (header and CBOR body); INVALID_ARGUMENT past the daemon's limit."""
        body = _dumps(message)
        if len(body) > self.max_frame:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              f"request of {len(body)} bytes exceeds the daemon's frame limit "
                              f"of {self.max_frame} bytes; send the data in smaller updates")
        return _pack(len(body)) + body

    def request(self, op: str, args: Mapping[str, Any], timeout: float | None
                ) -> tuple[int, bytes]:
        """A new request id and the request's frame (``timeout`` travels as ``timeout_ms``)."""
        request_id = next(self._ids)
        if timeout is None:
            return request_id, self.frame({"id": request_id, "op": op, "args": args})
        return request_id, self.frame({"id": request_id, "op": op, "args": args,
                                       "timeout_ms": max(1, int(timeout * 1000))})

    # --- answers ------------------------------------------------------------------------
    def wanted(self) -> int:
        """Bytes still missing from the frame being received (at least a header's worth)."""
        buf = self._buffer
        if len(buf) < HEADER_SIZE:
            return HEADER_SIZE - len(buf)
        size: int = _unpack(buf)[0]
        return HEADER_SIZE + size - len(buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Received bytes in; every complete message out. PROTOCOL_ERROR for a frame above
        the limit or malformed CBOR (the connection is then unusable)."""
        buf = self._buffer
        if not buf and len(data) >= HEADER_SIZE:
            (size,) = _unpack(data)
            if len(data) == HEADER_SIZE + size and size <= self.max_frame:
                return [self._decode(data[HEADER_SIZE:])]  # the usual case: one whole answer
        buf += data
        messages = []
        while len(buf) >= HEADER_SIZE:
            (size,) = _unpack(buf)
            if size > self.max_frame:
                raise CryptoError(ErrorCode.PROTOCOL_ERROR, f"daemon sent a frame of {size} bytes")
            end = HEADER_SIZE + size
            if len(buf) < end:
                break
            body = bytes(memoryview(buf)[HEADER_SIZE:end])
            del buf[:end]
            messages.append(self._decode(body))
        return messages

    @staticmethod
    def _decode(body: bytes | bytearray | memoryview) -> dict[str, Any]:
        try:
            message = _loads(body)
        except Exception as exc:
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, f"malformed response: {exc}") from None
        if type(message) is not dict:
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, "response is not a map")
        return message


def result_of(message: Mapping[str, Any]) -> Any:
    """The result of an answer, or the CryptoError it carries."""
    if message.get("ok"):
        return message.get("result")
    raise_for_error(message.get("error"))
    return None  # pragma: no cover - raise_for_error always raises


def shm_refused(message: Mapping[str, Any]) -> bool:
    """Whether an answer says the daemon refused the shared memory the request carried (the
    request did not run: send it again with its bytes inline)."""
    error = message.get("error")
    return message.get("ok") is False and isinstance(error, Mapping) \
        and error.get("shm_refused") is True
