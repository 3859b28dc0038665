"""The conformance kit itself: it passes a correct provider, fails a broken one naming each
fault, and fails loudly when a claimed algorithm has no known answers."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from cryptostack_core.testing import known_answers, wycheproof
from cryptostack_core.testing.conformance import load_profile
from cryptostack_core.testing.entrypoints import provider_environment, provider_path

HERE = Path(__file__).resolve().parent
PROVIDERS = HERE / "providers"

pytest_plugins = ["pytester"]


def run_kit(
    pytester: pytest.Pytester, provider: str, *args: str, entry_points: Path | None = None
) -> pytest.RunResult:
    """``pytest --cryptostack-provider PROVIDER`` in a fresh interpreter."""
    if entry_points is not None:
        for key, value in provider_environment(entry_points).items():
            pytester._monkeypatch.setenv(key, value)  # the daemons inherit it too
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "--cryptostack-provider", provider, *args, timeout=600
    )


def test_the_kit_passes_the_mock_provider(pytester: pytest.Pytester) -> None:
    result = run_kit(pytester, "mock")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes["passed"] > 50, result.stdout.str()
    summary = re.search(
        r"mock \(id 1\): (\d+) checks passed, 0 failed; (\d+) vector files", result.stdout.str()
    )
    assert summary is not None, result.stdout.str()
    assert int(summary.group(1)) == outcomes["passed"] and int(summary.group(2)) >= 10
    result.stdout.fnmatch_lines(["*wycheproof*aes_gcm_test.json:*refused by policy*"])
    result.stdout.fnmatch_lines(
        ["*known-answers cryptography-vectors/hashes/SHA2/SHA256ShortMsg.rsp: 65/65 cases*"]
    )


@pytest.fixture
def broken_entry_points(tmp_path: Path) -> Path:
    return provider_path(
        tmp_path / "entry-points",
        {"broken": "broken_provider:BrokenProvider", "toy": "toy_provider:ToyProvider"},
        modules=[PROVIDERS / "broken_provider.py", PROVIDERS / "toy_provider.py"],
        profiles={"broken": "broken_provider:profile"},
    )


def test_a_broken_provider_fails_with_each_fault_named(
    pytester: pytest.Pytester, broken_entry_points: Path
) -> None:
    result = run_kit(pytester, "broken", entry_points=broken_entry_points)
    out = result.stdout.str()
    failed = set(re.findall(r"^FAILED \S+::(\S+)", out, re.MULTILINE))
    # 1. it computes a claimed algorithm wrongly: the NIST known answers catch it
    assert "test_vectors[cryptography-vectors/hashes/SHA2/SHA256ShortMsg.rsp]" in failed, out
    assert "SHA-256 Len = 0: digest differs" in out
    # 2. it leaks: released keys stay referenced
    assert "test_no_references_after_release" in failed, out
    assert re.search(r"\d+ of \d+ released keys are still referenced by the provider \(a leak\)", out)
    # 3. it ignores deadlines: its hang hook holds a call past the deadline
    assert "test_deadline[hang-hook-sdk]" in failed, out
    assert re.search(
        r"ignores deadlines: the held random call returned a result after "
        r"[\d.]+ s under a 0.5 s deadline",
        out,
    )
    # ... and nothing else is wrong with it
    assert failed == {
        "test_vectors[cryptography-vectors/hashes/SHA2/SHA256ShortMsg.rsp]",
        "test_no_references_after_release",
        "test_deadline[hang-hook-sdk]",
    }, out
    assert "broken (id 1000): " in out and " checks passed, 3 failed" in out


def test_a_claim_without_known_answers_fails_loudly(
    pytester: pytest.Pytester, broken_entry_points: Path
) -> None:
    result = run_kit(pytester, "toy", "-k", "known_answers or vectors", entry_points=broken_entry_points)
    out = result.stdout.str()
    assert result.ret != 0
    assert re.search(
        r"toy claims 2 algorithm\(s\) with neither vectors nor a known-answer "
        r"check the kit can run: TOY-HASH, TOY-MAC",
        out,
    ), out


def test_profiles_come_from_entry_points_and_options_files(tmp_path: Path) -> None:
    mock = load_profile("mock")
    assert mock.provider_id == 1 and mock.policy.gcm_iv_lengths == (12, 12)
    assert "entry point" in mock.source
    options = tmp_path / "kit.toml"
    options.write_text(
        'id = 1042\n[options]\nseed = "x"\n[environment]\nA = "b"\n'
        "[policy]\nmac_key_lengths = [16, 64]\n"
        'not_applicable = { "aes_gcm_test.json" = "no GCM" }\n'
    )
    profile = load_profile("mock", options)
    assert profile.provider_id == 1042
    assert profile.policy.mac_key_lengths == (16, 64)
    assert profile.policy.gcm_iv_lengths == (12, 12)  # kept from the entry point
    assert profile.policy.not_applicable == {"aes_gcm_test.json": "no GCM"}
    with profile.setup(tmp_path / "backend") as backend:
        assert backend.options["seed"] == "x" and backend.environment == {"A": "b"}
    options.write_text("[policy]\nmac_key_length = 3\n")
    with pytest.raises(ValueError, match="mac_key_length"):
        load_profile("mock", options)
    options.write_text("[option]\n")
    with pytest.raises(ValueError, match="unknown setting"):
        load_profile("mock", options)


def test_known_answer_sets_parse_their_sources() -> None:
    by_name = {s.name: s for s in known_answers.SETS}
    sha256 = list(by_name["cryptography-vectors/hashes/SHA2/SHA256ShortMsg.rsp"].cases())
    assert len(sha256) == 65 and sha256[0].message == b""  # type: ignore[union-attr]
    # (the parse, cross-checked with an independent implementation)
    assert all(
        hashlib.sha256(c.message).digest() == c.digest  # type: ignore[union-attr]
        for c in sha256
    )
    assert [len(c.message) for c in sha256] == list(range(65))  # type: ignore[union-attr]
    hkdf = list(by_name["cryptography-vectors/KDF/rfc-5869-HKDF-SHA256.txt"].cases())
    assert [len(c.okm) for c in hkdf] == [42, 82, 42]  # type: ignore[union-attr]
    falcon = list(by_name["liboqs/tests/KATs/sig/Falcon-512.kat"].cases())
    assert [c.valid for c in falcon] == [True, False]  # type: ignore[union-attr]
    assert falcon[0].signature[0] == 0x39  # type: ignore[union-attr]
    slh = list(by_name["liboqs/tests/ACVP_Vectors/SLH-DSA-keyGen-FIPS205/internalProjection.json"].cases())
    assert len(slh) == 12 and {c.algorithm for c in slh} == set(
        by_name["liboqs/tests/ACVP_Vectors/SLH-DSA-keyGen-FIPS205/internalProjection.json"].algorithms
    )
    assert known_answers.sets_for({"SHA-256", "AES-256-CFB"}) == [
        by_name["cryptography-vectors/hashes/SHA2/SHA256ShortMsg.rsp"],
        by_name["cryptography-vectors/ciphers/AES/CFB/CFB128MMT256.rsp"],
    ]
    for kat in known_answers.SETS:  # every file ships with the package, with its licence
        assert kat.source
    assert (known_answers.vectors_root() / "cryptography-vectors" / "LICENSE.BSD").is_file()
    assert (known_answers.vectors_root() / "liboqs" / "LICENSE.txt").is_file()


def test_policy_refusals_cover_key_lengths() -> None:
    policy = wycheproof.Policy(mac_key_lengths=(16, 1024), secret_lengths=(1, 1024))
    assert policy.refusal("hmac_sha256_test.json", {}, {"key": "00" * 4, "result": "valid"})
    assert not policy.refusal("hmac_sha256_test.json", {}, {"key": "00" * 16, "result": "valid"})
    assert policy.refusal("hkdf_sha256_test.json", {}, {"ikm": "00", "size": 8160, "result": "valid"})
    assert wycheproof.spki_public_bits(bytes.fromhex("302a300506032b6570032100" + "11" * 32)) == b"\x11" * 32
