"""Which hybrid algorithms may have their halves on two providers, and what each half is.

A hybrid key has two *roles*: ``pq`` (the ML-DSA or ML-KEM half) and ``classical`` (ECDSA,
EdDSA, RSA or X25519). Split, each half is a key of its own standalone algorithm on its own
provider, and the daemon joins them with :mod:`cryptostack_core.sdk.hybrid`. A half can only
be held apart when the registry has a standalone algorithm a second provider can be asked
for; the rest stay on one provider (the reason is in :attr:`SplitPlan.reason`, which
``explain`` and the errors quote):

* composite ML-DSA whose classical half is ECDSA P-256/P-384, Ed25519 or RSA-PSS with
  SHA-256: split; RSA PKCS#1 v1.5, RSA-PSS with SHA-384, brainpool curves, P-521 and Ed448
  have no standalone algorithm: native only;
* X25519MLKEM768: split (ML-KEM-768 and X25519; the daemon concatenates the two secrets);
* X-Wing: never split -- one 32-byte seed determines both halves.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptostack_core.sdk.hybrid import (
    COMPOSITE_SIGNATURES,
    HYBRID_KEMS,
    CompositeSignatureSpec,
    HybridKemSpec,
)
from cryptostack_core.server.config import COMPONENT_ROLES, KeySlotConfig
from cryptostack_core.wire.algorithms import REGISTRY, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P

PQ, CLASSICAL = COMPONENT_ROLES
ROLES = COMPONENT_ROLES
"""The two halves of a hybrid key, in the order of every encoding (ML-* first)."""

Requirement = tuple[str, Operation]
"""An (algorithm, operation) pair the provider holding a half must support."""

XWING_REASON = (
    "X-Wing keys cannot be split across providers: the 32-byte decapsulation key (a seed) "
    "determines both halves through SHAKE256, and draft-connolly-cfrg-xwing-kem-10 defines "
    "the key as that seed alone (the expanded ML-KEM and X25519 keys are not to be held or "
    "moved apart); both halves stay on one provider"
)


class Placement(enum.Enum):
    """Where the halves of a new hybrid key go.

    ``native``: one provider that claims the whole algorithm holds both halves. ``split``:
    each half on a provider of its own role's list, joined by the daemon. ``auto``: native
    when some provider claims the algorithm, split otherwise (and always split when
    component providers are named).
    """

    AUTO = "auto"
    NATIVE = "native"
    SPLIT = "split"


@dataclass(frozen=True)
class Component:
    """One half of a splittable hybrid algorithm."""

    role: str
    key_algorithm: str
    """Its standalone key type (``ML-DSA-65``, ``ECDSA-P256``, ``RSA-3072``, ``X25519``)."""
    algorithm: str
    """Its standalone operation algorithm (``ML-DSA-65``, ``RSA-PSS-SHA256``, ``X25519``)."""
    needs: Mapping[Operation, tuple[Requirement, ...]]
    """What a provider must support to hold this half for each operation on the whole."""
    permissions: Mapping[P, P]
    """Permission of the whole -> permission this half needs for it."""

    def requirements(self, operations: tuple[Operation, ...]) -> tuple[Requirement, ...]:
        """Everything a provider must support to serve ``operations`` for this half."""
        out: list[Requirement] = []
        for operation in operations:
            for need in self.needs.get(operation, ()):
                if need not in out:
                    out.append(need)
        return tuple(out)

    def component_permissions(self, whole: P) -> P:
        """The permissions this half is created with: what the whole's permissions need
        of it, EXPORT only when the whole carries EXPORT (a hardware provider makes the
        half extractable then, and only then)."""
        perms = P.NONE
        for mine, theirs in self.permissions.items():
            if whole & mine:
                perms |= theirs
        if whole & P.EXPORT:
            perms |= P.EXPORT
        return perms


@dataclass(frozen=True)
class SplitPlan:
    """How a hybrid algorithm's halves may be placed."""

    algorithm: str
    components: tuple[Component, ...] = ()
    """(pq, classical), or empty when the algorithm cannot be split."""
    reason: str = ""
    """Why it cannot be split (empty when it can)."""
    composite: CompositeSignatureSpec | None = None
    kem: HybridKemSpec | None = None

    @property
    def splittable(self) -> bool:
        """Whether the halves may live on two providers."""
        return bool(self.components)

    def component(self, role: str) -> Component:
        """The half playing ``role``."""
        return next(c for c in self.components if c.role == role)

    def describe(self) -> dict[str, Any]:
        """The plan for ``algorithms``: each half's algorithms, or why it cannot split."""
        if not self.splittable:
            return {"splittable": False, "reason": self.reason}
        return {
            "splittable": True,
            "components": [
                {"role": c.role, "key_algorithm": c.key_algorithm, "algorithm": c.algorithm}
                for c in self.components
            ],
        }


def _signature_plan(spec: CompositeSignatureSpec) -> SplitPlan:
    trad = spec.traditional
    if not trad.name:
        return SplitPlan(
            spec.name,
            reason=(
                f"{spec.name} cannot be split across providers: its classical half "
                f"({trad.description}{', ' + trad.scheme if trad.scheme.startswith('RSA') else ''}"
                f"{' with ' + trad.hash_name if trad.hash_name else ''}) has no standalone "
                "algorithm in the registry that a second provider could be asked for; both "
                "halves stay on one provider"
            ),
            composite=spec,
        )
    sign_perms = {P.SIGN: P.SIGN, P.VERIFY: P.VERIFY}

    def half(role: str, key_algorithm: str, algorithm: str) -> Component:
        return Component(
            role,
            key_algorithm,
            algorithm,
            {
                Operation.SIGN: ((algorithm, Operation.SIGN),),
                Operation.VERIFY: ((algorithm, Operation.VERIFY),),
                Operation.GENERATE_KEY: (
                    (key_algorithm, Operation.GENERATE_KEY),
                    (algorithm, Operation.SIGN),
                ),
                Operation.IMPORT_KEY: ((key_algorithm, Operation.IMPORT_KEY), (algorithm, Operation.VERIFY)),
            },
            sign_perms,
        )

    return SplitPlan(
        spec.name,
        (half(PQ, spec.mldsa, spec.mldsa), half(CLASSICAL, trad.key_algorithm, trad.name)),
        composite=spec,
    )


def _kem_plan(spec: HybridKemSpec) -> SplitPlan:
    if spec.hashed:
        return SplitPlan(spec.name, reason=XWING_REASON, kem=spec)
    mlkem, x25519 = "ML-KEM-768", "X25519"
    kem_perms = {P.ENCAPSULATE: P.ENCAPSULATE, P.DECAPSULATE: P.DECAPSULATE}
    pq = Component(
        PQ,
        mlkem,
        mlkem,
        {
            Operation.ENCAPSULATE: ((mlkem, Operation.ENCAPSULATE),),
            Operation.DECAPSULATE: ((mlkem, Operation.DECAPSULATE),),
            Operation.GENERATE_KEY: ((mlkem, Operation.GENERATE_KEY), (mlkem, Operation.DECAPSULATE)),
            Operation.IMPORT_KEY: ((mlkem, Operation.IMPORT_KEY), (mlkem, Operation.ENCAPSULATE)),
        },
        kem_perms,
    )
    # Encapsulating to the X25519 half is an agreement of a fresh ephemeral key with it;
    # decapsulating, an agreement of the half's private key with the ciphertext's share.
    classical = Component(
        CLASSICAL,
        x25519,
        x25519,
        {
            Operation.ENCAPSULATE: ((x25519, Operation.GENERATE_KEY), (x25519, Operation.AGREE)),
            Operation.DECAPSULATE: ((x25519, Operation.AGREE),),
            Operation.GENERATE_KEY: ((x25519, Operation.GENERATE_KEY), (x25519, Operation.AGREE)),
            Operation.IMPORT_KEY: ((x25519, Operation.IMPORT_KEY), (x25519, Operation.AGREE)),
        },
        {P.ENCAPSULATE: P.AGREE, P.DECAPSULATE: P.AGREE},
    )
    return SplitPlan(spec.name, (pq, classical), kem=spec)


_PLANS: dict[str, SplitPlan] = {
    **{name: _signature_plan(spec) for name, spec in COMPOSITE_SIGNATURES.items()},
    **{name: _kem_plan(spec) for name, spec in HYBRID_KEMS.items()},
}


def plan_for(algorithm: str) -> SplitPlan | None:
    """The plan of a hybrid algorithm (canonical name), None for any other algorithm."""
    return _PLANS.get(algorithm)


def plans() -> Mapping[str, SplitPlan]:
    """Every hybrid algorithm's plan, by canonical name."""
    return _PLANS


def slot_problem(slot: KeySlotConfig) -> str | None:
    """Why a key slot's ``placement``/``components`` cannot hold its algorithm (None when
    they can, or say nothing): checked at start, on reload and by ``cryptostack check``."""
    if slot.placement == "auto" and not slot.components:
        return None
    spec = REGISTRY.find(slot.algorithm) if slot.algorithm is not None else None
    plan = plan_for(spec.name) if spec is not None else None
    if plan is None:
        return (
            f"'placement' and 'components' apply to hybrid key types only; "
            f"{slot.algorithm or 'a slot without an algorithm'} is not one"
        )
    if slot.split and not plan.splittable:
        return plan.reason
    return None


@dataclass(frozen=True)
class PlacementRequest:
    """What a caller (or a slot's configuration) asks of a new hybrid key's placement."""

    placement: Placement = Placement.AUTO
    components: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Per role, the providers to try in order (empty: the daemon's preference order)."""

    @property
    def wants_split(self) -> bool:
        """Split was asked for, or component providers were named."""
        return self.placement is Placement.SPLIT or bool(self.components)

    @property
    def explicit(self) -> bool:
        """The caller said anything about placement."""
        return self.placement is not Placement.AUTO or bool(self.components)

    def order(self, role: str, preference: tuple[int, ...]) -> tuple[int, ...]:
        """The providers to try for ``role``."""
        return self.components.get(role) or preference

    @classmethod
    def parse(cls, placement: Any, components: Any, where: str = "argument") -> PlacementRequest:
        """Check ``placement`` (``auto``/``native``/``split`` or None) and ``components``
        (None, or a map of role -> provider id or list of ids); ValueError naming the
        problem otherwise."""
        if placement is None:
            chosen = Placement.AUTO
        else:
            try:
                chosen = Placement(placement)
            except ValueError:
                raise ValueError(
                    f"{where} 'placement' must be one of "
                    f"{', '.join(p.value for p in Placement)}, got "
                    f"{placement!r}"
                ) from None
        lists: dict[str, tuple[int, ...]] = {}
        if components is not None:
            if not isinstance(components, Mapping):
                raise ValueError(
                    f"{where} 'components' must be a map of role (pq, classical) "
                    f"to provider ids, got {type(components).__name__}"
                )
            for role, ids in components.items():
                if role not in ROLES:
                    raise ValueError(
                        f"{where} 'components': unknown role {role!r} (roles are {' and '.join(ROLES)})"
                    )
                items = ids if isinstance(ids, list) else [ids]
                if not items or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in items
                ):
                    raise ValueError(
                        f"{where} 'components' {role!r} must be a provider id or "
                        f"a non-empty list of them, got {ids!r}"
                    )
                lists[role] = tuple(items)
        if chosen is Placement.NATIVE and lists:
            raise ValueError(
                f"{where}: placement 'native' keeps both halves on one provider; it takes no 'components'"
            )
        return cls(chosen, lists)

    @classmethod
    def of_slot(cls, slot: KeySlotConfig) -> PlacementRequest:
        """What a key slot's configuration asks for."""
        return cls(Placement(slot.placement), dict(slot.components))

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> PlacementRequest:
        """From request arguments ``placement`` and ``components`` (INVALID_ARGUMENT)."""
        try:
            return cls.parse(args.get("placement"), args.get("components"))
        except ValueError as exc:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
