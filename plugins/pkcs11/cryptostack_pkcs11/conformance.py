"""The conformance kit's profile of the PKCS#11 provider (entry point
``cryptostack.conformance: pkcs11``): every user of the provider gets a fresh private
SoftHSM2 token (:func:`cryptostack_pkcs11.testing.create_token`)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from cryptostack_core.sdk import REGISTRY, WELL_KNOWN_PROVIDER_IDS
from cryptostack_core.testing.conformance import Backend, HangProbe, Profile
from cryptostack_core.testing.wycheproof import Policy

from . import policy
from .testing import create_token

POLICY = Policy(
    gcm_iv_lengths=REGISTRY.get("AES-128-GCM").iv_sizes,
    mac_key_lengths=(policy.HMAC_KEY_MIN, policy.SECRET_KEY_MAX),
)

HANG = HangProbe(
    options={"test_hang": {"op": "digest"}, "call_timeout": 2.0}, operation="hash", algorithm="SHA-256"
)
"""The worker host's hang hook holds the token worker's next digest; after ``call_timeout``
the worker is killed and restarted."""


@contextlib.contextmanager
def softhsm_token(directory: Path) -> Iterator[Backend]:
    """A private SoftHSM2 token for one user; removed afterwards."""
    token = create_token(directory)
    try:
        yield Backend(options=token.options(), environment=token.environment())
    finally:
        shutil.rmtree(token.tokendir, ignore_errors=True)


def profile() -> Profile:
    """SoftHSM2 tokens; the provider's GCM IV and HMAC key policy (``policy``)."""
    return Profile(
        name="pkcs11",
        provider_id=WELL_KNOWN_PROVIDER_IDS["pkcs11"],
        setup=softhsm_token,
        policy=POLICY,
        hang=HANG,
        slow=frozenset({"RSA-3072", "RSA-4096"}),
    )
