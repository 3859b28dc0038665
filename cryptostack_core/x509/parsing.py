"""Parsing certificates and CRLs (pyca ``cryptography``), DER slicing and key naming.

pyca's Rust parser does all the DER work; this module only frames the input (PEM or DER,
exactly one object), decodes every extension eagerly so that a malformed or duplicated one
is refused at import, and slices the few raw encodings validation needs (the
SubjectPublicKeyInfo and the signature AlgorithmIdentifier) from the original bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from cryptostack_core.wire.errors import CryptoError, ErrorCode

__all__ = [
    "describe",
    "der_children",
    "library_detail",
    "parse_certificate",
    "parse_crl",
    "public_key_algorithm",
    "signature_algorithm_der",
    "spki_der",
]

_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_PEM_END = re.compile(rb"-----END ([A-Z0-9 ]+)-----")
# id-dsa (RFC 3279 2.3.2) as its DER OBJECT IDENTIFIER encoding.
_DSA_OID_DER = bytes.fromhex("06072a8648ce380401")


def library_detail(exc: BaseException) -> str:
    """The first line of a library error, bounded (it may quote attacker-chosen input)."""
    return str(exc).split("\n")[0][:200]


def describe(cert: x509.Certificate) -> str:
    """``'<subject RFC 4514>'``, or the serial number when the subject is empty."""
    subject = cert.subject.rfc4514_string()
    return f"'{subject}'" if subject else f"<empty subject, serial {cert.serial_number:#x}>"


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


def _parses_as(raw: bytes, loader: Callable[[bytes], object]) -> bool:
    try:
        loader(raw)
    except ValueError:
        return False
    return True


def _has_parameterless_dsa_key(der: bytes) -> bool:
    """Whether a certificate pyca refused carries a DSA key without domain parameters."""
    try:
        tbs = der_children(der_children(der)[0])
        if tbs and tbs[0][0] == 0xA0:
            tbs = tbs[1:]
        algorithm = der_children(tbs[5])[0]
        return der_children(algorithm) == [_DSA_OID_DER]
    except (ValueError, IndexError):
        return False


def _decode_extensions(obj: x509.Certificate | x509.CertificateRevocationList, what: str) -> None:
    try:
        _ = obj.extensions
        if isinstance(obj, x509.CertificateRevocationList):
            for entry in obj:
                _ = entry.extensions
    except x509.DuplicateExtension as exc:
        # RFC 5280 4.2: "A certificate MUST NOT include more than one instance of a
        # particular extension" (5.2 likewise for CRLs); which one wins is undefined.
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"{what} has a duplicate {exc.oid.dotted_string} extension (RFC 5280 4.2)",
        ) from None
    except ValueError as exc:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT, f"{what} has malformed extensions: {library_detail(exc)}"
        ) from None


def parse_certificate(pem_or_der: bytes | bytearray | memoryview) -> x509.Certificate:
    """Parse one X.509 certificate from PEM (a single ``CERTIFICATE`` block) or DER.

    The subject, issuer and extensions are decoded eagerly, so a certificate with a
    malformed name or a malformed or duplicated extension is refused here rather than later.

    Raises:
        CryptoError: ``INVALID_ARGUMENT`` for non-bytes, empty, truncated or malformed input,
            trailing data, several PEM blocks, another object (such as a CRL) or a duplicate
            extension; ``UNSUPPORTED_ALGORITHM`` for a DSA key that inherits its domain
            parameters from the issuer (DSA is not supported, see docs/certificates.md).
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
        if labels is None and _has_parameterless_dsa_key(raw):
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                "certificate has a DSA public key that inherits its parameters from the "
                "issuer; DSA is not supported",
            ) from None
        if labels is None and _parses_as(raw, x509.load_der_x509_crl):
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "input is a CRL, not a certificate") from None
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"not a valid X.509 certificate (truncated or malformed): {library_detail(exc)}",
        ) from None
    _decode_names(cert)
    _decode_extensions(cert, "certificate")
    return cert


def _decode_names(cert: x509.Certificate) -> None:
    # Decoded lazily by the library: here, so a malformed name is refused at import, not
    # found later as a failure of whoever reads it.
    for part in ("subject", "issuer"):
        try:
            getattr(cert, part)
        except ValueError as exc:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"certificate has a malformed {part}: {library_detail(exc)}"
            ) from None


def parse_crl(pem_or_der: bytes | bytearray | memoryview) -> x509.CertificateRevocationList:
    """Parse one CRL from PEM (a single ``X509 CRL`` block) or DER.

    CRL extensions and every entry's extensions are decoded eagerly.

    Raises:
        CryptoError: ``INVALID_ARGUMENT`` for non-bytes, empty, truncated or malformed input,
            trailing data, several PEM blocks, another object (such as a certificate) or a
            duplicate extension.
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
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "input is a certificate, not a CRL") from None
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT,
            f"not a valid X.509 CRL (truncated or malformed): {library_detail(exc)}",
        ) from None
    _decode_extensions(crl, "CRL")
    return crl


def public_key_algorithm(cert: x509.Certificate) -> str:
    """Canonical registry name of the certificate's public key.

    One of ``ECDSA-P256``, ``ECDSA-P384``, ``Ed25519``, ``RSA-2048``, ``RSA-3072``,
    ``RSA-4096``, ``ML-DSA-44``, ``ML-DSA-65``, ``ML-DSA-87``.

    Raises:
        CryptoError: ``UNSUPPORTED_ALGORITHM`` for any other key (other curves or RSA sizes,
            Ed448, DSA, unknown algorithms).
    """
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM,
            f"certificate public key is not supported: {library_detail(exc)}",
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
        raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"certificate public key not supported: {detail}")
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


def der_children(element: bytes) -> list[bytes]:
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
    tbs_fields = der_children(der_children(cert.public_bytes(Encoding.DER))[0])
    if tbs_fields and tbs_fields[0][0] == 0xA0:  # explicit [0] version
        tbs_fields = tbs_fields[1:]
    return tbs_fields[5]  # serial, signature, issuer, validity, subject, spki


def signature_algorithm_der(signed: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """The outer signatureAlgorithm AlgorithmIdentifier, as encoded."""
    # Certificate and CertificateList share the outer shape: SEQUENCE {tbs, algorithm, sig}.
    return der_children(signed.public_bytes(Encoding.DER))[1]
