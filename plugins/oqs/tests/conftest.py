"""Fixtures for the oqs provider tests, and the liboqs accounting.

Tests that need the native liboqs carry ``@pytest.mark.liboqs``. liboqs is looked up the
way the provider does (``OQS_INSTALL_PATH``, the linker cache, ``LD_LIBRARY_PATH``,
standard prefixes -- without importing liboqs-python). When it is missing those tests are
skipped with the reason, and the run ends with one line saying so::

    liboqs tests: 0 ran — liboqs not found (set OQS_INSTALL_PATH to a liboqs 0.16 install)

otherwise ``liboqs tests: N ran``. Tests without the marker (the unavailable-provider
checks) always run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptostack_oqs import library
from cryptostack_oqs.provider import OQSProvider

from cryptostack_core.testing.instances import ProviderFactory, start_provider

PROVIDER_ID = 3
LIBOQS = library.locate()
NOT_FOUND = "liboqs not found (set OQS_INSTALL_PATH to a liboqs 0.16 install)"

_seen: set[str] = set()
_ran: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "liboqs: needs the native liboqs library (counted in the 'liboqs tests' summary line)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LIBOQS is not None:
        return
    for item in items:
        if item.get_closest_marker("liboqs") is not None:
            item.add_marker(pytest.mark.skip(reason=NOT_FOUND))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Keyword-based (not item-based) so that it also counts on an xdist controller.
    if "liboqs" not in report.keywords:
        return
    _seen.add(report.nodeid)
    if report.when == "call":
        _ran.add(report.nodeid)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    # The outermost wrapper writes after everything else in the summary (short test summary
    # included), so the line sits just above pytest's closing "N passed" line.
    yield
    if not _seen:
        return  # no oqs test was part of this run
    if LIBOQS is None:
        terminalreporter.write_line(f"liboqs tests: 0 ran — {NOT_FOUND}")
    else:
        terminalreporter.write_line(f"liboqs tests: {len(_ran)} ran")


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OQSProvider]:
    """One started provider shared by the whole session (it holds no per-test state)."""
    instance = start_provider("oqs", tmp_path_factory.mktemp("oqs"))
    assert isinstance(instance, OQSProvider)
    yield instance
    instance.close()


@pytest.fixture
def provider_factory(cryptostack_provider_factory: ProviderFactory) -> Callable[..., OQSProvider]:
    """Build a started provider with options (closed after the test)."""

    def make(**options: Any) -> OQSProvider:
        provider = cryptostack_provider_factory("oqs", **options)
        assert isinstance(provider, OQSProvider)
        return provider

    return make
