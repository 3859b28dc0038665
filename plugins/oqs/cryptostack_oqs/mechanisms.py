"""The algorithms this provider can expose, and their liboqs names, OIDs and sizes.

The static table says which canonical registry names map to which liboqs mechanism and
which OID (if any) their SPKI/PKCS#8 encodings use. What is actually offered is the part of
the table the loaded liboqs has enabled, with sizes read from liboqs itself
(:func:`discover`), so a liboqs built without, say, SLH-DSA simply offers fewer algorithms.

OIDs: ML-DSA FIPS 204 / RFC 9881 (2.16.840.1.101.3.4.3.17-19), ML-KEM FIPS 203 /
draft-ietf-lamps-kyber-certificates (2.16.840.1.101.3.4.4.1-3), SLH-DSA FIPS 205 / RFC 9909
(2.16.840.1.101.3.4.3.20-31). Falcon has no standard OID yet (FN-DSA, FIPS 206, is still a
draft), so Falcon keys are RAW only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from cryptostack_core.sdk import REGISTRY


class Family(enum.Enum):
    """Algorithm family: decides the key encodings and the operations."""

    ML_KEM = "ML-KEM"
    ML_DSA = "ML-DSA"
    SLH_DSA = "SLH-DSA"
    FALCON = "Falcon"

    @property
    def is_kem(self) -> bool:
        """True for key-encapsulation families."""
        return self is Family.ML_KEM


@dataclass(frozen=True)
class Entry:
    """One row of the static table."""

    algorithm: str
    liboqs: str
    family: Family
    oid: str | None


@dataclass(frozen=True)
class Mechanism:
    """An algorithm the loaded liboqs offers, with its sizes as liboqs reports them."""

    algorithm: str
    """Canonical registry name."""
    liboqs: str
    """liboqs mechanism name (``SLH_DSA_PURE_SHA2_128S``...)."""
    family: Family
    oid: str | None
    public_key_size: int
    secret_key_size: int
    signature_size: int = 0
    """Signatures: the exact size, except Falcon where it is the maximum (signatures vary)."""
    ciphertext_size: int = 0
    shared_secret_size: int = 0
    seed_size: int = 0
    """KEM key-generation seed (64 for ML-KEM: d || z); 0 when liboqs has none."""
    context: bool = False
    """Whether the scheme takes a context string (ML-DSA, SLH-DSA)."""

    @property
    def slow_signing(self) -> bool:
        """SLH-DSA "s" parameter sets take from ~0.5 s up to several seconds to sign."""
        return self.family is Family.SLH_DSA and self.algorithm.endswith("s")


_NIST_SIG = "2.16.840.1.101.3.4.3"
_NIST_KEM = "2.16.840.1.101.3.4.4"


def _table() -> list[Entry]:
    rows = [
        Entry(f"ML-KEM-{n}", f"ML-KEM-{n}", Family.ML_KEM, f"{_NIST_KEM}.{i}")
        for i, n in enumerate((512, 768, 1024), start=1)
    ]
    rows += [
        Entry(f"ML-DSA-{n}", f"ML-DSA-{n}", Family.ML_DSA, f"{_NIST_SIG}.{i}")
        for i, n in enumerate((44, 65, 87), start=17)
    ]
    arc = 20
    for hash_family in ("SHA2", "SHAKE"):
        for variant in ("128s", "128f", "192s", "192f", "256s", "256f"):
            rows.append(
                Entry(
                    f"SLH-DSA-{hash_family}-{variant}",
                    f"SLH_DSA_PURE_{hash_family}_{variant.upper()}",
                    Family.SLH_DSA,
                    f"{_NIST_SIG}.{arc}",
                )
            )
            arc += 1
    rows += [Entry(f"Falcon-{n}", f"Falcon-{n}", Family.FALCON, None) for n in (512, 1024)]
    return rows


TABLE: tuple[Entry, ...] = tuple(_table())
BY_OID = {e.oid: e for e in TABLE if e.oid}


def ensure_aliases(entries: Iterable[Entry] = TABLE) -> None:
    """Make every liboqs spelling resolve to its canonical name in the registry."""
    for entry in entries:
        if REGISTRY.find(entry.liboqs) is None:
            REGISTRY.add_alias(entry.algorithm, entry.liboqs)


def discover(oqs: ModuleType) -> dict[str, Mechanism]:
    """Canonical name -> :class:`Mechanism` for every table entry liboqs has enabled."""
    ensure_aliases()
    kems = set(oqs.get_enabled_kem_mechanisms())
    sigs = set(oqs.get_enabled_sig_mechanisms())
    found: dict[str, Mechanism] = {}
    for entry in TABLE:
        if REGISTRY.canonical(entry.liboqs) != entry.algorithm:
            continue  # the registry disagrees about the name: do not guess
        if entry.family.is_kem and entry.liboqs in kems:
            kem = oqs.KeyEncapsulation(entry.liboqs)
            try:
                d = kem.details
                found[entry.algorithm] = Mechanism(
                    entry.algorithm,
                    entry.liboqs,
                    entry.family,
                    entry.oid,
                    public_key_size=int(d["length_public_key"]),
                    secret_key_size=int(d["length_secret_key"]),
                    ciphertext_size=int(d["length_ciphertext"]),
                    shared_secret_size=int(d["length_shared_secret"]),
                    seed_size=int(d.get("length_keypair_seed", 0)),
                )
            finally:
                kem.free()
        elif not entry.family.is_kem and entry.liboqs in sigs:
            sig = oqs.Signature(entry.liboqs)
            try:
                d = sig.details
                found[entry.algorithm] = Mechanism(
                    entry.algorithm,
                    entry.liboqs,
                    entry.family,
                    entry.oid,
                    public_key_size=int(d["length_public_key"]),
                    secret_key_size=int(d["length_secret_key"]),
                    signature_size=int(d["length_signature"]),
                    context=bool(oqs.sig_supports_context(entry.liboqs)),
                )
            finally:
                sig.free()
    return found
