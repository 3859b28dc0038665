"""The provider's side of a worker process: start it, call it within deadlines, restart it.

One :class:`WorkerHost` owns one worker process at a time (an *incarnation*, numbered by its
*generation*) and runs on an asyncio event loop (see :mod:`.loop`): requests are written to
the worker's socket with a request id, several may be in flight at once (up to the spec's
``threads``, the requests the worker runs concurrently; the rest wait in the host's queue),
and answers are matched by id. :meth:`WorkerHost.call_async` is the native interface;
:meth:`WorkerHost.call` is the same for callers on other threads.

The deadline rule (the same for every worker-hosted provider):

* A call waits until its caller's deadline (:func:`~cryptostack_core.sdk.deadline.call_deadline`,
  or the ``deadline`` argument); without one, ``call_timeout`` bounds the wait for a free
  worker and again the wait for the answer.
* At the caller's deadline the caller gets ``OPERATION_TIMED_OUT``. A request not yet sent
  is dropped; a request the worker is running is *abandoned*: when its answer comes after
  all, the spec's ``late_cleanup`` turns whatever it created into cleanup for the worker.
* A request still running ``call_timeout`` seconds after it was sent means the library is
  stuck: the worker is killed (SIGKILL) and a new one started. The other requests running
  in it are lost: those that name no worker state (*keyless*) are sent again once to the new
  worker; those bound to the old generation fail with :class:`StaleGeneration`, and the
  provider recovers by reloading its keys into the new worker.

A short client deadline therefore never kills the worker by itself (a slow but legitimate
call must not destroy every other client's session state), and a stuck library call costs at
most ``call_timeout`` before everything recovers.

Restarts: a worker that dies, answers ``FATAL`` or is killed is replaced at once; restarts
that keep failing, or workers that keep dying young, wait between attempts (doubling from
``backoff_initial`` up to ``backoff_max``). While a restart is under way, calls wait for it
within their deadlines; after a failed start they get ``PROVIDER_UNAVAILABLE`` with the
reason until an attempt succeeds.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import itertools
import logging
import os
import pickle
import select
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptostack_core.sdk.deadline import call_deadline
from cryptostack_core.sdk.provider import ProviderState
from cryptostack_core.sdk.workers.launcher import Launcher, SubprocessLauncher, WorkerProcess
from cryptostack_core.sdk.workers.loop import on_loop_thread, worker_event_loop
from cryptostack_core.sdk.workers.wire import (
    ERROR,
    FATAL,
    HANG_FOREVER,
    HANGING,
    OK,
    PROTOCOL_VERSION,
    ErrorInfo,
    FrameBuffer,
    Hello,
    WireError,
    decode,
    encode,
    type_names,
)
from cryptostack_core.wire.errors import CryptoError, ErrorCode

_UNSET: Any = object()
T = TypeVar("T")


class StaleGeneration(Exception):
    """A request named state of a worker incarnation that is gone (see the module doc)."""

    def __init__(self, generation: int | None, reason: str = "") -> None:
        super().__init__(f"the worker is now generation {generation}" + (f" ({reason})" if reason else ""))
        self.generation = generation
        self.reason = reason


@dataclass(frozen=True)
class HangHook:
    """Test hook: the next ``times`` requests named ``op`` block in the worker for
    ``seconds`` (:data:`~.wire.HANG_FOREVER`: until the worker is killed), as a stuck
    library call would."""

    op: str
    seconds: float = HANG_FOREVER
    times: int = 1


def default_translate(info: ErrorInfo, op: str, context: Any) -> CryptoError:
    """A worker failure as a CryptoError: kind ``crypto`` keeps its code."""
    kind, name, message = info
    if kind == "crypto":
        return CryptoError(ErrorCode.from_wire(name), message)
    return CryptoError(ErrorCode.PROVIDER_ERROR, f"{op}: {name}: {message}")


@dataclass(frozen=True)
class WorkerSpec:
    """What a provider tells the host about its worker."""

    name: str
    """How messages and logs name the worker (``"token worker"``)."""
    backend: str
    """The :class:`~.child.WorkerBackend` subclass, ``"package.module:Class"``."""
    config: Callable[[], Any]
    """Called before each start (in a thread; may read a PIN file); its result is the
    backend's constructor argument. Plain data."""
    threads: int = 1
    """Requests the worker runs at once (1: strictly one after another)."""
    wire_types: tuple[type, ...] = ()
    """Classes the worker may send besides plain data (see :mod:`.wire`)."""
    translate_error: Callable[[ErrorInfo, str, Any], CryptoError] = default_translate
    """Turns a failure into the caller's CryptoError: ``(info, op, context)`` with the
    ``context`` the caller passed to :meth:`WorkerHost.call`."""
    late_cleanup: Callable[[str, Any], tuple[Any, ...]] | None = None
    """For an abandoned request's late result: cleanup items that undo what it created."""


@dataclass(frozen=True)
class HostSettings:
    """Timing and limits of a host (provider options in practice)."""

    call_timeout: float = 30.0
    start_timeout: float = 20.0
    degraded_seconds: float = 10.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    close_timeout: float = 5.0
    max_queued: int = 4096
    hangs: tuple[HangHook, ...] = ()
    spin_microseconds: int = 50
    """How long a lone request polls the worker's socket before the loop sleeps on it: a
    reply that comes within that time costs no wake-up of the loop's thread (about half a
    round trip on a busy machine). The loop does nothing else meanwhile, so this applies
    only when no other request to this worker is in flight. 0 disables it."""


class _WorkerExited(Exception):
    pass


@dataclass(eq=False)
class _Request:
    op: str
    args: tuple[Any, ...]
    generation: int | None
    context: Any
    future: asyncio.Future[tuple[Any, int]]
    deadline: float | None
    internal: bool = False
    attempts: int = 0
    rid: int = 0
    incarnation: _Incarnation | None = None
    timer: asyncio.TimerHandle | None = None
    stuck_timer: asyncio.TimerHandle | None = None
    stuck: bool = False

    def cancel_timers(self) -> None:
        for timer in (self.timer, self.stuck_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.stuck_timer = None


@dataclass(eq=False)
class _Incarnation:
    generation: int
    process: WorkerProcess
    transport: asyncio.Transport
    info: Any
    credits: int
    started: float
    fd: int = -1
    running: dict[int, _Request] = field(default_factory=dict)
    cleanup: list[Any] = field(default_factory=list)
    dead: bool = False
    served: bool = False


class _Link(asyncio.Protocol):
    """The host's end of one worker's socket."""

    def __init__(self, host: WorkerHost) -> None:
        self.host = host
        self.frames = FrameBuffer()
        self.incarnation: _Incarnation | None = None
        self.greeting: asyncio.Future[Any] = host._loop.create_future()

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.frames.feed(data):
                message = decode(body, self.host._wire_types)
                if self.incarnation is None:
                    if not self.greeting.done():
                        self.greeting.set_result(message)
                    continue
                self.host._on_message(self.incarnation, message)
        except WireError as exc:
            self._broken(str(exc))

    def _broken(self, reason: str) -> None:
        if self.incarnation is not None:
            self.host._lost(self.incarnation, f"protocol error: {reason}")
        elif not self.greeting.done():
            self.greeting.set_exception(_WorkerExited(reason))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.incarnation is not None:
            self.host._lost(self.incarnation, f"the {self.host.spec.name} exited")
        elif not self.greeting.done():
            self.greeting.set_exception(_WorkerExited("EOF"))


class WorkerHost:
    """Runs a provider's worker process and its calls (see the module docstring)."""

    def __init__(
        self,
        spec: WorkerSpec,
        settings: HostSettings,
        log: logging.Logger,
        *,
        launcher: Launcher | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.log = log
        self._launcher: Launcher = launcher or SubprocessLauncher()
        self._loop = loop or worker_event_loop()
        self._wire_types = type_names(spec.wire_types)
        self._queue: collections.deque[_Request] = collections.deque()
        self._current: _Incarnation | None = None
        self._generation = 0
        self._closed = False
        self._restarting = False
        self._restart_task: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._failures = 0
        self._young_deaths = 0
        self._rids = itertools.count(1)
        self._spin = settings.spin_microseconds / 1e6
        # cleanup from any thread, even GC finalizers: a deque append takes no lock
        self._deferred: collections.deque[tuple[int, tuple[Any, ...]]] = collections.deque()
        self._hangs: dict[HangHook, int] = {}  # hook -> times left
        for hook in settings.hangs:
            self._hangs[hook] = self._hangs.get(hook, 0) + hook.times
        self._changed = threading.Condition()
        self.hangs_entered = 0
        """Requests the hang hook is holding or has held (tests wait on it)."""
        self.restarts = 0
        self.timeouts = 0
        """Workers killed because a request ran past ``call_timeout``."""
        self.abandoned = 0
        """Requests whose caller stopped waiting while the worker ran them."""
        self.late_replies = 0
        """Answers that came after their caller had stopped waiting."""
        self.cleanups_in_flight = 0
        """Cleanup requests sent for late answers and not yet answered."""
        self.last_restart_reason = ""
        self.last_restart_at: float | None = None
        self.info: Any = None
        """What the current worker's backend reported at start."""

    # --- public, any thread --------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this host runs on."""
        return self._loop

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
        """READY; DEGRADED while restarting and ``degraded_seconds`` after; UNAVAILABLE
        when closed or when the last start failed."""
        name = self.spec.name
        if self._closed:
            return ProviderState.UNAVAILABLE, "closed"
        current = self._current
        if current is None or current.dead:
            if self._failure is not None and not self._restarting:
                return ProviderState.UNAVAILABLE, f"the {name} is down: {self._failure}"
            return ProviderState.DEGRADED, f"the {name} is restarting: {self.last_restart_reason}"
        if (
            self.last_restart_at is not None
            and time.monotonic() - self.last_restart_at < self.settings.degraded_seconds
        ):
            return ProviderState.DEGRADED, f"the {name} restarted: {self.last_restart_reason}"
        return ProviderState.READY, ""

    def describe(self) -> dict[str, Any]:
        """Worker facts for a provider's ``describe``."""
        return {
            "worker_pid": self.worker_pid,
            "worker_generation": self.generation,
            "worker_restarts": self.restarts,
            "last_restart_reason": self.last_restart_reason,
            "worker_timeouts": self.timeouts,
            "worker_abandoned_calls": self.abandoned,
        }

    def start(self) -> None:
        """Start the first worker; PROVIDER_UNAVAILABLE with the reason if it cannot."""
        self._run_sync(self._start())

    def close(self) -> None:
        """Stop the worker in order (its backend's ``close``); no restarts afterwards."""
        if self._loop.is_closed():
            return
        try:
            self._run_sync(self._close(), timeout=self.settings.close_timeout * 3)
        except RuntimeError:
            pass  # the loop is gone (interpreter shutdown)

    def call(self, op: str, *args: Any, generation: int | None = None, context: Any = None) -> Any:
        """:meth:`call_in` without the generation."""
        return self.call_in(op, *args, generation=generation, context=context)[0]

    def call_in(
        self, op: str, *args: Any, generation: int | None = None, context: Any = None
    ) -> tuple[Any, int]:
        """Run ``op(*args)`` in the worker from a thread other than the host's loop; the
        deadline is the caller's :func:`~cryptostack_core.sdk.deadline.call_deadline`. Returns
        (result, generation it ran in). See :meth:`call_async`."""
        if on_loop_thread(self._loop):
            raise RuntimeError("WorkerHost.call on the host's own event loop; use call_async")
        deadline = call_deadline()
        if self._idle_loop():
            return self._loop.run_until_complete(
                self.call_async(op, *args, generation=generation, deadline=deadline, context=context)
            )
        outcome: concurrent.futures.Future[tuple[Any, int]] = concurrent.futures.Future()

        def begin() -> None:
            try:
                request = self._begin(op, args, generation, deadline, context)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome.set_exception(exc)
                return
            request.future.add_done_callback(lambda done: _copy_outcome(done, outcome))
            incarnation = request.incarnation
            if self._spin and incarnation is not None and len(incarnation.running) == 1:
                _poll_readable(incarnation.fd, self._spin)

        try:
            self._loop.call_soon_threadsafe(begin)
        except RuntimeError:
            raise CryptoError(
                ErrorCode.PROVIDER_UNAVAILABLE, f"the {self.spec.name}'s event loop has stopped"
            ) from None
        return outcome.result()

    async def call_async(
        self,
        op: str,
        *args: Any,
        generation: int | None = None,
        deadline: float | None = _UNSET,
        context: Any = None,
    ) -> tuple[Any, int]:
        """Run ``op(*args)`` in the worker, on the host's loop; returns (result,
        generation it ran in).

        ``generation``: the request names state of that incarnation (handles); it fails
        with :class:`StaleGeneration` in any other. Without it the request is *keyless*
        and is sent again once if the worker dies under it. ``deadline`` (monotonic
        seconds) defaults to :func:`~cryptostack_core.sdk.deadline.call_deadline`.
        Failures in the worker become CryptoErrors through the spec's
        ``translate_error(info, op, context)``.
        """
        if deadline is _UNSET:
            deadline = call_deadline()
        request = self._begin(op, args, generation, deadline, context)
        incarnation = request.incarnation
        if self._spin and incarnation is not None and len(incarnation.running) == 1:
            _poll_readable(incarnation.fd, self._spin)
        return await request.future

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the provider's (one that awaits :meth:`call_async`) on the
        host's loop from another thread, and return its result. The caller's context
        variables, its deadline among them, travel with it."""
        if on_loop_thread(self._loop):
            coro.close()
            raise RuntimeError("WorkerHost.run on the host's own event loop; await instead")
        if self._idle_loop():
            return self._loop.run_until_complete(coro)
        context = contextvars.copy_context()
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

        def start() -> None:
            task = self._loop.create_task(coro, context=context)
            task.add_done_callback(lambda done: _copy_outcome(done, outcome))

        try:
            self._loop.call_soon_threadsafe(start)
        except RuntimeError:
            coro.close()
            raise CryptoError(
                ErrorCode.PROVIDER_UNAVAILABLE, f"the {self.spec.name}'s event loop has stopped"
            ) from None
        return outcome.result()

    def queue_cleanup(self, generation: int, items: tuple[Any, ...]) -> None:
        """Cleanup for incarnation ``generation``, sent with its next request (dropped if it
        is gone). Safe from any thread and from garbage-collection finalizers."""
        if items:
            self._deferred.append((generation, items))

    def wait_until(self, condition: Callable[[WorkerHost], bool], timeout: float) -> bool:
        """Block until ``condition(host)`` holds; re-checked whenever a worker starts or is
        lost, the hang hook holds a request, or a late answer is cleaned up (tests
        synchronise on this)."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def kill_worker(self, reason: str = "killed on request") -> None:
        """Kill the current worker (a new one is started); for tests and operators."""

        def kill() -> None:
            if self._current is not None:
                self._lost(self._current, reason)

        self._loop.call_soon_threadsafe(kill)

    # --- lifecycle (on the loop) -------------------------------------------------------
    def _run_sync(self, coro: Any, timeout: float | None = None) -> Any:
        if on_loop_thread(self._loop):
            coro.close()
            raise RuntimeError("WorkerHost.start/close on the host's own event loop")
        if self._idle_loop():
            return self._loop.run_until_complete(coro)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _idle_loop(self) -> bool:
        """Whether the host's loop is not running yet, in a thread running no loop: the
        daemon starts its providers before it serves; their calls then run the loop here."""
        if self._loop.is_running():
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        return False

    async def _start(self) -> None:
        incarnation = await self._spawn()
        if self._closed:
            await self._dispose(incarnation)
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "closed while starting")
        self._install(incarnation)

    def _install(self, incarnation: _Incarnation) -> None:
        self._current = incarnation
        self.info = incarnation.info
        self._failure = None
        self._failures = 0
        self.log.info(
            "%s %d started (pid %d)", self.spec.name, incarnation.generation, incarnation.process.pid
        )
        self._pump()
        self._notify()

    async def _spawn(self) -> _Incarnation:
        """Start a worker and complete the handshake; PROVIDER_UNAVAILABLE if it fails."""
        loop = self._loop
        self._generation += 1
        generation = self._generation
        name = self.spec.name
        config = await loop.run_in_executor(None, self.spec.config)
        try:
            process, sock = await loop.run_in_executor(None, self._launcher.launch)
        except OSError as exc:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"cannot start the {name}: {exc}") from None
        link = _Link(self)
        transport: asyncio.Transport | None = None
        try:
            transport, _ = await loop.create_unix_connection(lambda: link, sock=sock)
            hello: Hello = {
                "protocol": PROTOCOL_VERSION,
                "generation": generation,
                "parent_pid": os.getpid(),
                "backend": self.spec.backend,
                "threads": self.spec.threads,
                "config": config,
            }
            transport.write(encode(("hello", hello)))
            try:
                status, payload = await asyncio.wait_for(link.greeting, self.settings.start_timeout)
            except TimeoutError:
                raise CryptoError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"the {name} did not start within {self.settings.start_timeout:g} s",
                ) from None
            except _WorkerExited:
                raise CryptoError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"the {name} exited while starting; see the daemon's standard error",
                ) from None
            if status != "ready":
                error = self.spec.translate_error(tuple(payload), "start", None)  # type: ignore[arg-type]
                raise CryptoError(
                    ErrorCode.PROVIDER_UNAVAILABLE
                    if error.code in (ErrorCode.PROVIDER_ERROR, ErrorCode.PROTOCOL_ERROR)
                    else error.code,
                    f"the {name} could not start: {error.message}",
                )
        except BaseException:
            if transport is not None:
                transport.abort()
            else:
                sock.close()
            process.kill()
            loop.run_in_executor(None, process.wait, 5.0)
            raise
        incarnation = _Incarnation(
            generation,
            process,
            transport,
            payload,
            credits=max(1, self.spec.threads),
            started=time.monotonic(),
            fd=sock.fileno(),
        )
        link.incarnation = incarnation
        return incarnation

    async def _close(self) -> None:
        self._closed = True
        if self._restart_task is not None:
            self._restart_task.cancel()
        closed = CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"the {self.spec.name} is closed")
        while self._queue:
            request = self._queue.popleft()
            self._fail(request, closed)
        incarnation, self._current = self._current, None
        if incarnation is not None and not incarnation.dead:
            await self._dispose(incarnation, orderly=True)

    async def _dispose(self, incarnation: _Incarnation, orderly: bool = False) -> None:
        """Stop an incarnation: ask it to close (orderly), then make sure it is gone."""
        if orderly and not incarnation.dead:
            request = self._internal(incarnation, "_close")
            if request is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(request.future), self.settings.close_timeout)
                except (TimeoutError, CryptoError, StaleGeneration):
                    pass
        incarnation.dead = True
        closed = CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"the {self.spec.name} is closed")
        for request in list(incarnation.running.values()):
            self._fail(request, closed)
        incarnation.running.clear()
        incarnation.transport.close()
        status = await self._loop.run_in_executor(None, incarnation.process.wait, self.settings.close_timeout)
        if status is None:
            incarnation.process.kill()
            await self._loop.run_in_executor(None, incarnation.process.wait, 5.0)

    def _lost(self, incarnation: _Incarnation, reason: str) -> None:
        """Kill ``incarnation`` and settle its requests; restart if it was the current one."""
        if incarnation.dead:
            return
        incarnation.dead = True
        incarnation.process.kill()
        incarnation.transport.abort()
        self._loop.run_in_executor(None, incarnation.process.wait, 5.0)  # reap
        running = list(incarnation.running.values())
        incarnation.running.clear()
        retry = []
        for request in running:
            if request.stuck_timer is not None:
                request.stuck_timer.cancel()
                request.stuck_timer = None
            if request.internal:
                self._internal_done(request)
                continue
            if request.future.done():
                continue
            if request.generation is None and request.attempts < 2 and not request.stuck:
                retry.append(request)  # keyless: once more on the next worker
                continue
            self._fail(request, self._lost_error(request, reason))
        for request in reversed(retry):
            self._requeue(request)
        if incarnation is not self._current:
            return
        self._current = None
        self.restarts += 1
        self.last_restart_reason = reason
        self.last_restart_at = time.monotonic()
        # a worker that dies before serving anything, soon after its start, is crash-looping:
        # each such death in a row doubles the wait before the next start
        young = not incarnation.served and time.monotonic() - incarnation.started < self.settings.backoff_max
        self._young_deaths = self._young_deaths + 1 if young else 0
        self.log.warning(
            "%s %d (pid %d) lost: %s; restarting",
            self.spec.name,
            incarnation.generation,
            incarnation.process.pid,
            reason,
        )
        if not self._closed:
            self._schedule_restart()
        self._notify()

    def _lost_error(self, request: _Request, reason: str) -> BaseException:
        if request.generation is not None:
            return StaleGeneration(None, reason)
        return CryptoError(
            ErrorCode.PROVIDER_ERROR, f"the {self.spec.name} exited during {request.op}: {reason}"
        )

    def _backoff(self, count: int) -> float:
        if count <= 0:
            return 0.0
        return float(min(self.settings.backoff_initial * 2 ** (count - 1), self.settings.backoff_max))

    def _schedule_restart(self) -> None:
        if self._restart_task is not None and not self._restart_task.done():
            return
        self._restarting = True
        self._restart_task = self._loop.create_task(self._restart_loop())

    async def _restart_loop(self) -> None:
        delay = self._backoff(self._young_deaths - 1)
        while not self._closed:
            if delay:
                await asyncio.sleep(delay)
                if self._closed:
                    break
            self._restarting = True
            try:
                incarnation = await self._spawn()
            except CryptoError as exc:
                self._failures += 1
                self._failure = exc.message
                self._restarting = False
                self.log.error("%s restart failed: %s", self.spec.name, exc.message)
                down = CryptoError(
                    ErrorCode.PROVIDER_UNAVAILABLE, f"the {self.spec.name} is down: {exc.message}"
                )
                while self._queue:
                    self._fail(self._queue.popleft(), down)
                delay = self._backoff(self._failures)
                self._notify()
                continue
            except Exception:  # noqa: BLE001 - never let the restart loop die silently
                self.log.exception("%s restart failed", self.spec.name)
                self._failures += 1
                self._failure = "internal error while restarting"
                self._restarting = False
                delay = self._backoff(self._failures)
                continue
            self._restarting = False
            if self._closed:
                await self._dispose(incarnation)
                break
            self.last_restart_at = time.monotonic()
            self._install(incarnation)
            return
        self._restarting = False

    # --- requests (on the loop) ------------------------------------------------------
    def _begin(
        self, op: str, args: tuple[Any, ...], generation: int | None, deadline: float | None, context: Any
    ) -> _Request:
        name = self.spec.name
        if self._closed:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"the {name} is closed")
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise CryptoError(
                ErrorCode.OPERATION_TIMED_OUT, f"{op}: the deadline passed before the call reached the {name}"
            )
        current = self._current
        if current is None or current.dead:
            if self._failure is not None and not self._restarting:
                raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"the {name} is down: {self._failure}")
            if generation is not None:
                raise StaleGeneration(None, f"the {name} is restarting")
        elif generation is not None and generation != current.generation:
            raise StaleGeneration(current.generation)
        if len(self._queue) >= self.settings.max_queued:
            raise CryptoError(
                ErrorCode.RESOURCE_EXHAUSTED, f"{len(self._queue)} calls are already waiting for the {name}"
            )
        request = _Request(op, args, generation, context, self._loop.create_future(), deadline)
        expire = deadline if deadline is not None else now + self.settings.call_timeout
        request.timer = self._loop.call_later(expire - now, self._expire, request)
        self._queue.append(request)
        self._pump()
        return request

    def _internal(self, incarnation: _Incarnation, op: str) -> _Request | None:
        """Send a host request (``_cleanup``, ``_close``) now, past the queue."""
        if incarnation.dead:
            return None
        request = _Request(
            op, (), incarnation.generation, None, self._loop.create_future(), None, internal=True
        )
        self._send(incarnation, request)
        return request

    def _pump(self) -> None:
        current = self._current
        if current is None or current.dead:
            return
        queue = self._queue
        while queue and current.credits > 0:
            request = queue.popleft()
            if request.future.done():
                continue
            if request.generation is not None and request.generation != current.generation:
                self._fail(request, StaleGeneration(current.generation))
                continue
            self._send(current, request)
            if current.dead:
                return

    def _requeue(self, request: _Request) -> None:
        """Put a keyless request lost with its worker back at the head of the queue."""
        request.incarnation = None
        if request.deadline is None and request.timer is None:
            request.timer = self._loop.call_later(self.settings.call_timeout, self._expire, request)
        self._queue.appendleft(request)

    def _take_hang(self, op: str) -> float:
        if not self._hangs:
            return 0.0
        for hook, left in self._hangs.items():
            if hook.op == op and left > 0:
                self._hangs[hook] = left - 1
                return hook.seconds
        return 0.0

    def _send(self, incarnation: _Incarnation, request: _Request) -> None:
        deferred = self._deferred
        while deferred:
            generation, items = deferred.popleft()
            if generation == incarnation.generation:
                incarnation.cleanup.extend(items)
        cleanup = tuple(incarnation.cleanup)
        request.attempts += 1
        hang = self._take_hang(request.op) if request.attempts == 1 and not request.internal else 0.0
        rid = next(self._rids)
        try:
            frame = encode((rid, request.op, request.args, cleanup, hang))
        except (WireError, pickle.PicklingError, TypeError, AttributeError) as exc:
            self._fail(
                request,
                CryptoError(
                    ErrorCode.PROVIDER_ERROR, f"{request.op}: cannot send to the {self.spec.name}: {exc}"
                ),
            )
            return
        incarnation.cleanup.clear()
        request.rid = rid
        request.incarnation = incarnation
        incarnation.running[rid] = request
        incarnation.credits -= 1
        if not request.internal:
            request.stuck_timer = self._loop.call_later(
                self.settings.call_timeout, self._stuck, incarnation, rid
            )
            if request.deadline is None and request.timer is not None:
                request.timer.cancel()  # no deadline: from now on the stuck timer bounds it
                request.timer = None
        incarnation.transport.write(frame)

    def _expire(self, request: _Request) -> None:
        """The caller's wait is over (its deadline, or ``call_timeout`` in the queue)."""
        request.timer = None
        if request.incarnation is None:
            try:
                self._queue.remove(request)  # also a caller that went away (cancelled)
            except ValueError:
                pass
        if request.future.done():
            return
        name = self.spec.name
        if request.incarnation is None:
            self._fail(
                request,
                CryptoError(
                    ErrorCode.OPERATION_TIMED_OUT,
                    f"{request.op}: the {name} stayed busy with other calls (or restarting) "
                    "until the deadline",
                ),
            )
            return
        self.abandoned += 1
        self._fail(
            request,
            CryptoError(
                ErrorCode.OPERATION_TIMED_OUT,
                f"the {name} did not answer {request.op} before the deadline; the call was "
                "abandoned (the worker is restarted if it is still running at call_timeout)",
            ),
        )

    def _stuck(self, incarnation: _Incarnation, rid: int) -> None:
        request = incarnation.running.get(rid)
        if request is None:
            return
        request.stuck_timer = None
        request.stuck = True
        seconds = self.settings.call_timeout
        self._fail(
            request,
            CryptoError(
                ErrorCode.OPERATION_TIMED_OUT,
                f"{request.op} stayed blocked in the {self.spec.name} for {seconds:g} s "
                "(call_timeout); the worker was restarted",
            ),
        )
        self.timeouts += 1
        self._lost(incarnation, f"{request.op} stayed blocked for {seconds:g} s (call_timeout)")

    def _fail(self, request: _Request, exc: BaseException) -> None:
        """Settle the caller's side; a request the worker runs keeps its stuck timer."""
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        if not request.future.done():
            request.future.set_exception(exc)

    def _on_message(self, incarnation: _Incarnation, message: Any) -> None:
        if incarnation.dead:
            return
        try:
            rid, status, payload = message
        except (TypeError, ValueError):
            self._lost(incarnation, "protocol error: malformed answer")
            return
        if status == HANGING:
            self.hangs_entered += 1
            # Tests over a daemon wait for this line (they cannot see the counter).
            self.log.warning("%s: test_hang is holding request %s", self.spec.name, rid)
            self._notify()
            return
        request = incarnation.running.pop(rid, None)
        if request is None:
            self._lost(incarnation, f"protocol error: answer to unknown request {rid!r}")
            return
        incarnation.credits += 1
        incarnation.served = True
        if request.stuck_timer is not None:
            request.stuck_timer.cancel()
            request.stuck_timer = None
        if request.internal:
            if status == OK:
                request.future.set_result((payload, incarnation.generation))
            else:
                self.log.warning("%s: %s failed: %s", self.spec.name, request.op, payload)
                request.future.set_exception(CryptoError(ErrorCode.PROVIDER_ERROR, str(payload)))
            self._internal_done(request)
        elif status == OK:
            if request.future.done():
                self._late(incarnation, request, payload)
            else:
                request.cancel_timers()
                request.future.set_result((payload, incarnation.generation))
        elif status in (ERROR, FATAL):
            if status == FATAL:
                self._lost(incarnation, f"{request.op} failed fatally: {_message(payload)}")
            if not request.future.done():
                if status == FATAL and request.generation is None and request.attempts < 2:
                    self._requeue(request)
                else:
                    self._fail(request, self._translate(request, payload))
        else:
            self._lost(incarnation, f"protocol error: status {status!r}")
            return
        self._pump()

    def _late(self, incarnation: _Incarnation, request: _Request, result: Any) -> None:
        """The answer of an abandoned request: undo what it created."""
        self.late_replies += 1
        late = self.spec.late_cleanup
        items = late(request.op, result) if late is not None else ()
        if items:
            incarnation.cleanup.extend(items)
            if self._internal(incarnation, "_cleanup") is not None:
                self.cleanups_in_flight += 1
        self._notify()

    def _internal_done(self, request: _Request) -> None:
        if request.op == "_cleanup":
            self.cleanups_in_flight -= 1
            self._notify()

    def _translate(self, request: _Request, payload: Any) -> BaseException:
        try:
            info = (str(payload[0]), str(payload[1]), str(payload[2]))
        except (TypeError, IndexError):
            return CryptoError(
                ErrorCode.PROVIDER_ERROR, f"{request.op}: malformed failure from the {self.spec.name}"
            )
        return self.spec.translate_error(info, request.op, request.context)


def _poll_readable(fd: int, seconds: float) -> None:
    """Busy-poll ``fd`` for up to ``seconds`` (until it is readable), without sleeping."""
    end = time.perf_counter() + seconds
    try:
        while not select.select((fd,), (), (), 0)[0]:
            if time.perf_counter() >= end:
                return
    except (OSError, ValueError):
        return


def _message(payload: Any) -> str:
    try:
        return str(payload[2])
    except (TypeError, IndexError):
        return repr(payload)


def _copy_outcome(source: asyncio.Future[T], target: concurrent.futures.Future[T]) -> None:
    if source.cancelled():
        target.set_exception(CryptoError(ErrorCode.OPERATION_TIMED_OUT, "cancelled"))
        return
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())
