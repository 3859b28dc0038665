"""The built-in configuration used by ``inproc://`` when no daemon config is given."""

from __future__ import annotations

from cryptostack_core.server.config import DaemonConfig
from cryptostack_core.server.discovery import available_provider_names

# Well-known ids, as in the design document (openssl 2, pkcs11 5).
WELL_KNOWN_IDS = {"mock": 1, "openssl": 2, "oqs": 3, "tpm2": 4, "pkcs11": 5}


def default_config() -> DaemonConfig:
    """In-memory key store; the software providers that are installed.

    The software provider when installed; otherwise the mock provider, so the core still
    works (``status`` says it is a test provider). Other providers need a config file.
    """
    installed = set(available_provider_names())
    names: list[str] = ["openssl"] if "openssl" in installed else ["mock"]
    return DaemonConfig.from_mapping(
        {"providers": [{"name": n, "id": WELL_KNOWN_IDS[n]} for n in names]},
        source="<built-in inproc config>")
