"""A fake worker for testing the host's restart and deadline logic with events.

:class:`FakeLauncher` serves the real worker protocol (:class:`~.child.WorkerServer`) from
threads of the test process instead of a new interpreter, with a :class:`FakeBackend` whose
requests the test scripts: a request can block on a named gate until the test opens it (or
the worker is "killed"), fail, fail fatally, or make the worker die. Every step a test must
wait for is an event (:meth:`FakeWorld.entered`, :meth:`FakeWorld.wait_for`), so no test
needs a sleep to order threads, and none asserts on elapsed time.

:class:`FakeBackend` is also importable by name (``cryptostack_core.sdk.workers.fake:FakeBackend``),
so tests can run it in a real worker process too.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from cryptostack_core.sdk.workers.child import WorkerBackend, WorkerServer
from cryptostack_core.sdk.workers.launcher import WorkerProcess
from cryptostack_core.wire.errors import CryptoError, ErrorCode

_fake_pids = itertools.count(4_000_000)


class FatalFailure(Exception):
    """Raised by :meth:`FakeBackend.op_fatal`; the backend reports it as fatal."""


class FakeWorld:
    """State shared by the test and every fake worker of one launcher: gates, records."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._gates: dict[str, threading.Event] = {}
        self._entered: dict[str, threading.Event] = {}
        self.calls: list[tuple[int, str, tuple[Any, ...]]] = []
        """(worker pid, op, args) of every request a backend ran, in order."""
        self.cleanups: list[tuple[int, tuple[Any, ...]]] = []
        self.objects: set[int] = set()
        self.closed: list[int] = []
        self._object_ids = itertools.count(1)

    def gate(self, name: str) -> threading.Event:
        """The gate ``op_block(name)`` waits for; ``.set()`` it to let the call finish."""
        with self._cond:
            return self._gates.setdefault(name, threading.Event())

    def entered(self, name: str) -> threading.Event:
        """Set once a request is blocked on gate ``name``."""
        with self._cond:
            return self._entered.setdefault(name, threading.Event())

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Block until ``condition()`` holds (re-checked whenever a fake worker acts)."""
        with self._cond:
            return self._cond.wait_for(condition, timeout)

    def changed(self) -> None:
        """Wake :meth:`wait_for` callers."""
        with self._cond:
            self._cond.notify_all()

    def new_object(self) -> int:
        """A fresh object id (an object the worker "created")."""
        with self._cond:
            handle = next(self._object_ids)
            self.objects.add(handle)
            self._cond.notify_all()
            return handle


class FakeBackend(WorkerBackend):
    """A scriptable backend. ``config`` may carry ``{"fail_start": "reason"}``."""

    def __init__(self, config: Any, worker: FakeWorker | None = None) -> None:
        super().__init__(config)
        if isinstance(config, dict) and config.get("fail_start"):
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, str(config["fail_start"]))
        self.worker = worker
        self.world = worker.world if worker is not None else FakeWorld()
        self.pid = worker.pid if worker is not None else os.getpid()
        self.killed = worker.killed if worker is not None else threading.Event()

    def info(self) -> Any:
        """The worker's pid."""
        return {"pid": self.pid}

    def dispatch(self, op: str, args: tuple[Any, ...]) -> Any:
        """Record the call, then run it."""
        with self.world._cond:
            self.world.calls.append((self.pid, op, args))
            self.world._cond.notify_all()
        return super().dispatch(op, args)

    def cleanup(self, items: tuple[Any, ...]) -> None:
        """``("destroy", id)`` items remove objects."""
        with self.world._cond:
            self.world.cleanups.append((self.pid, items))
            for kind, value in items:
                if kind == "destroy":
                    self.world.objects.discard(value)
            self.world._cond.notify_all()

    def describe_failure(self, exc: BaseException) -> tuple[str, str, str]:
        """FatalFailure is reported as a provider error."""
        if isinstance(exc, FatalFailure):
            return "crypto", ErrorCode.PROVIDER_ERROR.value, str(exc)
        return super().describe_failure(exc)

    def is_fatal(self, exc: BaseException) -> bool:
        """Only :class:`FatalFailure` is fatal."""
        return isinstance(exc, FatalFailure)

    def close(self) -> None:
        """Record the orderly close."""
        with self.world._cond:
            self.world.closed.append(self.pid)
            self.world._cond.notify_all()

    # --- requests --------------------------------------------------------------------
    def op_echo(self, value: Any) -> Any:
        """Return ``value``."""
        return value

    def op_pid(self) -> int:
        """This worker's (fake) pid."""
        return self.pid

    def op_block(self, name: str) -> str:
        """Wait until gate ``name`` opens (or the worker is killed); returns ``name``."""
        gate = self.world.gate(name)
        self.world.entered(name).set()
        self.world.changed()
        while not gate.wait(0.05):
            if self.killed.is_set():
                raise CryptoError(ErrorCode.PROVIDER_ERROR, "killed")
        return name

    def op_create(self, gate: str | None = None) -> int:
        """Create an object (after gate ``gate`` opens, if given); returns its id."""
        if gate is not None:
            self.op_block(gate)
        return self.world.new_object()

    def op_fail(self, code: str, message: str) -> None:
        """Fail with ``ErrorCode(code)``."""
        raise CryptoError(ErrorCode(code), message)

    def op_fatal(self, message: str) -> None:
        """Fail fatally: the worker answers FATAL and exits."""
        raise FatalFailure(message)

    def op_die(self) -> None:
        """The worker dies without answering."""
        if self.worker is not None:
            self.worker.kill()
            raise CryptoError(ErrorCode.PROVIDER_ERROR, "dead")
        os._exit(3)

    def op_has_module(self, name: str) -> bool:
        """Whether module ``name`` is imported in this process (a fork of the test process
        would have pytest)."""
        return name in sys.modules

    def op_object(self) -> object:
        """Return an object that is not a declared wire type."""
        return threading.Lock  # a class: pickled by reference, refused by the host


class FakeWorker:
    """One fake worker "process": a :class:`WorkerServer` on threads of this process."""

    def __init__(self, sock: socket.socket, launcher: FakeLauncher) -> None:
        self.pid = next(_fake_pids)
        self.world = launcher.world
        self.killed = threading.Event()
        self._sock = sock
        self._launcher = launcher
        self._server = WorkerServer(sock, exit_process=False)
        self._thread = threading.Thread(target=self._run, name=f"fake-worker-{self.pid}", daemon=True)
        self.returncode: int | None = None

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def _run(self) -> None:
        launcher = self._launcher
        hold = launcher.hold_start
        if hold is not None:
            hold.wait()
        factory = launcher.backend

        def make(config: Any) -> WorkerBackend:
            with launcher.world._cond:
                if launcher.fail_starts > 0:
                    launcher.fail_starts -= 1
                    launcher.world._cond.notify_all()
                    raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "scripted start failure")
            return factory(config, self)

        hello = self._server.handshake(make)
        if hello is not None:
            self._server.serve(max(1, int(hello["threads"])))
        else:
            self._server.stopped.set()
        self.world.changed()

    # --- WorkerProcess ---------------------------------------------------------------
    def kill(self) -> None:
        """ "SIGKILL": stop serving and hang up."""
        if self.killed.is_set():
            return
        self.killed.set()
        self._server.stopped.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.returncode = -9
        self.world.changed()

    def wait(self, timeout: float) -> int | None:
        """The exit status once it stopped serving (killed: -9; threads still blocked in
        the backend end when their gate wait notices)."""
        if self._server.stopped.wait(timeout):
            return self.returncode if self.returncode is not None else 0
        return None


class FakeLauncher:
    """A :class:`~.launcher.Launcher` of fake workers sharing one :class:`FakeWorld`."""

    def __init__(self, backend: Callable[[Any, FakeWorker], WorkerBackend] = FakeBackend) -> None:
        self.world = FakeWorld()
        self.backend = backend
        self.workers: list[FakeWorker] = []
        self.fail_starts = 0
        """The next this many starts fail (PROVIDER_UNAVAILABLE)."""
        self.hold_start: threading.Event | None = None
        """When set to an event, new workers wait for it before the handshake."""

    def launch(self) -> tuple[WorkerProcess, socket.socket]:
        """A fake worker and the host's end of its socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        worker = FakeWorker(theirs, self)
        with self.world._cond:
            self.workers.append(worker)
            self.world._cond.notify_all()
        worker.start()
        return worker, ours
