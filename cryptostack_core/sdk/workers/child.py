"""The worker process: the only place a provider's C library is loaded.

A :class:`~cryptostack_core.sdk.workers.WorkerHost` starts a fresh interpreter (never a fork
of the daemon: a fork would inherit the daemon's threads, locks and library state) running
:func:`main` with one end of a socket pair. The first message names the backend class
(``"package.module:Class"``, a :class:`WorkerBackend`) and its configuration; the worker
builds it and answers ``ready`` (or ``failed`` with the reason), then serves requests.

Threads: ``threads`` server threads take turns reading the socket (leader/follower: one
reads a request, then runs it itself while the next thread reads), so a request costs no
hand-off between threads and at most ``threads`` requests run at once. A backend that is
serial by nature (a TPM) uses one thread and sees its requests strictly in order.

The process ends when the host closes the socket, when a request fails fatally (the
backend says its library state cannot be trusted), on an orderly ``_close`` request, and
when the daemon dies: the main thread watches the socket for the peer's hang-up, which
arrives even while every server thread is stuck inside the library (``PR_SET_PDEATHSIG``
cannot be used: it fires when the daemon *thread* that started the worker ends).
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

from cryptostack_core.sdk.workers.wire import (
    ERROR,
    FATAL,
    HANG_FOREVER,
    HANGING,
    HEADER,
    OK,
    PROTOCOL_VERSION,
    ErrorInfo,
    Hello,
    WireError,
    encode,
)
from cryptostack_core.wire.errors import CryptoError, ErrorCode


class WorkerBackend:
    """What a provider runs in its worker process: subclass it and add ``op_<name>`` methods.

    The host calls ``op_<name>(*args)`` for a request named ``<name>``; the return value
    goes back to the provider (plain data, or types the provider declared as wire types).
    Raise :class:`~cryptostack_core.wire.errors.CryptoError` for failures the caller should
    see with their code; anything else becomes ``PROVIDER_ERROR`` (see
    :meth:`describe_failure`). With ``threads`` > 1 in the spec, methods run concurrently.
    """

    def __init__(self, config: Any) -> None:
        """Connect to the backend (load the library, log in); raise to refuse to start."""
        self.config = config

    def info(self) -> Any:
        """Facts sent back with ``ready`` (library versions, token label...)."""
        return None

    def dispatch(self, op: str, args: tuple[Any, ...]) -> Any:
        """Run request ``op``; the default calls ``op_<op>(*args)``."""
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, f"unknown worker request {op!r}")
        return handler(*args)

    def cleanup(self, items: tuple[Any, ...]) -> None:
        """Deferred work the host piggybacked on a request (released objects...). Must not
        block the request for long; failures are the backend's to log."""

    def describe_failure(self, exc: BaseException) -> ErrorInfo:
        """``(kind, name, message)`` for a failed request (see :data:`.wire.ErrorInfo`)."""
        return describe_failure(exc)

    def is_fatal(self, exc: BaseException) -> bool:
        """True when ``exc`` means the library's state cannot be trusted any more: the
        worker answers ``FATAL`` and exits, and the host starts a new one."""
        return False

    def close(self) -> None:
        """Orderly stop (flush objects, log out); the process exits afterwards."""


def describe_failure(exc: BaseException) -> ErrorInfo:
    """The default :meth:`WorkerBackend.describe_failure`: a CryptoError keeps its code,
    anything else is ``PROVIDER_ERROR`` naming the exception."""
    if isinstance(exc, CryptoError):
        return "crypto", exc.code.value, exc.message
    return "crypto", ErrorCode.PROVIDER_ERROR.value, f"{type(exc).__name__}: {exc}"


def load_backend(path: str) -> type[WorkerBackend]:
    """The class named ``"package.module:Class"``."""
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, WorkerBackend)):
        raise TypeError(f"{path} is not a WorkerBackend")
    return target


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if data is None or len(data) < size:
        return None  # EOF
    return data


class WorkerServer:
    """Serves one socket: handshake, then requests on ``threads`` threads."""

    def __init__(self, sock: socket.socket, *, exit_process: bool) -> None:
        self.sock = sock
        self.stream: BinaryIO = sock.makefile("rb")
        self.exit_process = exit_process
        self.read_lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.stopped = threading.Event()
        self.backend: WorkerBackend | None = None
        self.threads: list[threading.Thread] = []

    # --- plumbing --------------------------------------------------------------------
    def read(self) -> Any:
        """The next message, or None at EOF."""
        header = _read_exact(self.stream, HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        body = _read_exact(self.stream, length)
        if body is None:
            return None
        # The host is the worker's parent and holds its secrets: its messages are trusted.
        return pickle.loads(body)  # noqa: S301

    def send(self, message: Any) -> bool:
        """Write one message; False if the host is gone."""
        try:
            frame = encode(message)
        except (WireError, pickle.PicklingError, TypeError, AttributeError) as exc:
            frame = encode(
                (
                    message[0],
                    ERROR,
                    ("crypto", ErrorCode.PROVIDER_ERROR.value, f"unencodable worker answer: {exc}"),
                )
            )
        try:
            with self.write_lock:
                self.sock.sendall(frame)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """End serving (and the process, for a real worker)."""
        self.stopped.set()
        if self.exit_process:
            sys.stderr.flush()
            os._exit(0)

    # --- serving ---------------------------------------------------------------------
    def handshake(self, make_backend: Callable[[Any], WorkerBackend] | None = None) -> Hello | None:
        """Build the backend from the hello (with ``make_backend`` instead of the class the
        hello names, for fakes); returns the hello, or None if the worker could not start
        (the reason went to the host)."""
        message = self.read()
        if message is None:
            return None
        try:
            kind, hello = message
            if kind != "hello" or hello.get("protocol") != PROTOCOL_VERSION:
                raise CryptoError(
                    ErrorCode.PROTOCOL_ERROR,
                    f"worker protocol {hello.get('protocol')!r} is not "
                    f"{PROTOCOL_VERSION} (mixed installation?)",
                )
            make = make_backend or load_backend(hello["backend"])
            self.backend = make(hello["config"])
        except BaseException as exc:  # noqa: BLE001 - reported to the host, then exit
            if isinstance(exc, KeyboardInterrupt):
                raise
            info = describe_failure(exc)
            if not isinstance(exc, CryptoError):
                info = ("crypto", ErrorCode.PROVIDER_UNAVAILABLE.value, info[2])
            self.send(("failed", info))
            return None
        self.send(("ready", self.backend.info()))
        return hello  # type: ignore[no-any-return]

    def serve(self, threads: int) -> None:
        """Start the server threads."""
        for index in range(threads):
            thread = threading.Thread(target=self._loop, name=f"worker-{index}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            with self.read_lock:
                try:
                    request = self.read()
                except (OSError, ValueError, pickle.UnpicklingError, EOFError):
                    request = None
            if request is None:  # the host closed the socket
                self.stop()
                return
            self._handle(*request)

    def _handle(
        self, rid: int, op: str, args: tuple[Any, ...], cleanup: tuple[Any, ...], hang: float
    ) -> None:
        backend = self.backend
        assert backend is not None
        if cleanup:
            try:
                backend.cleanup(cleanup)
            except Exception:  # noqa: BLE001 - cleanup never fails a request
                traceback.print_exc(file=sys.stderr)
        if hang:
            # Test hook: the request blocks here as a stuck library call would, until the
            # host kills the worker (HANG_FOREVER) or the time passes.
            self.send((rid, HANGING, None))
            self.stopped.wait(None if hang == HANG_FOREVER else hang)
            if self.stopped.is_set():
                return
        fatal = False
        try:
            if op == "_cleanup":
                result: Any = None
            elif op == "_echo":
                result = args[0]
            elif op == "_close":
                backend.close()
                self.send((rid, OK, None))
                self.stop()
                return
            else:
                result = backend.dispatch(op, args)
            reply: tuple[Any, ...] = (rid, OK, result)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the host
            if isinstance(exc, KeyboardInterrupt):
                raise
            info = backend.describe_failure(exc)
            fatal = backend.is_fatal(exc)
            if info[1] == ErrorCode.PROVIDER_ERROR.value or fatal:
                traceback.print_exc(file=sys.stderr)
            reply = (rid, FATAL if fatal else ERROR, info)
        if not self.send(reply) or fatal:
            self.stop()


def _watch_parent(sock: socket.socket, parent_pid: int, server: WorkerServer) -> None:
    """Block until the host hangs up or the daemon dies, then exit."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    while not server.stopped.is_set():
        events = poller.poll(1000)
        if any(
            mask & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL)
            for _fd, mask in events
        ):
            break
        if os.getppid() != parent_pid:
            break
    server.stop()


def main(fd: int) -> None:
    """Entry point of a worker process serving the socket ``fd`` (see :mod:`.launcher`)."""
    # Ctrl-C in the daemon's terminal reaches the whole process group; the daemon decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    server = WorkerServer(sock, exit_process=True)
    hello = server.handshake()
    if hello is None:
        sys.stderr.flush()
        os._exit(1)
    server.serve(max(1, int(hello["threads"])))
    _watch_parent(sock, int(hello["parent_pid"]), server)
