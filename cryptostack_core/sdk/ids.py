"""Provider ids: the well-known ones, and the range for third-party providers.

A provider's id is set by the operator in ``[[providers]] id = N`` and appears in key slots
(``provider``, ``compatible_providers``), in ``set_provider(N)`` calls of applications and in
the key store (a stored key records the id of the provider that holds it). Ids only have to
be unique within one daemon, but stable, documented defaults make configurations and
application code portable between sites:

===========  ==================================================================
1 .. 99      providers shipped by the cryptostack project (:data:`WELL_KNOWN`)
100 .. 999   reserved for future cryptostack providers
1000 ..      third-party providers (:data:`THIRD_PARTY`): a published provider
             documents one default id in this range; an operator may renumber
===========  ==================================================================

Renumbering a provider that already holds persistent keys orphans them (the key store
names the old id), so choose the id once.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["MAX_PROVIDER_ID", "RESERVED", "THIRD_PARTY", "WELL_KNOWN", "id_advice"]

WELL_KNOWN: Mapping[str, int] = MappingProxyType(
    {
        "mock": 1,  # cryptostack_core.testing: deterministic test provider, never production
        "openssl": 2,  # software, pyca/cryptography
        "oqs": 3,  # post-quantum, liboqs
        "tpm2": 4,  # TPM 2.0 through tpm2-pytss
        "pkcs11": 5,  # PKCS#11 tokens and HSMs
    }
)
"""Default id of each provider shipped by the project, by entry-point name."""

MAX_PROVIDER_ID = 2**31 - 1
RESERVED = range(1, 1000)
"""Ids kept for the project's own providers (1..99 assigned or to be assigned, 100..999 spare)."""
THIRD_PARTY = range(1000, MAX_PROVIDER_ID + 1)
"""Ids for providers published by anyone else."""


def id_advice(name: str, provider_id: int) -> str:
    """A warning for an id that clashes with the conventions ("" when it follows them).

    The daemon logs it at start; it never refuses a config for it (ids are the operator's).
    """
    owner = next((n for n, i in WELL_KNOWN.items() if i == provider_id), None)
    if owner is not None and owner != name:
        return (
            f"provider {name!r} uses id {provider_id}, the well-known id of {owner!r}; "
            f"third-party providers use ids >= {THIRD_PARTY.start}"
        )
    if name not in WELL_KNOWN and provider_id in RESERVED:
        return (
            f"provider {name!r} uses id {provider_id}, in the range reserved for "
            f"cryptostack's own providers ({RESERVED.start}..{RESERVED.stop - 1}); "
            f"third-party providers use ids >= {THIRD_PARTY.start}"
        )
    return ""
