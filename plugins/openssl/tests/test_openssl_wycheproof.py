"""Every Wycheproof vector through the public API, over a real daemon running the OpenSSL
provider, with the shared runner ``cryptostack_core.testing.wycheproof``.

Which way this provider goes where Wycheproof leaves the choice open (``acceptable``), and
what it refuses by policy, is declared in ``OPENSSL_POLICY`` below; the runner counts any
case that does not go the declared way as unexpected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cryptostack_core as cs
from cryptostack_core.sdk import REGISTRY, ProviderEnvironment
from cryptostack_core.testing import wycheproof as wp
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_openssl import OpenSSLProvider

PROVIDER_ID = 2
OPENSSL_POLICY = wp.Policy(
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
    # AES-GCM IVs outside 8..128 bytes are refused (see the provider docstring).
    gcm_iv_lengths=REGISTRY.get("AES-128-GCM").iv_sizes,
)


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


def test_every_vector_over_the_daemon(stack: cs.CryptoStack, claimed: set[str],
        record_property: Callable[[str, object], None]) -> None:
    assert wp.applicable_files(claimed) == list(wp.FILES)  # the provider claims them all
    started = time.perf_counter()
    results = wp.run_vectors(stack, PROVIDER_ID, claimed, OPENSSL_POLICY)
    elapsed = time.perf_counter() - started
    table = wp.format_table(results)
    print("\n" + table)
    record_property("wycheproof", "openssl provider, over the daemon\n" + table)
    for result in results:
        print(result.summary())
    assert [r for r in results if r.unexpected] == []
    by_file = {r.file: r for r in results}
    assert len(by_file) == 15 and all(r.cases == r.as_expected for r in results)
    assert sum(r.cases for r in results) == 4355
    # the declared policy decisions, as counts
    assert by_file["aes_gcm_test.json"].policy_rejected == 27  # 1-6 and 257-byte IVs
    x25519 = by_file["x25519_test.json"]
    assert (x25519.acceptable_accepted, x25519.acceptable_rejected) == (223, 31)
    ecdh = by_file["ecdh_secp256r1_test.json"]
    assert (ecdh.acceptable_accepted, ecdh.acceptable_rejected) == (1, 229)
    # what the API cannot express is checked partly, and said so
    assert by_file["mlkem_768_encaps_test.json"].partly_checked == 133
    assert by_file["mldsa_65_sign_seed_test.json"].partly_checked == 17
    assert all(r.partly_checked == 0 for name, r in by_file.items()
               if name not in ("mlkem_768_encaps_test.json", "mldsa_65_sign_seed_test.json"))
    assert elapsed < 60, f"the vector run took {elapsed:.1f} s"


def test_policy_declarations_are_load_bearing(stack: cs.CryptoStack, claimed: set[str]) -> None:
    """Without the declarations the same provider fails exactly the policy cases."""
    directory = wp.vectors_directory()
    gcm = wp.run_file(stack, PROVIDER_ID, directory / "aes_gcm_test.json", wp.Policy(), claimed)
    assert len(gcm.unexpected) == 27
    assert all("INVALID_ARGUMENT" in u.reason and "IV" in u.reason for u in gcm.unexpected)
    undeclared = wp.run_file(stack, PROVIDER_ID, directory / "x25519_test.json", wp.Policy(),
                             claimed)
    assert len(undeclared.unexpected) == 254  # every acceptable case needs a declaration
    lenient = wp.Policy(acceptable={**OPENSSL_POLICY.acceptable, "ZeroSharedSecret": True})
    x25519 = wp.run_file(stack, PROVIDER_ID, directory / "x25519_test.json", lenient, claimed)
    assert len(x25519.unexpected) == 31  # the low-order peers are refused, consistently
    assert all("low-order" in u.reason for u in x25519.unexpected)


def test_unclaimed_groups_are_skipped(stack: cs.CryptoStack) -> None:
    assert wp.applicable_files({"AES-128-GCM", "Ed25519"}) == ["aes_gcm_test.json",
                                                               "ed25519_test.json"]
    assert wp.applicable_files({"SHA-256"}) == []
    directory = wp.vectors_directory()
    result = wp.run_file(stack, PROVIDER_ID, directory / "aes_gcm_test.json", OPENSSL_POLICY,
                         {"AES-128-GCM"})
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
