"""Repository-wide test policy.

With ``CRYPTOSTACK_FORBID_SKIPS=1`` (set by ``make test``) a skipped test fails the run: the
tests that need SoftHSM2 or swtpm must run, not be skipped. The only allowed skips are the
liboqs tests on a machine without liboqs, which the oqs plugin counts in a closing line.
"""

from __future__ import annotations

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
        reporter.write_line(f"FAILED: {len(skipped)} test(s) were skipped in a run that "
                            f"forbids skips: {names}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
