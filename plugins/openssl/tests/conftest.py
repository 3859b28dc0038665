"""Fixtures for the OpenSSL provider tests: a started provider instance."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cryptostack_core.sdk import ProviderEnvironment
from cryptostack_openssl import OpenSSLProvider


def make_provider(tmp: Path, **options: object) -> OpenSSLProvider:
    """A started provider with ``options``, keeping its files under ``tmp``."""
    provider = OpenSSLProvider(2, options, ProviderEnvironment(state_dir=tmp, config_dir=tmp))
    provider.start()
    return provider


ProviderFactory = Callable[..., OpenSSLProvider]


@pytest.fixture
def provider_factory(tmp_path: Path) -> ProviderFactory:
    """Build a started provider with the given options (``factory(min_mac_length=24)``)."""
    return lambda **options: make_provider(tmp_path, **options)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSSLProvider]:
    """One provider with default options, shared by a test module."""
    instance = make_provider(tmp_path_factory.mktemp("openssl"))
    yield instance
    instance.close()
