"""Bounded certification-path building: candidate paths from a target to a trust anchor.

Issuers are found by RFC 5280 7.1 name match (subject of the issuer = issuer of the child),
preferring trust anchors, then certificates whose subjectKeyIdentifier matches the child's
authorityKeyIdentifier. A certificate appears at most once in a path. The walk is
depth-first and lazy, so validation can stop at the first valid path.

Bounds (adversarial inputs, e.g. many certificates sharing one name):
:data:`MAX_CANDIDATE_PATHS` complete paths and :data:`MAX_BUILD_STEPS` issuer look-ups per
validation; paths are followed up to ``2 * max_chain_depth + 2`` certificates, so that a
path a little too long is reported as such rather than as "no path".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .names import NameKey, name_key
from .parsing import describe

__all__ = ["MAX_BUILD_STEPS", "MAX_CANDIDATE_PATHS", "PathBuilder"]

#: Complete candidate paths considered per validation (each one is fully validated).
MAX_CANDIDATE_PATHS = 64
#: Issuer look-ups (walk steps) per validation.
MAX_BUILD_STEPS = 1024


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _key_id(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bytes | None:
    try:
        value: x509.ExtensionType = cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return value.key_identifier
    return None


@dataclasses.dataclass
class PathBuilder:
    """Candidate paths (leaf first, anchor last) over ``anchors`` and ``intermediates``."""

    anchors: Sequence[x509.Certificate]
    intermediates: Sequence[x509.Certificate]
    max_length: int
    dead_ends: list[str] = dataclasses.field(default_factory=list)
    truncated: bool = False

    def __post_init__(self) -> None:
        self._anchor_ders = {_der(a) for a in self.anchors}
        self._by_subject: dict[NameKey, list[x509.Certificate]] = {}
        seen: set[bytes] = set()
        # Anchors first; an intermediate identical to an anchor is the anchor.
        for cert in [*self.anchors, *self.intermediates]:
            der = _der(cert)
            if der not in seen:
                seen.add(der)
                self._by_subject.setdefault(name_key(cert.subject), []).append(cert)
        self._steps = MAX_BUILD_STEPS
        self._found = 0

    def is_anchor(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` is one of the trust anchors."""
        return _der(cert) in self._anchor_ders

    def issuers(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """Certificates whose subject is ``cert``'s issuer, best candidates first."""
        named = self._by_subject.get(name_key(cert.issuer), [])
        wanted = _key_id(cert, x509.AuthorityKeyIdentifier)
        return sorted(
            named,
            key=lambda c: (
                not self.is_anchor(c),
                wanted is not None and _key_id(c, x509.SubjectKeyIdentifier) != wanted,
            ),
        )

    def paths(self, leaf: x509.Certificate) -> Iterator[list[x509.Certificate]]:
        """Complete paths from ``leaf`` to an anchor, lazily, within the bounds."""
        yield from self._walk([leaf], [_der(leaf)])

    def _walk(self, path: list[x509.Certificate], ders: list[bytes]) -> Iterator[list[x509.Certificate]]:
        if self._found >= MAX_CANDIDATE_PATHS or self._steps <= 0:
            self.truncated = True
            return
        self._steps -= 1
        cert = path[-1]
        if ders[-1] in self._anchor_ders:
            self._found += 1
            yield list(path)
            return
        if len(path) >= self.max_length:
            self.dead_ends.append(f"a path through {describe(cert)} exceeds {self.max_length} certificates")
            return
        named = self.issuers(cert)
        candidates = [c for c in named if _der(c) not in ders]
        if not candidates:
            if name_key(cert.issuer) == name_key(cert.subject):
                self.dead_ends.append(f"{describe(cert)} is self-issued and not a trust anchor")
            elif named:
                self.dead_ends.append(
                    f"the issuers named '{cert.issuer.rfc4514_string()}' of {describe(cert)} "
                    "lead back into the path (a loop)"
                )
            else:
                self.dead_ends.append(
                    f"issuer '{cert.issuer.rfc4514_string()}' of {describe(cert)} is neither "
                    "a trust anchor nor a supplied intermediate"
                )
            return
        for issuer in candidates:
            yield from self._walk([*path, issuer], [*ders, _der(issuer)])
