"""Certificate profile rules: which extensions a validator understands, and the profile
checks a relying party applies on top of RFC 5280 section 6.

Two profiles:

* ``rfc5280`` (the default) refuses certificates that break these RFC 5280 "MUST"s, as
  pyca's verifier (and Chromium, Go, rustls-webpki) do:

  - authorityKeyIdentifier marked critical (4.2.1.1: MUST be non-critical);
  - subjectKeyIdentifier marked critical (4.2.1.2: MUST be non-critical);
  - a CA certificate (an issuer in the path, not the trust anchor) without
    subjectKeyIdentifier (4.2.1.2), or without authorityKeyIdentifier unless self-signed
    (4.2.1.1);
  - a CA certificate whose basicConstraints is not critical (4.2.1.9);
  - authorityInfoAccess or subjectInfoAccess marked critical (4.2.2.1, 4.2.2.2);
  - a CRL without cRLNumber, or with it critical (5.2.3) -- see :mod:`.revocation`.

  Duplicate extensions (4.2) are refused by every profile, when the certificate is parsed.
* ``lenient`` skips the checks above; everything RFC 5280 section 6 demands still holds.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

__all__ = ["PROFILES", "UNDERSTOOD_EXTENSIONS", "is_ca", "profile_problem", "unknown_critical"]

PROFILES = ("rfc5280", "lenient")

#: Certificate extensions whose meaning validation implements (or that carry no constraint
#: a relying party must enforce); a critical extension outside this set fails the path
#: (RFC 5280 6.1.4 (o), 6.1.5 (f)).
UNDERSTOOD_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.POLICY_MAPPINGS,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.INHIBIT_ANY_POLICY,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.FRESHEST_CRL,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.SUBJECT_INFORMATION_ACCESS,
    }
)

_MUST_BE_NON_CRITICAL = {
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER: "authorityKeyIdentifier (RFC 5280 4.2.1.1)",
    ExtensionOID.SUBJECT_KEY_IDENTIFIER: "subjectKeyIdentifier (RFC 5280 4.2.1.2)",
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS: "authorityInfoAccess (RFC 5280 4.2.2.1)",
    ExtensionOID.SUBJECT_INFORMATION_ACCESS: "subjectInfoAccess (RFC 5280 4.2.2.2)",
}


def is_ca(cert: x509.Certificate) -> bool:
    """Whether basicConstraints is present with cA asserted."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def unknown_critical(cert: x509.Certificate) -> list[str]:
    """Dotted OIDs of the critical extensions validation does not understand."""
    return [e.oid.dotted_string for e in cert.extensions if e.critical and e.oid not in UNDERSTOOD_EXTENSIONS]


def profile_problem(cert: x509.Certificate, *, as_issuer: bool, profile: str, who: str) -> str | None:
    """The first profile rule ``cert`` breaks in its role, or None.

    ``as_issuer``: the certificate issues the next one in the path (an intermediate CA).
    """
    if profile == "lenient":
        return None
    present = {ext.oid: ext for ext in cert.extensions}
    for oid, label in _MUST_BE_NON_CRITICAL.items():
        if oid in present and present[oid].critical:
            return f"{who} marks {label} critical; it MUST be non-critical (profile rfc5280)"
    if not as_issuer:
        return None
    if ExtensionOID.SUBJECT_KEY_IDENTIFIER not in present:
        return f"CA certificate {who} has no subjectKeyIdentifier (RFC 5280 4.2.1.2, profile rfc5280)"
    if ExtensionOID.AUTHORITY_KEY_IDENTIFIER not in present and cert.issuer != cert.subject:
        return f"CA certificate {who} has no authorityKeyIdentifier (RFC 5280 4.2.1.1, profile rfc5280)"
    bc = present.get(ExtensionOID.BASIC_CONSTRAINTS)
    if bc is not None and not bc.critical:
        return (
            f"CA certificate {who} has a non-critical basicConstraints extension; it "
            "MUST be critical (RFC 5280 4.2.1.9, profile rfc5280)"
        )
    return None
