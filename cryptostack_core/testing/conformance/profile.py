"""How the kit runs one provider: its id, how to give it a backend, its declared policy.

A provider may ship a profile as an entry point in the group ``cryptostack.conformance``
(name: the provider's entry-point name; value: a :class:`Profile` or a callable returning
one). Providers with a backend to start (a SoftHSM2 token, a TPM simulator) need one; a
software provider needs none. ``--cryptostack-options FILE`` (TOML) adds to or overrides it::

    id = 1042                               # the provider id the kit configures
    [options]                               # provider options, as in [[providers]] options
    token_label = "kit"
    [environment]                           # variables the provider's process needs
    SOFTHSM2_CONF = "/path/softhsm2.conf"
    [policy]                                # see cryptostack_core.testing.wycheproof.Policy
    gcm_iv_lengths = [8, 128]
    mac_key_lengths = [16, 1024]
    secret_lengths = [1, 1024]
    acceptable = { Twist = true }
    not_applicable = { "mldsa_65_sign_seed_test.json" = "no ML-DSA seed import" }
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from cryptostack_core.sdk.ids import THIRD_PARTY, WELL_KNOWN
from cryptostack_core.testing.known_answers import KnownAnswerSet
from cryptostack_core.testing.wycheproof import Policy

__all__ = ["GROUP", "Backend", "HangProbe", "Profile", "load_profile", "static_setup"]

GROUP = "cryptostack.conformance"


@dataclass(frozen=True)
class Backend:
    """What one user of the provider (the SDK checks, one daemon) gets from a profile:
    the provider options and the environment its process needs."""

    options: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)


Setup = Callable[[Path], AbstractContextManager[Backend]]
"""Given a private directory, start a backend (a token, a simulator) and yield its
:class:`Backend`; stop it on exit. Called once per user: the SDK checks and every daemon
get their own, so backends that serve one client at a time (swtpm) are never shared."""


@dataclass(frozen=True)
class HangProbe:
    """How to make one provider call hang, for the deadline checks (a worker host's test hook,
    or a provider's own).

    ``options`` are added to the provider's options to arm the hang; the next call the kit
    makes with ``operation`` (``hash``, ``random``, ``sign`` or ``generate_key``) on
    ``algorithm`` must then hang until the caller's deadline passes, and the provider must
    answer ``OPERATION_TIMED_OUT`` by that deadline and serve later calls.
    """

    options: Mapping[str, Any]
    operation: str
    algorithm: str = ""


@dataclass(frozen=True)
class Profile:
    """Everything the kit needs to know about one provider."""

    name: str
    """The provider's entry-point name in ``cryptostack.providers``."""
    provider_id: int
    setup: Setup
    policy: Policy = field(default_factory=Policy)
    hang: HangProbe | None = None
    """The provider's hang hook; None: the kit holds calls in a wrapper inside the daemon."""
    known_answers: tuple[KnownAnswerSet, ...] = ()
    """The provider's own known-answer sets (for algorithms the kit has no data for)."""
    slow: frozenset[str] = frozenset()
    """Algorithms whose calls may take seconds (RSA-4096 generation, SLH-DSA-*s signing):
    the kit runs them without tight deadlines and keeps them out of the concurrency checks."""
    threads: int = 4
    """Threads per client in the concurrency checks."""
    clients: int = 3
    """Client connections in the concurrency checks."""
    source: str = "defaults"
    """Where the profile came from (entry point, options file), for reports."""


def static_setup(backend: Backend) -> Setup:
    """A setup that starts nothing (software providers, or an options file's values)."""

    @contextlib.contextmanager
    def setup(_directory: Path) -> Iterator[Backend]:
        yield backend

    return setup


def _default_profile(name: str) -> Profile:
    provider_id = WELL_KNOWN.get(name, THIRD_PARTY.start)
    return Profile(name=name, provider_id=provider_id, setup=static_setup(Backend()))


def _from_entry_point(name: str) -> Profile | None:
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            value = ep.load()
            profile = value() if callable(value) and not isinstance(value, Profile) else value
            if not isinstance(profile, Profile):
                raise TypeError(f"entry point {GROUP}:{name} gave {type(profile).__name__}, not a Profile")
            return replace(profile, source=f"entry point {GROUP}:{name}")
    return None


def _policy_from(table: Mapping[str, Any], base: Policy) -> Policy:
    def pair(key: str) -> tuple[int, int] | None:
        value = table[key]
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)):
            raise ValueError(f"[policy] {key} must be [low, high]")
        return (value[0], value[1])

    changes: dict[str, Any] = {}
    for key in ("gcm_iv_lengths", "mac_key_lengths", "secret_lengths"):
        if key in table:
            changes[key] = pair(key)
    if "acceptable" in table:
        changes["acceptable"] = {str(k): bool(v) for k, v in table["acceptable"].items()}
    if "not_applicable" in table:
        changes["not_applicable"] = {str(k): str(v) for k, v in table["not_applicable"].items()}
    unknown = set(table) - {
        "gcm_iv_lengths",
        "mac_key_lengths",
        "secret_lengths",
        "acceptable",
        "not_applicable",
    }
    if unknown:
        raise ValueError(f"[policy]: unknown setting(s) {', '.join(sorted(unknown))}")
    return replace(base, **changes)


def _layered(setup: Setup, options: Mapping[str, Any], environment: Mapping[str, str]) -> Setup:
    @contextlib.contextmanager
    def layered(directory: Path) -> Iterator[Backend]:
        with setup(directory) as backend:
            yield Backend({**backend.options, **options}, {**backend.environment, **environment})

    return layered


def load_profile(name: str, options_file: Path | None = None) -> Profile:
    """The profile of provider ``name``: its entry point (or the defaults), then the file."""
    profile = _from_entry_point(name) or _default_profile(name)
    if options_file is None:
        return profile
    try:
        data = tomllib.loads(Path(options_file).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{options_file}: {exc}") from None
    unknown = set(data) - {"id", "options", "environment", "policy"}
    if unknown:
        raise ValueError(
            f"{options_file}: unknown setting(s) {', '.join(sorted(unknown))}; "
            "known: id, [options], [environment], [policy]"
        )
    changes: dict[str, Any] = {"source": f"{profile.source} + {options_file}"}
    if "id" in data:
        changes["provider_id"] = int(data["id"])
    if "options" in data or "environment" in data:
        changes["setup"] = _layered(
            profile.setup,
            dict(data.get("options", {})),
            {str(k): str(v) for k, v in dict(data.get("environment", {})).items()},
        )
    if "policy" in data:
        try:
            changes["policy"] = _policy_from(data["policy"], profile.policy)
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{options_file}: {exc}") from None
    return replace(profile, **changes)
