"""Waiting in tests without depending on the clock.

Inside one process, tests wait for events (a :class:`threading.Event`, the worker host's
:meth:`~cryptostack_core.sdk.workers.WorkerHost.wait_until`). Across processes there are two
helpers: :func:`wait_for_exit` blocks on a pidfd until a process has ended (an event from
the kernel, no polling), and :func:`eventually` re-checks a condition that only another
process can change (a daemon's ``status``) until it holds. Both take a *generous* timeout:
it bounds a failing test, it never decides a passing one.
"""

from __future__ import annotations

import os
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for_exit(pid: int, timeout: float) -> bool:
    """True once process ``pid`` has ended (or never existed), False after ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def eventually(
    check: Callable[[], T | None],
    timeout: float,
    what: str = "condition",
    interval: float = 0.02,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``check()`` until it returns something truthy (returned), at most ``timeout``
    seconds; AssertionError naming ``what`` otherwise. For state owned by another process.

    Exceptions of the ``ignore`` types count as "not yet" (a provider answering errors while
    its worker restarts); the last one is named if the time runs out."""
    end = time.monotonic() + timeout
    while True:
        last: object
        try:
            result = check()
        except ignore as exc:
            result, last = None, exc
        else:
            last = result
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout:g} s (last: {last!r})")
        time.sleep(interval)


class Gate:
    """A cross-process event: code under test (a mock provider call in a daemon) stops at
    the gate until the test opens it; the test learns when something arrived.

    The gate is a listening unix socket. :func:`pass_gate` (the code under test) connects and
    waits for the test's end to close; :meth:`wait_arrival` accepts one arrival, :meth:`open`
    lets every held and future arrival through.
    """

    def __init__(self, path: os.PathLike[str] | str | None = None) -> None:
        if path is None:  # unix socket paths are short: not under pytest's tmp_path
            self._dir: str | None = tempfile.mkdtemp(prefix="cs-gate-")
            path = os.path.join(self._dir, "gate.sock")
        else:
            self._dir = None
        self.path = os.fspath(path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._held: list[socket.socket] = []
        self._opened = False

    def wait_arrival(self, timeout: float) -> bool:
        """True once a caller has reached the gate (it stays held until :meth:`open`)."""
        if not select.select([self._server], [], [], timeout)[0]:
            return False
        conn, _ = self._server.accept()
        if self._opened:
            conn.close()
        else:
            self._held.append(conn)
        return True

    def open(self) -> None:
        """Release the held callers and let later ones pass at once."""
        if self._opened:
            return
        self._opened = True
        for conn in self._held:
            conn.close()
        self._held.clear()

        def let_through() -> None:
            while True:
                try:
                    conn, _ = self._server.accept()
                except OSError:
                    return
                conn.close()

        threading.Thread(target=let_through, daemon=True).start()

    def close(self) -> None:
        """Open, then remove the gate."""
        self.open()
        self._server.close()
        try:
            os.unlink(self.path)
            if self._dir is not None:
                os.rmdir(self._dir)
        except OSError:
            pass


def pass_gate(path: str) -> None:
    """Stop at the :class:`Gate` listening at ``path`` until the test opens it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.recv(1)  # returns at EOF: the test opened the gate
