"""Fixtures: real swtpm simulators and TPM2 providers on them.

* ``swtpm``: one per test process (pytest-xdist worker), shared by the session ``tpm``
  provider -- nothing else may connect to it (swtpm serves one client at a time).
* ``fresh_swtpm``: a private simulator per test, for restarts, stalls and daemons.
* ``make_provider``: builds and starts providers, closes them at teardown.

Providers are started with ``reset_lockout`` so even a run killed half-way (no orderly
TPM2_Shutdown) cannot lock later runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptostack_tpm2.provider import TPM2Provider
from cryptostack_tpm2.testing import Swtpm

from cryptostack_core.testing.instances import ProviderFactory, start_provider


@pytest.fixture(scope="session")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """The test process's shared simulator (used only by the session ``tpm`` provider)."""
    sim = Swtpm(tmp_path_factory.mktemp("swtpm")).start()
    yield sim
    sim.stop()


@pytest.fixture
def fresh_swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    """A private simulator for one test."""
    sim = Swtpm(tmp_path / "swtpm").start()
    yield sim
    sim.stop()


def provider_options(sim: Swtpm, **extra: Any) -> dict[str, Any]:
    """Options for a provider on ``sim``."""
    return {"tcti": sim.tcti, "reset_lockout": True, **extra}


def new_provider(sim: Swtpm, directory: Path, provider_id: int = 7, **options: Any) -> TPM2Provider:
    """A started provider on ``sim`` (the testing kit's :func:`start_provider`)."""
    provider = start_provider("tpm2", directory, provider_id, **provider_options(sim, **options))
    assert isinstance(provider, TPM2Provider)
    return provider


@pytest.fixture(scope="session")
def tpm(swtpm: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TPM2Provider]:
    """A started provider on the shared simulator, for tests that need no restarts."""
    provider = new_provider(swtpm, tmp_path_factory.mktemp("tpm-provider"))
    yield provider
    provider.close()


@pytest.fixture
def make_provider(cryptostack_provider_factory: ProviderFactory) -> Callable[..., TPM2Provider]:
    """``make_provider(sim, **options)``: start a provider; the testing kit's factory closes
    them all at teardown."""

    def make(sim: Swtpm, **options: Any) -> TPM2Provider:
        provider = cryptostack_provider_factory("tpm2", 7, **provider_options(sim, **options))
        assert isinstance(provider, TPM2Provider)
        return provider

    return make
