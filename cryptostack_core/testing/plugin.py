"""The ``cryptostack`` pytest plugin (entry point ``pytest11``, with ``cryptostack-core[test]``).

For provider authors, the conformance kit::

    pytest --cryptostack-provider NAME [--cryptostack-options FILE]

runs :class:`~cryptostack_core.testing.conformance.ConformanceSuite` against the installed
provider ``NAME`` (and, with test paths on the command line, those too); a provider's own
suite subclasses ``ConformanceSuite``. The end of the run lists, per provider, how many
checks passed and which vector files and known-answer sets ran.

For application authors, fixtures on the mock provider (a deterministic test provider,
never for production; mark a test ``@pytest.mark.cryptostack_mock(seed="...")`` for
reproducible keys and random bytes, ``options={...}`` for its fault injection):

``cryptostack_stack``
    an in-process stack (``inproc://``) on the mock provider;
``cryptostack_daemon``
    a real daemon subprocess on the mock provider, stopped after the test;
``cryptostack_daemon_factory``
    ``factory(config=None, name="daemon", env=None) -> DaemonProcess``: more daemons, all
    stopped after the test;
``cryptostack_mock_config``
    ``mock_config(seed=None, options=None, key_slots=(), **daemon)``: the config mapping
    the fixtures use, to extend.

For provider tests: ``cryptostack_provider_factory`` -- ``factory(name, provider_id=None,
**options)`` starts an installed provider by entry-point name, closed after the test
(:mod:`cryptostack_core.testing.instances`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.testing.conformance import cli_suite
from cryptostack_core.testing.conformance.profile import load_profile
from cryptostack_core.testing.conformance.suite import REPORT_KEY, ConformanceSuite
from cryptostack_core.testing.conformance.target import ProviderUnderTest
from cryptostack_core.testing.conformance.vector_checks import vector_items
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.instances import ProviderFactory

__all__ = ["MOCK_PROVIDER_ID", "DaemonFactory", "mock_config"]

MOCK_PROVIDER_ID = 1
PROVIDER_PROPERTY = REPORT_KEY + "-provider"
_TARGETS = pytest.StashKey["_Targets"]()


def mock_config(
    seed: str | None = None,
    options: Mapping[str, Any] | None = None,
    key_slots: Sequence[Mapping[str, Any]] = (),
    **daemon: Any,
) -> dict[str, Any]:
    """A daemon config mapping with the mock provider (id 1) configured explicitly, and
    ``allow_test_providers = true`` (the mock is a test provider).

    ``seed`` makes its keys and random bytes reproducible (otherwise they come from the OS);
    ``options`` are further mock options (``delay``, ``fail``, ``algorithms`` ...); ``daemon``
    goes to ``[daemon]``.
    """
    provider_options = dict(options or {})
    if seed is not None:
        provider_options["seed"] = seed
    config: dict[str, Any] = {
        "daemon": {"allow_test_providers": True, **daemon},
        "providers": [{"name": "mock", "id": MOCK_PROVIDER_ID, "options": provider_options}],
    }
    if key_slots:
        config["key_slots"] = [dict(slot) for slot in key_slots]
    return config


# --- options and the kit's targets -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cryptostack", "cryptostack provider conformance kit")
    group.addoption(
        "--cryptostack-provider",
        metavar="NAME",
        default=None,
        help="run the provider conformance suite against the installed provider "
        "NAME (its entry point in cryptostack.providers)",
    )
    group.addoption(
        "--cryptostack-options",
        metavar="FILE",
        default=None,
        help="TOML with the provider's id, [options], [environment] and [policy] for the conformance suite",
    )


class _Targets:
    """The providers under test of this session, made on first use, closed at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._targets: dict[tuple[str, str], ProviderUnderTest] = {}

    def resolve(self, cls: type) -> tuple[str, Path | None]:
        name = getattr(cls, "provider", None)
        options_file = getattr(cls, "options_file", None)
        if name is None:
            name = self.config.getoption("cryptostack_provider")
            options_file = self.config.getoption("cryptostack_options")
            if name is None:
                raise pytest.UsageError(f"{cls.__name__} sets no provider: give --cryptostack-provider NAME")
            return name, Path(options_file) if options_file else None
        if options_file is None:
            return name, None
        return name, Path(inspect.getfile(cls)).parent / options_file

    def target_for(self, cls: type) -> ProviderUnderTest:
        name, options_file = self.resolve(cls)
        key = (name, str(options_file or ""))
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = ProviderUnderTest(load_profile(name, options_file))
        return target

    def close(self) -> None:
        targets, self._targets = list(self._targets.values()), {}
        for target in targets:
            target.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cryptostack_mock(seed=None, options=None): how the "
        "cryptostack_stack / cryptostack_daemon fixtures "
        "configure the mock provider",
    )
    config.stash[_TARGETS] = _Targets(config)
    config.pluginmanager.register(_Reporter(), "cryptostack-conformance-reporter")
    if config.getoption("cryptostack_provider"):
        suite = str(Path(cli_suite.__file__).resolve())
        if config.args_source is pytest.Config.ArgsSource.ARGS:
            config.args.append(suite)
        else:  # no paths given: run the suite alone, not the project's default tests
            config.args[:] = [suite]


def pytest_unconfigure(config: pytest.Config) -> None:
    targets = config.stash.get(_TARGETS, None)
    if targets is not None:
        targets.close()


def _suite_class(metafunc: pytest.Metafunc) -> type | None:
    cls = metafunc.cls
    return cls if cls is not None and issubclass(cls, ConformanceSuite) else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    cls = _suite_class(metafunc)
    if cls is None:
        return
    put = metafunc.config.stash[_TARGETS].target_for(cls)
    names = metafunc.fixturenames
    if "cryptostack_capability" in names:
        caps = sorted(put.capabilities, key=lambda c: (c.algorithm, c.operation.value))
        metafunc.parametrize(
            "cryptostack_capability", caps, ids=[f"{c.algorithm}/{c.operation.value}" for c in caps]
        )
    if "cryptostack_key_algorithm" in names:
        algorithms = put.key_algorithms() or ["(none)"]
        metafunc.parametrize("cryptostack_key_algorithm", algorithms, ids=algorithms)
    if "cryptostack_vector_item" in names:
        items = vector_items(put)
        metafunc.parametrize("cryptostack_vector_item", items, ids=[i.name for i in items])
    if "cryptostack_deadline_mode" in names:
        modes = ["hang-hook-sdk", "hang-hook-daemon"] if put.profile.hang else ["gate"]
        metafunc.parametrize("cryptostack_deadline_mode", modes, ids=modes)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    targets = config.stash[_TARGETS]
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, ConformanceSuite):
            name, _options = targets.resolve(cls)
            item.user_properties.append((PROVIDER_PROPERTY, name))


@pytest.fixture
def cryptostack_kit(request: pytest.FixtureRequest) -> ProviderUnderTest:
    """The provider under test of a :class:`ConformanceSuite` (shared by the session)."""
    cls = request.cls
    if cls is None or not issubclass(cls, ConformanceSuite):
        raise pytest.UsageError("cryptostack_kit is for ConformanceSuite subclasses")
    targets: _Targets = request.config.stash[_TARGETS]
    return targets.target_for(cls)


# --- the closing report -------------------------------------------------------------------------


class _Reporter:
    """Per provider: checks passed and failed, vector files and sets run (from every xdist
    worker's reports)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, int]] = {}
        self.ids: dict[str, int] = {}
        self.files: dict[str, list[dict[str, Any]]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        provider = next((v for k, v in report.user_properties if k == PROVIDER_PROPERTY), None)
        if provider is None:
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            counts = self.outcomes.setdefault(str(provider), {"passed": 0, "failed": 0, "skipped": 0})
            counts[report.outcome] = counts.get(report.outcome, 0) + 1
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key != REPORT_KEY:
                continue
            facts = json.loads(str(value))
            self.ids[facts["provider"]] = facts["id"]
            if facts["check"] == "vectors":
                self.files.setdefault(facts["provider"], []).append(facts)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.outcomes:
            return
        terminalreporter.section("cryptostack provider conformance")
        for provider in sorted(self.outcomes):
            counts = self.outcomes[provider]
            files = sorted(self.files.get(provider, []), key=lambda f: str(f["file"]))
            ran = [f for f in files if f["cases"]]
            cases = sum(int(f["as_expected"]) for f in ran)
            terminalreporter.write_line(
                f"{provider} (id {self.ids.get(provider, '?')}): {counts['passed']} checks "
                f"passed, {counts['failed']} failed; {len(ran)} vector files / known-answer "
                f"sets ran ({cases} cases as expected)"
            )
            for facts in files:
                extra = "; ".join(str(n) for n in facts["notes"] if not str(n).startswith("source:"))
                detail = f"{facts['as_expected']}/{facts['cases']} cases"
                if facts["policy"]:
                    detail += f", {facts['policy']} refused by policy"
                if facts["skipped"]:
                    detail += f", {facts['skipped']} of unclaimed algorithms"
                if facts["partly"]:
                    detail += f", {facts['partly']} partly checked"
                terminalreporter.write_line(
                    f"    {facts['source']:13} {facts['file']}: {detail}" + (f" ({extra})" if extra else "")
                )


# --- fixtures for application tests ---------------------------------------------------------------


def _mock_marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("cryptostack_mock")
    if marker is None:
        return {}
    return {"seed": marker.kwargs.get("seed"), "options": marker.kwargs.get("options")}


@pytest.fixture(name="cryptostack_mock_config")
def cryptostack_mock_config_fixture() -> Any:
    """:func:`mock_config`, to build configs for the daemon fixtures."""
    return mock_config


@pytest.fixture
def cryptostack_stack(request: pytest.FixtureRequest) -> Iterator[cs.CryptoStack]:
    """An in-process stack on the mock provider (``@pytest.mark.cryptostack_mock(seed=...)``)."""
    config = mock_config(**_mock_marker(request))
    stack = cs.create_crypto_stack(
        cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
    )
    with stack:
        yield stack


class DaemonFactory:
    """Starts daemons in a test's temporary directory; :meth:`stop_all` stops them."""

    def __init__(self, directory: Path, default: Mapping[str, Any]) -> None:
        self.directory = directory
        self.default = default
        self.started: list[DaemonProcess] = []

    def __call__(
        self,
        config: Mapping[str, Any] | None = None,
        name: str = "daemon",
        env: Mapping[str, str] | None = None,
    ) -> DaemonProcess:
        """Start a daemon on ``config`` (default: the mock provider) and wait until it serves."""
        daemon = DaemonProcess(self.directory / name, config or self.default, env=env)
        self.started.append(daemon)
        return daemon.start()

    def stop_all(self) -> None:
        """Stop every daemon this factory started."""
        for daemon in reversed(self.started):
            daemon.stop()
        self.started.clear()


@pytest.fixture
def cryptostack_daemon_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DaemonFactory]:
    """Start real daemon subprocesses; all are stopped after the test."""
    factory = DaemonFactory(tmp_path, mock_config(**_mock_marker(request)))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def cryptostack_daemon(cryptostack_daemon_factory: DaemonFactory) -> DaemonProcess:
    """One daemon on the mock provider (``daemon.stack()`` connects to it)."""
    return cryptostack_daemon_factory()


# --- fixtures for provider tests ---------------------------------------------------------------


@pytest.fixture
def cryptostack_provider_factory(tmp_path: Path) -> Iterator[ProviderFactory]:
    """``factory(name, provider_id=None, **options)``: a started instance of an installed
    provider (files under the test's directory); all are closed after the test."""
    factory = ProviderFactory(tmp_path / "providers")
    try:
        yield factory
    finally:
        factory.close_all()
