"""The shared-memory data path for large buffers (unix-socket clients on Linux).

A client creates a memfd, maps it, and tells the daemon its fd number (``shm.attach``).
The daemon opens the same memory through ``/proc/<peer pid>/fd/<n>`` — the pid comes from
SO_PEERCRED, so a client can only ever offer its own memory — and maps it read-only. A
large byte argument is then written once into the region and sent as
``{"shm": [offset, length]}``; the daemon hands providers a memoryview of it: no copy
through the socket, CBOR or the frame buffer. Anything that fails falls back to inline bytes.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from typing import Any

from cryptostack_core.wire.errors import CryptoError, ErrorCode

MEMFD_NAME = "cryptostack-shm"
THRESHOLD = 128 * 1024  # smaller buffers are cheaper inline
SHM_ARGUMENTS = ("data",)  # the arguments that may be offloaded


class ClientRegion:
    """The client's side: one memfd mapping, grown on demand."""

    def __init__(self, size: int) -> None:
        self.fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.size = size
        self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def close(self) -> None:
        """Unmap and close."""
        try:
            self.map.close()
        finally:
            os.close(self.fd)


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


class DaemonRegion:
    """The daemon's read-only view of one client's region."""

    def __init__(self, pid: int, fd: int, size: int) -> None:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(path)
        except OSError as exc:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              f"cannot see the client's fd {fd}: {exc.strerror}") from None
        if not target.startswith(f"/memfd:{MEMFD_NAME}"):
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              f"fd {fd} is not a cryptostack memfd ({target})")
        try:
            handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise CryptoError(ErrorCode.ACCESS_DENIED,
                              f"cannot open the client's memfd: {exc.strerror}") from None
        try:
            if os.fstat(handle).st_size < size:
                raise CryptoError(ErrorCode.INVALID_ARGUMENT, "memfd is smaller than announced")
            self.map = mmap.mmap(handle, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(handle)
        self.size = size
        self.view = memoryview(self.map)

    def resolve(self, value: Mapping[str, Any]) -> memoryview:
        """The bytes a reference names; bounds-checked."""
        span = value.get("shm")
        if not (isinstance(span, list) and len(span) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in span)):
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "malformed shared-memory reference")
        offset, length = span
        if offset < 0 or length < 0 or offset + length > self.size:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              f"shared-memory reference [{offset}, {length}] is outside the "
                              f"{self.size}-byte region")
        return self.view[offset:offset + length]

    def close(self) -> None:
        """Unmap (later, by the GC, if a provider still holds a view)."""
        try:
            self.view.release()
            self.map.close()
        except BufferError:
            pass
