"""The client's side of the wire protocol, without any I/O (docs/protocol.md).

:class:`ClientProtocol` turns requests into frames and received bytes into answers; it
knows nothing of sockets, threads or event loops. The blocking transport
(:mod:`.transport`, shared by threads) and the asyncio transport (:mod:`.aio`) drive the
same object, so both speak exactly the same protocol: request ids, the hello, the frame
limit, errors, and which answer belongs to which request.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
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
        return self.frame({"hello": {"versions": list(SUPPORTED_VERSIONS), "client": CLIENT_NAME}})

    def accept_hello(self, reply: Mapping[str, Any]) -> None:
        """Check the daemon's hello and learn its limits; CryptoError if it refused us."""
        hello = reply.get("hello")
        if not isinstance(hello, Mapping):
            if reply.get("ok") is False:
                raise_for_error(reply.get("error"))
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, "the daemon did not answer the hello")
        if hello.get("version") != PROTOCOL_VERSION:
            raise CryptoError(
                ErrorCode.PROTOCOL_ERROR,
                f"daemon speaks protocol {hello.get('version')}, we speak {PROTOCOL_VERSION}",
            )
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
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                f"request of {len(body)} bytes exceeds the daemon's frame limit "
                f"of {self.max_frame} bytes; send the data in smaller updates",
            )
        return _pack(len(body)) + body

    def request(self, op: str, args: Mapping[str, Any], timeout: float | None) -> tuple[int, bytes]:
        """A new request id and the request's frame (``timeout`` travels as ``timeout_ms``)."""
        request_id = next(self._ids)
        if timeout is None:
            return request_id, self.frame({"id": request_id, "op": op, "args": args})
        return request_id, self.frame(
            {"id": request_id, "op": op, "args": args, "timeout_ms": max(1, int(timeout * 1000))}
        )

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
    return message.get("ok") is False and isinstance(error, Mapping) and error.get("shm_refused") is True


_MAKES_RESOURCE = frozenset(
    {"key.generate", "key.import", "key.load", "key.derive", "cert.import", "crl.import", "truststore.create"}
)
"""Operations whose answer hands the client a resource handle (``{"id": ...}``)."""


def makes_something(op: str, args: Mapping[str, Any]) -> bool:
    """Whether a request's answer may hand the client something to free: a resource handle
    or a context (also inside a batch)."""
    if op == "batch":
        calls = args.get("calls")
        return isinstance(calls, list) and any(
            isinstance(c, Mapping) and makes_something(str(c.get("op")), c.get("args") or {}) for c in calls
        )
    return op in _MAKES_RESOURCE or op.endswith(".create")


def cleanup_of_late_answer(op: str, args: Mapping[str, Any], result: Any) -> list[dict[str, Any]]:
    """The quiet requests that free what a successful answer made, for an answer that came
    after its caller gave up (its deadline passed on the client before the daemon's did):
    nobody holds a guard or context for it, so without these it would stay in the daemon
    until the connection closes."""
    if op == "batch":
        calls = args.get("calls")
        if not isinstance(calls, list) or not isinstance(result, list):
            return []
        cleanup: list[dict[str, Any]] = []
        for call, answer in zip(calls, result):
            if isinstance(call, Mapping):
                cleanup += cleanup_of_late_answer(str(call.get("op")), call.get("args") or {}, answer)
        return cleanup
    if not isinstance(result, Mapping):
        return []
    if op in _MAKES_RESOURCE and result.get("id") is not None:
        return [{"op": "resource.release", "args": {"id": result["id"], "quiet": True}}]
    if op.endswith(".create") and isinstance(result.get("ctx"), int):
        return [{"op": "context.close", "args": {"ctx": result["ctx"], "quiet": True}}]
    return []


LATE_ANSWERS_REMEMBERED = 1024
"""Timed-out requests whose late answers a connection still watches for (the oldest are
forgotten first: memory stays bounded whatever the daemon does)."""


def remember_late(
    gave_up: dict[int, tuple[str, Mapping[str, Any]]], request_id: int, request: tuple[str, Mapping[str, Any]]
) -> None:
    """Note a timed-out request that may make something, for :func:`late_cleanup`."""
    if len(gave_up) >= LATE_ANSWERS_REMEMBERED:
        del gave_up[next(iter(gave_up))]
    gave_up[request_id] = request


def late_cleanup(
    queue: Callable[[list[dict[str, Any]]], None] | None,
    request: tuple[str, Mapping[str, Any]],
    message: Mapping[str, Any],
) -> None:
    """Hand ``queue`` what frees the things a late successful answer made (no I/O here:
    the channel sends it with its next request)."""
    if queue is None or not message.get("ok"):
        return
    cleanup = cleanup_of_late_answer(request[0], request[1], message.get("result"))
    if cleanup:
        queue(cleanup)
