"""The conformance suite as pytest tests: subclass :class:`ConformanceSuite` in a test module
(or run ``pytest --cryptostack-provider NAME``)::

    from cryptostack_core.testing.conformance import ConformanceSuite

    class TestBlake2Conformance(ConformanceSuite):
        provider = "blake2"          # entry-point name in cryptostack.providers
        options_file = None          # optional TOML (see the profile module)

The ``cryptostack`` pytest plugin (entry point ``pytest11``, installed with
``cryptostack-core[test]``) parametrizes the tests with the provider's claims, vector files
and deadline mode, and prints per provider what ran at the end of the session.
"""

from __future__ import annotations

import json

import pytest

from cryptostack_core.sdk import Capability
from cryptostack_core.testing.conformance import (
    client_checks,
    deadlines,
    sdk_checks,
    vector_checks,
)
from cryptostack_core.testing.conformance.target import ProviderUnderTest
from cryptostack_core.testing.conformance.vector_checks import VectorItem

__all__ = ["REPORT_KEY", "ConformanceSuite"]

REPORT_KEY = "cryptostack-conformance"
"""``user_properties`` key under which each test reports what it checked."""


def _report(request: pytest.FixtureRequest, put: ProviderUnderTest, check: str, **facts: object) -> None:
    request.node.user_properties.append(
        (REPORT_KEY, json.dumps({"provider": put.name, "id": put.provider_id, "check": check, **facts}))
    )


class ConformanceSuite:
    """The provider contract; ``provider`` names the provider (None: the command line's)."""

    provider: str | None = None
    options_file: str | None = None

    # --- through the SDK ----------------------------------------------------------------------
    def test_lifecycle_and_claims(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """Claims are registered names with operations their kind allows; state, describe,
        a second instance."""
        sdk_checks.check_lifecycle(cryptostack_kit)
        _report(request, cryptostack_kit, "lifecycle")

    def test_claim_through_sdk(
        self,
        cryptostack_kit: ProviderUnderTest,
        cryptostack_capability: Capability,
        request: pytest.FixtureRequest,
    ) -> None:
        """Every claim works when the provider is called directly."""
        sdk_checks.check_capability(cryptostack_kit, cryptostack_capability)
        _report(request, cryptostack_kit, "claim-sdk")

    def test_key_round_trip_through_sdk(
        self,
        cryptostack_kit: ProviderUnderTest,
        cryptostack_key_algorithm: str,
        request: pytest.FixtureRequest,
    ) -> None:
        """persist -> load_stored_key, export -> import: the same key."""
        if cryptostack_key_algorithm == "(none)":
            assert cryptostack_kit.key_algorithms() == []
        else:
            sdk_checks.check_key_round_trip(cryptostack_kit, cryptostack_key_algorithm)
        _report(request, cryptostack_kit, "keys-sdk")

    def test_threads_through_sdk(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """Concurrent calls from several threads."""
        sdk_checks.check_threads(cryptostack_kit)
        _report(request, cryptostack_kit, "threads-sdk")

    def test_no_references_after_release(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """Released keys are not kept alive by the provider."""
        sdk_checks.check_leaks(cryptostack_kit)
        _report(request, cryptostack_kit, "leaks-sdk")

    # --- over a real daemon -------------------------------------------------------------------
    def test_claim_over_daemon(
        self,
        cryptostack_kit: ProviderUnderTest,
        cryptostack_capability: Capability,
        request: pytest.FixtureRequest,
    ) -> None:
        """Every claim works through the client API, pinned to the provider."""
        client_checks.check_capability(cryptostack_kit, cryptostack_capability)
        _report(request, cryptostack_kit, "claim-daemon")

    def test_unclaimed_is_refused(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """NO_COMPATIBLE_PROVIDER for what it does not claim, UNSUPPORTED_ALGORITHM for names
        nobody knows."""
        client_checks.check_unclaimed(cryptostack_kit)
        _report(request, cryptostack_kit, "unclaimed")

    def test_call_order_and_reset(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """INVALID_STATE out of order; reset() starts over correctly."""
        client_checks.check_call_order(cryptostack_kit)
        _report(request, cryptostack_kit, "call-order")

    def test_permissions(self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest) -> None:
        """KEY_OPERATION_NOT_PERMITTED for keys without the permission or EXPORT."""
        client_checks.check_permissions(cryptostack_kit)
        _report(request, cryptostack_kit, "permissions")

    def test_key_slots(
        self,
        cryptostack_kit: ProviderUnderTest,
        cryptostack_key_algorithm: str,
        request: pytest.FixtureRequest,
    ) -> None:
        """persist_key / load_key / clear_key_slot and export -> import round trips."""
        if cryptostack_key_algorithm == "(none)":
            assert cryptostack_kit.key_algorithms() == []
        else:
            client_checks.check_key_slots(cryptostack_kit, cryptostack_key_algorithm)
        _report(request, cryptostack_kit, "key-slots")

    def test_keys_survive_a_daemon_restart(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """Keys in slots load after the daemon restarts on the same key store and backend."""
        client_checks.check_persistence_across_restart(cryptostack_kit)
        _report(request, cryptostack_kit, "restart")

    def test_concurrent_clients(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """Several connections with several threads each."""
        client_checks.check_concurrency(cryptostack_kit)
        _report(request, cryptostack_kit, "concurrency")

    def test_resource_accounting(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """status shows nothing left after release and disconnect."""
        client_checks.check_accounting(cryptostack_kit)
        _report(request, cryptostack_kit, "accounting")

    def test_deadline(
        self,
        cryptostack_kit: ProviderUnderTest,
        cryptostack_deadline_mode: str,
        request: pytest.FixtureRequest,
    ) -> None:
        """A call past its deadline: OPERATION_TIMED_OUT, error state, others unaffected,
        recovery (the provider's hang hook, or the kit's gate)."""
        if cryptostack_deadline_mode == "hang-hook-sdk":
            deadlines.check_hang_sdk(cryptostack_kit)
        elif cryptostack_deadline_mode == "hang-hook-daemon":
            deadlines.check_hang_daemon(cryptostack_kit)
        else:
            deadlines.check_gate_deadline(cryptostack_kit)
        _report(request, cryptostack_kit, f"deadline-{cryptostack_deadline_mode}")

    # --- correctness ----------------------------------------------------------------------------
    def test_vectors(
        self,
        cryptostack_kit: ProviderUnderTest,
        cryptostack_vector_item: VectorItem,
        request: pytest.FixtureRequest,
    ) -> None:
        """Every applicable vector file and known-answer set, case by case."""
        result = vector_checks.run_vector_item(cryptostack_kit, cryptostack_vector_item)
        _report(
            request,
            cryptostack_kit,
            "vectors",
            file=result.file,
            source=cryptostack_vector_item.source,
            cases=result.cases,
            as_expected=result.as_expected,
            policy=result.policy_rejected,
            skipped=result.skipped,
            partly=result.partly_checked,
            seconds=round(result.seconds, 2),
            notes=result.notes,
        )

    def test_every_claimed_algorithm_has_known_answers(
        self, cryptostack_kit: ProviderUnderTest, request: pytest.FixtureRequest
    ) -> None:
        """A claimed algorithm without vectors or a known-answer set fails by name."""
        covered = vector_checks.check_coverage(cryptostack_kit)
        _report(request, cryptostack_kit, "coverage", algorithms=len(covered))
