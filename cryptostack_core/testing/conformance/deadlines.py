"""Deadlines and recovery.

Two ways to make a call outlive its deadline:

* **the provider's hang hook** (:class:`~cryptostack_core.testing.conformance.profile.HangProbe`,
  e.g. the worker host's ``test_hang`` option): the provider itself must answer
  ``OPERATION_TIMED_OUT`` by the deadline -- through the SDK under
  :func:`~cryptostack_core.sdk.deadline_scope`, and over a daemon -- and serve the next call;
* **the kit's gate** for providers that run in the daemon's process: the call is held in a
  wrapper (:mod:`.gate`) around the provider inside a real daemon; the caller must get
  ``OPERATION_TIMED_OUT`` at its deadline, its context must be in error state, other clients
  must be served meanwhile, and what the held call makes after its caller gave up must be
  released.

Bounds on elapsed time are generous upper limits (:data:`GRACE`), never targets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import cryptostack_core as cs
from cryptostack_core.sdk import CryptoError, ErrorCode, Operation, deadline_scope
from cryptostack_core.testing.conformance import materials, sdk_checks
from cryptostack_core.testing.conformance.client_checks import (
    Client,
    client_fingerprint,
    connected,
)
from cryptostack_core.testing.conformance.faults import Faults, expect_error
from cryptostack_core.testing.conformance.profile import HangProbe
from cryptostack_core.testing.conformance.target import ProviderUnderTest, slot_name
from cryptostack_core.testing.entrypoints import provider_environment, provider_path
from cryptostack_core.testing.waiting import Gate, eventually
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmKind

__all__ = ["DEADLINE", "GRACE", "check_gate_deadline", "check_hang_daemon", "check_hang_sdk"]

DEADLINE = 0.5
"""The deadline (s) the kit gives a call it makes hang."""
GRACE = 10.0
"""How long after the deadline an answer may still come (a loaded machine), at most."""
RECOVERY = 60.0
"""How long a provider may take to serve calls again after a hang (restarting a worker)."""


# --- the provider's own hang hook ---------------------------------------------------------------


def _probe_call_sdk(put: ProviderUnderTest, provider: Any, probe: HangProbe) -> Callable[[], object]:
    """The SDK call the probe arms, as a closure."""
    op = probe.operation
    if op == "hash":

        def run_hash() -> object:
            hasher = provider.create_hash(probe.algorithm)
            hasher.update(sdk_checks.MESSAGE)
            return hasher.finalize()

        return run_hash
    if op == "random":
        return lambda: provider.random_bytes(16)
    if op == "generate_key":
        return lambda: provider.generate_key(probe.algorithm, sdk_checks.full_permissions(probe.algorithm))
    if op == "sign":
        key_algorithm = sdk_checks.key_algorithm_for(put, probe.algorithm)
        with deadline_scope(None):
            key = provider.generate_key(key_algorithm, sdk_checks.full_permissions(key_algorithm))

        def run_sign() -> object:
            signer = provider.create_signer(probe.algorithm, key, b"")
            signer.update(sdk_checks.MESSAGE)
            return signer.finalize()

        return run_sign
    raise ValueError(f"HangProbe.operation {op!r}: one of hash, random, generate_key, sign")


def check_hang_sdk(put: ProviderUnderTest) -> None:
    """With its hang hook armed, the provider answers OPERATION_TIMED_OUT by the deadline
    (called through the SDK under ``deadline_scope``) and then serves the next call."""
    probe = put.profile.hang
    assert probe is not None
    with Faults(f"{put.name}: deadline of a hanging call through the SDK") as faults, ExitStack() as stack:
        provider = put.start_provider(stack, extra_options=probe.options, label="hang-sdk")
        call = _probe_call_sdk(put, provider, probe)
        outcome: dict[str, object] = {}

        def run() -> None:
            started = time.monotonic()
            try:
                with deadline_scope(DEADLINE):
                    outcome["result"] = call()
            except BaseException as exc:
                outcome["error"] = exc
            outcome["elapsed"] = time.monotonic() - started

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(DEADLINE + GRACE)
        if worker.is_alive():
            faults.add(
                f"ignores deadlines: a {probe.operation} call held by the hang hook is "
                f"still running {DEADLINE + GRACE:g} s after its {DEADLINE:g} s deadline"
            )
            return
        elapsed = float(outcome["elapsed"])  # type: ignore[arg-type]
        error = outcome.get("error")
        if error is None:
            if elapsed < DEADLINE:
                faults.add(
                    f"the hang hook ({probe.options}) did not hold the {probe.operation} "
                    f"call: it returned after {elapsed:.2f} s"
                )
            else:
                faults.add(
                    f"ignores deadlines: the held {probe.operation} call returned a "
                    f"result after {elapsed:.2f} s under a {DEADLINE:g} s deadline, "
                    "instead of OPERATION_TIMED_OUT"
                )
            return
        if not (isinstance(error, CryptoError) and error.code is ErrorCode.OPERATION_TIMED_OUT):
            faults.add(
                f"a call past its deadline raised {type(error).__name__}: {error}, not "
                "CryptoError(OPERATION_TIMED_OUT)"
            )
        with faults.step("the next call after the hang"):
            again = _probe_call_sdk(put, provider, probe)
            eventually(
                lambda: _succeeds(again),
                RECOVERY,
                f"a {probe.operation} call to succeed after the hang",
                ignore=(CryptoError,),
            )


def _succeeds(call: Callable[[], object]) -> bool:
    with deadline_scope(RECOVERY):
        call()
    return True


def _probe_call_client(c: Client, probe: HangProbe, timeout: float | None) -> Callable[[], object]:
    """The client call the probe arms, on a context with ``timeout``."""
    op = probe.operation
    if op == "hash":
        config = cs.HashContextConfig().set_algorithm(probe.algorithm).set_provider(c.pid)
        if timeout:
            config.set_operation_timeout(timeout)
        hasher = c.ctx.create_hash_context(config)
        return lambda: hasher.single_shot(sdk_checks.MESSAGE)
    km_config = cs.KeyManagementContextConfig()
    if timeout:
        km_config.set_operation_timeout(timeout)
    km = c.ctx.create_key_management_context(km_config)
    if op == "random":
        return lambda: km.generate_random(16, provider=c.pid)
    if op == "generate_key":
        params = cs.GenerateKeyParams().set_algorithm(probe.algorithm).set_provider(c.pid)
        return lambda: km.generate_key(params)
    if op == "sign":
        key = c.key(c.key_algorithm_for(probe.algorithm))
        sign_config = cs.SignContextConfig().set_algorithm(probe.algorithm).set_key(key)
        sign_config.set_provider(c.pid)
        if timeout:
            sign_config.set_operation_timeout(timeout)
        signer = c.ctx.create_sign_context(sign_config)
        return lambda: signer.sign(sdk_checks.MESSAGE)
    raise ValueError(f"HangProbe.operation {op!r}: one of hash, random, generate_key, sign")


def _slot_key(put: ProviderUnderTest, c: Client) -> tuple[str, bytes | None] | None:
    """A key persisted in its slot before the hang, and how it behaves (None: no key type)."""
    for algorithm in put.key_algorithms():
        if not put.is_slow(algorithm) and c.obtainable(algorithm):
            slot = c.ctx.resolve_resource(slot_name(algorithm), cs.ResourceType.KEY_SLOT)
            c.km.persist_key(slot, c.key(algorithm))
            return algorithm, client_fingerprint(c, slot, algorithm)
    return None


def check_hang_daemon(put: ProviderUnderTest) -> None:
    """Over a daemon with the hang hook armed: the caller gets OPERATION_TIMED_OUT at its
    deadline, the context is in error state, other clients are served again, and a key
    persisted before the hang works the same afterwards (reloaded by a new worker)."""
    probe = put.profile.hang
    assert probe is not None
    with (
        Faults(f"{put.name}: deadline of a hanging call over the daemon") as faults,
        put.new_daemon(extra_options=probe.options, label="hang-daemon") as daemon,
        connected(put, daemon) as held,
        connected(put, daemon) as other,
    ):
        persisted = _slot_key(put, other)
        call = _probe_call_client(held, probe, DEADLINE)
        started = time.monotonic()
        problem = expect_error(call, ErrorCode.OPERATION_TIMED_OUT, "the held call")
        elapsed = time.monotonic() - started
        faults.check(not problem, problem)
        faults.check(
            elapsed < DEADLINE + GRACE, f"the caller waited {elapsed:.1f} s for a {DEADLINE:g} s deadline"
        )
        problem = expect_error(call, ErrorCode.CONTEXT_IN_ERROR_STATE, "the same context after the timeout")
        faults.check(not problem, problem)
        with faults.step("another client afterwards"):
            fresh = _probe_call_client(other, probe, RECOVERY)
            eventually(
                lambda: fresh() is not None,
                RECOVERY,
                "another client's call to succeed after the hang",
                ignore=(cs.CryptoError,),
            )
        if persisted is not None:
            algorithm, expected = persisted
            with faults.step(f"the {algorithm} key in its slot after the hang"):
                slot = other.ctx.resolve_resource(slot_name(algorithm), cs.ResourceType.KEY_SLOT)
                faults.check(
                    client_fingerprint(other, slot, algorithm) == expected,
                    f"the {algorithm} key persisted before the hang behaves differently after it",
                )
        state = next(p for p in other.stack.status()["providers"] if p["id"] == put.provider_id)
        faults.check(
            state["state"] != "unavailable", f"after recovering, status says the provider is {state}"
        )


# --- the kit's gate, for providers in the daemon's process -----------------------------------------


def _gated_call(put: ProviderUnderTest) -> tuple[str, str]:
    """(call the gate holds, algorithm): a key generation when the provider makes keys (so a
    late key is left to clean up), else a hash, else a random draw."""
    for algorithm in put.key_algorithms():
        if not put.is_slow(algorithm) and put.claims(algorithm, Operation.GENERATE_KEY):
            return "generate_key", algorithm
    for algorithm in put.key_algorithms():
        if put.claims(algorithm, Operation.IMPORT_KEY) and materials.private_material(algorithm) is not None:
            return "import_key", algorithm
    for cap in sorted(put.capabilities, key=lambda c: c.algorithm):
        if cap.operation is Operation.HASH:
            return "hash", cap.algorithm
    if put.claims("RANDOM", Operation.RANDOM):
        return "random", "RANDOM"
    return "", ""


def _other_call(put: ProviderUnderTest, c: Client, held: str) -> Callable[[], object]:
    """A call of another kind than the held one (or a second one of its kind)."""
    for cap in sorted(put.capabilities, key=lambda x: x.algorithm):
        kind = REGISTRY.get(cap.algorithm).kind
        if cap.operation is Operation.HASH and held != "hash":
            hasher = c.hasher(cap.algorithm)
            return lambda: hasher.single_shot(b"meanwhile")
        if kind is AlgorithmKind.RANDOM and held != "random":
            return lambda: c.km.generate_random(8, provider=c.pid)
    algorithm = put.key_algorithms()[0] if put.key_algorithms() else ""
    return lambda: c.key(algorithm).release()


def check_gate_deadline(put: ProviderUnderTest) -> None:
    """A call held in the provider past its deadline: OPERATION_TIMED_OUT for the caller at
    its deadline, the context in error state, other clients served meanwhile, and what the
    call makes after being abandoned released; the provider then works as before."""
    held_call, algorithm = _gated_call(put)
    with Faults(f"{put.name}: a call past its deadline over the daemon") as faults:
        if not held_call:
            faults.add("the provider claims no key, hash or random operation the kit can hold")
            return
        gate = Gate()
        entry_points = provider_path(
            put.subdirectory("gate-entry-point"),
            {"kit-gate": "cryptostack_core.testing.conformance.gate:GateProvider"},
            distribution="cryptostack-kit-gate",
        )

        def wrap(options: dict[str, Any]) -> dict[str, Any]:
            return {"inner": put.name, "inner_options": options, "gate": gate.path, "hold": held_call}

        with ExitStack() as cleanup:
            cleanup.callback(gate.close)
            daemon = cleanup.enter_context(
                put.new_daemon(
                    label="gate-daemon",
                    provider_name="kit-gate",
                    wrap=wrap,
                    slots=False,
                    environment=provider_environment(entry_points),
                )
            )
            cleanup.callback(gate.open)  # before the daemon stops: nothing stays held
            caller = cleanup.enter_context(connected(put, daemon))
            other = cleanup.enter_context(connected(put, daemon))
            if held_call in ("generate_key", "import_key"):
                config = cs.KeyManagementContextConfig().set_operation_timeout(DEADLINE)
                km = caller.ctx.create_key_management_context(config)
                if held_call == "generate_key":
                    params = cs.GenerateKeyParams().set_algorithm(algorithm)
                    params.set_provider(caller.pid)

                    def call() -> object:
                        return km.generate_key(params)
                else:
                    material = materials.private_material(algorithm)
                    assert material is not None
                    imported = cs.ImportKeyParams().set_algorithm(algorithm).set_material(*material)
                    imported.set_provider(caller.pid)

                    def call() -> object:
                        return km.import_key(imported)
            elif held_call == "hash":
                hasher = caller.ctx.create_hash_context(
                    cs.HashContextConfig()
                    .set_algorithm(algorithm)
                    .set_provider(caller.pid)
                    .set_operation_timeout(DEADLINE)
                )

                def call() -> object:
                    return hasher.single_shot(b"held")
            else:
                km = caller.ctx.create_key_management_context(
                    cs.KeyManagementContextConfig().set_operation_timeout(DEADLINE)
                )

                def call() -> object:
                    return km.generate_random(8, provider=caller.pid)

            started = time.monotonic()
            problem = expect_error(call, ErrorCode.OPERATION_TIMED_OUT, f"a held {held_call}")
            elapsed = time.monotonic() - started
            faults.check(not problem, problem)
            faults.check(
                elapsed < DEADLINE + GRACE, f"the caller waited {elapsed:.1f} s for a {DEADLINE:g} s deadline"
            )
            faults.check(gate.wait_arrival(GRACE), f"the {held_call} call never reached the provider")
            problem = expect_error(call, ErrorCode.CONTEXT_IN_ERROR_STATE, "the context after its timeout")
            faults.check(not problem, problem)
            with faults.step("another client while the call is held"):
                _other_call(put, other, held_call)()
            gate.open()

            def settled() -> bool:
                # The client gave up at its deadline, the daemon's came a little later: a
                # call finishing in between was answered to nobody, and the client frees
                # what it made with its next request (this one).
                caller.stack.status()
                status = other.stack.status()
                gated = next(p for p in status["providers"] if p["id"] == put.provider_id)
                return bool(gated.get("live_keys") == 0)

            with faults.step("what the abandoned call made is released"):
                eventually(settled, RECOVERY, "the abandoned call's key to be released")
            with faults.step("the provider after the held call"):
                if held_call in ("generate_key", "import_key"):
                    caller.key(algorithm).release()
                elif held_call == "random":
                    caller.km.generate_random(8, provider=caller.pid)
                else:
                    caller.hasher(algorithm).single_shot(b"after")
