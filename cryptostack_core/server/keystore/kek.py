"""The default key-encryption key: 32 random bytes in a 0600 file outside the store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptostack_core.sdk.provider import KekSource
from cryptostack_core.server.keystore.sealing import KEK_SIZE
from cryptostack_core.wire.errors import CryptoError, ErrorCode


class FileKekSource(KekSource):
    """The KEK as a file (created on first start, 0600, never re-created)."""

    def load_or_create(self, path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read(path)
        try:
            os.write(fd, os.urandom(KEK_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
        return self._read(path)

    @staticmethod
    def _read(path: Path) -> bytes:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CryptoError(
                ErrorCode.ACCESS_DENIED,
                f"key-encryption key {path} is readable by group or others; chmod 600 it",
            )
        data = path.read_bytes()
        if len(data) != KEK_SIZE:
            raise CryptoError(
                ErrorCode.INTERNAL_ERROR, f"key-encryption key {path} is {len(data)} bytes, expected 32"
            )
        return data


def fsync_dir(path: Path) -> None:
    """Make a directory entry durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_kek_path(path: Path) -> Path:
    """Where the KEK file of store ``path`` lives unless configured (the former default,
    beside the store; a daemon puts it outside the store's directory, see
    :mod:`cryptostack_core.server.paths`)."""
    return path.with_name(path.name + ".kek")
