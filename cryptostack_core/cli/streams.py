"""Files for the file commands: read a file or stdin (``-``) in pieces with a progress bar,
and write a file or stdout (``-``) so that a failed command leaves nothing behind.

An output file is written under a temporary name beside it and takes its name only once
the command succeeded, so a decryption that fails authentication halfway, or an
interrupted encryption, never leaves a plausible-looking partial file. An existing file is
replaced only with ``--force``. A new output file is readable by its owner only (0600, as
the temporary file is created): it may hold plaintext. Binary output is never written to a
terminal.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cryptostack_core.cli.output import fail

READ_SIZE = 4 * 1024 * 1024
"""Bytes read at a time: large enough for few requests, small enough for a smooth bar."""

PROGRESS_THRESHOLD = 16 * 1024 * 1024
"""Files smaller than this show no progress bar unless ``--progress`` asks for one."""


class Source:
    """A file (or stdin for ``-``) read in pieces."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "-":
            self._file: BinaryIO = sys.stdin.buffer
            self._owned = False
        else:
            try:
                self._file = open(name, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                fail(f"cannot read {name}: {exc.strerror or exc}")
            self._owned = True
        info = os.fstat(self._file.fileno())
        self.size: int | None = info.st_size if stat.S_ISREG(info.st_mode) else None

    def chunks(self, progress: FileProgress | None = None) -> Iterator[bytes]:
        """The content, :data:`READ_SIZE` bytes at a time."""
        while True:
            try:
                block = self._file.read(READ_SIZE)
            except OSError as exc:
                fail(f"cannot read {self.name}: {exc.strerror or exc}")
            if not block:
                return
            if progress is not None:
                progress.advance(len(block))
            yield block

    def read_all(self, limit: int, what: str) -> bytes:
        """The whole content of a small input (a key file, a signature): at most ``limit``
        bytes, else the command fails naming ``what`` was expected."""
        data = self._file.read(limit + 1)
        if len(data) > limit:
            fail(
                f"{self.name} is larger than any {what} ({limit} bytes)",
                f"check that {self.name} is the {what}",
            )
        return data

    def close(self) -> None:
        """Close the file (stdin stays open)."""
        if self._owned:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sink:
    """A file (or stdout for ``-``) that appears only when :meth:`commit` is called."""

    def __init__(self, name: str, force: bool = False, binary: bool = True) -> None:
        self.name = name
        self.written = 0
        self._tmp: Path | None = None
        if name == "-":
            if binary and sys.stdout.isatty():
                fail(
                    "refusing to write binary output to a terminal",
                    "give -o FILE, or redirect stdout to a file or a pipe",
                )
            self._file: BinaryIO = sys.stdout.buffer
            return
        target = Path(name)
        if target.exists() and not force:
            fail(f"{name} exists", "give --force to replace it, or another -o FILE")
        if target.is_dir():
            fail(f"{name} is a directory", "give -o FILE")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        except OSError as exc:
            fail(f"cannot write in {target.parent}: {exc.strerror or exc}")
        self._tmp = Path(tmp)
        self._target = target
        self._force = force
        self._file = os.fdopen(fd, "wb")

    @property
    def is_stdout(self) -> bool:
        """True when writing to stdout (which cannot be taken back)."""
        return self.name == "-"

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        try:
            self._file.write(data)
        except OSError as exc:
            fail(f"cannot write {self.name}: {exc.strerror or exc}")
        self.written += len(data)

    def commit(self) -> None:
        """The output is complete and good: give it its name."""
        self._file.flush()
        if self._tmp is None:
            return
        os.fsync(self._file.fileno())
        self._file.close()
        try:
            if self._force:
                os.replace(self._tmp, self._target)
            else:  # never clobber a file that appeared meanwhile
                os.link(self._tmp, self._target)
                self._tmp.unlink()
        except FileExistsError:
            self.discard()
            fail(f"{self.name} appeared while this command ran", "give --force to replace it")
        self._tmp = None

    def discard(self) -> None:
        """Throw away what was written (to a file: nothing remains)."""
        if self._tmp is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tmp is not None:  # not committed: an error or an interruption
            self.discard()


class FileProgress:
    """A progress bar on stderr for one file (bytes done, rate, time left)."""

    def __init__(self, label: str, total: int | None) -> None:
        console = Console(stderr=True)
        if not console.is_terminal:  # asked for with --progress: room for the figures
            console = Console(stderr=True, width=120)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=console.is_terminal,
        )
        self._task: TaskID = self._progress.add_task(label, total=total)

    def advance(self, size: int) -> None:
        """``size`` more bytes done."""
        self._progress.advance(self._task, size)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def progress_for(label: str, source: Source, wanted: bool | None) -> FileProgress | None:
    """A bar when asked (``--progress``), or by default when stderr is a terminal and the
    input is large or of unknown size (stdin); None otherwise."""
    if wanted is None:
        wanted = sys.stderr.isatty() and (source.size is None or source.size >= PROGRESS_THRESHOLD)
    name = "stdin" if source.name == "-" else Path(source.name).name
    return FileProgress(f"{label} {name}", source.size) if wanted else None
