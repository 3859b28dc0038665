"""The provider's side of the token worker: start it, call it within deadlines, restart it.

Each worker *incarnation* is one process with ``channels`` socket pairs; a caller takes a
free channel, sends one request and waits for its reply on that channel only (no shared
reader thread, so a call costs one round trip and two context switches).

Deadlines. A call waits until the daemon's deadline for the current call
(:func:`~cryptostack_core.provider.remaining_time`), but never longer than ``call_timeout``.

* The caller's deadline passes: the caller gets ``OPERATION_TIMED_OUT`` at once and the call
  is *abandoned*: its channel is set aside and a reclaimer thread waits for the late reply
  (then cleans up whatever the call created and puts the channel back).
* The call is still running ``call_timeout`` seconds after it started: the module is
  considered stuck. The worker is killed (SIGKILL) and a new one started in the background.

A short client deadline thus never kills the worker by itself: a slow but legitimate call
(RSA-4096 generation) must not destroy every other client's session keys. A stuck module
call is bounded by ``call_timeout``, after which everything recovers.

Recovery. Every object handle is valid only in the incarnation (``generation``) that made
it. Requests that name handles carry the generation they were resolved in and are refused
with :class:`StaleGeneration` on another one, so a handle number is never used in a worker
where it may name a different object. Keyless requests lost with a dead worker are retried
once on the new one.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderState, remaining_time

from .errors import WORKER_FATAL, to_crypto_error
from .protocol import InitRequest, late_cleanup


class StaleGeneration(Exception):
    """A request named handles of a worker incarnation that is gone."""

    def __init__(self, generation: int) -> None:
        super().__init__(f"token worker is now generation {generation}")
        self.generation = generation


class _WorkerLost(Exception):
    """The worker died while a request was in flight."""


@dataclass
class HangHook:
    """Test hook: make the worker block in the next ``times`` requests named ``op``."""

    op: str
    seconds: float
    times: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, op: str) -> float:
        """Seconds request ``op`` should block (0 for no hang)."""
        if op != self.op:
            return 0.0
        with self.lock:
            if self.times <= 0:
                return 0.0
            self.times -= 1
            return self.seconds


@dataclass(frozen=True)
class WorkerSettings:
    """How to start and bound the worker."""

    module: str
    token_label: str
    pin: Callable[[], str]
    channels: int
    max_sessions: int
    call_timeout: float
    start_timeout: float
    degraded_seconds: float
    restart_backoff: float = 1.0
    hang: HangHook | None = None
    spin_microseconds: int = 0


class _Incarnation:
    """One worker process and its channels."""

    def __init__(self, generation: int, process: subprocess.Popen[bytes],
                 conns: list[Connection], info: dict[str, Any]) -> None:
        self.generation = generation
        self.process = process
        self.conns = conns
        self.info = info
        self.free: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        for conn in conns:
            self.free.put(conn)
        self.dead = False
        self._cleanup: list[tuple[str, Any]] = []
        self._cleanup_lock = threading.Lock()

    def acquire(self, deadline: float) -> Connection | None:
        """A free channel, or None if this incarnation died; OPERATION_TIMED_OUT at the
        deadline (every channel busy)."""
        try:
            conn = self.free.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise CryptoError(ErrorCode.OPERATION_TIMED_OUT,
                              f"all {len(self.conns)} token worker channels stayed busy "
                              "until the deadline") from None
        if conn is None or self.dead:
            self.free.put(None)  # pass the wake-up on to the next waiter
            return None
        return conn

    def release(self, conn: Connection) -> None:
        """Give a channel back after its reply was read."""
        self.free.put(conn)

    def add_cleanup(self, items: tuple[tuple[str, Any], ...]) -> None:
        """Queue deferred work for the next request."""
        if items:
            with self._cleanup_lock:
                self._cleanup.extend(items)

    def take_cleanup(self) -> tuple[tuple[str, Any], ...]:
        """Everything queued so far (sent with the next request)."""
        with self._cleanup_lock:
            items, self._cleanup = tuple(self._cleanup), []
        return items

    def kill(self) -> None:
        """SIGKILL the process and wake everyone waiting for a channel."""
        self.dead = True
        try:
            self.process.kill()
        except OSError:
            pass
        self.free.put(None)

    def stop(self, timeout: float = 2.0) -> None:
        """Close the channels (the worker exits on EOF), then kill if it lingers."""
        self.dead = True
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.free.put(None)


class Supervisor:
    """Owns the worker process; every provider call goes through :meth:`call`."""

    def __init__(self, settings: WorkerSettings, logger: logging.Logger) -> None:
        self.settings = settings
        self.log = logger
        self._cond = threading.Condition()
        self._current: _Incarnation | None = None
        self._generation = 0
        self._restarting = False
        self._closed = False
        self._failure: str | None = None
        self._last_attempt = 0.0
        self._seq = itertools.count(1)
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._spin = settings.spin_microseconds / 1e6
        self.restarts = 0
        self.last_restart_reason = ""
        self.last_restart_at: float | None = None
        self.info: dict[str, Any] = {}

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the first worker; PROVIDER_UNAVAILABLE with the reason if it cannot."""
        incarnation = self._spawn()
        with self._cond:
            self._current = incarnation
            self.info = incarnation.info

    def close(self) -> None:
        """Stop the worker; no restarts afterwards."""
        with self._cond:
            self._closed = True
            incarnation, self._current = self._current, None
            self._cond.notify_all()
        if incarnation is not None:
            incarnation.stop()

    @property
    def generation(self) -> int | None:
        """Generation of the live worker, if any."""
        current = self._current
        return current.generation if current is not None and not current.dead else None

    @property
    def worker_pid(self) -> int | None:
        """Process id of the live worker, if any."""
        current = self._current
        return current.process.pid if current is not None and not current.dead else None

    def state(self) -> tuple[ProviderState, str]:
        """Health for the daemon's status and selection."""
        with self._cond:
            if self._closed:
                return ProviderState.UNAVAILABLE, "closed"
            current = self._current
            if current is None or current.dead:
                if self._restarting:
                    return ProviderState.DEGRADED, (
                        f"token worker restarting: {self.last_restart_reason}")
                return ProviderState.UNAVAILABLE, self._failure or "no token worker"
            if self.last_restart_at is not None and \
                    time.monotonic() - self.last_restart_at < self.settings.degraded_seconds:
                return ProviderState.DEGRADED, (
                    f"token worker restarted: {self.last_restart_reason}")
        return ProviderState.READY, ""

    def _spawn(self) -> _Incarnation:
        with self._cond:
            self._generation += 1
            generation = self._generation
        settings = self.settings
        pairs = [socket.socketpair() for _ in range(settings.channels)]
        child_fds = [child.fileno() for _, child in pairs]
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "cryptostack_pkcs11.worker",
                 ",".join(str(fd) for fd in child_fds)],
                pass_fds=child_fds, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            for parent, child in pairs:
                parent.close()
                child.close()
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                              f"cannot start the token worker: {exc}") from None
        for _, child in pairs:
            child.close()
        conns = [Connection(parent.detach()) for parent, _ in pairs]

        def fail(reason: str) -> CryptoError:
            for conn in conns:
                conn.close()
            try:
                process.kill()
            except OSError:
                pass
            process.wait()
            return CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, reason)

        try:
            pin = settings.pin()
        except CryptoError as exc:
            raise fail(exc.message) from None
        init: InitRequest = {
            "module": settings.module, "token_label": settings.token_label, "pin": pin,
            "sessions": settings.channels, "max_sessions": settings.max_sessions,
            "generation": generation, "parent_pid": os.getpid(),
        }
        try:
            conns[0].send(init)
            if not conns[0].poll(settings.start_timeout):
                raise fail(f"the token worker did not start within {settings.start_timeout:g} s")
            status, payload = conns[0].recv()
        except (EOFError, OSError) as exc:
            raise fail(f"the token worker exited while starting ({exc or 'EOF'}); "
                       "see the daemon's standard error") from None
        if status != "ready":
            error = to_crypto_error(payload, what="starting the token worker")
            raise fail(f"the token worker could not start: {error.message}")
        incarnation = _Incarnation(generation, process, conns, payload)
        threading.Thread(target=self._watch, args=(incarnation,), daemon=True,
                         name=f"pkcs11-watch-{generation}").start()
        self.log.info("pkcs11: token worker %d started (pid %d, token %r)", generation,
                      process.pid, payload.get("token_label"))
        return incarnation

    def _watch(self, incarnation: _Incarnation) -> None:
        code = incarnation.process.wait()
        if not incarnation.dead:
            self._lost(incarnation, f"the token worker exited with status {code}")

    def _lost(self, incarnation: _Incarnation, reason: str) -> None:
        """Kill ``incarnation`` (if not already) and start a replacement if it was current."""
        with self._cond:
            if incarnation.dead:
                return
            incarnation.kill()
            if self._current is not incarnation or self._closed:
                return
            self._current = None
            self.restarts += 1
            self.last_restart_reason = reason
            self.last_restart_at = time.monotonic()
            self._begin_restart()
        self.log.warning("pkcs11: token worker %d killed: %s; restarting",
                         incarnation.generation, reason)

    def _begin_restart(self) -> None:
        # caller holds self._cond
        self._restarting = True
        self._last_attempt = time.monotonic()
        threading.Thread(target=self._restart, daemon=True, name="pkcs11-restart").start()

    def _restart(self) -> None:
        try:
            incarnation: _Incarnation | None = self._spawn()
            failure = None
        except CryptoError as exc:
            incarnation, failure = None, exc.message
            self.log.error("pkcs11: token worker restart failed: %s", failure)
        with self._cond:
            self._restarting = False
            if incarnation is not None and self._closed:
                incarnation.stop()
                incarnation = None
            if incarnation is not None:
                self._current = incarnation
                self.info = incarnation.info
                self.last_restart_at = time.monotonic()
            self._failure = failure
            self._cond.notify_all()

    def _live(self, deadline: float) -> _Incarnation:
        with self._cond:
            while True:
                if self._closed:
                    raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "the provider is closed")
                current = self._current
                if current is not None and not current.dead:
                    return current
                now = time.monotonic()
                if not self._restarting:
                    if self._failure is not None and \
                            now - self._last_attempt < self.settings.restart_backoff:
                        raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                                          f"the token worker is down: {self._failure}")
                    self._begin_restart()
                if now >= deadline:
                    raise CryptoError(ErrorCode.OPERATION_TIMED_OUT,
                                      "the token worker is restarting")
                self._cond.wait(deadline - now)

    # --- calls -----------------------------------------------------------------------
    def _deadline(self, start: float) -> float:
        remaining = remaining_time()
        limit = self.settings.call_timeout
        if remaining is None:
            return start + limit
        if remaining <= 0:
            raise CryptoError(ErrorCode.OPERATION_TIMED_OUT, "the deadline has passed")
        return start + min(remaining, limit)

    def call(self, op: str, *args: Any, generation: int | None = None, what: str = "",
             overrides: dict[str, ErrorCode] | None = None) -> Any:
        """Run ``op`` in the worker and return its result (see :meth:`call_in`)."""
        return self.call_in(op, *args, generation=generation, what=what,
                            overrides=overrides)[0]

    def call_in(self, op: str, *args: Any, generation: int | None = None, what: str = "",
                overrides: dict[str, ErrorCode] | None = None) -> tuple[Any, int]:
        """Run ``op`` and return (result, generation it ran in).

        ``generation``: the request names handles of that incarnation; raise
        :class:`StaleGeneration` if another one is live. Failures become CryptoErrors
        (``what`` and ``overrides`` as in :func:`~cryptostack_pkcs11.errors.to_crypto_error`).
        """
        start = time.monotonic()
        deadline = self._deadline(start)
        hook = self.settings.hang
        hang = hook.take(op) if hook is not None else 0.0
        for attempt in (1, 2):
            incarnation = self._live(deadline)
            if generation is not None and incarnation.generation != generation:
                raise StaleGeneration(incarnation.generation)
            conn = incarnation.acquire(deadline)
            if conn is None:
                continue
            try:
                reply = self._exchange(incarnation, conn, op, args, hang, start, deadline)
            except _WorkerLost:
                if generation is None and attempt == 1:
                    hang = 0.0
                    continue  # keyless request: run it again on the new worker
                if generation is not None:
                    raise StaleGeneration(-1) from None
                raise CryptoError(ErrorCode.PROVIDER_ERROR,
                                  f"the token worker exited during {op}") from None
            _seq, ok, payload = reply
            if ok:
                return payload, incarnation.generation
            if payload[0] == "ckr" and payload[1] in WORKER_FATAL:
                self._lost(incarnation, f"{op} returned {payload[1]}")
            raise to_crypto_error(payload, what=what or op, overrides=overrides)
        raise CryptoError(ErrorCode.PROVIDER_ERROR, f"the token worker exited during {op}")

    def _exchange(self, incarnation: _Incarnation, conn: Connection, op: str,
                  args: tuple[Any, ...], hang: float, start: float,
                  deadline: float) -> tuple[int, bool, Any]:
        seq = next(self._seq)
        with self._inflight_lock:
            self._inflight += 1
            alone = self._inflight == 1
        try:
            conn.send((seq, op, args, incarnation.take_cleanup(), hang))
            ready = False
            if alone and self._spin:
                # Short replies come back within ~100 us; polling for them without sleeping
                # saves the wake-up latency of a blocked thread (about half the round trip).
                # Only one caller spins at a time, so spinning never starves the worker.
                fd = [conn.fileno()]
                end = time.perf_counter() + self._spin
                while not ready and time.perf_counter() < end:
                    ready = bool(select.select(fd, (), (), 0)[0])
            if not ready:
                ready = conn.poll(max(0.0, deadline - time.monotonic()))
            reply = conn.recv() if ready else None
        except (EOFError, OSError, ValueError):
            self._lost(incarnation, f"the token worker died during {op}")
            raise _WorkerLost() from None
        finally:
            with self._inflight_lock:
                self._inflight -= 1
        if reply is None:
            self._abandon(incarnation, conn, op, start)
            waited = time.monotonic() - start
            raise CryptoError(ErrorCode.OPERATION_TIMED_OUT,
                              f"the token did not answer {op} within {waited:.3f} s")
        incarnation.release(conn)
        if reply[0] != seq:
            self._lost(incarnation, f"reply out of order for {op}")
            raise CryptoError(ErrorCode.PROVIDER_ERROR, "token worker protocol error")
        return reply  # type: ignore[no-any-return]

    def _abandon(self, incarnation: _Incarnation, conn: Connection, op: str,
                 start: float) -> None:
        stuck_at = start + self.settings.call_timeout
        if time.monotonic() >= stuck_at:
            self._lost(incarnation, f"{op} stayed blocked in the token module for "
                                    f"{self.settings.call_timeout:g} s")
            return
        threading.Thread(target=self._reclaim, args=(incarnation, conn, op, stuck_at),
                         daemon=True, name="pkcs11-reclaim").start()

    def _reclaim(self, incarnation: _Incarnation, conn: Connection, op: str,
                 stuck_at: float) -> None:
        """Wait for the late reply of an abandoned call; kill the worker if it never comes."""
        try:
            if conn.poll(max(0.0, stuck_at - time.monotonic())):
                _seq, ok, payload = conn.recv()
                if ok:
                    incarnation.add_cleanup(late_cleanup(op, payload))
                incarnation.release(conn)
                return
        except (EOFError, OSError, ValueError):
            pass
        self._lost(incarnation, f"{op} stayed blocked in the token module for "
                                f"{self.settings.call_timeout:g} s")

    def queue_cleanup(self, generation: int, items: tuple[tuple[str, Any], ...]) -> None:
        """Deferred work for incarnation ``generation`` (dropped if it is gone)."""
        current = self._current
        if current is not None and current.generation == generation and not current.dead:
            current.add_cleanup(items)
