"""Which hybrid keys may have their halves on two providers, how a placement is asked for,
and how selection reports it -- on the mock provider (which holds no ML-DSA or ML-KEM, so
every split needing one fails here, with its reason). Split keys that work are exercised
with real providers in the pkcs11 and oqs suites (test_*_split_hybrid.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.sdk.hybrid import COMPOSITE_SIGNATURES
from cryptostack_core.server.check import check_config
from cryptostack_core.server.config import ConfigError, DaemonConfig
from cryptostack_core.server.split.plan import (
    CLASSICAL,
    PQ,
    Placement,
    PlacementRequest,
    plan_for,
    plans,
    slot_problem,
)
from cryptostack_core.testing.daemon import to_toml
from cryptostack_core.wire.algorithms import Operation
from cryptostack_core.wire.permissions import KeyOperationPermission as P

SPLITTABLE = {
    "ML-DSA-44-RSA2048-PSS-SHA256": ("ML-DSA-44", "RSA-2048", "RSA-PSS-SHA256"),
    "ML-DSA-44-Ed25519-SHA512": ("ML-DSA-44", "Ed25519", "Ed25519"),
    "ML-DSA-44-ECDSA-P256-SHA256": ("ML-DSA-44", "ECDSA-P256", "ECDSA-P256"),
    "ML-DSA-65-RSA3072-PSS-SHA512": ("ML-DSA-65", "RSA-3072", "RSA-PSS-SHA256"),
    "ML-DSA-65-ECDSA-P256-SHA512": ("ML-DSA-65", "ECDSA-P256", "ECDSA-P256"),
    "ML-DSA-65-ECDSA-P384-SHA512": ("ML-DSA-65", "ECDSA-P384", "ECDSA-P384"),
    "ML-DSA-65-Ed25519-SHA512": ("ML-DSA-65", "Ed25519", "Ed25519"),
    "ML-DSA-87-ECDSA-P384-SHA512": ("ML-DSA-87", "ECDSA-P384", "ECDSA-P384"),
    "ML-DSA-87-RSA3072-PSS-SHA512": ("ML-DSA-87", "RSA-3072", "RSA-PSS-SHA256"),
    "X25519MLKEM768": ("ML-KEM-768", "X25519", "X25519"),
}
"""Hybrid algorithm -> (pq half, classical key type, classical operation algorithm)."""


def test_which_hybrid_algorithms_split_and_into_what() -> None:
    assert set(plans()) == set(COMPOSITE_SIGNATURES) | {"X-Wing", "X25519MLKEM768"}
    assert {name for name, plan in plans().items() if plan.splittable} == set(SPLITTABLE)
    for name, (pq, key_algorithm, algorithm) in SPLITTABLE.items():
        plan = plan_for(name)
        assert plan is not None and plan.reason == ""
        assert plan.component(PQ).key_algorithm == pq == plan.component(PQ).algorithm
        classical = plan.component(CLASSICAL)
        assert (classical.key_algorithm, classical.algorithm) == (key_algorithm, algorithm)
    xwing = plan_for("X-Wing")
    assert xwing is not None and not xwing.splittable and "seed" in xwing.reason
    for name in (
        "ML-DSA-87-Ed448-SHAKE256",
        "ML-DSA-65-RSA4096-PSS-SHA512",
        "ML-DSA-44-RSA2048-PKCS15-SHA256",
        "ML-DSA-87-ECDSA-P521-SHA512",
        "ML-DSA-65-ECDSA-brainpoolP256r1-SHA512",
    ):
        plan = plan_for(name)
        assert plan is not None and not plan.splittable
        assert "no standalone algorithm" in plan.reason
    assert plan_for("ML-DSA-65") is None and plan_for("AES-256") is None


def test_halves_get_only_what_the_whole_needs() -> None:
    composite = plan_for("ML-DSA-65-ECDSA-P256-SHA512")
    kem = plan_for("X25519MLKEM768")
    assert composite is not None and kem is not None
    for role in (PQ, CLASSICAL):
        half = composite.component(role)
        assert half.component_permissions(P.SIGN | P.VERIFY) == P.SIGN | P.VERIFY
        assert half.component_permissions(P.VERIFY) == P.VERIFY
        assert half.component_permissions(P.VERIFY | P.EXPORT) == P.VERIFY | P.EXPORT
    assert (
        kem.component(PQ).component_permissions(P.ENCAPSULATE | P.DECAPSULATE)
        == P.ENCAPSULATE | P.DECAPSULATE
    )
    assert kem.component(CLASSICAL).component_permissions(P.DECAPSULATE) == P.AGREE
    assert kem.component(CLASSICAL).component_permissions(P.ENCAPSULATE) == P.AGREE
    # what a provider must offer to hold a half for an operation
    assert composite.component(CLASSICAL).requirements((Operation.GENERATE_KEY,)) == (
        ("ECDSA-P256", Operation.GENERATE_KEY),
        ("ECDSA-P256", Operation.SIGN),
    )
    assert kem.component(CLASSICAL).requirements((Operation.ENCAPSULATE, Operation.DECAPSULATE)) == (
        ("X25519", Operation.GENERATE_KEY),
        ("X25519", Operation.AGREE),
    )


@pytest.mark.parametrize(
    ("placement", "components", "problem"),
    [
        ("everywhere", None, "'placement' must be one of auto, native, split"),
        (None, {"quantum": 2}, "unknown role 'quantum'"),
        (None, {"pq": []}, "non-empty list"),
        (None, {"pq": [0]}, "non-empty list"),
        (None, {"pq": True}, "non-empty list"),
        (None, [2, 5], "must be a map"),
        ("native", {"pq": 2}, "takes no 'components'"),
    ],
)
def test_placement_requests_are_checked(placement: object, components: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PlacementRequest.parse(placement, components)


def test_placement_requests() -> None:
    request = PlacementRequest.parse(None, {"pq": 2, "classical": [5, 2]})
    assert request.placement is Placement.AUTO and request.wants_split and request.explicit
    assert request.order(PQ, (1, 2)) == (2,) and request.order(CLASSICAL, (1,)) == (5, 2)
    assert PlacementRequest.parse("split", None).order(PQ, (7, 8)) == (7, 8)
    assert not PlacementRequest.parse(None, None).explicit
    assert not PlacementRequest.parse("native", None).wants_split


def test_selection_on_the_mock_explains_what_is_missing(inproc_stack: cs.CryptoStack) -> None:
    """The mock signs with ECDSA-P256 but holds no ML-DSA: no native provider, no pq half;
    the error and explain say so per role, and nothing falls back to the classical half."""
    algorithm = "ML-DSA-65-ECDSA-P256-SHA512"
    explained = inproc_stack.explain(algorithm, "generate_key")
    assert [(c["role"], c["provider"], c["taken"]) for c in explained] == [
        ("native", 1, False),
        ("pq", 1, False),
        ("classical", 1, True),
        ("combiner", 0, False),
    ]
    assert "ML-DSA-65" in explained[1]["reason"]
    with inproc_stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        with pytest.raises(cs.CryptoError) as err:
            km.generate_key(cs.GenerateKeyParams().set_algorithm(algorithm))
        assert err.value.code is cs.ErrorCode.NO_COMPATIBLE_PROVIDER
        assert "the pq half (ML-DSA-65 generate_key, ML-DSA-65 sign)" in err.value.message
        with pytest.raises(cs.CryptoError) as err:  # native only: no split attempted
            km.generate_key(cs.GenerateKeyParams().set_algorithm(algorithm).set_placement("native"))
        assert err.value.code is cs.ErrorCode.NO_COMPATIBLE_PROVIDER
        assert "pq half" not in err.value.message
        with pytest.raises(cs.CryptoError) as err:  # X-Wing: never split, whatever is asked
            km.generate_key(cs.GenerateKeyParams().set_algorithm("X-Wing").set_placement("split"))
        assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
        assert "seed" in err.value.message
        with pytest.raises(cs.CryptoError) as err:  # placement of a key that is not hybrid
            km.generate_key(cs.GenerateKeyParams().set_algorithm("ECDSA-P256").set_component_providers(pq=1))
        assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
    # other algorithms: explain's answer is as it was (no roles)
    assert all("role" not in c for c in inproc_stack.explain("ECDSA-P256", "sign"))
    table = {e["name"]: e for e in inproc_stack.algorithms()}
    assert table[algorithm]["split"]["splittable"] is True
    assert "split" not in table["ECDSA-P256"]


# --- key slots that keep a hybrid key's halves apart --------------------------------------


def _slot_config(**slot: Any) -> dict[str, Any]:
    return {
        "providers": [{"name": "mock", "id": 1}, {"name": "mock", "id": 2}],
        "key_slots": [{"name": "H", "algorithm": "ML-DSA-65-ECDSA-P256-SHA512", **slot}],
    }


@pytest.mark.parametrize(
    ("slot", "problem"),
    [
        ({"placement": "everywhere"}, "'placement' must be one of auto, native, split"),
        ({"components": [1, 2]}, "'components' must be a table of role = [provider ids]"),
        ({"components": {"quantum": [1]}}, "unknown role 'quantum'"),
        ({"components": {"pq": []}}, "non-empty list"),
        ({"components": {"pq": ["openssl"]}}, "non-empty list"),
        ({"components": {"pq": [True]}}, "non-empty list"),
        (
            {"components": {"pq": [1], "classical": [42]}},
            "'components' classical: provider 42 is not a configured provider id",
        ),
        ({"placement": "native", "components": {"pq": [1]}}, "it takes no 'components'"),
        ({"components": {"pq": [1]}, "provider": 2}, "a split slot names its halves' providers"),
        ({"placement": "split", "compatible_providers": [1]}, "a split slot names its halves' providers"),
        ({"placement": "native", "provision": "generate"}, "needs 'algorithm' and 'provider'"),
    ],
)
def test_split_slot_configuration_errors(slot: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        DaemonConfig.from_mapping(_slot_config(**slot), source="conf.toml")
    assert "conf.toml: [[key_slots]] 'H'" in str(err.value) and problem in str(err.value)


def test_split_slot_configuration() -> None:
    config = DaemonConfig.from_mapping(
        _slot_config(components={"pq": 2, "classical": [1, 2]}, provision="generate"), source="c"
    )
    [slot] = config.key_slots
    assert slot.split and slot.placement == "auto" and slot.provider is None
    assert dict(slot.components) == {"pq": (2,), "classical": (1, 2)}
    assert slot_problem(slot) is None
    [native] = DaemonConfig.from_mapping(_slot_config(placement="native", provider=1), source="c").key_slots
    assert not native.split and slot_problem(native) is None
    [split] = DaemonConfig.from_mapping(_slot_config(placement="split"), source="c").key_slots
    assert split.split and not split.components


@pytest.mark.parametrize(
    ("slot", "problem"),
    [
        (
            {"algorithm": "ECDSA-P256", "placement": "split"},
            "apply to hybrid key types only; ECDSA-P256 is not one",
        ),
        (
            {"algorithm": "AES-256", "components": {"pq": [1]}},
            "apply to hybrid key types only; AES-256 is not one",
        ),
        ({"algorithm": "X-Wing", "placement": "split"}, "seed"),
        (
            {"algorithm": "ML-DSA-87-Ed448-SHAKE256", "components": {"classical": [1]}},
            "no standalone algorithm",
        ),
    ],
)
def test_bad_placements_are_reported_by_check_and_refused_at_start(
    tmp_path: Path, slot: dict[str, Any], problem: str
) -> None:
    """What the parser cannot know (whether the slot's key type is hybrid, and splittable)
    is found once algorithms are known: ``cryptostack check`` reports it, the daemon does not
    start with it."""
    config = _slot_config(**slot)
    config["daemon"] = {
        "allow_test_providers": True,
        "allow_root": True,
        "keystore": str(tmp_path / "ks.sqlite3"),
    }
    path = tmp_path / "daemon.toml"
    path.write_text(to_toml(config))
    report = check_config(path)
    assert [p for p in report.problems if "[[key_slots]] 'H'" in p and problem in p], report.problems
    config["daemon"] = {"allow_test_providers": True}
    with pytest.raises((ConfigError, cs.CryptoError)) as err:
        cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
        ).close()
    assert problem in str(err.value)


def test_a_split_slot_on_the_mock_stays_empty_with_the_reason(tmp_path: Path) -> None:
    """The mock holds no ML-DSA: a split slot to provision stays empty (the daemon starts,
    logs why) and its info says how it is placed; other slots say ``auto``."""
    config = _slot_config(components={"pq": [1], "classical": [2]}, provision="generate")
    config["daemon"] = {"allow_test_providers": True}
    config["key_slots"].append({"name": "E", "algorithm": "ECDSA-P256", "provider": 1})
    with (
        cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
        ) as stack,
        stack.create_crypto_context() as ctx,
    ):
        km = ctx.create_key_management_context()
        slot = ctx.resolve_resource("H", cs.ResourceType.KEY_SLOT)
        info = km.get_key_slot_info(slot)
        assert info.status is cs.KeySlotStatus.EMPTY and info.placement == "split"
        assert info.components == [] and info.provider is None
        with pytest.raises(cs.CryptoError) as err:
            km.load_key(slot)
        assert err.value.code is cs.ErrorCode.SLOT_EMPTY
        assert km.get_key_slot_info(ctx.resolve_resource("E", cs.ResourceType.KEY_SLOT)).placement == "auto"
