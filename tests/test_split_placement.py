"""Which hybrid keys may have their halves on two providers, how a placement is asked for,
and how selection reports it -- on the mock provider (which holds no ML-DSA or ML-KEM, so
every split needing one fails here, with its reason). Split keys that work are exercised
with real providers in the pkcs11 and oqs suites (test_*_split_hybrid.py)."""

from __future__ import annotations

import pytest

import cryptostack_core as cs
from cryptostack_core.sdk.hybrid import COMPOSITE_SIGNATURES
from cryptostack_core.server.split.plan import (
    CLASSICAL,
    PQ,
    Placement,
    PlacementRequest,
    plan_for,
    plans,
)
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
    for name in ("ML-DSA-87-Ed448-SHAKE256", "ML-DSA-65-RSA4096-PSS-SHA512",
                 "ML-DSA-44-RSA2048-PKCS15-SHA256", "ML-DSA-87-ECDSA-P521-SHA512",
                 "ML-DSA-65-ECDSA-brainpoolP256r1-SHA512"):
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
    assert kem.component(PQ).component_permissions(P.ENCAPSULATE | P.DECAPSULATE) == \
        P.ENCAPSULATE | P.DECAPSULATE
    assert kem.component(CLASSICAL).component_permissions(P.DECAPSULATE) == P.AGREE
    assert kem.component(CLASSICAL).component_permissions(P.ENCAPSULATE) == P.AGREE
    # what a provider must offer to hold a half for an operation
    assert composite.component(CLASSICAL).requirements((Operation.GENERATE_KEY,)) == (
        ("ECDSA-P256", Operation.GENERATE_KEY), ("ECDSA-P256", Operation.SIGN))
    assert kem.component(CLASSICAL).requirements((Operation.ENCAPSULATE,
                                                  Operation.DECAPSULATE)) == (
        ("X25519", Operation.GENERATE_KEY), ("X25519", Operation.AGREE))


@pytest.mark.parametrize(("placement", "components", "problem"), [
    ("everywhere", None, "'placement' must be one of auto, native, split"),
    (None, {"quantum": 2}, "unknown role 'quantum'"),
    (None, {"pq": []}, "non-empty list"),
    (None, {"pq": [0]}, "non-empty list"),
    (None, {"pq": True}, "non-empty list"),
    (None, [2, 5], "must be a map"),
    ("native", {"pq": 2}, "takes no 'components'"),
])
def test_placement_requests_are_checked(placement: object, components: object,
                                        problem: str) -> None:
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
        ("native", 1, False), ("pq", 1, False), ("classical", 1, True),
        ("combiner", 0, False)]
    assert "ML-DSA-65" in explained[1]["reason"]
    with inproc_stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        with pytest.raises(cs.CryptoError) as err:
            km.generate_key(cs.GenerateKeyParams().set_algorithm(algorithm))
        assert err.value.code is cs.ErrorCode.NO_COMPATIBLE_PROVIDER
        assert "the pq half (ML-DSA-65 generate_key, ML-DSA-65 sign)" in err.value.message
        with pytest.raises(cs.CryptoError) as err:  # native only: no split attempted
            km.generate_key(cs.GenerateKeyParams().set_algorithm(algorithm)
                            .set_placement("native"))
        assert err.value.code is cs.ErrorCode.NO_COMPATIBLE_PROVIDER
        assert "pq half" not in err.value.message
        with pytest.raises(cs.CryptoError) as err:  # X-Wing: never split, whatever is asked
            km.generate_key(cs.GenerateKeyParams().set_algorithm("X-Wing")
                            .set_placement("split"))
        assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
        assert "seed" in err.value.message
        with pytest.raises(cs.CryptoError) as err:  # placement of a key that is not hybrid
            km.generate_key(cs.GenerateKeyParams().set_algorithm("ECDSA-P256")
                            .set_component_providers(pq=1))
        assert err.value.code is cs.ErrorCode.INVALID_ARGUMENT
    # other algorithms: explain's answer is as it was (no roles)
    assert all("role" not in c for c in inproc_stack.explain("ECDSA-P256", "sign"))
    table = {e["name"]: e for e in inproc_stack.algorithms()}
    assert table[algorithm]["split"]["splittable"] is True
    assert "split" not in table["ECDSA-P256"]
