"""How a worker host starts a worker: a fresh interpreter on a socket pair.

The worker is ``python -c`` importing :mod:`cryptostack_core.sdk.workers.child`, with the
daemon's import path: what multiprocessing's ``spawn`` does, minus one hazard (spawn
re-imports the parent's ``__main__``, which would run the host application again when the
service is embedded with ``inproc://`` in a script without a ``__main__`` guard). Its
standard output goes nowhere (the daemon's is for the daemon); standard error is shared, so
a library's complaints and worker tracebacks land in the daemon's log.

:class:`Launcher` is the seam the tests use: :class:`~cryptostack_core.sdk.workers.fake.FakeLauncher`
serves the same protocol from threads with a scripted backend.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Protocol

_BOOTSTRAP = (
    "import sys; sys.path[:0] = {paths!r}; from cryptostack_core.sdk.workers.child import main; main({fd})"
)


class WorkerProcess(Protocol):
    """The handle of one started worker."""

    @property
    def pid(self) -> int:
        """Process id (for status and tests)."""
        ...

    def kill(self) -> None:
        """Stop it at once (SIGKILL for a process)."""
        ...

    def wait(self, timeout: float) -> int | None:
        """Its exit status once it ended, None if still running after ``timeout`` s."""
        ...


class Launcher(Protocol):
    """Starts workers (called in a thread: it may block for a few milliseconds)."""

    def launch(self) -> tuple[WorkerProcess, socket.socket]:
        """A started worker and the host's end of its socket."""
        ...


class _Subprocess:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    def kill(self) -> None:
        try:
            self._process.kill()
        except OSError:
            pass

    def wait(self, timeout: float) -> int | None:
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class SubprocessLauncher:
    """Workers as fresh Python interpreters (the real thing)."""

    def launch(self) -> tuple[WorkerProcess, socket.socket]:
        """Start ``python -c <bootstrap>`` with one end of a new socket pair."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = theirs.fileno()
        paths = [p for p in sys.path if p]
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP.format(paths=paths, fd=fd)],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _Subprocess(process), ours
