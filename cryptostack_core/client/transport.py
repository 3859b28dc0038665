"""The unix-socket transport, and endpoint resolution.

``unix://PATH`` speaks the wire protocol (docs/protocol.md) to a daemon. Other schemes come
from the ``cryptostack.transports`` entry points; the core registers ``inproc://``, which runs
the service inside the calling process (:mod:`cryptostack_core.server.inproc`). Every
transport bounds each call by its deadline: the caller gets ``OPERATION_TIMED_OUT`` at the
deadline even if the work never finishes.
"""

from __future__ import annotations

import array
import itertools
import os
import select
import socket
import threading
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
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
from cryptostack_core.wire.shm import SHM_ARGUMENTS, sealed_memfd
from cryptostack_core.wire.shm import THRESHOLD as SHM_THRESHOLD
from cryptostack_core.wire.transport import Transport, timed_out
from cryptostack_core.wire.version import __version__

CLIENT_NAME = f"cryptostack-python/{__version__}"
DEFAULT_SPIN = float(os.environ.get("CRYPTOSTACK_SPIN_US", "100")) / 1e6
_SPIN_PAUSE = 64
"""Waits without spinning after answers missed the spin window twice in a row."""
# Calls of this process currently waiting for the daemon (spinning is for the lone caller).
_waiting = [0]
_waiting_lock = threading.Lock()


class UnixTransport(Transport):
    """A connection to a daemon's unix socket. Thread-safe (calls are serialised)."""

    def __init__(self, path: str, connect_timeout: float | None = 5.0,
                 spin: float = DEFAULT_SPIN) -> None:
        self.path = path
        self.spin = spin
        self._spin_misses = 0
        self._spin_skip = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._buf = bytearray()
        self._broken: str | None = None
        self.max_frame = DEFAULT_MAX_FRAME
        self._shm_usable = hasattr(os, "memfd_create") and not os.environ.get("CRYPTOSTACK_NO_SHM")
        self.shm_transfers = 0  # requests whose large buffers went through shared memory
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise CryptoError(ErrorCode.CONNECTION_FAILED,
                              f"no cryptostack daemon at {path}: {exc.strerror}") from None
        except PermissionError:
            sock.close()
            raise CryptoError(ErrorCode.ACCESS_DENIED,
                              f"not allowed to connect to {path} (socket permissions)") from None
        except OSError as exc:
            sock.close()
            raise CryptoError(ErrorCode.CONNECTION_FAILED, f"cannot connect to {path}: {exc}") from None
        self._sock = sock
        sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        deadline = None if connect_timeout is None else time.monotonic() + connect_timeout
        try:
            self._send({"hello": {"versions": list(SUPPORTED_VERSIONS), "client": CLIENT_NAME}},
                       deadline)
            reply = self._receive(deadline)
        except CryptoError:
            self.close()
            raise
        hello = reply.get("hello")
        if not isinstance(hello, Mapping):
            self.close()
            if reply.get("ok") is False:
                raise_for_error(reply.get("error"))
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, "the daemon did not answer the hello")
        if hello.get("version") != PROTOCOL_VERSION:
            self.close()
            raise CryptoError(ErrorCode.PROTOCOL_ERROR,
                              f"daemon speaks protocol {hello.get('version')}, we speak "
                              f"{PROTOCOL_VERSION}")
        self.server = hello
        self.max_frame = int(hello.get("max_frame", DEFAULT_MAX_FRAME))

    # --- framing -------------------------------------------------------------------------
    # The socket stays non-blocking; waiting is one poll() bounded by the deadline, so a
    # call costs no extra syscalls to switch timeouts.
    def _wait(self, events: int, deadline: float | None) -> None:
        if self._spin_skip:
            self._spin_skip -= 1
        elif self.spin > 0 and _waiting[0] <= 1:
            # A small answer usually comes back within tens of microseconds; polling for it
            # briefly avoids the scheduler's wake-up latency, which on a small VM costs more
            # than the daemon's whole work. Past the spin window we sleep in poll(). When
            # other threads of this process are waiting too, spinning would only steal
            # their CPU (and the GIL), so we sleep at once. Answers that keep missing the
            # window (a provider behind a worker process: three processes share the CPUs)
            # would only lose CPU to the spin: after two misses in a row we sleep at once
            # for the next calls, and try spinning again later.
            end = time.perf_counter() + self.spin
            while time.perf_counter() < end:
                if self._poll.poll(0):
                    self._spin_misses = 0
                    return
            self._spin_misses += 1
            if self._spin_misses >= 2:
                self._spin_misses, self._spin_skip = 0, _SPIN_PAUSE
        if deadline is None:
            timeout_ms = -1
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            timeout_ms = max(1, int(remaining * 1000 + 0.999))
        if not self._poll.poll(timeout_ms):
            raise TimeoutError

    def _send(self, message: Mapping[str, Any], deadline: float | None,
              fds: list[int] | None = None) -> None:
        body = cbor2.dumps(message)
        if len(body) > self.max_frame:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              f"request of {len(body)} bytes exceeds the daemon's frame limit "
                              f"of {self.max_frame} bytes; send the data in smaller updates")
        header = HEADER.pack(len(body))
        pieces = [memoryview(header + body)] if len(body) < 65536 else [
            memoryview(header), memoryview(body)]
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] \
            if fds else []
        try:
            for view in pieces:
                while view:
                    try:
                        if ancillary:  # the descriptors ride on the frame's first byte
                            sent = self._sock.sendmsg([view], ancillary)
                            ancillary = []
                        else:
                            sent = self._sock.send(view)
                    except BlockingIOError:
                        self._poll.modify(self._sock, select.POLLOUT)
                        try:
                            self._wait(select.POLLOUT, deadline)
                        finally:
                            self._poll.modify(self._sock, select.POLLIN)
                        continue
                    view = view[sent:]
        except TimeoutError:
            # Part of a frame may be on the wire: the stream can no longer be trusted.
            self._break("a request could not be sent before its deadline")
            raise timed_out(None) from None
        except OSError as exc:
            self._break(f"connection lost: {exc}")
            raise CryptoError(ErrorCode.CONNECTION_FAILED,
                              f"connection to the daemon lost: {exc}") from None

    def _receive(self, deadline: float | None) -> dict[str, Any]:
        buf = self._buf
        try:
            while True:
                if len(buf) >= HEADER_SIZE:
                    (size,) = HEADER.unpack_from(buf, 0)
                    if size > self.max_frame:
                        self._break("the daemon sent an oversized frame")
                        raise CryptoError(ErrorCode.PROTOCOL_ERROR,
                                          f"daemon sent a frame of {size} bytes")
                    end = HEADER_SIZE + size
                    if len(buf) >= end:
                        body = bytes(memoryview(buf)[HEADER_SIZE:end])
                        del buf[:end]
                        try:
                            message = cbor2.loads(body)
                        except Exception as exc:
                            self._break("the daemon sent malformed CBOR")
                            raise CryptoError(ErrorCode.PROTOCOL_ERROR,
                                              f"malformed response: {exc}") from None
                        if not isinstance(message, dict):
                            raise CryptoError(ErrorCode.PROTOCOL_ERROR, "response is not a map")
                        return message
                    want = end - len(buf)
                else:
                    want = HEADER_SIZE - len(buf)
                try:
                    chunk = self._sock.recv(min(max(want, 65536), 1 << 20))
                except BlockingIOError:
                    self._wait(select.POLLIN, deadline)
                    continue
                if not chunk:
                    self._break("the daemon closed the connection")
                    raise CryptoError(ErrorCode.CONNECTION_FAILED,
                                      "the daemon closed the connection")
                buf += chunk
        except TimeoutError:
            raise timed_out(None) from None
        except OSError as exc:
            self._break(f"connection lost: {exc}")
            raise CryptoError(ErrorCode.CONNECTION_FAILED,
                              f"connection to the daemon lost: {exc}") from None

    def _break(self, why: str) -> None:
        self._broken = why

    # --- calls ---------------------------------------------------------------------------
    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        with self._lock:
            if self._broken:
                raise CryptoError(ErrorCode.CONNECTION_FAILED, f"connection unusable: {self._broken}")
            if self._shm_usable:
                offloaded = self._offload(op, args)
                if offloaded is not None:
                    new_args, fd = offloaded
                    try:
                        done, result = self._call_with_region(op, new_args, fd, timeout)
                    finally:
                        os.close(fd)
                    if done:
                        return result
            return self._roundtrip(op, _inline_views(op, args), timeout)

    # --- shared memory for large buffers (see shm.py) ---------------------------------------
    def _offload(self, op: str, args: Mapping[str, Any]) -> tuple[dict[str, Any], int] | None:
        """The request with its large buffers moved into a sealed memfd (None: stay inline)."""
        targets: list[dict[str, Any]] = []
        if op == "batch":
            calls = [dict(c) for c in args.get("calls", [])]
            for c in calls:
                c["args"] = dict(c.get("args", {}))
                targets.append(c["args"])
            new_args: dict[str, Any] = {**args, "calls": calls}
        else:
            new_args = dict(args)
            targets.append(new_args)
        big = [(t, k) for t in targets for k in SHM_ARGUMENTS
               if isinstance(t.get(k), (bytes, bytearray, memoryview)) and len(t[k]) >= SHM_THRESHOLD]
        if not big or sum(len(t[k]) for t, k in big) > self.max_frame:
            return None
        try:
            fd = sealed_memfd([t[k] for t, k in big])
        except OSError:
            self._shm_usable = False
            return None
        offset = 0
        for t, k in big:
            length = len(t[k])
            t[k] = {"shm": [offset, length]}
            offset += length
        return new_args, fd

    def _call_with_region(self, op: str, args: Mapping[str, Any], fd: int,
                          timeout: float | None) -> tuple[bool, Any]:
        """Attach ``fd`` and send the request with it: (True, result), or (False, None) when
        the daemon does not take shared memory (the caller then sends the bytes inline)."""
        try:
            ready = self._roundtrip("shm.attach", {}, timeout)
        except CryptoError as exc:
            if exc.code is ErrorCode.OPERATION_TIMED_OUT:
                # The daemon may be waiting for the descriptor: the stream is out of step.
                self._break("a shared-memory attach timed out")
                raise
            if exc.code is ErrorCode.CONNECTION_FAILED:
                raise
            self._shm_usable = False
            return False, None
        if not (isinstance(ready, Mapping) and ready.get("ready") is True):
            self._shm_usable = False
            return False, None
        reply = self._roundtrip(op, _inline_views(op, args), timeout, fds=[fd])
        if isinstance(reply, _ShmRefused):
            self._shm_usable = False  # e.g. a kernel without sealing: stay inline
            return False, None
        self.shm_transfers += 1
        return True, reply

    def _roundtrip(self, op: str, args: Mapping[str, Any], timeout: float | None,
                   fds: list[int] | None = None) -> Any:
        with _waiting_lock:
            _waiting[0] += 1
        try:
            return self._exchange(op, args, timeout, fds)
        finally:
            with _waiting_lock:
                _waiting[0] -= 1

    def _exchange(self, op: str, args: Mapping[str, Any], timeout: float | None,
                  fds: list[int] | None = None) -> Any:
        request_id = next(self._ids)
        message: dict[str, Any] = {"id": request_id, "op": op, "args": args}
        deadline = None
        if timeout is not None:
            message["timeout_ms"] = max(1, int(timeout * 1000))
            deadline = time.monotonic() + timeout
        self._send(message, deadline, fds)
        while True:
            try:
                reply = self._receive(deadline)
            except CryptoError as exc:
                if exc.code is ErrorCode.OPERATION_TIMED_OUT:
                    raise timed_out(timeout) from None
                raise
            if reply.get("id") != request_id:
                if reply.get("id") is None and reply.get("ok") is False:
                    raise_for_error(reply.get("error"))
                continue  # a late answer to a call we gave up on
            if reply.get("ok"):
                return reply.get("result")
            error = reply.get("error")
            if fds and isinstance(error, Mapping) and error.get("shm_refused") is True:
                return _ShmRefused()
            raise_for_error(error)

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
        self._broken = self._broken or "closed"


class _ShmRefused:
    """The daemon refused a request's shared memory (the request did not run)."""


def _inline_views(op: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
    """``args`` with memoryview data arguments turned into bytes (CBOR would encode a
    memoryview as a list of integers); the common case, no view, is returned as is."""
    targets = [c.get("args", {}) for c in args.get("calls", [])] if op == "batch" else [args]
    if not any(isinstance(t.get(k), memoryview) for t in targets for k in SHM_ARGUMENTS):
        return args

    def fixed(a: Mapping[str, Any]) -> dict[str, Any]:
        return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in a.items()}

    if op == "batch":
        return {**args, "calls": [{**c, "args": fixed(c.get("args", {}))}
                                  for c in args.get("calls", [])]}
    return fixed(args)


TRANSPORT_ENTRY_POINTS = "cryptostack.transports"
"""Entry-point group of the other endpoint schemes (the core registers ``inproc``)."""


def connect(endpoint: str, daemon_config: Any = None, connect_timeout: float | None = 5.0,
            spin: float = DEFAULT_SPIN) -> Transport:
    """Open a transport for ``unix://PATH``, or for another scheme registered in the
    ``cryptostack.transports`` entry points (``inproc://`` runs the service in-process).

    An entry point names a callable ``(rest_of_endpoint, daemon_config) -> Transport``.
    """
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                          f"endpoint {endpoint!r} has no scheme: use unix://PATH or inproc://")
    if scheme == "unix":
        if not rest:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "unix:// endpoint needs a path")
        return UnixTransport(rest, connect_timeout, spin)
    found = entry_points(group=TRANSPORT_ENTRY_POINTS, name=scheme)
    if not found:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                          f"unknown endpoint {endpoint!r}: use unix://PATH or inproc://")
    factory = next(iter(found)).load()
    transport: Transport = factory(rest, daemon_config)
    return transport
