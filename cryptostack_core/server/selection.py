"""Provider selection: which provider runs a context, and why (``explain``).

The rule (API.md "Providers"):

* with a key: the key's home provider, then the slot's ``compatible_providers`` in order;
  the first that is loaded, healthy and supports the algorithm and operation wins. A
  provider other than the home one is eligible only if the key can move there (the home
  provider reports it extractable and the target can import that key type);
* without a key: ``set_provider(id)`` if given, else the daemon's preference order;
* nobody eligible: ``NO_COMPATIBLE_PROVIDER`` with every candidate's reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptostack_core.sdk.provider import ProviderState
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.wire.algorithms import Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode


@dataclass(frozen=True)
class Candidate:
    """One provider considered, whether it was taken, and why."""

    provider: int
    name: str
    taken: bool
    reason: str
    role: str | None = None
    """For hybrid algorithms: ``native`` (one provider holds both halves), ``pq`` or
    ``classical`` (the half a provider holds when they are split), ``combiner`` (the daemon,
    provider 0, joining the halves); None otherwise."""

    def to_wire(self) -> dict[str, object]:
        """Plain form for the wire and the CLI."""
        wire: dict[str, object] = {
            "provider": self.provider,
            "name": self.name,
            "taken": self.taken,
            "reason": self.reason,
        }
        if self.role is not None:
            wire["role"] = self.role
        return wire


@dataclass(frozen=True)
class KeyPlacement:
    """What selection needs to know about a key: where it lives and where it may go."""

    algorithm: str
    home: int
    compatible: tuple[int, ...]
    extractable: bool


class ProviderSet:
    """The loaded providers, in preference order."""

    def __init__(self, providers: list[LoadedProvider], preference: tuple[int, ...]) -> None:
        self.by_id = {p.id: p for p in providers}
        order = [pid for pid in preference if pid in self.by_id]
        order += [p.id for p in providers if p.id not in order]
        self.preference = tuple(order)

    def get(self, provider_id: int) -> LoadedProvider:
        """A configured provider by id (RESOURCE_NOT_FOUND otherwise)."""
        try:
            return self.by_id[provider_id]
        except KeyError:
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND, f"no provider with id {provider_id} is configured"
            ) from None

    def check(self, pid: int, algorithm: str, operation: Operation) -> tuple[bool, str]:
        """(eligible, why) for provider ``pid`` running ``algorithm`` for ``operation``."""
        loaded = self.by_id.get(pid)
        if loaded is None:
            return False, "not configured in this daemon"
        state, why = loaded.state()
        if state is ProviderState.UNAVAILABLE or loaded.instance is None:
            return False, f"unavailable: {why}"
        if not loaded.instance.supports(algorithm, operation):
            return False, f"does not support {algorithm} for {operation.value}"
        return True, "supports it" + (f" ({state.value}: {why})" if why else "")

    def candidates(
        self,
        algorithm: str,
        operation: Operation,
        *,
        key: KeyPlacement | None = None,
        pinned: int | None = None,
    ) -> list[Candidate]:
        """Every candidate in order, the first eligible one marked ``taken``."""
        result: list[Candidate] = []
        taken = False

        def consider(pid: int, extra_check: tuple[bool, str] | None = None) -> None:
            nonlocal taken
            name = self.by_id[pid].name if pid in self.by_id else "?"
            ok, why = self.check(pid, algorithm, operation)
            if ok and extra_check is not None and not extra_check[0]:
                ok, why = extra_check
            elif ok and extra_check is not None:
                why = f"{why}; {extra_check[1]}"
            if ok and pinned is not None and pid != pinned:
                ok, why = False, f"not the requested provider {pinned}"
            if ok and taken:
                result.append(
                    Candidate(
                        pid,
                        name,
                        False,
                        f"eligible, but provider {next(c.provider for c in result if c.taken)} comes first",
                    )
                )
                return
            result.append(Candidate(pid, name, ok, why))
            taken = taken or ok

        if key is None:
            order = [pinned] if pinned is not None else list(self.preference)
            for pid in order:
                if pinned is not None and pid not in self.by_id:
                    result.append(Candidate(pid, "?", False, "not configured in this daemon"))
                    continue
                consider(pid)
            return result

        seen: list[int] = []
        for pid in (key.home, *key.compatible):
            if pid not in seen:
                seen.append(pid)
        for pid in seen:
            if pid == key.home:
                consider(pid, (True, "the key's home provider"))
                continue
            if not key.extractable:
                consider(pid, (False, f"the key cannot leave its home provider {key.home} (not extractable)"))
                continue
            target = self.by_id.get(pid)
            can_import = bool(
                target and target.instance and target.instance.supports(key.algorithm, Operation.IMPORT_KEY)
            )
            consider(
                pid,
                (
                    can_import,
                    "compatible provider; the key is copied there"
                    if can_import
                    else f"cannot import {key.algorithm} keys",
                ),
            )
        if pinned is not None and pinned not in seen:
            result.append(
                Candidate(
                    pinned,
                    self.by_id[pinned].name if pinned in self.by_id else "?",
                    False,
                    "not the key's home provider nor in its compatible list",
                )
            )
        return result

    def select(
        self,
        algorithm: str,
        operation: Operation,
        *,
        key: KeyPlacement | None = None,
        pinned: int | None = None,
    ) -> LoadedProvider:
        """The provider to use; NO_COMPATIBLE_PROVIDER listing every candidate's reason."""
        cands = self.candidates(algorithm, operation, key=key, pinned=pinned)
        for cand in cands:
            if cand.taken:
                return self.by_id[cand.provider]
        detail = (
            "; ".join(f"{c.name} ({c.provider}): {c.reason}" for c in cands) or "no providers are configured"
        )
        raise CryptoError(
            ErrorCode.NO_COMPATIBLE_PROVIDER, f"no provider can {operation.value} with {algorithm}: {detail}"
        )
