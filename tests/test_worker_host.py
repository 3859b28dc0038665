"""The SDK's worker host: deadlines, restarts, back-off, late answers and the hang hook,
driven with the fake worker (:mod:`cryptostack_core.sdk.workers.fake`) and events -- no real
library, no sleeps, no assertion on elapsed time -- plus a few runs of real worker processes
(fresh interpreters, exit with their parent)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderState, deadline_scope
from cryptostack_core.sdk.workers import (
    HangHook,
    HostSettings,
    StaleGeneration,
    SubprocessLauncher,
    WorkerHost,
    WorkerSpec,
)
from cryptostack_core.sdk.workers.fake import FakeLauncher
from cryptostack_core.testing.waiting import wait_for_exit

BACKEND = "cryptostack_core.sdk.workers.fake:FakeBackend"
WAIT = 30.0  # generous bound for anything that should happen at once


def _late_cleanup(op: str, result: Any) -> tuple[Any, ...]:
    return (("destroy", result),) if op == "create" else ()


HostFactory = Callable[..., WorkerHost]


@pytest.fixture
def fake() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def make_host(fake: FakeLauncher) -> Iterator[HostFactory]:
    hosts: list[WorkerHost] = []

    def make(threads: int = 1, launcher: Any = None, **settings: Any) -> WorkerHost:
        import logging

        spec = WorkerSpec(
            name="test worker",
            backend=BACKEND,
            config=lambda: {},
            threads=threads,
            late_cleanup=_late_cleanup,
        )
        host = WorkerHost(
            spec, HostSettings(**settings), logging.getLogger("test.worker"), launcher=launcher or fake
        )
        host.start()
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()
    for gate in list(fake.world._gates.values()):
        gate.set()


class Background:
    """A call on another thread; its outcome once :meth:`join` returns."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # noqa: BLE001
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self) -> Background:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the call did not end"
        return self


def submit(host: WorkerHost, op: str, *args: Any) -> concurrent.futures.Future[Any]:
    """Start a call on the host's loop and return once the host has taken it (queued or
    sent): callbacks on the loop run in order, so a no-op round after it marks the point."""
    future = asyncio.run_coroutine_threadsafe(host.call_async(op, *args, deadline=None), host.loop)
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), host.loop).result(WAIT)
    return future


def code(exc: BaseException | None) -> ErrorCode | None:
    return exc.code if isinstance(exc, CryptoError) else None


# --- requests in flight --------------------------------------------------------------------


def test_calls_run_concurrently_up_to_the_worker_threads(make_host: HostFactory, fake: FakeLauncher) -> None:
    host = make_host(threads=2)
    world = fake.world
    a = Background(lambda: host.call("block", "a"))
    b = Background(lambda: host.call("block", "b"))
    assert world.entered("a").wait(WAIT) and world.entered("b").wait(WAIT)  # both in flight
    world.gate("b").set()
    assert b.join().result == "b"
    world.gate("a").set()
    assert a.join().result == "a"
    assert host.call("echo", {"x": (1, b"2")}) == {"x": (1, b"2")}
    result, generation = host.call_in("pid")
    assert generation == host.generation == 1 and result == host.worker_pid


def test_async_calls_are_pipelined_on_the_host_loop(make_host: HostFactory) -> None:
    host = make_host(threads=4)

    async def many() -> list[Any]:
        calls = [host.call_async("echo", i) for i in range(50)]
        return [result for result, _generation in await asyncio.gather(*calls)]

    assert asyncio.run_coroutine_threadsafe(many(), host.loop).result(WAIT) == list(range(50))


def test_errors_keep_their_code(make_host: HostFactory) -> None:
    host = make_host()
    with pytest.raises(CryptoError) as err:
        host.call("fail", "INVALID_ARGUMENT", "bad input")
    assert err.value.code is ErrorCode.INVALID_ARGUMENT and err.value.message == "bad input"
    with pytest.raises(CryptoError) as err:
        host.call("no_such_request")
    assert err.value.code is ErrorCode.PROTOCOL_ERROR
    assert host.restarts == 0


def test_sync_call_on_the_loop_thread_is_refused(make_host: HostFactory) -> None:
    host = make_host()

    async def misuse() -> None:
        host.call("echo", 1)

    with pytest.raises(RuntimeError, match="call_async"):
        asyncio.run_coroutine_threadsafe(misuse(), host.loop).result(WAIT)


# --- the deadline rule ---------------------------------------------------------------------


def test_caller_deadline_abandons_the_call_and_its_late_result_is_cleaned_up(
    make_host: HostFactory, fake: FakeLauncher
) -> None:
    host = make_host(threads=2, call_timeout=60)
    world = fake.world
    pid = host.worker_pid
    with deadline_scope(0.2), pytest.raises(CryptoError) as err:
        host.call("create", "slow")  # blocked until the test opens the gate
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT
    assert "abandoned" in err.value.message
    # the worker keeps running the call; nothing was killed
    assert host.worker_pid == pid and host.restarts == 0 and host.abandoned == 1
    assert host.call("echo", "meanwhile") == "meanwhile"
    world.gate("slow").set()  # the call finishes after all: its object is destroyed
    assert world.wait_for(
        lambda: (
            host.late_replies == 1
            and not world.objects
            and any(("destroy", 1) in items for _, items in world.cleanups)
        )
    )
    assert host.worker_pid == pid and host.restarts == 0


def test_call_running_past_call_timeout_kills_and_restarts_the_worker(
    make_host: HostFactory, fake: FakeLauncher
) -> None:
    host = make_host(threads=3, call_timeout=1.0, degraded_seconds=3600)
    world = fake.world
    first_pid, first = host.worker_pid, host.generation
    stuck = Background(lambda: host.call("block", "never"))  # no deadline: call_timeout
    assert world.entered("never").wait(WAIT)  # sent first: the first to reach call_timeout
    keyless = Background(lambda: host.call("block", "keyless"))
    bound = Background(lambda: host.call("block", "bound", generation=first))
    assert world.entered("keyless").wait(WAIT) and world.entered("bound").wait(WAIT)
    assert code(stuck.join().error) is ErrorCode.OPERATION_TIMED_OUT
    assert "call_timeout" in str(stuck.error)
    world.gate("keyless").set()
    # the other calls of the killed worker: keyless ones run again on the new worker...
    assert keyless.join().result == "keyless", keyless.error
    # ...calls bound to the dead generation are told so (the provider reloads its keys)
    assert isinstance(bound.join().error, StaleGeneration)
    assert host.wait_until(lambda h: h.generation == first + 1, WAIT)
    assert host.worker_pid != first_pid and fake.workers[0].killed.is_set()
    assert host.restarts == 1 and host.timeouts == 1
    state, reason = host.state()
    assert state is ProviderState.DEGRADED and "block" in reason
    assert [pid for pid, op, args in world.calls if args == ("keyless",)] == [first_pid, host.worker_pid]


def test_an_abandoned_call_still_running_at_call_timeout_kills_the_worker(
    make_host: HostFactory, fake: FakeLauncher
) -> None:
    host = make_host(threads=2, call_timeout=1.0)
    first = host.generation
    with deadline_scope(0.1), pytest.raises(CryptoError) as err:
        host.call("block", "forever")
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT and host.restarts == 0
    assert host.wait_until(lambda h: h.restarts == 1 and h.generation == first + 1, WAIT)
    assert host.timeouts == 1 and "block" in host.last_restart_reason


def test_a_queued_call_times_out_without_running(make_host: HostFactory, fake: FakeLauncher) -> None:
    host = make_host(threads=1)  # a serial backend (a TPM)
    world = fake.world
    busy = Background(lambda: host.call("block", "busy"))
    assert world.entered("busy").wait(WAIT)
    with deadline_scope(0.2), pytest.raises(CryptoError) as err:
        host.call("echo", "queued")
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT and "busy" in err.value.message
    world.gate("busy").set()
    assert busy.join().result == "busy"
    assert host.call("echo", "after") == "after"
    assert [args for _, op, args in world.calls if op == "echo"] == [("after",)]
    assert host.restarts == 0 and host.abandoned == 0


def test_deadline_already_passed(make_host: HostFactory) -> None:
    host = make_host()
    with deadline_scope(-1), pytest.raises(CryptoError) as err:
        host.call("echo", 1)
    assert err.value.code is ErrorCode.OPERATION_TIMED_OUT


# --- losing workers ------------------------------------------------------------------------


def test_worker_death_keyless_calls_retried_bound_calls_stale(
    make_host: HostFactory, fake: FakeLauncher
) -> None:
    host = make_host(threads=2)
    world = fake.world
    generation = host.generation
    keyless = Background(lambda: host.call("block", "k"))
    bound = Background(lambda: host.call("block", "b", generation=generation))
    assert world.entered("k").wait(WAIT) and world.entered("b").wait(WAIT)
    fake.workers[0].kill()  # the process dies under both calls
    assert isinstance(bound.join().error, StaleGeneration)
    world.gate("k").set()
    assert keyless.join().result == "k"
    assert host.restarts == 1 and "exited" in host.last_restart_reason
    with pytest.raises(StaleGeneration):
        host.call("echo", 1, generation=generation)
    # an idle worker that dies is replaced without any call
    fake.workers[-1].kill()
    assert host.wait_until(lambda h: h.restarts == 2 and h.generation == 3, WAIT)
    assert host.call("echo", "fine") == "fine"


def test_a_worker_dying_in_a_call_is_replaced(make_host: HostFactory, fake: FakeLauncher) -> None:
    host = make_host()
    with pytest.raises(CryptoError) as err:
        host.call("die")  # keyless: tried twice, dies twice
    assert err.value.code is ErrorCode.PROVIDER_ERROR and "exited during die" in err.value.message
    assert host.call("echo", 2) == 2


def test_fatal_answer_restarts_and_keyless_calls_retry_once(
    make_host: HostFactory, fake: FakeLauncher
) -> None:
    host = make_host()
    with pytest.raises(CryptoError) as err:
        host.call("fatal", "device removed")
    assert err.value.code is ErrorCode.PROVIDER_ERROR and "device removed" in err.value.message
    assert host.wait_until(lambda h: h.restarts == 2 and h.generation == 3, WAIT)
    assert len([1 for _, op, _ in fake.world.calls if op == "fatal"]) == 2
    assert host.call("echo", 3) == 3


def test_answers_are_plain_data_only(make_host: HostFactory) -> None:
    """A worker sending an object of an undeclared type is cut off (a corrupted library
    cannot make the daemon unpickle arbitrary objects)."""
    host = make_host()
    with pytest.raises(CryptoError) as err:
        host.call("object")
    assert err.value.code is ErrorCode.PROVIDER_ERROR and "wire type" in err.value.message
    assert host.restarts == 2
    assert host.call("echo", 4) == 4


# --- starting and restarting ---------------------------------------------------------------


def test_start_failure_is_reported(fake: FakeLauncher, make_host: HostFactory) -> None:
    fake.fail_starts = 1
    with pytest.raises(CryptoError) as err:
        make_host()
    assert err.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert "scripted start failure" in err.value.message
    assert make_host().call("echo", 1) == 1


def test_failed_restarts_back_off_and_recover(make_host: HostFactory, fake: FakeLauncher) -> None:
    host = make_host(backoff_initial=0.05, backoff_max=0.4)
    assert [host._backoff(n) for n in range(7)] == [0.0, 0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    hold = threading.Event()
    fake.fail_starts = 2
    fake.hold_start = hold  # the first restart attempt waits for the test
    fake.workers[0].kill()
    assert host.wait_until(lambda h: h.restarts == 1, WAIT)
    assert host.state()[0] is ProviderState.DEGRADED  # restarting
    waiting = submit(host, "echo", "waits for the restart")
    hold.set()
    # the attempt fails: the waiting call and new calls learn why at once
    with pytest.raises(CryptoError) as err:
        waiting.result(WAIT)
    assert err.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert "scripted start failure" in err.value.message
    # back-off, a second failure, then a start that works
    assert host.wait_until(lambda h: h.generation is not None, WAIT)
    assert len(fake.workers) == 4 and host.call("echo", 5) == 5


def test_workers_dying_young_are_restarted_with_back_off(make_host: HostFactory, fake: FakeLauncher) -> None:
    host = make_host(backoff_initial=0.01, backoff_max=60)
    for expected in (1, 2, 3):
        fake.workers[-1].kill()  # dies before serving anything
        assert host.wait_until(lambda h, n=expected: h.restarts == n and h.generation == n + 1, WAIT)
    assert host._young_deaths == 3  # the next restart waits backoff(2)
    assert host.call("echo", 6) == 6


def test_close_is_orderly_and_final(make_host: HostFactory, fake: FakeLauncher) -> None:
    host = make_host()
    pid = host.worker_pid
    host.close()
    assert fake.world.closed == [pid]
    assert host.state() == (ProviderState.UNAVAILABLE, "closed")
    with pytest.raises(CryptoError) as err:
        host.call("echo", 1)
    assert err.value.code is ErrorCode.PROVIDER_UNAVAILABLE


# --- the hang hook ---------------------------------------------------------------------------


def test_hang_hook_holds_the_next_call_of_one_op(make_host: HostFactory) -> None:
    host = make_host(threads=2, hangs=(HangHook("echo", times=1),), call_timeout=60)
    held = Background(lambda: host.call("echo", "held"))
    assert host.wait_until(lambda h: h.hangs_entered == 1, WAIT)
    assert host.call("echo", "next") == "next"  # once only, and the other thread serves
    host.kill_worker("test")
    assert held.join().result == "held"  # keyless: sent again, not held the second time
    assert host.hangs_entered == 1


# --- real worker processes -----------------------------------------------------------------


def _real_host(**settings: Any) -> WorkerHost:
    import logging

    spec = WorkerSpec(name="real worker", backend=BACKEND, config=lambda: {}, threads=2)
    host = WorkerHost(
        spec, HostSettings(**settings), logging.getLogger("test.real"), launcher=SubprocessLauncher()
    )
    host.start()
    return host


def test_real_worker_is_a_fresh_interpreter_and_is_replaced_after_sigkill() -> None:
    host = _real_host()
    try:
        pid = host.worker_pid
        assert pid is not None and host.call("pid") == pid
        assert host.call("has_module", "pytest") is False  # not a fork of this process
        os.kill(pid, signal.SIGKILL)
        assert host.call("echo", "again") == "again"  # keyless: waits for the new worker
        assert host.worker_pid not in (None, pid) and host.restarts == 1
        assert wait_for_exit(pid, WAIT)
    finally:
        host.close()


def test_real_worker_stuck_in_a_call_exits_when_the_daemon_dies(tmp_path: Any) -> None:
    script = textwrap.dedent(f"""
        import logging, sys, threading
        from cryptostack_core.sdk.workers import *
        spec = WorkerSpec(name="w", backend={BACKEND!r}, config=lambda: {{}}, threads=1)
        host = WorkerHost(spec, HostSettings(hangs=(HangHook("echo"),)), logging.getLogger())
        host.start()
        threading.Thread(target=host.call, args=("echo", 1), daemon=True).start()
        host.wait_until(lambda h: h.hangs_entered == 1, 30)
        print(host.worker_pid, flush=True)
        threading.Event().wait()
    """)
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        worker = int(daemon.stdout.readline())
        os.kill(worker, 0)  # alive, held inside a call
    finally:
        daemon.kill()
        daemon.wait()
    assert wait_for_exit(worker, WAIT), "the worker outlived its daemon"
