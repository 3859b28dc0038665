"""NIST PKITS through the public API: every test of section 4, verifier settings included.

The data and the expectation table are in ``tests/data/pkits`` (see its README for source
and licence). Each case imports the path's certificates and CRLs with a certificate
management context, hands the non-leaf certificates over as *untrusted intermediates* (the
engine builds the path itself) and verifies with ``CRL_ONLY`` at the PKITS publication
time, with the case's RFC 5280 settings. Every case runs in-process (``inproc://``, the
same service as the daemon); a handful also run over a real daemon's unix socket.

A case passes when the verdict is the table's ``result`` (and, for a valid path, the
user-constrained policy set is the PDF's). The closing summary of the run prints how many
cases passed and how many agree with PKITS.pdf itself (see ``conftest.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core import CertVerifyResult as R
from cryptostack_core.testing.daemon import DaemonProcess

# pyca warns when it parses the negative serial numbers of PKITS 4.4.14/4.4.15 (on purpose).
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")

DATA = Path(__file__).resolve().parent / "data" / "pkits"
TABLE = json.loads((DATA / "pkits.json").read_text())
CASES: list[dict[str, Any]] = TABLE["cases"]
WHEN = dt.datetime.fromisoformat(TABLE["validation_time"])
# Over a real daemon: plain, separate CRL key, policy settings, mapping, indirect CRL,
# delta CRL, the lenient profile and DSA.
OVER_SOCKET = ["4.1.1", "4.4.19", "4.8.1/3", "4.10.1.1/1", "4.14.30", "4.15.4", "4.6.4", "4.1.4"]


class PkitsRunner:
    """Imports each PKITS file once per stack and runs cases through the public API."""

    def __init__(self, stack: cs.CryptoStack) -> None:
        self.ctx = stack.create_crypto_context()
        self.cm = self.ctx.create_certificate_management_context()
        self._certs: dict[str, Any] = {}
        self._crls: dict[str, Any] = {}
        self._stores: dict[str, Any] = {}

    def cert(self, name: str) -> Any:
        if name not in self._certs:
            self._certs[name] = self.cm.import_certificate((DATA / "certs" / f"{name}.crt").read_bytes())
        return self._certs[name]

    def crl(self, name: str) -> Any:
        if name not in self._crls:
            self._crls[name] = self.cm.import_crl((DATA / "crls" / f"{name}.crl").read_bytes())
        return self._crls[name]

    def store(self, anchor: str) -> Any:
        if anchor not in self._stores:
            self._stores[anchor] = self.cm.create_trust_store([self.cert(anchor)])
        return self._stores[anchor]

    def run(self, case: dict[str, Any], **overrides: Any) -> tuple[str, str, frozenset[str]]:
        """(verdict, reason, user-constrained policies); verdict "UNSUPPORTED" for a refusal."""
        settings = {**case.get("settings", {}), **overrides}
        try:
            ver = self.ctx.create_certificate_verification_context(cs.CertificateVerificationContextConfig())
            ver.set_verification_trust_store(self.store(case["anchor"]))
            ver.set_certificate(self.cert(case["certs"][-1]))
            for name in case["certs"][:-1]:
                ver.add_untrusted_intermediate(self.cert(name))
            for name in case["crls"]:
                ver.add_crl(self.crl(name))
            ver.set_validation_time(WHEN)
            ver.set_revocation_check_policy(cs.RevocationCheckPolicy.CRL_ONLY)
            if "initial_policy_set" in settings:
                ver.set_initial_policy_set(settings["initial_policy_set"])
            if settings.get("initial_explicit_policy"):
                ver.set_initial_explicit_policy(True)
            if settings.get("initial_policy_mapping_inhibit"):
                ver.set_initial_policy_mapping_inhibit(True)
            if settings.get("initial_any_policy_inhibit"):
                ver.set_initial_any_policy_inhibit(True)
            if "profile" in settings:
                ver.set_profile(settings["profile"])
            result = ver.verify()
        except cs.CryptoError as exc:
            if exc.code is cs.ErrorCode.UNSUPPORTED_ALGORITHM:
                return "UNSUPPORTED", exc.message, frozenset()
            raise
        assert ver.last_report is not None
        return result.value, ver.explain(), ver.last_report.policies


def check_case(runner: PkitsRunner, case: dict[str, Any]) -> tuple[bool, bool, str]:
    """(as expected, agrees with PKITS.pdf, failure text)."""
    verdict, reason, policies = runner.run(case)
    problems = []
    if verdict != case["result"]:
        problems.append(f"expected {case['result']}, got {verdict}: {reason}")
    expected_policies = frozenset(case.get("user_constrained_policy_set", ()))
    if verdict == "VALID" and policies != expected_policies:
        problems.append(
            f"user-constrained policy set {sorted(policies)}, PKITS expects {sorted(expected_policies)}"
        )
    if "rfc5280_profile_result" in case:
        strict, strict_reason, _ = runner.run(case, profile="rfc5280")
        if strict != case["rfc5280_profile_result"]:
            problems.append(
                f"under the rfc5280 profile expected "
                f"{case['rfc5280_profile_result']}, got {strict}: {strict_reason}"
            )
    agrees = (verdict == "VALID") == case["pkits_valid"] and (
        verdict != "VALID" or policies == expected_policies
    )
    return not problems, agrees, "; ".join(problems)


@pytest.fixture(scope="module")
def runner() -> Iterator[PkitsRunner]:
    stack = cs.create_crypto_stack(
        cs.CryptoStackConfig()
        .set_connection_endpoint("inproc://")
        .set_daemon_config(
            {"daemon": {"allow_test_providers": True}, "providers": [{"name": "mock", "id": 1}]}
        )
    )
    yield PkitsRunner(stack)
    stack.close()


@pytest.mark.parametrize("case", CASES, ids=[f"{c['id']} {c['name']}" for c in CASES])
def test_pkits(case: dict[str, Any], runner: PkitsRunner, record_property: pytest.RecordProperty) -> None:
    ok, agrees, problem = check_case(runner, case)
    record_property("pkits", json.dumps({"id": case["id"], "ok": ok, "agrees": agrees}))
    assert ok, f"PKITS {case['id']} {case['name']}: {problem}"


def test_pkits_over_a_real_daemon(tmp_path: Path) -> None:
    config = {"daemon": {"allow_test_providers": True}, "providers": [{"name": "mock", "id": 1}]}
    by_id = {c["id"]: c for c in CASES}
    with DaemonProcess(tmp_path / "d", config) as daemon, daemon.stack() as stack:
        runner = PkitsRunner(stack)
        failures = []
        for case_id in OVER_SOCKET:
            ok, _, problem = check_case(runner, by_id[case_id])
            if not ok:
                failures.append(f"{case_id}: {problem}")
    assert not failures, failures


def test_pkits_table_covers_every_test_of_section_4() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)) == 249
    assert sum(1 for c in CASES if c.get("settings")) == 36  # policy settings and 4.6.4
    referenced = {n for c in CASES for n in [c["anchor"], *c["certs"]]}
    assert all((DATA / "certs" / f"{n}.crt").is_file() for n in referenced)
    assert all((DATA / "crls" / f"{n}.crl").is_file() for c in CASES for n in c["crls"])
    deviations = [c["id"] for c in CASES if (c["result"] == R.VALID.value) != c["pkits_valid"]]
    assert deviations == ["4.1.4", "4.1.5"]  # DSA: UNSUPPORTED by design
