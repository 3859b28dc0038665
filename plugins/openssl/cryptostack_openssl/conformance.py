"""The conformance kit's profile of the OpenSSL provider (entry point
``cryptostack.conformance: openssl``): its parameter policy, as ``policy`` declares it, and
where Wycheproof leaves the choice open, which way it goes."""

from __future__ import annotations

from cryptostack_core.sdk import REGISTRY, WELL_KNOWN_PROVIDER_IDS
from cryptostack_core.sdk.hybrid import COMPOSITE_SIGNATURES
from cryptostack_core.testing.conformance import Backend, Profile, static_setup
from cryptostack_core.testing.wycheproof import Policy

from . import policy

POLICY = Policy(
    acceptable={
        # X25519 (RFC 7748): points on the twist and non-canonical u-coordinates are
        # processed as the function defines; an all-zero shared secret (low-order peer key)
        # is refused -- a refusal wins over the other flags of a case.
        "Twist": True,
        "NonCanonicalPublic": True,
        "ZeroSharedSecret": False,
        # ECDH P-256 peer keys: a compressed point in the SPKI is fine; DER that is not
        # strictly valid and explicit curve parameters are refused.
        "CompressedPublic": True,
        "InvalidAsn": False,
        "UnnamedCurve": False,
    },
    gcm_iv_lengths=REGISTRY.get("AES-128-GCM").iv_sizes,  # declared once, on the spec
    mac_key_lengths=(policy.HMAC_KEY_MIN, policy.SECRET_KEY_MAX),
    secret_lengths=(policy.GENERIC_SECRET_MIN, policy.SECRET_KEY_MAX),
)


SLOW = frozenset(
    {
        "RSA-3072",
        "RSA-4096",
        *(name for name in COMPOSITE_SIGNATURES if "RSA3072" in name or "RSA4096" in name),
    }
)
"""Key types whose generation takes a second or more (large RSA moduli)."""


def profile() -> Profile:
    """No backend to start."""
    return Profile(
        name="openssl",
        provider_id=WELL_KNOWN_PROVIDER_IDS["openssl"],
        setup=static_setup(Backend()),
        policy=POLICY,
        slow=SLOW,
    )
