"""Wycheproof ML-KEM-768 and ML-DSA-65 vectors through the public API, over a real daemon
running the oqs provider, with the shared runner ``cryptostack_core.testing.wycheproof``.

Applicability follows the provider's capabilities *and* its key-import formats: a file whose
keys arrive in a format the provider does not import is not applicable to it. On oqs that
excludes ``mldsa_65_sign_seed_test.json`` -- its keys are 32-byte ML-DSA seeds, and liboqs
has no public seed expansion (``OQSProvider.import_formats("ML-DSA-65")`` has no SEED).
No Wycheproof case here is ``acceptable``, so the policy is empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from cryptostack_oqs.provider import OQSProvider

import cryptostack_core as cs
from cryptostack_core.sdk import KeyFormat
from cryptostack_core.testing import wycheproof as wp
from cryptostack_core.testing.daemon import DaemonProcess

pytestmark = pytest.mark.liboqs

PROVIDER_ID = 3
# The key format each file's cases import keys in (see cryptostack_core/testing/vectors/README.md).
KEY_FORMAT = {
    "mlkem_768_test.json": ("ML-KEM-768", KeyFormat.SEED),
    "mlkem_768_encaps_test.json": ("ML-KEM-768", KeyFormat.RAW),
    "mldsa_65_verify_test.json": ("ML-DSA-65", KeyFormat.RAW),
    "mldsa_65_sign_seed_test.json": ("ML-DSA-65", KeyFormat.SEED),
}


def applicable(provider: OQSProvider) -> list[str]:
    """Files the provider claims the algorithms of and can import the keys of."""
    claimed = {c.algorithm for c in provider.capabilities()}
    files = wp.applicable_files(claimed)
    assert set(files) <= set(KEY_FORMAT), files  # a new file needs a KEY_FORMAT entry
    return [f for f in files if KEY_FORMAT[f][1] in provider.import_formats(KEY_FORMAT[f][0])]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cs.CryptoStack]:
    config = {"providers": [{"name": "oqs", "id": PROVIDER_ID, "options": {}}]}
    with DaemonProcess(tmp_path_factory.mktemp("daemon"), config) as daemon:
        with daemon.stack(timeout=30) as connected:
            yield connected


def test_vectors_over_the_daemon(stack: cs.CryptoStack, provider: OQSProvider,
        record_property: Callable[[str, object], None]) -> None:
    files = applicable(provider)
    assert files == ["mlkem_768_test.json", "mlkem_768_encaps_test.json",
                     "mldsa_65_verify_test.json"]
    claimed = {c.algorithm for c in provider.capabilities()}
    directory = wp.vectors_directory()
    started = time.perf_counter()
    results = [wp.run_file(stack, PROVIDER_ID, directory / name, wp.Policy(), claimed)
               for name in files]
    elapsed = time.perf_counter() - started
    table = wp.format_table(results)
    print("\n" + table)
    record_property("wycheproof", "oqs provider, over the daemon\n" + table)
    print("not applicable to oqs: mldsa_65_sign_seed_test.json (ML-DSA SEED import "
          f"unsupported); {elapsed:.2f} s")
    assert [r for r in results if r.unexpected] == []
    by_file = {r.file: r for r in results}
    assert {name: (r.cases, r.as_expected) for name, r in by_file.items()} == {
        "mlkem_768_test.json": (193, 193),
        "mlkem_768_encaps_test.json": (265, 265),
        "mldsa_65_verify_test.json": (210, 210),
    }
    # valid encapsulation cases need the fixed randomness m, which the API does not take
    assert by_file["mlkem_768_encaps_test.json"].partly_checked == 133
    assert all(r.skipped == 0 for r in results)
