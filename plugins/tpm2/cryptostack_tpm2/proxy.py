"""The provider's side of the worker process: calls with deadlines, kill and restart.

Every SDK call becomes one request on a pipe to the worker (one request in flight at a time;
the TPM is serial anyway). Each call waits at most ``min(call_timeout, time left before the
daemon's deadline)``. When that passes, the worker may be stuck inside a TPM command, so it
is killed (SIGKILL), the call raises ``OPERATION_TIMED_OUT``, and a new worker is started in
the background; calls arriving meanwhile wait for it within their own deadlines. A worker
that dies or reports a broken transport is replaced the same way, and the call is retried
once on the new worker unless it continues state the old worker held (a hash sequence:
those calls name the worker *generation* they belong to and fail with
``CONTEXT_IN_ERROR_STATE`` after a restart).

Workers are fresh interpreters (never forks: the daemon is multi-threaded, and a fresh
interpreter inherits no locks, threads or TPM connection from it) -- what multiprocessing's
``spawn`` method does, minus one hazard: spawn re-imports the parent's ``__main__`` in the
child, which runs the host application again when the service is embedded (``inproc://``) in
a script without a ``__main__`` guard. So the worker is ``python -c`` importing
:mod:`cryptostack_tpm2.worker`, talking over a socketpair wrapped in a multiprocessing
:class:`~multiprocessing.connection.Connection` (framing and pickling as with spawn).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderState, remaining_time

from .worker import WorkerConfig, WorkerInfo

_BOOTSTRAP = ("import sys; sys.path[:0] = {paths!r}; "
              "from cryptostack_tpm2.worker import serve_fd; serve_fd({fd})")

_CLOSE_WAIT = 5.0
_RESTART_BACKOFF_MAX = 5.0


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class WorkerProxy:
    """Owns one worker process at a time and forwards calls to it."""

    def __init__(self, config: WorkerConfig, *, call_timeout: float, start_timeout: float,
                 log: logging.Logger) -> None:
        self._config = config
        self._call_timeout = call_timeout
        self._start_timeout = start_timeout
        self._log = log
        self._pipe_lock = threading.Lock()  # one request on the pipe at a time
        self._state_lock = threading.Lock()  # fields below
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ready = threading.Event()
        self._restarting = False
        self._restart_failed = False
        self._closed = False
        # (entry id, generation) to flush; appended from GC finalizers, so lock-free.
        self._drops: deque[tuple[int, int]] = deque()
        self._last_error = ""
        self.generation = 0
        """Incremented by every worker (re)start; sequences belong to one generation."""
        self.restarts = 0
        self.timeouts = 0
        self.info: WorkerInfo | None = None

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> WorkerInfo:
        """Start the first worker; PROVIDER_UNAVAILABLE (with the reason) if it can't."""
        proc, conn, info = self._spawn()
        with self._state_lock:
            self._install(proc, conn, info)
        return info

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Connection, WorkerInfo]:
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        paths = [p for p in sys.path if p]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP.format(paths=paths, fd=fd)],
                pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError as exc:
            parent_sock.close()
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                              f"cannot start the TPM worker: {exc}") from None
        finally:
            child_sock.close()
        parent = Connection(parent_sock.detach())
        try:
            parent.send(self._config)
            if not parent.poll(self._start_timeout):
                raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                                  f"TPM worker did not become ready within "
                                  f"{self._start_timeout:g} s (TPM at {self._config.tcti!r} "
                                  "not answering?)")
            try:
                message = parent.recv()
            except (EOFError, OSError):
                raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                                  f"TPM worker exited while starting (exit code "
                                  f"{proc.poll()}; see the daemon's stderr)") from None
        except (CryptoError, OSError):
            self._kill(proc, parent)
            raise
        if message[0] != "ready":
            self._kill(proc, parent)
            raise CryptoError(ErrorCode.from_wire(message[1]), message[2])
        info: WorkerInfo = message[1]
        return proc, parent, info

    def _install(self, proc: subprocess.Popen[bytes], conn: Connection, info: WorkerInfo) -> None:
        self._proc, self._conn, self.info = proc, conn, info
        self.generation += 1
        self._restarting = self._restart_failed = False
        self._ready.set()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], conn: Connection | None) -> None:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass  # unkillable (uninterruptible sleep in a driver); nothing more to do
        if conn is not None:
            conn.close()

    def _fail(self, generation: int, reason: str) -> None:
        """Kill the worker of ``generation`` (if still current) and restart in background."""
        with self._state_lock:
            if generation != self.generation or self._closed or self._restarting:
                return
            self._ready.clear()
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
            self._restarting = True
            self._last_error = reason
        self._log.warning("tpm2: restarting the TPM worker: %s", reason)
        if proc is not None:
            self._kill(proc, conn)
        threading.Thread(target=self._restart_loop, name="cryptostack-tpm2-restart",
                         daemon=True).start()

    def _restart_loop(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                proc, conn, info = self._spawn()
            except CryptoError as exc:
                with self._state_lock:
                    self._restart_failed = True
                    self._last_error = f"TPM worker restart failed: {exc.message}"
                self._log.error("tpm2: %s", self._last_error)
                time.sleep(delay)
                delay = min(delay * 2, _RESTART_BACKOFF_MAX)
                continue
            with self._state_lock:
                if self._closed:
                    self._kill(proc, conn)
                    return
                self._install(proc, conn, info)
                self.restarts += 1
            self._log.info("tpm2: TPM worker restarted (pid %d)", info.pid)
            return

    def close(self) -> None:
        """Ask the worker to flush its objects and exit; kill it if it does not."""
        with self._state_lock:
            self._closed = True
            proc, conn = self._proc, self._conn
            self._ready.clear()
        if proc is None:
            return
        if self._pipe_lock.acquire(timeout=_CLOSE_WAIT):
            try:
                assert conn is not None
                conn.send(("close", (), []))
                if conn.poll(_CLOSE_WAIT):
                    conn.recv()
            except (EOFError, OSError):
                pass
            finally:
                self._pipe_lock.release()
        try:
            proc.wait(_CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            pass
        self._kill(proc, conn)
        with self._state_lock:
            self._proc = self._conn = None

    def state(self) -> tuple[ProviderState, str]:
        """READY; DEGRADED while a worker restart is under way; UNAVAILABLE if it fails."""
        with self._state_lock:
            if self._closed:
                return ProviderState.UNAVAILABLE, "closed"
            if self._restart_failed:
                return ProviderState.UNAVAILABLE, self._last_error
            if self._restarting:
                return ProviderState.DEGRADED, f"TPM worker restarting: {self._last_error}"
            return ProviderState.READY, ""

    @property
    def tcti(self) -> str:
        """The TCTI string the workers connect with."""
        return self._config.tcti

    @property
    def worker_pid(self) -> int | None:
        """PID of the current worker process (tests, status)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    # --- calls -----------------------------------------------------------------------
    def drop_later(self, entry_id: int, generation: int) -> None:
        """Flush a key or sequence in the worker with the next request. Safe from any
        thread and from garbage-collection finalizers (which may run while this thread
        holds a lock): it takes none."""
        self._drops.append((entry_id, generation))

    def _take_drops(self, generation: int) -> list[int]:
        taken: list[int] = []
        while True:
            try:
                entry_id, gen = self._drops.popleft()
            except IndexError:
                return taken
            if gen == generation:
                taken.append(entry_id)

    def call(self, method: str, *args: Any, generation: int | None = None) -> Any:
        """Run ``method`` in the worker; see the module docstring for deadlines.

        ``generation``: the call continues state of that worker generation (no retry on
        another worker)."""
        return self.call_with_generation(method, *args, generation=generation)[0]

    def call_with_generation(self, method: str, *args: Any,
                             generation: int | None = None) -> tuple[Any, int]:
        """Like :meth:`call`, also returning the generation of the worker that answered."""
        timeout = self._call_timeout
        remaining = remaining_time()
        if remaining is not None:
            timeout = min(timeout, remaining)
        deadline = time.monotonic() + timeout
        if timeout <= 0:
            raise CryptoError(ErrorCode.OPERATION_TIMED_OUT,
                              f"tpm2 {method}: deadline already passed")
        for attempt in (0, 1):
            reply, gen = self._exchange(method, args, generation, deadline)
            if reply[0] == "ok":
                return reply[1], gen
            error = CryptoError(ErrorCode.from_wire(reply[1]), reply[2])
            if reply[0] != "fatal":
                raise error
            self._fail(gen, f"{method}: {reply[2]}")
            if generation is not None or attempt == 1:
                raise error
        raise AssertionError("unreachable")

    def _exchange(self, method: str, args: tuple[Any, ...], generation: int | None,
                  deadline: float) -> tuple[Any, int]:
        while True:
            self._await_ready(method, deadline)
            if not self._pipe_lock.acquire(timeout=_left(deadline)):
                raise CryptoError(ErrorCode.OPERATION_TIMED_OUT,
                                  f"tpm2 {method}: the TPM stayed busy with other calls past "
                                  "this call's deadline")
            try:
                with self._state_lock:
                    conn, gen = self._conn, self.generation
                if conn is None:
                    continue  # a restart started meanwhile: wait for it
                if generation is not None and generation != gen:
                    raise CryptoError(ErrorCode.CONTEXT_IN_ERROR_STATE,
                                      "the TPM worker was restarted; this operation's state "
                                      "was lost (reset the context)")
                try:
                    conn.send((method, args, self._take_drops(gen)))
                    if not conn.poll(_left(deadline)):
                        self.timeouts += 1
                        self._fail(gen, f"{method} did not finish before its deadline")
                        raise CryptoError(ErrorCode.OPERATION_TIMED_OUT,
                                          f"tpm2 {method}: no answer from the TPM before the "
                                          "deadline; the TPM worker was restarted")
                    return conn.recv(), gen
                except (EOFError, OSError) as exc:
                    self._fail(gen, f"worker died during {method}: {exc!r}")
                    if generation is not None:
                        raise CryptoError(ErrorCode.CONTEXT_IN_ERROR_STATE,
                                          "the TPM worker died; this operation's state was "
                                          "lost") from None
                    continue
            finally:
                self._pipe_lock.release()

    def _await_ready(self, method: str, deadline: float) -> None:
        if self._ready.is_set():
            return
        if self._closed:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "tpm2 provider is closed")
        if not self._ready.wait(_left(deadline)):
            with self._state_lock:
                failed, reason = self._restart_failed, self._last_error
            if failed:
                raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"tpm2 {method}: {reason}")
            raise CryptoError(ErrorCode.OPERATION_TIMED_OUT,
                              f"tpm2 {method}: the TPM worker is still restarting ({reason})")
