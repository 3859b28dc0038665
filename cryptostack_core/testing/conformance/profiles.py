"""Conformance profiles of the providers shipped with the core (entry points in
``cryptostack.conformance``)."""

from __future__ import annotations

from cryptostack_core.sdk.ids import WELL_KNOWN
from cryptostack_core.testing.conformance.profile import Backend, Profile, static_setup
from cryptostack_core.testing.wycheproof import Policy

__all__ = ["mock_profile"]


def mock_profile() -> Profile:
    """The mock provider: AES-GCM with 12-byte nonces only."""
    return Profile(
        name="mock",
        provider_id=WELL_KNOWN["mock"],
        setup=static_setup(Backend(options={"seed": "cryptostack-conformance"})),
        policy=Policy(gcm_iv_lengths=(12, 12)),
    )
