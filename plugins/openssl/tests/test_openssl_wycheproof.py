"""The OpenSSL provider's Wycheproof policy is load-bearing.

The conformance kit runs every applicable vector file against the provider
(``test_openssl_conformance.py``) with the policy its profile declares
(``cryptostack_openssl.conformance.POLICY``: which way it goes where Wycheproof leaves the
choice open, what it refuses by design). These tests show that the declarations matter:
without them the same provider fails exactly the policy cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import cryptostack_core as cs
from cryptostack_core.sdk import ProviderEnvironment
from cryptostack_core.testing import wycheproof as wp
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_openssl import OpenSSLProvider
from cryptostack_openssl.conformance import POLICY

PROVIDER_ID = 2
OPENSSL_POLICY = POLICY


@pytest.fixture(scope="module")
def claimed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    tmp = tmp_path_factory.mktemp("caps")
    provider = OpenSSLProvider(PROVIDER_ID, {}, ProviderEnvironment(tmp, tmp))
    return {c.algorithm for c in provider.capabilities()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cs.CryptoStack]:
    config = {"providers": [{"name": "openssl", "id": PROVIDER_ID, "options": {}}]}
    with DaemonProcess(tmp_path_factory.mktemp("daemon"), config) as daemon:
        with daemon.stack(timeout=30) as connected:
            yield connected


def test_policy_declarations_are_load_bearing(stack: cs.CryptoStack, claimed: set[str]) -> None:
    """Without the declarations the same provider fails exactly the policy cases."""
    directory = wp.vectors_directory()
    gcm = wp.run_file(stack, PROVIDER_ID, directory / "aes_gcm_test.json", wp.Policy(), claimed)
    assert len(gcm.unexpected) == 27
    assert all("INVALID_ARGUMENT" in u.reason and "IV" in u.reason for u in gcm.unexpected)
    undeclared = wp.run_file(
        stack, PROVIDER_ID, directory / "x25519_test.json", wp.Policy(), claimed
    )
    assert len(undeclared.unexpected) == 254  # every acceptable case needs a declaration
    lenient = wp.Policy(acceptable={**OPENSSL_POLICY.acceptable, "ZeroSharedSecret": True})
    x25519 = wp.run_file(stack, PROVIDER_ID, directory / "x25519_test.json", lenient, claimed)
    assert len(x25519.unexpected) == 31  # the low-order peers are refused, consistently
    assert all("low-order" in u.reason for u in x25519.unexpected)


def test_unclaimed_groups_are_skipped(stack: cs.CryptoStack) -> None:
    assert wp.applicable_files({"AES-128-GCM", "Ed25519"}) == [
        "aes_gcm_test.json",
        "ed25519_test.json",
    ]
    assert wp.applicable_files({"SHA-256"}) == []
    directory = wp.vectors_directory()
    result = wp.run_file(
        stack, PROVIDER_ID, directory / "aes_gcm_test.json", OPENSSL_POLICY, {"AES-128-GCM"}
    )
    assert not result.unexpected and result.skipped > 0
    assert result.as_expected + result.skipped == result.cases == 316
    assert "AES-192-GCM" in result.notes[0] and "skipped" in result.summary()


def test_vectors_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    found = wp.vectors_directory()
    assert found.name == "wycheproof" and (found / "aes_gcm_test.json").is_file()
    # the copy shipped with cryptostack_core.testing, with its licence
    assert found == wp.PACKAGED_VECTORS and (found / "LICENSE").is_file()
    monkeypatch.setenv(wp.ENV_VARIABLE, str(found.parent))
    assert wp.vectors_directory() == found
    monkeypatch.setenv(wp.ENV_VARIABLE, str(tmp_path))
    with pytest.raises(FileNotFoundError):
        wp.vectors_directory()
