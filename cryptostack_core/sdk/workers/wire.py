"""The messages between a worker host (in the daemon) and its worker process.

Framing: a 4-byte big-endian length, then a pickle (protocol 5) of one tuple. Both ends are
started by the same installation, but the worker runs a C library that may misbehave, so the
host reads worker messages with :class:`RestrictedUnpickler`: plain data only (``None``,
``bool``, ``int``, ``float``, ``str``, ``bytes``, ``bytearray``, tuples, lists, dicts, sets)
plus the classes a backend declares in :attr:`~cryptostack_core.sdk.workers.WorkerSpec.wire_types`.
Nothing else can be constructed, so a corrupted worker cannot run code in the daemon.

Messages, host to worker::

    ("hello", Hello)                        first message (the handshake)
    (rid, op, args, cleanup, hang)          a request; ``rid`` > 0

Worker to host::

    ("ready", info) | ("failed", ErrorInfo)  answer to the hello
    (rid, OK, result)                        a request's result
    (rid, ERROR, ErrorInfo)                  it failed
    (rid, FATAL, ErrorInfo)                  it failed and the worker exits (state broken)
    (rid, HANGING, None)                     the test hook is holding it (see HangHook)

``cleanup`` is a tuple of deferred items the host piggybacks on a request (objects released,
operations dropped); the worker's backend handles them before the request. ``hang`` is 0, a
number of seconds, or :data:`HANG_FOREVER`. Requests whose ``op`` starts with ``_`` are the
host's own: ``_cleanup`` (only the cleanup), ``_echo`` (returns its argument; measures the
round trip) and ``_close`` (orderly stop: the backend's ``close``, the answer, then exit).
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Iterable
from typing import Any, TypedDict

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024
"""Largest message either side accepts (bytes): a worker answer bigger than this is a
protocol error and costs the worker its life."""

OK = 0
ERROR = 1
FATAL = 2
HANGING = 3

HANG_FOREVER = -1.0

ErrorInfo = tuple[str, str, str]
"""``(kind, name, message)`` of a failure in the worker: kind ``"crypto"`` names an
:class:`~cryptostack_core.wire.errors.ErrorCode`; backends add their own kinds (``"ckr"``)."""


class Hello(TypedDict):
    """The handshake: everything a fresh worker process needs to become a backend."""

    protocol: int
    generation: int
    parent_pid: int
    backend: str
    threads: int
    config: Any


class WireError(Exception):
    """A message that is not what the protocol allows."""


def encode(message: Any) -> bytes:
    """One frame (header and body)."""
    body = pickle.dumps(message, protocol=5)
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return HEADER.pack(len(body)) + body


def type_names(types: Iterable[type]) -> frozenset[tuple[str, str]]:
    """``(module, qualname)`` of each class, as pickle names them."""
    return frozenset((t.__module__, t.__qualname__) for t in types)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data and the declared classes only."""

    def __init__(self, data: bytes, allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        """Only the declared wire types; anything else is a protocol error."""
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise WireError(
            f"the worker sent an object of type {module}.{name}, which is not a declared wire type"
        )


def decode(body: bytes, allowed: frozenset[tuple[str, str]]) -> Any:
    """A message from the worker (restricted to plain data and ``allowed`` classes)."""
    try:
        return RestrictedUnpickler(body, allowed).load()
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed pickle is a protocol error
        raise WireError(f"undecodable message from the worker: {type(exc).__name__}: {exc}") from None


class FrameBuffer:
    """Splits a byte stream into frame bodies."""

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every complete body (WireError on an oversized header)."""
        buffer = self._buffer
        buffer += data
        bodies = []
        offset = 0
        size = len(buffer)
        while size - offset >= 4:
            (length,) = HEADER.unpack_from(buffer, offset)
            if length > self._limit:
                raise WireError(f"frame of {length} bytes exceeds the {self._limit}-byte limit")
            end = offset + 4 + length
            if end > size:
                break
            bodies.append(bytes(buffer[offset + 4 : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return bodies
