"""Requests in flight together on one connection: asyncio tasks pipelining on one stack,
threads sharing one blocking stack, per-request deadlines, and the daemon serving requests on
one context in the order they arrive. Ordering and timing are decided by gates (a mock call
held until the test opens it), never by sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core import ErrorCode as E
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.waiting import Gate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from secutil import RawClient  # noqa: E402

MockConfig = Callable[..., dict[str, Any]]
WAIT = 60.0  # generous bound for a failing test; never decides a passing one


def gated_config(mock_config: MockConfig, gate: Gate, call: str = "hash.update") -> dict[str, Any]:
    config = mock_config()
    config["providers"][0]["options"] = {"gates": {call: gate.path}}
    return config


def hash_config(provider: int | None = None) -> cs.HashContextConfig:
    config = cs.HashContextConfig().set_algorithm("SHA-256")
    return config.set_provider(provider) if provider is not None else config


# --- asyncio: pipelining on one connection ------------------------------------------------------
def test_async_tasks_share_one_connection_and_get_their_own_answers(daemon: DaemonProcess) -> None:
    messages = [os.urandom(1 + i % 97) for i in range(300)]

    async def main() -> list[bytes]:
        config = cs.CryptoStackConfig().set_connection_endpoint(daemon.endpoint)
        async with cs.create_async_crypto_stack(config) as stack:
            ctx = stack.create_crypto_context()
            hashers = [await ctx.create_hash_context(hash_config()) for _ in range(16)]
            return await asyncio.gather(*(hashers[i % 16].single_shot(m) for i, m in enumerate(messages)))

    assert asyncio.run(main()) == [hashlib.sha256(m).digest() for m in messages]


def test_async_request_in_flight_does_not_hold_up_others(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """One task's call is held in the daemon; another task's calls on the same connection
    are answered meanwhile; a third task's deadline passes without disturbing either; the
    held call then completes with its own answer."""
    gate = Gate()
    try:
        daemon = daemon_factory(gated_config(mock_config, gate, "random"))

        async def main() -> None:
            config = cs.CryptoStackConfig().set_connection_endpoint(daemon.endpoint)
            async with cs.create_async_crypto_stack(config) as stack:
                ctx = stack.create_crypto_context()
                km = ctx.create_key_management_context()
                impatient = ctx.create_key_management_context(
                    cs.KeyManagementContextConfig().set_operation_timeout(0.2)
                )
                quick = await ctx.create_hash_context(hash_config())
                slow = asyncio.ensure_future(km.generate_random(16))
                loop = asyncio.get_running_loop()
                assert await loop.run_in_executor(None, gate.wait_arrival, WAIT)
                assert not slow.done()
                # The connection still carries other requests, answered in any order.
                for i in range(20):
                    assert await quick.single_shot(b"%d" % i) == hashlib.sha256(b"%d" % i).digest()
                with pytest.raises(cs.CryptoError) as err:
                    await impatient.generate_random(16)  # held at the gate too
                assert err.value.code is E.OPERATION_TIMED_OUT
                assert not slow.done()
                gate.open()
                assert len(await asyncio.wait_for(slow, WAIT)) == 16
                # The late answer of the timed-out request was dropped, not given to others.
                for i in range(5):
                    assert (
                        await quick.single_shot(b"after %d" % i) == hashlib.sha256(b"after %d" % i).digest()
                    )
                assert len((await stack.status())["clients"]) == 1

        asyncio.run(main())
    finally:
        gate.close()


def test_async_cancelled_request_does_not_poison_the_connection(daemon: DaemonProcess) -> None:
    async def main() -> None:
        config = cs.CryptoStackConfig().set_connection_endpoint(daemon.endpoint)
        async with cs.create_async_crypto_stack(config) as stack:
            ctx = stack.create_crypto_context()
            h = await ctx.create_hash_context(hash_config())
            tasks = [asyncio.ensure_future(h.single_shot(b"%d" % i)) for i in range(50)]
            for task in tasks[::2]:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for i, result in enumerate(results):
                if not isinstance(result, asyncio.CancelledError):
                    assert result == hashlib.sha256(b"%d" % i).digest()
            assert await h.single_shot(b"x") == hashlib.sha256(b"x").digest()

    asyncio.run(main())


def test_async_more_tasks_than_the_daemon_takes_in_flight(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """More concurrent calls than ``max_in_flight``: the client holds the rest back instead
    of having them refused; all are answered."""
    gate = Gate()
    try:
        daemon = daemon_factory(gated_config(mock_config, gate))

        async def main() -> None:
            config = cs.CryptoStackConfig().set_connection_endpoint(daemon.endpoint)
            async with cs.create_async_crypto_stack(config) as stack:
                ctx = stack.create_crypto_context()
                hashers = [await ctx.create_hash_context(hash_config()) for _ in range(100)]
                calls = [asyncio.ensure_future(h.single_shot(b"%d" % i)) for i, h in enumerate(hashers)]
                loop = asyncio.get_running_loop()
                assert await loop.run_in_executor(None, gate.wait_arrival, WAIT)
                gate.open()
                results = await asyncio.wait_for(asyncio.gather(*calls), WAIT)
                assert results == [hashlib.sha256(b"%d" % i).digest() for i in range(100)]

        asyncio.run(main())
    finally:
        gate.close()


# --- threads sharing one blocking stack ---------------------------------------------------------
def test_threads_share_one_connection_and_get_their_own_answers(daemon: DaemonProcess) -> None:
    errors: list[BaseException] = []
    with daemon.stack() as stack:

        def work(n: int) -> None:
            try:
                h = stack.create_crypto_context().create_hash_context(hash_config())
                for i in range(100):
                    data = b"%d-%d" % (n, i)
                    assert h.single_shot(data) == hashlib.sha256(data).digest()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not errors, errors
        # One connection served all eight threads.
        assert len(stack.status()["clients"]) == 1


def test_threads_requests_are_in_flight_together(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """A thread's call held in the daemon does not block another thread's calls on the
    same stack; a third thread's deadline passes alone; the connection stays usable."""
    gate = Gate()
    try:
        daemon = daemon_factory(gated_config(mock_config, gate, "random"))
        with daemon.stack() as stack:
            ctx = stack.create_crypto_context()
            km = ctx.create_key_management_context()
            result: list[Any] = []
            slow = threading.Thread(target=lambda: result.append(km.generate_random(16)))
            slow.start()
            assert gate.wait_arrival(WAIT)
            quick = ctx.create_hash_context(hash_config())
            for i in range(20):
                assert quick.single_shot(b"%d" % i) == hashlib.sha256(b"%d" % i).digest()
            impatient = ctx.create_key_management_context(
                cs.KeyManagementContextConfig().set_operation_timeout(0.2)
            )
            with pytest.raises(cs.CryptoError) as err:
                impatient.generate_random(16)
            assert err.value.code is E.OPERATION_TIMED_OUT
            assert slow.is_alive()
            gate.open()
            slow.join(WAIT)
            assert len(result) == 1 and len(result[0]) == 16
            assert quick.single_shot(b"after") == hashlib.sha256(b"after").digest()
    finally:
        gate.close()


def test_slow_calls_from_threads_run_together_on_one_stack(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Six slow calls from six threads on one stack are all in the daemon at once (the old
    client sent one request at a time per connection)."""
    gate = Gate()
    try:
        daemon = daemon_factory(gated_config(mock_config, gate, "random"))
        with daemon.stack() as stack:
            km = stack.create_crypto_context().create_key_management_context()
            keys: list[Any] = []
            threads = [threading.Thread(target=lambda: keys.append(km.generate_random(32))) for _ in range(6)]
            for t in threads:
                t.start()
            for _ in range(6):  # all six reach the provider before any is let through
                assert gate.wait_arrival(WAIT)
            gate.open()
            for t in threads:
                t.join(WAIT)
            assert len(keys) == 6 and all(len(k) == 32 for k in keys) and len(set(keys)) == 6
    finally:
        gate.close()


# --- the daemon: requests on one context in arrival order -----------------------------------------
def test_an_inline_request_waits_for_the_earlier_one_on_its_context(daemon: DaemonProcess) -> None:
    """Regression: a small update (served on the event loop) pipelined behind a large one
    (sent to a thread) ran first, and the digest came out of order."""
    with RawClient(daemon.socket_path, timeout=WAIT) as raw:
        ctx = raw.request("hash.create", {"algorithm": "SHA-256"}, 1)["result"]["ctx"]
        for round_ in range(5):
            big, small = os.urandom(70000), os.urandom(100)
            raw.send_raw(
                b"".join(
                    RawClient.frame(m)
                    for m in (
                        {"id": 2, "op": "hash.init", "args": {"ctx": ctx}},
                        {"id": 3, "op": "hash.update", "args": {"ctx": ctx, "data": big}},
                        {"id": 4, "op": "hash.update", "args": {"ctx": ctx, "data": small}},
                        {"id": 5, "op": "hash.finalize", "args": {"ctx": ctx}},
                    )
                )
            )
            answers = {a["id"]: a for a in (raw.recv(), raw.recv(), raw.recv(), raw.recv())}
            assert all(a["ok"] for a in answers.values()), answers
            assert answers[5]["result"] == hashlib.sha256(big + small).digest(), round_


def test_pipelined_requests_on_one_context_run_in_order(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Regression: a small update pipelined behind a large one (which runs on a thread) ran
    first on the event loop, and the digest came out of order."""
    gate = Gate()
    try:
        daemon = daemon_factory(gated_config(mock_config, gate))
        with RawClient(daemon.socket_path, timeout=WAIT) as raw:
            ctx = raw.request("hash.create", {"algorithm": "SHA-256"}, 1)["result"]["ctx"]
            big, small = os.urandom(70000), b"small and late"
            frames = b"".join(
                RawClient.frame(m)
                for m in (
                    {"id": 2, "op": "hash.init", "args": {"ctx": ctx}},
                    {"id": 3, "op": "hash.update", "args": {"ctx": ctx, "data": big}},
                    {"id": 4, "op": "hash.update", "args": {"ctx": ctx, "data": small}},
                    {"id": 5, "op": "hash.finalize", "args": {"ctx": ctx}},
                    {"id": 6, "op": "ping", "args": {}},
                )
            )
            raw.send_raw(frames)
            assert gate.wait_arrival(WAIT)  # the large update is held in the provider
            first = raw.recv()  # the init, and the ping: other work is not held up
            second = raw.recv()
            assert {first["id"], second["id"]} == {2, 6}
            gate.open()
            answers = {a["id"]: a for a in (raw.recv(), raw.recv(), raw.recv())}
            assert all(a["ok"] for a in answers.values()), answers
            assert answers[5]["result"] == hashlib.sha256(big + small).digest()
    finally:
        gate.close()


def test_a_request_waiting_for_its_context_keeps_its_deadline(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    gate = Gate()
    try:
        daemon = daemon_factory(gated_config(mock_config, gate))
        with RawClient(daemon.socket_path, timeout=WAIT) as raw:
            ctx = raw.request("hash.create", {"algorithm": "SHA-256"}, 1)["result"]["ctx"]
            raw.send_raw(
                b"".join(
                    RawClient.frame(m)
                    for m in (
                        {"id": 2, "op": "hash.single_shot", "args": {"ctx": ctx, "data": b"x"}},
                        {
                            "id": 3,
                            "op": "hash.single_shot",
                            "args": {"ctx": ctx, "data": b"y"},
                            "timeout_ms": 200,
                        },
                    )
                )
            )
            assert gate.wait_arrival(WAIT)
            late = raw.recv()  # the second waits behind the first and times out there
            assert late["id"] == 3 and late["error"]["code"] == "OPERATION_TIMED_OUT"
            gate.open()
            first = raw.recv()
            assert first["id"] == 2
            assert raw.request("ping", {}, 4)["result"] == "pong"
    finally:
        gate.close()
