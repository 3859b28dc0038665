"""Repository-wide test policy and reporting.

Wycheproof runs attach their per-file table with ``record_property("wycheproof", text)``;
the tables are printed at the end of the run (they travel back from xdist workers).

With ``CRYPTOSTACK_FORBID_SKIPS=1`` (set by ``make test``) a skipped test fails the run: the
tests that need SoftHSM2 or swtpm must run, not be skipped. The only allowed skips are the
liboqs tests on a machine without liboqs, which the oqs plugin counts in a closing line.
"""

from __future__ import annotations

import json
import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CRYPTOSTACK_FORBID_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = [r for r in reporter.stats.get("skipped", []) if "liboqs" not in str(r.longrepr)]
    if skipped:
        names = ", ".join(getattr(r, "nodeid", "?") for r in skipped[:10])
        reporter.ensure_newline()
        reporter.write_line(
            f"FAILED: {len(skipped)} test(s) were skipped in a run that forbids skips: {names}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tables = [
        value
        for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        for name, value in getattr(report, "user_properties", [])
        if name == "wycheproof"
    ]
    if tables:
        terminalreporter.section("Wycheproof vectors through the public API")
        for table in tables:
            terminalreporter.write_line(str(table))
            terminalreporter.write_line("")
    _pkits_summary(terminalreporter)


def _pkits_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line for the NIST PKITS cases (tests/test_certificates_pkits.py), if any ran."""
    cases = {}
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for name, value in getattr(report, "user_properties", []):
            if name == "pkits":
                case = json.loads(value)
                cases[case["id"]] = case
    if not cases:
        return
    passed = sum(1 for c in cases.values() if c["ok"])
    agree = sum(1 for c in cases.values() if c["agrees"])
    terminalreporter.section("NIST PKITS through the public API")
    terminalreporter.write_line(
        f"{passed}/{len(cases)} PKITS cases as expected; {agree}/{len(cases)} agree with "
        "PKITS.pdf (the others are documented deviations: DSA is UNSUPPORTED)"
    )
