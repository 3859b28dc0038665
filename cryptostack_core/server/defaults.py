"""The built-in configuration used by ``inproc://`` when no daemon config is given."""

from __future__ import annotations

from cryptostack_core.sdk.ids import WELL_KNOWN
from cryptostack_core.server.config import DaemonConfig
from cryptostack_core.server.discovery import available_provider_names
from cryptostack_core.wire.errors import CryptoError, ErrorCode

DEFAULT_PROVIDERS = ("openssl",)
"""Providers the built-in config uses when installed. Never the mock: it is for tests only
and must be configured explicitly (``allow_test_providers = true``)."""


def default_config() -> DaemonConfig:
    """In-memory key store (no slots are declared); the software provider.

    PROVIDER_UNAVAILABLE when no default provider is installed: the core alone cannot do
    cryptography honestly, and says what to install.
    """
    installed = set(available_provider_names())
    names = [n for n in DEFAULT_PROVIDERS if n in installed]
    if not names:
        raise CryptoError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            "no provider installed: pip install cryptostack-openssl (or configure "
            "providers with CryptoStackConfig.set_daemon_config)",
        )
    return DaemonConfig.from_mapping(
        {"providers": [{"name": n, "id": WELL_KNOWN[n]} for n in names]}, source="<built-in inproc config>"
    )
