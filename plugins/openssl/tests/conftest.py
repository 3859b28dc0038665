"""Fixtures for the OpenSSL provider tests: started provider instances, made with the
testing kit's :mod:`cryptostack_core.testing.instances`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cryptostack_core.testing.instances import ProviderFactory, start_provider
from cryptostack_openssl import OpenSSLProvider


@pytest.fixture
def provider_factory(
    cryptostack_provider_factory: ProviderFactory,
) -> Callable[..., OpenSSLProvider]:
    """Build a started provider with the given options (``factory(min_mac_length=24)``)."""

    def make(**options: Any) -> OpenSSLProvider:
        provider = cryptostack_provider_factory("openssl", **options)
        assert isinstance(provider, OpenSSLProvider)
        return provider

    return make


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSSLProvider]:
    """One provider with default options, shared by a test module."""
    instance = start_provider("openssl", tmp_path_factory.mktemp("openssl"))
    assert isinstance(instance, OpenSSLProvider)
    yield instance
    instance.close()
