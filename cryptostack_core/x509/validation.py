"""Certificate parsing and strict RFC 5280 certification-path validation with CRL checking.

This module is standalone (no daemon code): the daemon's certificate contexts call
:func:`parse_certificate`, :func:`parse_crl`, :func:`validate_path`,
:func:`public_key_algorithm` and :func:`spki_der`.

Who does what
=============
* pyca ``cryptography`` parses certificates and CRLs, verifies every signature
  (``Certificate.verify_directly_issued_by``, ``CertificateRevocationList.is_signature_valid``)
  and, through ``cryptography.x509.verification``, builds paths and applies the structural
  RFC 5280 checks: validity periods, basicConstraints (cA and pathLenConstraint), name
  constraints on subjectAltName entries (DNS, IP, RFC 822), critical extensions it does not
  know, X.509 v3, serial-number and validity-encoding rules, and its signature-algorithm
  allowlist. We use a *client* verifier with ``ExtensionPolicy.permit_all()`` as the base of
  both extension policies, so neither a SAN nor an EKU is required on the leaf (device
  certificates usually have neither); the CA policy must (pyca insists) require
  basicConstraints, and we add callbacks for keyUsage and extendedKeyUsage (see below).
* Written here, because no maintained library does it for us:

  - CRL revocation checking (pyca's verifier does none);
  - the diagnosis of a failure: a pyca ``VerificationError`` says *that* no path was found,
    not reliably *why*. We then enumerate every candidate path ourselves (issuer links by
    exact subject/issuer DER name match, no loops, bounded length and count),
    verify each link's signature, re-run pyca on that single path (and, when certificates
    are outside their validity period, once more at a time inside every window) and compute
    which certificate is out of its window;
  - EdDSA paths: pyca 50 hard-codes a WebPKI algorithm allowlist without Ed25519/Ed448 and
    offers no Python API to widen it (pyca/cryptography issue #13391). For a path with an
    EdDSA link we verify every signature with pyca directly, enforce our own algorithm
    allowlist, and run pyca's structural checks on a *twin* of the path: the same names,
    serials, validity and byte-identical extensions, re-signed with throwaway P-256 keys.
    Everything but the signatures (already checked) is thus still judged by pyca; only
    encoding-level rules of the originals (GeneralizedTime before 2050) escape it there.

Result precedence
=================
For one candidate path (leaf .. anchor) the first failing stage decides:

1. a link whose signature does not verify -> ``INVALID_SIGNATURE``;
2. a structural defect judged at a time when every certificate is inside its validity
   period (path length, keyUsage, extendedKeyUsage, name constraints, unknown critical
   extension, disallowed algorithm ...) -> ``INVALID``;
3. a certificate outside its validity period at the validation time -> ``EXPIRED`` or
   ``NOT_YET_VALID``, decided by the out-of-window certificate nearest the leaf (the reason
   lists all of them). Validity is inclusive at both ends and the validation time is
   truncated to whole seconds, like the certificate times. When the validity periods of the
   path do not overlap at all, stage 2 cannot be judged and this verdict stands;
4. revocation (``CRL_ONLY`` only), checked only on an otherwise valid path: a revoked
   certificate anywhere -> ``REVOKED``, otherwise an issuer without a usable CRL ->
   ``REVOCATION_STATUS_UNKNOWN``.

``UNTRUSTED`` means no candidate path reaches a trust anchor by name at all (a path that
does, but through more than 8 intermediates, is ``INVALID``). Among several
candidate paths the best one wins, in the order ``VALID``, ``REVOCATION_STATUS_UNKNOWN``,
``REVOKED``, ``EXPIRED``/``NOT_YET_VALID``, ``INVALID``, ``INVALID_SIGNATURE``.

What is validated
=================
* Trust anchors are full certificates and are themselves checked like any issuer (validity,
  CA basicConstraints, keyUsage, name constraints), as pyca does; their own signature is not.
  A leaf that is itself an anchor is valid alone.
* keyUsage: a CA's keyUsage, when present, must assert keyCertSign; a leaf asserting
  keyCertSign must be a CA; ``required_key_usage`` bits must be asserted when the leaf has a
  keyUsage extension (absent keyUsage allows every usage, RFC 5280 4.2.1.3).
* extendedKeyUsage: with ``required_extended_key_usage``, a leaf or CA that has an
  extendedKeyUsage extension must list it or anyExtendedKeyUsage (EKU chaining as in
  OpenSSL, Go and Windows); without it, EKUs are not checked.
* pathLenConstraint counts every intermediate, self-issued ones included (pyca's stricter
  reading of RFC 5280 6.1.4 (l)).
* Signature algorithms: ECDSA with SHA-256/384/512, RSA PKCS#1 v1.5 with SHA-256/384/512,
  RSA-PSS with SHA-256/384/512 (MGF1 with the same hash, salt length = digest length),
  Ed25519, Ed448, ML-DSA-44/65/87; issuer keys RSA >= 2048 bits, EC P-256/P-384/P-521,
  Ed25519, Ed448, ML-DSA. Anything else (SHA-1, RSA-1024, PSS with another salt) -> INVALID.
* CRLs (for every path certificate except the anchor): issued by the certificate's issuer
  (exact name match), signature valid under the path issuer's key with an allowed algorithm,
  issuer keyUsage allows cRLSign when present, current (thisUpdate <= t < nextUpdate; no
  nextUpdate -> not current), no unknown critical CRL or entry extension, scope
  (issuingDistributionPoint onlyContainsUserCerts/onlyContainsCACerts/distributionPoint)
  covering the certificate. Delta CRLs, indirect CRLs (indirectCRL or a certificateIssuer
  entry), reason-partitioned CRLs (onlySomeReasons) and attribute-certificate CRLs are
  rejected as unusable with a reason. Of the usable CRLs the most recent (thisUpdate, then
  cRLNumber) decides; a listing with a reason other than certificateHold in any usable CRL
  also means revoked; a removeFromCRL entry does not.

Not validated (fail closed where it matters)
============================================
* Certificate policies are not processed: a *critical* certificatePolicies, policyMappings,
  policyConstraints or inhibitAnyPolicy extension makes the path INVALID (unknown critical
  extension).
* directoryName name constraints are unsupported: any CA in the path carrying one makes the
  path INVALID. URI/otherName/... constraints fail only when a SAN of that form is present.
  The emailAddress attribute of a SAN-less subject is not checked against RFC 822 constraints.
* No OCSP, no fetching (AIA, CRL distribution points), no CRLs signed by a key other than
  the path issuer's, no X.509 v1/v2 certificates (pyca requires v3).
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import re
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CertVerifyResult, RevocationCheckPolicy

__all__ = [
    "KEY_USAGE_NAMES",
    "ValidationOutcome",
    "ValidationRequest",
    "parse_certificate",
    "parse_crl",
    "public_key_algorithm",
    "spki_der",
    "validate_path",
]

#: Names accepted in :attr:`ValidationRequest.required_key_usage` (``x509.KeyUsage`` fields).
KEY_USAGE_NAMES = frozenset(
    {
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    }
)

# pyca's default maximum number of intermediates; our own enumeration uses the same bound.
_MAX_INTERMEDIATES = 8
# Upper bounds on the diagnosis walk (adversarial inputs). Paths longer than pyca's limit are
# still followed, so that an over-long path is reported as INVALID rather than UNTRUSTED.
_MAX_CANDIDATES = 64
_WALK_LIMIT = 2 * _MAX_INTERMEDIATES + 2

# Exact DER AlgorithmIdentifier encodings accepted for certificate and CRL signatures. This
# mirrors pyca's WebPKI set (RSA with NULL parameters, PSS with salt = digest length) plus
# EdDSA and ML-DSA.
_PSS_PARAMS = {
    # hash OID last byte -> salt length
    1: 32,
    2: 48,
    3: 64,
}


def _pss_algorithm_identifier(hash_index: int) -> bytes:
    hash_alg = bytes.fromhex("300d06096086480165030402") + bytes([hash_index]) + b"\x05\x00"
    mgf = bytes.fromhex("301a06092a864886f70d010108") + hash_alg
    params = (
        b"\xa0"
        + bytes([len(hash_alg)])
        + hash_alg
        + b"\xa1"
        + bytes([len(mgf)])
        + mgf
        + b"\xa2\x03\x02\x01"
        + bytes([_PSS_PARAMS[hash_index]])
    )
    seq = b"\x30" + bytes([len(params)]) + params
    body = bytes.fromhex("06092a864886f70d01010a") + seq
    return b"\x30" + bytes([len(body)]) + body


_ALLOWED_SIGNATURE_ALGORITHMS: dict[bytes, str] = {
    bytes.fromhex("300a06082a8648ce3d040302"): "ecdsa-with-SHA256",
    bytes.fromhex("300a06082a8648ce3d040303"): "ecdsa-with-SHA384",
    bytes.fromhex("300a06082a8648ce3d040304"): "ecdsa-with-SHA512",
    bytes.fromhex("300d06092a864886f70d01010b0500"): "sha256WithRSAEncryption",
    bytes.fromhex("300d06092a864886f70d01010c0500"): "sha384WithRSAEncryption",
    bytes.fromhex("300d06092a864886f70d01010d0500"): "sha512WithRSAEncryption",
    _pss_algorithm_identifier(1): "RSASSA-PSS-SHA256",
    _pss_algorithm_identifier(2): "RSASSA-PSS-SHA384",
    _pss_algorithm_identifier(3): "RSASSA-PSS-SHA512",
    bytes.fromhex("300506032b6570"): "Ed25519",
    bytes.fromhex("300506032b6571"): "Ed448",
    bytes.fromhex("300b0609608648016503040311"): "ML-DSA-44",
    bytes.fromhex("300b0609608648016503040312"): "ML-DSA-65",
    bytes.fromhex("300b0609608648016503040313"): "ML-DSA-87",
}
# Signature algorithms pyca's verifier refuses although RFC 8410 allows them: paths using
# them are structurally checked on a re-signed twin (see the module docstring).
_EDDSA_SIGNATURES = frozenset({SignatureAlgorithmOID.ED25519, SignatureAlgorithmOID.ED448})
_ALLOWED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_MIN_RSA_BITS = 2048

_ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE

# CRL extensions whose meaning we implement (critical or not); any other critical one makes
# the CRL unusable.
_UNDERSTOOD_CRL_EXTENSIONS = frozenset(
    {
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.ISSUING_DISTRIBUTION_POINT,
        ExtensionOID.FRESHEST_CRL,
    }
)
_UNDERSTOOD_CRL_ENTRY_EXTENSIONS = frozenset(
    {x509.oid.CRLEntryExtensionOID.CRL_REASON, x509.oid.CRLEntryExtensionOID.INVALIDITY_DATE}
)


# --------------------------------------------------------------------------- parsing


_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_PEM_END = re.compile(rb"-----END ([A-Z0-9 ]+)-----")


def _input_bytes(data: object, what: str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"{what} must be PEM or DER bytes, not {type(data).__name__}",
        )
    if not raw.strip():
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{what} input is empty")
    return raw


def _pem_labels(raw: bytes) -> list[str] | None:
    """Labels of the complete PEM blocks in ``raw``, or None when ``raw`` is not PEM."""
    if b"-----BEGIN " not in raw:
        return None
    labels = [m.group(1).decode("ascii") for m in _PEM_LABEL.finditer(raw)]
    ends = [m.group(1).decode("ascii") for m in _PEM_END.finditer(raw)]
    # A BEGIN line without its END line (a truncated file) is not a block at all.
    return labels if labels == ends else []


def _expect_single_pem(labels: list[str], label: str, what: str) -> None:
    if labels.count(label) == 1 and len(labels) == 1:
        return
    if not labels:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"{what}: malformed PEM framing (truncated, or BEGIN/END lines do not match)",
        )
    if label not in labels:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"{what}: PEM block is '{labels[0]}', expected '{label}'",
        )
    raise CryptoError(
        ErrorCode.INVALID_ARGUMENT,
        f"{what}: expected exactly one PEM block, found {len(labels)} ({', '.join(labels)})",
    )


def _library_detail(exc: Exception) -> str:
    return str(exc).split("\n")[0][:200]


def parse_certificate(pem_or_der: bytes | bytearray | memoryview) -> x509.Certificate:
    """Parse one X.509 certificate from PEM (a single ``CERTIFICATE`` block) or DER.

    The extensions are decoded eagerly, so a certificate with a malformed or duplicated
    extension is rejected here rather than during validation.

    Raises:
        CryptoError: ``INVALID_ARGUMENT`` for non-bytes, empty, truncated or malformed input,
            trailing data, several PEM blocks, or another object (such as a CRL).
    """
    raw = _input_bytes(pem_or_der, "certificate")
    labels = _pem_labels(raw)
    try:
        if labels is not None:
            _expect_single_pem(labels, "CERTIFICATE", "certificate")
            cert = x509.load_pem_x509_certificate(raw)
        else:
            cert = x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        if labels is None and _parses_as(raw, x509.load_der_x509_crl):
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, "input is a CRL, not a certificate"
            ) from None
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"not a valid X.509 certificate (truncated or malformed): {_library_detail(exc)}",
        ) from None
    try:
        _ = cert.extensions
    except ValueError as exc:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"certificate has malformed extensions: {_library_detail(exc)}",
        ) from None
    return cert


def parse_crl(pem_or_der: bytes | bytearray | memoryview) -> x509.CertificateRevocationList:
    """Parse one CRL from PEM (a single ``X509 CRL`` block) or DER.

    CRL extensions and every entry's extensions are decoded eagerly.

    Raises:
        CryptoError: ``INVALID_ARGUMENT`` for non-bytes, empty, truncated or malformed input,
            trailing data, several PEM blocks, or another object (such as a certificate).
    """
    raw = _input_bytes(pem_or_der, "CRL")
    labels = _pem_labels(raw)
    try:
        if labels is not None:
            _expect_single_pem(labels, "X509 CRL", "CRL")
            crl = x509.load_pem_x509_crl(raw)
        else:
            crl = x509.load_der_x509_crl(raw)
    except ValueError as exc:
        if labels is None and _parses_as(raw, x509.load_der_x509_certificate):
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, "input is a certificate, not a CRL"
            ) from None
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"not a valid X.509 CRL (truncated or malformed): {_library_detail(exc)}",
        ) from None
    try:
        _ = crl.extensions
        for entry in crl:
            _ = entry.extensions
    except ValueError as exc:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT, f"CRL has malformed extensions: {_library_detail(exc)}"
        ) from None
    return crl


def _parses_as(raw: bytes, loader: Callable[[bytes], object]) -> bool:
    try:
        loader(raw)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- key helpers


def public_key_algorithm(cert: x509.Certificate) -> str:
    """Canonical registry name of the certificate's public key.

    One of ``ECDSA-P256``, ``ECDSA-P384``, ``Ed25519``, ``RSA-2048``, ``RSA-3072``,
    ``RSA-4096``, ``ML-DSA-44``, ``ML-DSA-65``, ``ML-DSA-87``.

    Raises:
        CryptoError: ``UNSUPPORTED_ALGORITHM`` for any other key (other curves or RSA sizes,
            Ed448, unknown algorithms).
    """
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM,
            f"certificate public key is not supported: {_library_detail(exc)}",
        ) from None
    name: str | None = None
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = {"secp256r1": "ECDSA-P256", "secp384r1": "ECDSA-P384"}.get(key.curve.name)
        detail = f"EC key on curve {key.curve.name}"
    elif isinstance(key, rsa.RSAPublicKey):
        name = f"RSA-{key.key_size}" if key.key_size in (2048, 3072, 4096) else None
        detail = f"RSA key of {key.key_size} bits"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        name, detail = "Ed25519", "Ed25519"
    elif isinstance(key, mldsa.MLDSA44PublicKey):
        name, detail = "ML-DSA-44", "ML-DSA-44"
    elif isinstance(key, mldsa.MLDSA65PublicKey):
        name, detail = "ML-DSA-65", "ML-DSA-65"
    elif isinstance(key, mldsa.MLDSA87PublicKey):
        name, detail = "ML-DSA-87", "ML-DSA-87"
    else:
        detail = type(key).__name__
    if name is None:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM, f"certificate public key not supported: {detail}"
        )
    return name


def _tlv_bounds(buf: bytes, pos: int) -> tuple[int, int]:
    """(content start, end) of the DER element at ``pos``; single-byte tags only."""
    if pos + 2 > len(buf):
        raise ValueError("truncated DER element")
    length = buf[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(buf):
            raise ValueError("bad DER length")
        length = int.from_bytes(buf[start : start + count], "big")
        start += count
    if start + length > len(buf):
        raise ValueError("truncated DER element")
    return start, start + length


def _der_children(element: bytes) -> list[bytes]:
    """The complete encodings of the elements inside one DER SEQUENCE."""
    start, end = _tlv_bounds(element, 0)
    children = []
    pos = start
    while pos < end:
        _, child_end = _tlv_bounds(element, pos)
        children.append(element[pos:child_end])
        pos = child_end
    return children


def spki_der(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectPublicKeyInfo exactly as encoded in the certificate."""
    # Sliced from the original DER rather than re-encoded from the key object, so it is
    # byte-exact for any key (even ones pyca cannot load) and stable for pinning/hashing.
    tbs_fields = _der_children(_der_children(cert.public_bytes(Encoding.DER))[0])
    if tbs_fields and tbs_fields[0][0] == 0xA0:  # explicit [0] version
        tbs_fields = tbs_fields[1:]
    return tbs_fields[5]  # serial, signature, issuer, validity, subject, spki


def _signature_algorithm_der(signed: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    # Certificate and CertificateList share the outer shape: SEQUENCE {tbs, algorithm, sig}.
    return _der_children(signed.public_bytes(Encoding.DER))[1]


# --------------------------------------------------------------------------- request/outcome


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidationRequest:
    """Everything one path validation looks at.

    Attributes:
        leaf: the certificate to validate (the target of the path).
        anchors: trust anchors (full certificates). A leaf that is an anchor is valid alone.
        validation_time: timezone-aware instant to validate at (truncated to whole seconds).
        revocation_policy: ``CRL_ONLY`` checks every non-anchor path certificate against
            ``crls``; ``NONE`` ignores them.
        intermediates: untrusted certificates that may be used to build the path.
        crls: candidate CRLs (any issuer; the engine picks the relevant ones).
        required_key_usage: ``x509.KeyUsage`` field names (see :data:`KEY_USAGE_NAMES`) the
            leaf must assert if it has a keyUsage extension.
        required_extended_key_usage: purpose the leaf, and every CA with an EKU extension,
            must allow (or anyExtendedKeyUsage); ``None`` skips EKU checks.
    """

    leaf: x509.Certificate
    anchors: Sequence[x509.Certificate]
    validation_time: datetime.datetime
    revocation_policy: RevocationCheckPolicy
    intermediates: Sequence[x509.Certificate] = ()
    crls: Sequence[x509.CertificateRevocationList] = ()
    required_key_usage: frozenset[str] = frozenset()
    required_extended_key_usage: x509.ObjectIdentifier | None = None

    def __post_init__(self) -> None:
        def bad(message: str) -> CryptoError:
            return CryptoError(ErrorCode.INVALID_ARGUMENT, message)

        if not isinstance(self.leaf, x509.Certificate):
            raise bad("leaf must be an x509.Certificate")
        for label, items, kind in (
            ("anchors", self.anchors, x509.Certificate),
            ("intermediates", self.intermediates, x509.Certificate),
            ("crls", self.crls, x509.CertificateRevocationList),
        ):
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, kind) for i in items):
                raise bad(f"{label} must be a list or tuple of {kind.__name__}")
        if not isinstance(self.validation_time, datetime.datetime):
            raise bad("validation_time must be a datetime")
        if self.validation_time.tzinfo is None or self.validation_time.utcoffset() is None:
            raise bad("validation_time must be timezone-aware")
        if not isinstance(self.revocation_policy, RevocationCheckPolicy):
            raise bad("revocation_policy must be a RevocationCheckPolicy")
        unknown = set(self.required_key_usage) - KEY_USAGE_NAMES
        if unknown:
            raise bad(f"unknown key usage names: {', '.join(sorted(unknown))}")
        eku = self.required_extended_key_usage
        if eku is not None and not isinstance(eku, x509.ObjectIdentifier):
            raise bad("required_extended_key_usage must be an ObjectIdentifier or None")
        # Decode every extension now (pyca caches them): validation must not fail later.
        for cert in [self.leaf, *self.anchors, *self.intermediates]:
            try:
                _ = cert.extensions
            except ValueError as exc:
                raise bad(
                    f"certificate {_describe(cert)} has malformed extensions: "
                    f"{_library_detail(exc)}"
                ) from None
        for crl in self.crls:
            try:
                _ = crl.extensions
                for entry in crl:
                    _ = entry.extensions
            except ValueError as exc:
                raise bad(f"CRL has malformed extensions: {_library_detail(exc)}") from None


@dataclasses.dataclass(frozen=True)
class ValidationOutcome:
    """Result of :func:`validate_path`.

    Attributes:
        result: the verdict.
        chain: the validated path, leaf first and trust anchor last; empty unless VALID.
        reason: precise explanation of a failure; ``""`` when VALID.
    """

    result: CertVerifyResult
    chain: list[x509.Certificate]
    reason: str


# --------------------------------------------------------------------------- validation


def _describe(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string()
    return f"'{subject}'" if subject else f"<empty subject, serial {cert.serial_number:#x}>"


def _name_key(name: x509.Name) -> bytes:
    return name.public_bytes()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _key_usage_bit(ku: x509.KeyUsage, name: str) -> bool:
    # encipher_only/decipher_only raise unless keyAgreement is set; then they are false.
    if name in ("encipher_only", "decipher_only") and not ku.key_agreement:
        return False
    return bool(getattr(ku, name))


class _PolicyViolation(ValueError):
    """Raised by our pyca extension-policy callbacks; pyca reports it as a VerificationError."""


def _extension_policies(request: ValidationRequest) -> tuple[ExtensionPolicy, ExtensionPolicy]:
    required_eku = request.required_extended_key_usage
    required_ku = sorted(request.required_key_usage)

    def ca_key_usage(_policy: object, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
        if ku is not None and not ku.key_cert_sign:
            raise _PolicyViolation(
                f"keyUsage of CA certificate {_describe(cert)} does not assert keyCertSign"
            )

    def eku_allows(who: str, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
        if required_eku is None or eku is None:
            return
        if required_eku not in eku and _ANY_EKU not in eku:
            raise _PolicyViolation(
                f"extendedKeyUsage of {who} {_describe(cert)} does not allow "
                f"{required_eku.dotted_string}"
            )

    def ca_eku(_policy: object, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
        eku_allows("CA certificate", cert, eku)

    def ee_eku(_policy: object, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
        eku_allows("leaf certificate", cert, eku)

    def ee_key_usage(_policy: object, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
        if ku is None:
            return
        if ku.key_cert_sign and not _is_ca(cert):
            raise _PolicyViolation(
                f"keyUsage of {_describe(cert)} asserts keyCertSign but it is not a CA "
                "(basicConstraints cA is not set)"
            )
        missing = [name for name in required_ku if not _key_usage_bit(ku, name)]
        if missing:
            raise _PolicyViolation(
                f"keyUsage of leaf certificate {_describe(cert)} lacks {', '.join(missing)}"
            )

    agnostic = Criticality.AGNOSTIC
    ca_policy = (
        ExtensionPolicy.permit_all()
        # basicConstraints.cA and pathLenConstraint are enforced by pyca itself.
        .require_present(x509.BasicConstraints, agnostic, None)
        .may_be_present(x509.KeyUsage, agnostic, ca_key_usage)
        .may_be_present(x509.ExtendedKeyUsage, agnostic, ca_eku)
    )
    ee_policy = (
        ExtensionPolicy.permit_all()
        .may_be_present(x509.KeyUsage, agnostic, ee_key_usage)
        .may_be_present(x509.ExtendedKeyUsage, agnostic, ee_eku)
    )
    return ca_policy, ee_policy


_PYCA_NOISE = (
    re.compile(r"^validation failed: "),
    re.compile(r"candidates exhausted: "),
    re.compile(r"Python extension validator failed: _PolicyViolation: "),
)
_PYCA_CERT = re.compile(
    r" \(encountered processing <Certificate\(subject=<Name\((.*)\)>, \.\.\.\)>\)"
)


def _clean_pyca_message(exc: Exception) -> str:
    message = str(exc)
    ours = "_PolicyViolation" in message  # our callbacks already name the certificate
    for pattern in _PYCA_NOISE:
        message = pattern.sub("", message)
    if ours:
        return _PYCA_CERT.sub("", message)
    return _PYCA_CERT.sub(lambda m: f" (certificate '{m.group(1)}')", message)


def _locate_structural_defect(message: str, path: list[x509.Certificate]) -> str:
    """Name the CA behind pyca messages that do not say which certificate failed."""
    if "exceeds max depth" in message:
        return (
            f"{message}: the path has {len(path) - 2} intermediates, "
            f"at most {_MAX_INTERMEDIATES} are allowed"
        )
    for depth, cert in enumerate(path[1:]):
        try:
            bc: x509.BasicConstraints | None = cert.extensions.get_extension_for_class(
                x509.BasicConstraints
            ).value
        except x509.ExtensionNotFound:
            bc = None
        if "path length" in message and bc is not None and bc.path_length is not None:
            if depth > bc.path_length:  # pyca counts every intermediate below the CA
                return (
                    f"{message}: pathLenConstraint {bc.path_length} of {_describe(cert)} "
                    f"is exceeded by the {depth} intermediate(s) below it"
                )
        if "basicConstraints" in message and (bc is None or not bc.ca):
            state = "has no basicConstraints" if bc is None else "does not assert cA"
            return f"{message}: issuing certificate {_describe(cert)} {state}"
    return message


@dataclasses.dataclass
class _Validator:
    """One validation run: the request, its normalised time and its pyca policies."""

    request: ValidationRequest
    time: datetime.datetime
    ca_policy: ExtensionPolicy
    ee_policy: ExtensionPolicy

    def pyca_verify(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        anchors: Sequence[x509.Certificate],
        time: datetime.datetime,
    ) -> tuple[list[x509.Certificate] | None, str]:
        """pyca's path building and checks; (chain, "") or (None, cleaned error)."""
        verifier = (
            PolicyBuilder()
            .store(Store(list(anchors)))
            .time(time)
            .extension_policies(ca_policy=self.ca_policy, ee_policy=self.ee_policy)
            .build_client_verifier()
        )
        try:
            return list(verifier.verify(leaf, list(intermediates)).chain), ""
        except (VerificationError, ValueError, x509.UnsupportedGeneralNameType) as exc:
            return None, _clean_pyca_message(exc)

    # ---------------------------------------------------------------- candidate paths

    def candidate_paths(self) -> tuple[list[list[x509.Certificate]], list[str]]:
        """Paths from the leaf to an anchor by name, and why the other branches stop."""
        anchors_by_der = {_der(a): a for a in self.request.anchors}
        by_subject: dict[bytes, list[x509.Certificate]] = {}
        seen: set[bytes] = set()
        # Anchors first, as pyca does; an intermediate identical to an anchor is the anchor.
        for cert in [*self.request.anchors, *self.request.intermediates]:
            der = _der(cert)
            if der not in seen:
                seen.add(der)
                by_subject.setdefault(_name_key(cert.subject), []).append(cert)

        complete: list[list[x509.Certificate]] = []
        dead_ends: list[str] = []
        budget = _MAX_CANDIDATES * 4  # bounds the walk on adversarial name collisions

        def walk(path: list[x509.Certificate], path_ders: list[bytes]) -> None:
            nonlocal budget
            budget -= 1
            if budget < 0 or len(complete) >= _MAX_CANDIDATES:
                return
            cert = path[-1]
            if path_ders[-1] in anchors_by_der:
                complete.append(path)
                return
            if len(path) > _WALK_LIMIT:
                dead_ends.append(
                    f"a path through {_describe(cert)} exceeds {_WALK_LIMIT} certificates"
                )
                return
            named = by_subject.get(_name_key(cert.issuer), [])
            issuers = [c for c in named if _der(c) not in path_ders]
            if not issuers:
                if _name_key(cert.issuer) == _name_key(cert.subject):
                    dead_ends.append(f"{_describe(cert)} is self-issued and not a trust anchor")
                elif named:
                    dead_ends.append(
                        f"the issuers named '{cert.issuer.rfc4514_string()}' of "
                        f"{_describe(cert)} lead back into the path (a loop)"
                    )
                else:
                    dead_ends.append(
                        f"issuer '{cert.issuer.rfc4514_string()}' of {_describe(cert)} is "
                        "neither a trust anchor nor a supplied intermediate"
                    )
                return
            for issuer in issuers:
                walk([*path, issuer], [*path_ders, _der(issuer)])

        walk([self.request.leaf], [_der(self.request.leaf)])
        return complete, dead_ends

    # ---------------------------------------------------------------- one path

    def evaluate(self, path: list[x509.Certificate]) -> ValidationOutcome:
        """Judge one leaf..anchor path through every stage (see the precedence rules)."""
        for child, issuer in itertools.pairwise(path):
            problem = _signature_problem(child, issuer)
            if problem is not None:
                return _failure(*problem)
        for child, issuer in itertools.pairwise(path):
            problem_text = _algorithm_problem(child, issuer)
            if problem_text:
                return _failure(CertVerifyResult.INVALID, problem_text)
        for cert in path:
            if cert.version is not x509.Version.v3:
                return _failure(
                    CertVerifyResult.INVALID, f"{_describe(cert)} is not an X.509 v3 certificate"
                )

        structure = self.structure_problem(path, self.time)
        if structure is None:
            return self.revocation(path)
        out_of_window = [c for c in path if not _within(c, self.time)]
        if not out_of_window:
            return _failure(CertVerifyResult.INVALID, structure)
        inside_all = _common_valid_time(path)
        if inside_all is not None:
            structural = self.structure_problem(path, inside_all)
            if structural is not None:
                return _failure(CertVerifyResult.INVALID, structural)
        return _time_failure(out_of_window, self.time)

    def structure_problem(
        self, path: list[x509.Certificate], time: datetime.datetime
    ) -> str | None:
        """pyca's verdict on exactly this path at ``time``, plus our own structural checks."""
        checked = path
        if _needs_twin(path):
            try:
                checked = _twin(path)
            except (ValueError, TypeError, NotImplementedError) as exc:
                return f"the EdDSA path cannot be checked structurally: {_library_detail(exc)}"
        chain, error = self.pyca_verify(checked[0], checked[1:-1], checked[-1:], time)
        if chain is None:
            return _locate_structural_defect(error, path)
        if len(chain) != len(path):  # cannot happen for a simple path; never trust silently
            return "path validation used certificates outside the candidate path"
        return _name_constraint_problem(path)

    # ---------------------------------------------------------------- revocation

    def revocation(self, path: list[x509.Certificate]) -> ValidationOutcome:
        """Final stage for a path that passed every other check."""
        if self.request.revocation_policy is RevocationCheckPolicy.NONE:
            return ValidationOutcome(CertVerifyResult.VALID, list(path), "")
        unknown: list[str] = []
        for cert, issuer in itertools.pairwise(path):
            revoked, why = _crl_status(cert, issuer, self.request.crls, self.time)
            if revoked:
                return _failure(CertVerifyResult.REVOKED, why)
            if why:
                unknown.append(why)
        if unknown:
            return _failure(CertVerifyResult.REVOCATION_STATUS_UNKNOWN, "; ".join(unknown))
        return ValidationOutcome(CertVerifyResult.VALID, list(path), "")


def _failure(result: CertVerifyResult, reason: str) -> ValidationOutcome:
    return ValidationOutcome(result, [], reason)


def _signature_problem(
    child: x509.Certificate, issuer: x509.Certificate
) -> tuple[CertVerifyResult, str] | None:
    try:
        child.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return (
            CertVerifyResult.INVALID_SIGNATURE,
            f"signature of {_describe(child)} does not verify under the public key of its "
            f"issuer {_describe(issuer)}",
        )
    except UnsupportedAlgorithm as exc:
        return (
            CertVerifyResult.INVALID,
            f"signature of {_describe(child)} uses an unsupported algorithm: "
            f"{_library_detail(exc)}",
        )
    except (ValueError, TypeError) as exc:
        # The issuer's key cannot have made this signature (e.g. an RSA signature under a
        # CA with an EC key): it does not verify, like a forged one.
        return (
            CertVerifyResult.INVALID_SIGNATURE,
            f"signature of {_describe(child)} does not verify under the public key of its "
            f"issuer {_describe(issuer)}: {_library_detail(exc)}",
        )
    return None


def _algorithm_problem(
    signed: x509.Certificate | x509.CertificateRevocationList, issuer: x509.Certificate
) -> str:
    """Our signature-algorithm and issuer-key allowlist; "" when both are acceptable."""
    what = _describe(signed) if isinstance(signed, x509.Certificate) else "CRL"
    algorithm = _signature_algorithm_der(signed)
    if algorithm not in _ALLOWED_SIGNATURE_ALGORITHMS:
        return (
            f"{what} is signed with a disallowed signature algorithm "
            f"{signed.signature_algorithm_oid.dotted_string} (or disallowed parameters)"
        )
    try:
        key = issuer.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        return f"public key of issuer {_describe(issuer)} is unsupported: {_library_detail(exc)}"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        return f"RSA key of issuer {_describe(issuer)} is too weak ({key.key_size} bits)"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _ALLOWED_CURVES:
        return f"EC key of issuer {_describe(issuer)} uses disallowed curve {key.curve.name}"
    return ""


def _needs_twin(path: list[x509.Certificate]) -> bool:
    # The anchor's own signature is never checked, so only links below it matter.
    return any(c.signature_algorithm_oid in _EDDSA_SIGNATURES for c in path[:-1])


def _twin(path: list[x509.Certificate]) -> list[x509.Certificate]:
    """The path re-signed with throwaway P-256 keys, everything else byte-identical.

    Only used after every real signature on ``path`` was verified; it lets pyca apply its
    structural checks to EdDSA paths, which its verifier refuses outright.
    """
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in path]
    twins: list[x509.Certificate] = []
    for index, cert in enumerate(path):
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .serial_number(cert.serial_number)
            .not_valid_before(cert.not_valid_before_utc)
            .not_valid_after(cert.not_valid_after_utc)
            .public_key(keys[index].public_key())
        )
        for ext in cert.extensions:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(ext.oid, ext.value.public_bytes()), ext.critical
            )
        signer = keys[min(index + 1, len(path) - 1)]
        twins.append(builder.sign(signer, hashes.SHA256()))
    return twins


def _name_constraint_problem(path: list[x509.Certificate]) -> str | None:
    """Fail closed on directoryName constraints, which pyca ignores when non-critical."""
    for cert in path[1:]:
        try:
            nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        subtrees = [*(nc.permitted_subtrees or ()), *(nc.excluded_subtrees or ())]
        if any(isinstance(name, x509.DirectoryName) for name in subtrees):
            return (
                f"nameConstraints of {_describe(cert)} contain directoryName subtrees, "
                "which are not supported"
            )
    return None


def _within(cert: x509.Certificate, time: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= time <= cert.not_valid_after_utc


def _common_valid_time(path: list[x509.Certificate]) -> datetime.datetime | None:
    start = max(c.not_valid_before_utc for c in path)
    end = min(c.not_valid_after_utc for c in path)
    return start if start <= end else None


def _time_failure(
    out_of_window: list[x509.Certificate], time: datetime.datetime
) -> ValidationOutcome:
    details = []
    for cert in out_of_window:
        if time > cert.not_valid_after_utc:
            details.append(f"{_describe(cert)} expired at {cert.not_valid_after_utc.isoformat()}")
        else:
            details.append(
                f"{_describe(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}"
            )
    first = out_of_window[0]
    result = (
        CertVerifyResult.EXPIRED
        if time > first.not_valid_after_utc
        else CertVerifyResult.NOT_YET_VALID
    )
    return _failure(result, f"at {time.isoformat()}: " + "; ".join(details))


# --------------------------------------------------------------------------- CRLs


def _crl_label(index: int, crl: x509.CertificateRevocationList) -> str:
    return f"CRL #{index + 1} (thisUpdate {crl.last_update_utc.isoformat()})"


def _crl_status(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    crls: Sequence[x509.CertificateRevocationList],
    time: datetime.datetime,
) -> tuple[bool, str]:
    """(True, reason) if revoked; (False, reason) if unknown; (False, "") if good."""
    issuer_name = _name_key(cert.issuer)
    candidates = [
        (index, crl) for index, crl in enumerate(crls) if _name_key(crl.issuer) == issuer_name
    ]
    subject = _describe(cert)
    if not candidates:
        return False, (
            f"no CRL issued by '{cert.issuer.rfc4514_string()}' was supplied for {subject}"
        )
    usable: list[x509.CertificateRevocationList] = []
    problems: list[str] = []
    for index, crl in candidates:
        problem = _crl_problem(crl, cert, issuer, time)
        if problem:
            problems.append(f"{_crl_label(index, crl)} {problem}")
        else:
            usable.append(crl)
    if not usable:
        return False, f"no usable CRL for {subject}: " + "; ".join(problems)

    def recency(crl: x509.CertificateRevocationList) -> tuple[datetime.datetime, int]:
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            number = -1
        return crl.last_update_utc, number

    newest = max(usable, key=recency)
    for crl in [newest, *(c for c in usable if c is not newest)]:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is None:
            continue
        reason = _entry_reason(entry)
        if reason is x509.ReasonFlags.remove_from_crl:
            continue
        if crl is not newest and reason is x509.ReasonFlags.certificate_hold:
            continue  # a hold the most recent CRL no longer lists was released
        reason_text = f", reason {reason.value}" if reason is not None else ""
        return True, (
            f"{subject} (serial {cert.serial_number:#x}) is revoked by CRL of "
            f"'{crl.issuer.rfc4514_string()}' (thisUpdate {crl.last_update_utc.isoformat()}): "
            f"revoked at {entry.revocation_date_utc.isoformat()}{reason_text}"
        )
    return False, ""


def _entry_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def _crl_problem(
    crl: x509.CertificateRevocationList,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    time: datetime.datetime,
) -> str:
    """Why ``crl`` cannot tell the status of ``cert``; "" when it can."""
    issuer_ku = _key_usage(issuer)
    if issuer_ku is not None and not issuer_ku.crl_sign:
        return f"is unusable: keyUsage of issuer {_describe(issuer)} does not assert cRLSign"
    algorithm_problem = _algorithm_problem(crl, issuer)
    if algorithm_problem:
        return f"is unusable: {algorithm_problem}"
    try:
        signature_ok = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        return f"is unusable: its signature cannot be checked: {_library_detail(exc)}"
    if not signature_ok:
        return f"is unusable: its signature does not verify under the key of {_describe(issuer)}"
    if time < crl.last_update_utc:
        return "is not yet issued at the validation time"
    next_update = crl.next_update_utc
    if next_update is None:
        return "has no nextUpdate, so it cannot be shown to be current"
    if time >= next_update:
        return f"is expired: nextUpdate {next_update.isoformat()} is not after the validation time"

    for ext in crl.extensions:
        if ext.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            return "is a delta CRL (deltaCRLIndicator); delta CRLs are not supported"
        if isinstance(ext.value, x509.IssuingDistributionPoint):
            scope_problem = _idp_problem(ext.value, cert)
            if scope_problem:
                return scope_problem
        elif ext.critical and ext.oid not in _UNDERSTOOD_CRL_EXTENSIONS:
            return f"has an unsupported critical extension {ext.oid.dotted_string}"
    for entry in crl:
        for ext in entry.extensions:
            if ext.oid == x509.oid.CRLEntryExtensionOID.CERTIFICATE_ISSUER:
                return (
                    "is an indirect CRL (certificateIssuer entry extension); "
                    "indirect CRLs are not supported"
                )
            if ext.critical and ext.oid not in _UNDERSTOOD_CRL_ENTRY_EXTENSIONS:
                return (
                    f"has an entry with an unsupported critical extension {ext.oid.dotted_string}"
                )
    return ""


def _idp_problem(idp: x509.IssuingDistributionPoint, cert: x509.Certificate) -> str:
    if idp.indirect_crl:
        return (
            "is an indirect CRL (issuingDistributionPoint indirectCRL); "
            "indirect CRLs are not supported"
        )
    if idp.only_some_reasons:
        return (
            "covers only some revocation reasons (issuingDistributionPoint onlySomeReasons); "
            "reason-partitioned CRLs are not supported"
        )
    if idp.only_contains_attribute_certs:
        return "covers only attribute certificates"
    if idp.only_contains_user_certs and _is_ca(cert):
        return f"covers only end-entity certificates and {_describe(cert)} is a CA"
    if idp.only_contains_ca_certs and not _is_ca(cert):
        return f"covers only CA certificates and {_describe(cert)} is not a CA"
    if idp.full_name is None and idp.relative_name is None:
        return ""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        points = x509.CRLDistributionPoints([])
    for point in points:
        if point.crl_issuer:
            continue
        if idp.full_name and point.full_name and set(idp.full_name) & set(point.full_name):
            return ""
        if idp.relative_name is not None and point.relative_name == idp.relative_name:
            return ""
    return (
        "is scoped to a distribution point that the cRLDistributionPoints of "
        f"{_describe(cert)} do not name"
    )


# --------------------------------------------------------------------------- entry point

_RANK = {
    CertVerifyResult.VALID: 0,
    CertVerifyResult.REVOCATION_STATUS_UNKNOWN: 1,
    CertVerifyResult.REVOKED: 2,
    CertVerifyResult.EXPIRED: 3,
    CertVerifyResult.NOT_YET_VALID: 3,
    CertVerifyResult.INVALID: 4,
    CertVerifyResult.INVALID_SIGNATURE: 5,
    CertVerifyResult.UNTRUSTED: 6,
}


def validate_path(request: ValidationRequest) -> ValidationOutcome:
    """Validate ``request.leaf`` against the trust anchors; never raises for a bad path.

    See the module docstring for what is checked and how failures are ranked.
    """
    time = request.validation_time.astimezone(datetime.UTC).replace(microsecond=0)
    if not request.anchors:
        return _failure(CertVerifyResult.UNTRUSTED, "no trust anchors were supplied")
    ca_policy, ee_policy = _extension_policies(request)
    validator = _Validator(request, time, ca_policy, ee_policy)

    # Fast path: pyca builds the path from everything supplied; we add our checks and CRLs.
    chain, _ = validator.pyca_verify(request.leaf, request.intermediates, request.anchors, time)
    if chain is not None:
        problem = _name_constraint_problem(chain)
        if problem is None:
            outcome = validator.revocation(chain)
            if outcome.result is CertVerifyResult.VALID:
                return outcome

    # Slow path: judge every candidate path to say precisely why none is valid (or find a
    # valid one pyca cannot: EdDSA paths, or another path when the first was revoked).
    paths, dead_ends = validator.candidate_paths()
    if not paths:
        shown = "; ".join(dict.fromkeys(dead_ends[:5])) or "no candidate path"
        return _failure(CertVerifyResult.UNTRUSTED, f"no path to a trust anchor: {shown}")
    outcomes = [validator.evaluate(path) for path in paths]
    best = min(outcomes, key=lambda o: _RANK[o.result])
    if len(outcomes) > 1 and best.result is not CertVerifyResult.VALID:
        return _failure(
            best.result, f"best of {len(outcomes)} candidate paths failed: {best.reason}"
        )
    return best
