"""The conformance kit's profile of the TPM 2.0 provider (entry point
``cryptostack.conformance: tpm2``): every user of the provider gets its own swtpm simulator
(:class:`cryptostack_tpm2.testing.Swtpm`; one serves one client at a time)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from cryptostack_core.sdk import WELL_KNOWN_PROVIDER_IDS
from cryptostack_core.testing.conformance import Backend, HangProbe, Profile
from cryptostack_core.testing.wycheproof import Policy

from .testing import Swtpm


@contextlib.contextmanager
def simulator(directory: Path) -> Iterator[Backend]:
    """A private swtpm for one user, shut down in order afterwards."""
    sim = Swtpm(directory).start()
    try:
        yield Backend(options={"tcti": sim.tcti, "reset_lockout": True})
    finally:
        sim.stop()


HANG = HangProbe(
    options={"test_hang": {"op": "hash"}, "call_timeout": 2.0}, operation="hash", algorithm="SHA-256"
)
"""The worker host's hang hook holds the TPM worker's next hash; after ``call_timeout`` the
worker is killed and restarted."""


def profile() -> Profile:
    """swtpm simulators; RSA key generation in the TPM is slow."""
    return Profile(
        name="tpm2",
        provider_id=WELL_KNOWN_PROVIDER_IDS["tpm2"],
        setup=simulator,
        policy=Policy(),
        hang=HANG,
        slow=frozenset({"RSA-2048", "RSA-3072"}),
    )
