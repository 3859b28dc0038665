"""Vector files and known-answer sets for a provider's claimed algorithms, and the rule that
every claimed algorithm has at least one of them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cryptostack_core as cs
from cryptostack_core.sdk import AlgorithmKind, Operation
from cryptostack_core.sdk.hybrid import COMPOSITE_SIGNATURES
from cryptostack_core.testing import hybrid_vectors, known_answers, wycheproof
from cryptostack_core.testing.conformance.faults import ConformanceError
from cryptostack_core.testing.conformance.target import ProviderUnderTest
from cryptostack_core.wire.algorithms import REGISTRY

__all__ = ["VectorItem", "check_coverage", "run_vector_item", "vector_items"]

UNCHECKABLE_KINDS = frozenset({AlgorithmKind.KEY, AlgorithmKind.RANDOM})
"""Kinds with no known answer to check: key types (their operations are checked) and random
generators (checked for length and change only)."""


@dataclass(frozen=True)
class VectorItem:
    """One vector file or known-answer set that applies to the provider."""

    name: str
    source: str  # "wycheproof" | "known-answers" | "hybrid"
    algorithms: tuple[str, ...]
    not_applicable: str = ""


def _operation_algorithms(put: ProviderUnderTest) -> set[str]:
    return {
        c.algorithm
        for c in put.capabilities
        if c.operation not in (Operation.GENERATE_KEY, Operation.IMPORT_KEY)
        and REGISTRY.get(c.algorithm).kind not in UNCHECKABLE_KINDS
    }


def vector_items(put: ProviderUnderTest) -> list[VectorItem]:
    """Every Wycheproof file and known-answer set for the provider's claimed algorithms."""
    claimed = put.claimed_algorithms
    items = []
    for name in wycheproof.applicable_files(claimed):
        file = wycheproof.FILES[name]
        items.append(
            VectorItem(name, "wycheproof", file.algorithms, put.profile.policy.not_applicable.get(name, ""))
        )
    for kat in known_answers.sets_for(claimed, put.profile.known_answers):
        items.append(
            VectorItem(
                kat.name, "known-answers", kat.algorithms, put.profile.policy.not_applicable.get(kat.name, "")
            )
        )
    for algorithm in sorted(claimed & HYBRID_ALGORITHMS):
        name = f"hybrid/{algorithm}"
        items.append(
            VectorItem(name, "hybrid", (algorithm,), put.profile.policy.not_applicable.get(name, ""))
        )
    return items


HYBRID_ALGORITHMS = frozenset({"X-Wing", "X25519MLKEM768", *COMPOSITE_SIGNATURES})
"""Algorithms :mod:`cryptostack_core.testing.hybrid_vectors` has published answers for."""


def _hybrid(
    stack: cs.CryptoStack,
    put: ProviderUnderTest,
    item: VectorItem,
) -> wycheproof.FileResult:
    started = time.perf_counter()
    report = hybrid_vectors.run(stack, put.provider_id, lambda a: a in item.algorithms)
    result = wycheproof.FileResult(
        item.name,
        cases=report.checks,
        as_expected=report.checks - len(report.failures),
        unexpected=[wycheproof.Unexpected(i, failure) for i, failure in enumerate(report.failures, 1)],
    )
    result.seconds = time.perf_counter() - started
    result.notes.append("source: testing/vectors/hybrid (see its README)")
    return result


def run_vector_item(put: ProviderUnderTest, item: VectorItem) -> wycheproof.FileResult:
    """Run one file or set over the shared daemon; ConformanceError if a case went wrong."""
    claimed = put.claimed_algorithms
    if item.not_applicable:
        return wycheproof.FileResult(item.name, notes=[f"not applicable: {item.not_applicable}"])
    with put.stack() as stack:
        if item.source == "wycheproof":
            result = wycheproof.run_file(
                stack,
                put.provider_id,
                wycheproof.vectors_directory() / item.name,
                put.profile.policy,
                claimed,
            )
        elif item.source == "hybrid":
            result = _hybrid(stack, put, item)
        else:
            kat = next(s for s in (*known_answers.SETS, *put.profile.known_answers) if s.name == item.name)
            result = known_answers.run_set(stack, put.provider_id, kat, claimed, put.profile.policy)
    if result.unexpected or result.as_expected + result.skipped < result.cases:
        raise ConformanceError(
            f"{put.name}: {item.name}: {len(result.unexpected)} case(s) not "
            f"as expected\n{wycheproof.format_table([result])}"
        )
    if result.as_expected == 0:
        raise ConformanceError(f"{put.name}: {item.name}: no case ran ({result.summary()})")
    return result


def check_coverage(put: ProviderUnderTest) -> dict[str, list[str]]:
    """Every claimed operation algorithm has a vector file or known-answer set that runs;
    returns {algorithm: [files/sets]}. An algorithm with neither fails the check by name."""
    covered: dict[str, list[str]] = {name: [] for name in sorted(_operation_algorithms(put))}
    for item in vector_items(put):
        if item.not_applicable:
            continue
        for algorithm in item.algorithms:
            if algorithm in covered:
                covered[algorithm].append(item.name)
    missing = [name for name, files in covered.items() if not files]
    if missing:
        raise ConformanceError(
            f"{put.name} claims {len(missing)} algorithm(s) with neither vectors nor a "
            f"known-answer check the kit can run: {', '.join(missing)}. Correctness cannot be "
            "judged by round trips alone: add a KnownAnswerSet (data from a source nobody on "
            "the provider's team wrote, with that source named) to the provider's conformance "
            "profile, or stop claiming the algorithm."
        )
    return covered


def kinds(put: ProviderUnderTest) -> set[AlgorithmKind]:
    """The kinds of the provider's claimed algorithms."""
    return {REGISTRY.get(a).kind for a in put.claimed_algorithms}
