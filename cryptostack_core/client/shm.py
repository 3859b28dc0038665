"""Shared memory for large buffers, the client's side (docs/protocol.md, "Shared memory").

A connection keeps one *region*: a memfd sealed against shrinking and growing (so the
daemon's mapping can never fault), mapped read-write here and passed to the daemon once,
with SCM_RIGHTS. Large data arguments are copied into it and travel as ``{"shm": [offset,
length]}``; outputs of ciphers may come back the same way (``out``). The region is reused
for every later request, so a large call costs one copy in and one out instead of a fresh
memfd, its pages and a mapping each time. The daemon copies what a keyed operation reads out
of a region the client can still write, so a provider never sees data change under it.

:class:`SharedMemory` decides what goes where and hands out parts of the region to
requests in flight (threads or tasks may share a connection); the transports do the I/O.
"""

from __future__ import annotations

import bisect
import fcntl
import mmap
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.shm import MEMFD_NAME, OUTPUT_OPERATIONS, SHM_ARGUMENTS, THRESHOLD

_MFD_NOEXEC_SEAL = 0x0008  # Linux >= 6.3: not executable, and sealed so
_RESIZE_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
MIN_REGION = 4 << 20
"""Smallest region made: room for a few megabytes in and out without growing."""
_ALIGN = 4096


class ClientRegion:
    """One memfd mapped here; parts of it are lent to requests (thread-safe)."""

    def __init__(self, size: int) -> None:
        flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
        try:
            fd = os.memfd_create(MEMFD_NAME, flags | _MFD_NOEXEC_SEAL)
        except OSError:  # kernels before 6.3 do not know MFD_NOEXEC_SEAL
            fd = os.memfd_create(MEMFD_NAME, flags)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _RESIZE_SEALS)
            self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.size = size
        self.view = memoryview(self.map)
        self._starts: list[int] = []  # parts lent, sorted by start
        self._ends: dict[int, int] = {}
        self._lock = threading.Lock()
        self.closed = False

    @property
    def busy(self) -> bool:
        """Whether parts of the region are lent to requests in flight."""
        return bool(self._starts)

    def allocate(self, size: int) -> int | None:
        """The offset of ``size`` free bytes (first fit), or None if they do not fit now."""
        size = max(_ALIGN, -(-size // _ALIGN) * _ALIGN)
        with self._lock:
            position = 0
            for start in self._starts:
                if start - position >= size:
                    break
                position = self._ends[start]
            if position + size > self.size:
                return None
            bisect.insort(self._starts, position)
            self._ends[position] = position + size
            return position

    def free(self, offset: int) -> None:
        """Give back a part :meth:`allocate` lent."""
        with self._lock:
            if self._ends.pop(offset, None) is not None:
                self._starts.remove(offset)

    def close(self) -> None:
        """Unmap and close (the daemon keeps its own mapping until it is replaced)."""
        if self.closed:
            return
        self.closed = True
        self.view.release()
        self.map.close()
        os.close(self.fd)


@dataclass
class Offload:
    """A request rewritten to carry its large buffers in the region."""

    args: dict[str, Any]
    region: ClientRegion
    offsets: list[int]
    """The parts of the region the request holds until its answer arrives."""
    attach: bool
    """Whether the region must be passed first (``shm.attach``, then this request's frame
    with the descriptor)."""


class SharedMemory:
    """A connection's use of shared memory: whether it works, its region, and which
    requests use it. Thread-safe."""

    def __init__(self, enabled: bool) -> None:
        self.usable = enabled and hasattr(os, "memfd_create")
        self.region: ClientRegion | None = None
        self.attached = False
        self.transfers = 0
        """Requests whose large buffers went through shared memory."""
        self._retired: list[ClientRegion] = []
        self._lock = threading.Lock()

    def plan(self, op: str, args: Mapping[str, Any], max_frame: int) -> Offload | None:
        """``args`` with large buffers moved into the region (None: send them inline).

        A request needing more room than the region has gets a new, larger region (attached
        with it); the old one is closed once its requests have their answers.
        """
        if not self.usable:
            return None
        targets: list[dict[str, Any]] = []
        if op == "batch":
            calls = [dict(c) for c in args.get("calls", [])]
            for c in calls:
                c["args"] = dict(c.get("args", {}))
                targets.append(c["args"])
            new_args: dict[str, Any] = {**args, "calls": calls}
            member_ops = [c.get("op") for c in calls]
        else:
            new_args = dict(args)
            targets.append(new_args)
            member_ops = [op]
        big = [
            (t, k)
            for t in targets
            for k in SHM_ARGUMENTS
            if isinstance(t.get(k), (bytes, bytearray, memoryview)) and len(t[k]) >= THRESHOLD
        ]
        if not big:
            return None
        total = sum(len(t[k]) for t, k in big)
        outputs = [
            t
            for t, member in zip(targets, member_ops)
            if member in OUTPUT_OPERATIONS and any(t is b for b, _ in big)
        ]
        out_room = sum(len(t["data"]) + 4096 for t in outputs if "data" in t)
        need = total + out_room + _ALIGN * (len(big) + len(outputs))
        if need > max_frame:
            return None
        with self._lock:
            self._sweep()
            region, attach = self.region, not self.attached
            if region is None or region.size < need:
                try:
                    region = ClientRegion(min(max_frame, max(MIN_REGION, 2 * need)))
                except OSError:
                    self.usable = False
                    return None
                if self.region is not None:
                    self._retired.append(self.region)
                self.region, self.attached, attach = region, False, True
        offsets: list[int] = []
        for t, k in big:
            data = t[k]
            offset = region.allocate(len(data))
            if offset is None:  # in use by other requests: this one goes inline
                for taken in offsets:
                    region.free(taken)
                return None
            offsets.append(offset)
            region.view[offset : offset + len(data)] = data
            t[k] = {"shm": [offset, len(data)]}
        for t in outputs:
            room = t["data"]["shm"][1] + 4096
            offset = region.allocate(room)
            if offset is not None:
                offsets.append(offset)
                t["out"] = {"shm": [offset, room]}
        return Offload(new_args, region, offsets, attach)

    def attached_now(self, region: ClientRegion) -> None:
        """The daemon took ``region`` (the attach step succeeded)."""
        with self._lock:
            if region is self.region:
                self.attached = True
            self.transfers += 1

    def used(self) -> None:
        """A request used the attached region."""
        self.transfers += 1

    def done(self, offload: Offload, result: Any) -> Any:
        """The request's answer arrived: copy out an output it left in the region, give its
        parts back."""
        if isinstance(result, Mapping) and "shm" in result and len(result) == 1:
            result = _read(offload.region, result["shm"])
        elif isinstance(result, list):  # a batch: members may have left outputs too
            result = [
                _read(offload.region, r["shm"])
                if isinstance(r, Mapping) and "shm" in r and len(r) == 1
                else r
                for r in result
            ]
        for offset in offload.offsets:
            offload.region.free(offset)
        with self._lock:
            self._sweep()
        return result

    def refuse(self) -> None:
        """The daemon refused the region (a kernel without sealing...): stay inline."""
        with self._lock:
            self.usable = False
            self.attached = False

    def _sweep(self) -> None:
        keep = []
        for region in self._retired:
            if region.busy:
                keep.append(region)
            else:
                region.close()
        self._retired = keep

    def close(self) -> None:
        """Close every region (the connection is gone)."""
        with self._lock:
            for region in [*self._retired, *([self.region] if self.region else [])]:
                region.close()
            self._retired, self.region, self.attached = [], None, False


def _read(region: ClientRegion, span: object) -> bytes:
    if not (isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)):
        raise CryptoError(ErrorCode.PROTOCOL_ERROR, "malformed shared-memory result")
    offset, length = span
    if offset < 0 or length < 0 or offset + length > region.size:
        raise CryptoError(ErrorCode.PROTOCOL_ERROR, "the daemon named a result outside the shared region")
    return bytes(region.view[offset : offset + length])


def wants_region(op: str, args: Mapping[str, Any]) -> bool:
    """Whether a data argument is large enough for the region (a quick look first)."""
    if op != "batch":
        data = args.get("data")
        return data is not None and not isinstance(data, Mapping) and len(data) >= THRESHOLD
    for call in args.get("calls", ()):
        data = call.get("args", {}).get("data")
        if data is not None and not isinstance(data, Mapping) and len(data) >= THRESHOLD:
            return True
    return False


def inline_views(op: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
    """``args`` with memoryview data arguments turned into bytes (CBOR would encode a
    memoryview as a list of integers); the common case, no view, is returned as is."""
    if op != "batch":
        for k in SHM_ARGUMENTS:
            if type(args.get(k)) is memoryview:
                return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in args.items()}
        return args
    calls = args.get("calls", [])
    if not any(isinstance(c.get("args", {}).get(k), memoryview) for c in calls for k in SHM_ARGUMENTS):
        return args

    def fixed(a: Mapping[str, Any]) -> dict[str, Any]:
        return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in a.items()}

    return {**args, "calls": [{**c, "args": fixed(c.get("args", {}))} for c in calls]}
