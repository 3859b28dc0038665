"""The conformance kit's profile of the oqs provider (entry point
``cryptostack.conformance: oqs``)."""

from __future__ import annotations

from cryptostack_core.sdk import WELL_KNOWN_PROVIDER_IDS
from cryptostack_core.testing.conformance import Backend, Profile, static_setup
from cryptostack_core.testing.wycheproof import Policy

SLOW = frozenset(
    f"SLH-DSA-{family}-{variant}" for family in ("SHA2", "SHAKE") for variant in ("128s", "192s", "256s")
)
"""Parameter sets whose signing takes about a second."""


def profile() -> Profile:
    """No Wycheproof case for liboqs's algorithms is ``acceptable``; ML-DSA seed import is
    not offered (liboqs has no public seed expansion), so the seed file does not apply."""
    return Profile(
        name="oqs",
        provider_id=WELL_KNOWN_PROVIDER_IDS["oqs"],
        setup=static_setup(Backend()),
        policy=Policy(
            not_applicable={
                "mldsa_65_sign_seed_test.json": "ML-DSA keys are not importable from a seed "
                "(liboqs has no public seed expansion)"
            }
        ),
        slow=SLOW,
    )
