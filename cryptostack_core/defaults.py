"""The built-in configuration used by ``inproc://`` when no daemon config is given."""

from __future__ import annotations

from .daemon_config import DaemonConfig
from .discovery import available_provider_names

# Well-known ids, as in the design document (openssl 2, pkcs11 5).
WELL_KNOWN_IDS = {"mock": 1, "openssl": 2, "oqs": 3, "tpm2": 4, "pkcs11": 5}


def default_config() -> DaemonConfig:
    """In-memory key store; the software providers that are installed.

    Only providers that need no options are loaded (openssl, oqs); with neither installed
    the mock provider is used so the core still works (and says so in ``status``).
    """
    installed = set(available_provider_names())
    names: list[str] = [n for n in ("openssl", "oqs") if n in installed] or ["mock"]
    return DaemonConfig.from_mapping(
        {"providers": [{"name": n, "id": WELL_KNOWN_IDS[n]} for n in names]},
        source="<built-in inproc config>")
