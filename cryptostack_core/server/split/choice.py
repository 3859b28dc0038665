"""Choosing the providers of a hybrid key's halves, with the reasons ``explain`` shows.

Per role the rule is the one of :mod:`cryptostack_core.server.selection`: the first provider
in the role's list that is up and supports what that half needs wins. A new key tries its
role's list (``components``, else the daemon's preference order); an existing half tries
its home provider, then its role's list when the half may move (it is extractable and the
target can import it). Native placement -- one provider claiming the whole algorithm -- is
tried first unless a split was asked for.

A hybrid key never falls back to one half: a role without a provider fails the whole
request, with PROVIDER_UNAVAILABLE when a provider that could have served it is down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from cryptostack_core.sdk.provider import ProviderState
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.server.selection import Candidate, ProviderSet
from cryptostack_core.server.session import KeyEntry
from cryptostack_core.server.split.plan import (
    ROLES,
    PlacementRequest,
    Requirement,
    SplitPlan,
    plan_for,
)
from cryptostack_core.wire.algorithms import Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode

COMBINER_ID = 0
"""The provider id ``explain`` gives the daemon itself when it joins two halves."""


@dataclass
class Choice:
    """Where a hybrid key's halves go (or the whole key, native), and every candidate."""

    candidates: list[Candidate] = field(default_factory=list)
    native: LoadedProvider | None = None
    halves: dict[str, LoadedProvider] | None = None
    error: CryptoError | None = None

    def raise_error(self) -> None:
        """Raise the reason nothing was chosen, if that is the case."""
        if self.error is not None:
            raise self.error


def _down(providers: ProviderSet, pid: int) -> bool:
    loaded = providers.by_id.get(pid)
    return loaded is not None and (loaded.instance is None or loaded.state()[0] is ProviderState.UNAVAILABLE)


def _unique(ids: Iterable[int]) -> list[int]:
    seen: list[int] = []
    for pid in ids:
        if pid not in seen:
            seen.append(pid)
    return seen


def role_candidates(
    providers: ProviderSet,
    role: str,
    needs: tuple[Requirement, ...],
    order: Iterable[int],
    *,
    home: int | None = None,
    extractable: bool = True,
    key_algorithm: str = "",
) -> tuple[list[Candidate], bool]:
    """Candidates for one half, the first eligible one ``taken``; and whether an otherwise
    suitable provider was down."""
    result: list[Candidate] = []
    taken: int | None = None
    down = False
    for pid in _unique(order):
        name = providers.by_id[pid].name if pid in providers.by_id else "?"
        ok, why = True, ""
        for algorithm, operation in needs:
            ok, reason = providers.check(pid, algorithm, operation)
            if not ok:
                why = reason
                down = down or _down(providers, pid)
                break
            why = why or reason
        if ok and home is not None:
            if pid == home:
                why = f"{why}; the {role} half's home provider"
            elif not extractable:
                ok, why = False, (f"the {role} half cannot leave its home provider {home} (not extractable)")
            elif not providers.check(pid, key_algorithm, Operation.IMPORT_KEY)[0]:
                ok, why = False, f"cannot import {key_algorithm} keys"
            else:
                why = f"{why}; compatible provider; the {role} half is copied there"
        if ok and taken is not None:
            result.append(Candidate(pid, name, False, f"eligible, but provider {taken} comes first", role))
            continue
        result.append(Candidate(pid, name, ok, why, role))
        if ok:
            taken = pid
    return result, down


def _needs_text(needs: tuple[Requirement, ...]) -> str:
    return ", ".join(f"{algorithm} {operation.value}" for algorithm, operation in needs)


def _split(
    providers: ProviderSet,
    plan: SplitPlan,
    operations: tuple[Operation, ...],
    orders: dict[str, Iterable[int]],
    homes: dict[str, KeyEntry] | None,
    combining: str,
) -> Choice:
    choice = Choice()
    halves: dict[str, LoadedProvider] = {}
    failures: list[str] = []
    any_down = False
    for component in plan.components:
        role = component.role
        needs = component.requirements(operations)
        entry = homes[role] if homes is not None else None
        if not needs:
            failures.append(f"{plan.algorithm} has no {'/'.join(o.value for o in operations)} operation")
            continue
        cands, down = role_candidates(
            providers,
            role,
            needs,
            orders[role],
            home=entry.home.id if entry is not None else None,
            extractable=entry.placement.extractable if entry is not None else True,
            key_algorithm=component.key_algorithm,
        )
        choice.candidates += cands
        taken = next((c for c in cands if c.taken), None)
        if taken is None:
            any_down = any_down or down
            detail = (
                "; ".join(f"{c.name} ({c.provider}): {c.reason}" for c in cands)
                or "no providers are configured"
            )
            failures.append(f"the {role} half ({_needs_text(needs)}): {detail}")
        else:
            halves[role] = providers.by_id[taken.provider]
    if failures:
        choice.candidates.append(
            Candidate(COMBINER_ID, "daemon", False, "not combined: a half has no provider", "combiner")
        )
        code = ErrorCode.PROVIDER_UNAVAILABLE if any_down else ErrorCode.NO_COMPATIBLE_PROVIDER
        choice.error = CryptoError(
            code,
            f"{plan.algorithm} split across providers: "
            f"{'; '.join(failures)} (a hybrid key never runs on "
            "one half alone)",
        )
        return choice
    choice.candidates.append(Candidate(COMBINER_ID, "daemon", True, combining, "combiner"))
    choice.halves = halves
    return choice


def _combining(plan: SplitPlan) -> str:
    if plan.composite is not None:
        return (
            "the daemon computes M' (prefix, label, context, PH(message)), has each "
            "half sign or verify it on its provider, and joins mldsaSig || tradSig; "
            "both halves must verify"
        )
    return (
        "the daemon joins ct_ML-KEM || ct_X25519 and concatenates ss_ML-KEM || "
        "ss_X25519; the halves' secrets exist only inside the call, the result is a "
        "key with the context's derived-key permissions"
    )


def choose_new(
    providers: ProviderSet,
    algorithm: str,
    operations: tuple[Operation, ...],
    request: PlacementRequest,
    pinned: int | None = None,
) -> Choice:
    """Where a new key of hybrid ``algorithm`` goes (``operations[0]`` is GENERATE_KEY or
    IMPORT_KEY; ``explain`` may ask for any operation)."""
    plan = plan_for(algorithm)
    assert plan is not None, f"{algorithm} is not a hybrid algorithm"
    operation = operations[0]
    if pinned is not None and request.wants_split:
        return Choice(
            error=CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                "pin one provider ('provider') for a key held whole, "
                "or name the halves' providers ('components') for a split one, not both",
            )
        )
    choice = Choice()
    native_detail = ""
    if not request.wants_split:
        native = providers.candidates(algorithm, operation, pinned=pinned)
        choice.candidates += [replace(c, role="native") for c in native]
        taken = next((c for c in native if c.taken), None)
        if taken is not None:
            choice.native = providers.by_id[taken.provider]
            return choice
        native_detail = (
            "; ".join(f"{c.name} ({c.provider}): {c.reason}" for c in native) or "no providers are configured"
        )
        if pinned is not None or request.explicit:  # native asked for (or a pinned provider)
            choice.error = CryptoError(
                ErrorCode.NO_COMPATIBLE_PROVIDER,
                f"no provider can {operation.value} with {algorithm}: {native_detail}",
            )
            return choice
    if not plan.splittable:
        choice.candidates.append(Candidate(COMBINER_ID, "daemon", False, plan.reason, "split"))
        if request.wants_split:
            choice.error = CryptoError(ErrorCode.INVALID_ARGUMENT, plan.reason)
        else:
            choice.error = CryptoError(
                ErrorCode.NO_COMPATIBLE_PROVIDER,
                f"no provider can {operation.value} with {algorithm}: {native_detail}; {plan.reason}",
            )
        return choice
    orders: dict[str, Iterable[int]] = {role: request.order(role, providers.preference) for role in ROLES}
    split = _split(providers, plan, operations, orders, None, _combining(plan))
    choice.candidates += split.candidates
    choice.halves, choice.error = split.halves, split.error
    return choice


def choose_for_key(
    providers: ProviderSet, entry: KeyEntry, operations: tuple[Operation, ...], pinned: int | None = None
) -> Choice:
    """The providers that run ``operations`` on the halves of split key ``entry``."""
    plan = plan_for(entry.algorithm)
    assert plan is not None and entry.components is not None
    orders: dict[str, Iterable[int]] = {
        role: (half.home.id, *half.compatible) for role, half in entry.components.items()
    }
    choice = _split(providers, plan, operations, orders, dict(entry.components), _combining(plan))
    if (
        choice.halves is not None
        and pinned is not None
        and pinned not in {loaded.id for loaded in choice.halves.values()}
    ):
        held = ", ".join(f"{role} on {loaded.name} ({loaded.id})" for role, loaded in choice.halves.items())
        choice.error = CryptoError(
            ErrorCode.NO_COMPATIBLE_PROVIDER,
            f"this {entry.algorithm} key is split ({held}); provider {pinned} holds neither half",
        )
        choice.halves = None
    return choice


def secret_home(providers: ProviderSet, first: Iterable[int]) -> LoadedProvider:
    """The provider that holds a split KEM's shared secret: the first of ``first`` (the
    halves' providers), then the preference order, that can import a GENERIC-SECRET."""
    tried = []
    for pid in _unique([*first, *providers.preference]):
        ok, why = providers.check(pid, "GENERIC-SECRET", Operation.IMPORT_KEY)
        if ok:
            return providers.by_id[pid]
        tried.append(f"{providers.by_id[pid].name if pid in providers.by_id else '?'} ({pid}): {why}")
    raise CryptoError(
        ErrorCode.NO_COMPATIBLE_PROVIDER,
        f"no provider can hold the combined shared secret (GENERIC-SECRET import): {'; '.join(tried)}",
    )
