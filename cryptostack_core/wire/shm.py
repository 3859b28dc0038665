"""The shared-memory data path for large buffers (unix-socket clients on Linux).

A client passes a memfd to the daemon with SCM_RIGHTS on the frame that follows an
``shm.attach`` step (docs/protocol.md); it stays the connection's *region* until another
replaces it. Data arguments then travel as ``{"shm": [offset, length]}``, and a cipher may
write its output into the region (``out``). Nothing is ever opened by path or fd number:
the daemon maps exactly the file the client holds, with the access the client had, so it
can never read what the client cannot.

The daemon accepts only memfds on ordinary pages sealed with ``F_SEAL_SHRINK |
F_SEAL_GROW``: a region can never shrink under the daemon's mapping (no SIGBUS). A region
also sealed with ``F_SEAL_WRITE`` is immutable and read in place. One the client can still
write is reused call after call (no new memfd, pages or mapping per request); what a keyed
operation reads from it is first copied into the daemon's memory, so a provider never sees
data change while it works on it (a hash context, which has no key and answers only the
caller, reads in place).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from cryptostack_core.wire.errors import CryptoError, ErrorCode

MEMFD_NAME = "cryptostack-shm"
THRESHOLD = 64 * 1024
"""Data arguments from this size go through the region (the Python client). Below it the
copies into and out of a frame cost less than the bookkeeping; above it inline bytes cost
four copies (CBOR, two through the kernel, CBOR) against one each way."""
SHM_ARGUMENTS = ("data",)  # the arguments that may be offloaded
OUTPUT_OPERATIONS = frozenset({"cipher.update", "cipher.single_shot", "streaming_aead.update"})
"""Operations that may write their output into the region when the request names a part
of it as ``out`` (the answer is then ``{"shm": [offset, length]}``)."""
REQUIRED_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
_MFD_NOEXEC_SEAL = 0x0008  # Linux >= 6.3: not executable, and sealed so
_SEAL_NAMES = ((fcntl.F_SEAL_SHRINK, "F_SEAL_SHRINK"), (fcntl.F_SEAL_GROW, "F_SEAL_GROW"))


def sealed_memfd(pieces: Sequence[bytes | bytearray | memoryview]) -> int:
    """A memfd holding ``pieces`` back to back, sealed against any change (an immutable
    region, read in place by the daemon). Caller closes it."""
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create(MEMFD_NAME, flags | _MFD_NOEXEC_SEAL)
    except OSError:  # kernels before 6.3 do not know MFD_NOEXEC_SEAL
        fd = os.memfd_create(MEMFD_NAME, flags)
    try:
        size = sum(len(p) for p in pieces)
        os.ftruncate(fd, size)
        offset = 0
        for piece in pieces:
            view = memoryview(piece).cast("B")
            while view:
                written = os.pwrite(fd, view, offset)
                offset += written
                view = view[written:]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, REQUIRED_SEALS | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_reference(value: object) -> bool:
    """Whether an argument is a shared-memory reference."""
    return isinstance(value, Mapping) and "shm" in value


def reference_length(value: object) -> int:
    """Declared length of a reference (0 if malformed); used for inline decisions."""
    if is_reference(value):
        span = value["shm"]  # type: ignore[index]
        if isinstance(span, list) and len(span) == 2 and isinstance(span[1], int):
            return max(0, span[1])
    return 0


def _refused(why: str) -> CryptoError:
    return CryptoError(ErrorCode.INVALID_ARGUMENT, f"shared memory refused: {why}")


def _span(value: object, size: int) -> tuple[int, int]:
    span = value.get("shm") if isinstance(value, Mapping) else None
    if not (isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)):
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, "malformed shared-memory reference")
    offset, length = span
    if offset < 0 or length < 0 or offset + length > size:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"shared-memory reference [{offset}, {length}] is outside the {size}-byte region",
        )
    return offset, length


class DaemonRegion:
    """The daemon's mapping of one memfd a client passed (SCM_RIGHTS)."""

    def __init__(self, fd: int, max_size: int) -> None:
        """Validate and map ``fd`` (the caller still closes it)."""
        try:
            info = os.fstat(fd)
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            # O_PATH descriptors, sockets, pipes, files on disk: F_GET_SEALS fails.
            raise _refused("the descriptor is not a memfd (memfd_create with MFD_ALLOW_SEALING)") from None
        if not stat.S_ISREG(info.st_mode) or not target.startswith("/memfd:"):
            raise _refused("the descriptor is not a memfd")
        if info.st_blksize != mmap.PAGESIZE:
            raise _refused("huge-page memfds are not accepted")
        missing = [name for bit, name in _SEAL_NAMES if not seals & bit]
        if missing:
            raise _refused(
                f"the memfd is not sealed with {' | '.join(missing)} (its size "
                "must be fixed before it is passed)"
            )
        if access not in (os.O_RDONLY, os.O_RDWR):
            raise _refused("the descriptor is not open for reading")
        size = info.st_size  # sealed: it cannot change any more
        if not 0 < size <= max_size:
            raise _refused(f"a region of {size} bytes is outside 1..{max_size}")
        self.immutable = bool(seals & fcntl.F_SEAL_WRITE)
        """Sealed against writes: read in place. Otherwise the client may still change it,
        and what keyed operations read is copied first (see :meth:`snapshot`)."""
        self.writable = False
        """Whether the daemon may write outputs into it (a read-write descriptor)."""
        try:
            if not self.immutable and access == os.O_RDWR:
                self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                self.writable = True
            else:
                self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        except OSError as exc:
            raise _refused(f"cannot map it: {exc.strerror}") from None
        self.size = size
        self.view = memoryview(self.map)

    def resolve(self, value: Mapping[str, Any]) -> memoryview:
        """The bytes a reference names (a view of the mapping); bounds-checked."""
        offset, length = _span(value, self.size)
        view = self.view[offset : offset + length]
        return view if self.immutable else view.toreadonly()

    def output(
        self, value: object, data: bytes | bytearray | memoryview | Sequence[bytes]
    ) -> dict[str, Any] | None:
        """Write ``data`` (or its pieces, back to back) where the reference ``value`` says and
        return the answer naming it; None when it cannot go there (not writable, or it does
        not fit: answer inline)."""
        offset, length = _span(value, self.size)
        pieces = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
        size = sum(len(p) for p in pieces)
        if not self.writable or size > length:
            return None
        position = offset
        for piece in pieces:
            self.view[position : position + len(piece)] = piece
            position += len(piece)
        return {"shm": [offset, size]}

    def close(self) -> None:
        """Unmap (later, by the GC, if a provider still holds a view)."""
        try:
            self.view.release()
            self.map.close()
        except BufferError:
            pass
