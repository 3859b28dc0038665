"""Build small test PKIs (keys, CA and leaf certificates, CRLs) with pyca's builders.

Every certificate is valid from ``T - YEAR`` to ``T + YEAR`` unless told otherwise, and CRLs
are current around ``T``, the validation instant the certificate tests use.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

T = datetime.datetime(2030, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
SECOND = datetime.timedelta(seconds=1)
DAY = datetime.timedelta(days=1)
YEAR = datetime.timedelta(days=365)

KeyKind = Literal["p256", "p384", "p521", "ed25519", "ed448", "rsa", "mldsa44", "mldsa65", "mldsa87"]
Key = CertificateIssuerPrivateKeyTypes

_RSA_KEY: rsa.RSAPrivateKey | None = None


def new_key(kind: KeyKind = "p256") -> Key:
    """A fresh private key; the RSA-2048 key is shared because generating one costs ~50 ms."""
    global _RSA_KEY
    if kind == "rsa":
        if _RSA_KEY is None:
            _RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _RSA_KEY
    makers: dict[str, Callable[[], Key]] = {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "ed448": ed448.Ed448PrivateKey.generate,
        "mldsa44": mldsa.MLDSA44PrivateKey.generate,
        "mldsa65": mldsa.MLDSA65PrivateKey.generate,
        "mldsa87": mldsa.MLDSA87PrivateKey.generate,
    }
    return makers[kind]()


def name(common_name: str) -> x509.Name:
    """``CN=<common_name>``."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def key_usage(**bits: bool) -> x509.KeyUsage:
    """A KeyUsage with the named bits set and every other bit clear."""
    fields = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    fields.update(bits)
    return x509.KeyUsage(**fields)


CA_KEY_USAGE = key_usage(key_cert_sign=True, crl_sign=True)
LEAF_KEY_USAGE = key_usage(digital_signature=True)


def _sign_kwargs(key: Key, rsa_pss: bool | padding.PSS) -> dict[str, object]:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) or isinstance(
        key, (mldsa.MLDSA44PrivateKey, mldsa.MLDSA65PrivateKey, mldsa.MLDSA87PrivateKey)
    ):
        return {"algorithm": None}
    kwargs: dict[str, object] = {"algorithm": hashes.SHA256()}
    if isinstance(key, rsa.RSAPrivateKey) and rsa_pss:
        kwargs["rsa_padding"] = (
            rsa_pss
            if isinstance(rsa_pss, padding.PSS)
            else padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        )
    return kwargs


@dataclasses.dataclass(frozen=True)
class Entity:
    """A certificate together with its private key."""

    cert: x509.Certificate
    key: Key

    @property
    def serial(self) -> int:
        """The certificate's serial number."""
        return self.cert.serial_number


_DEFAULT = object()


def issue(
    subject: str,
    issuer: Entity | None,
    *,
    key: Key | None = None,
    ca: bool | None = False,
    path_length: int | None = None,
    usage: x509.KeyUsage | object | None = _DEFAULT,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    san: Sequence[x509.GeneralName] | None = None,
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    not_before: datetime.datetime = T - YEAR,
    not_after: datetime.datetime = T + YEAR,
    signing_key: Key | None = None,
    rsa_pss: bool | padding.PSS = False,
    key_ids: bool = True,
    subject_name: x509.Name | None = None,
    issuer_name: x509.Name | None = None,
    bc_critical: bool = True,
) -> Entity:
    """Issue a certificate (self-signed when ``issuer`` is None).

    ``ca=None`` omits basicConstraints; ``usage=None`` omits keyUsage (the default is
    keyCertSign+cRLSign for a CA, digitalSignature for a leaf); ``signing_key`` signs with
    another key than the issuer's (a forged signature under the issuer's name);
    ``key_ids=False`` omits subject/authority key identifiers; ``subject_name`` and
    ``issuer_name`` replace the ``CN=`` names (e.g. other string types or spacing).
    """
    key = key if key is not None else new_key()
    subject_name = subject_name if subject_name is not None else name(subject)
    if issuer_name is None:
        issuer_name = issuer.cert.subject if issuer is not None else subject_name
    issuer_key = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if key_ids:
        subject_key = x509.SubjectKeyIdentifier.from_public_key(key.public_key())  # type: ignore[arg-type]
        authority_key = x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()  # type: ignore[arg-type]
        )
        builder = builder.add_extension(subject_key, False).add_extension(authority_key, False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), bc_critical)
    if usage is _DEFAULT:
        usage = CA_KEY_USAGE if ca else LEAF_KEY_USAGE
    if usage is not None:
        assert isinstance(usage, x509.KeyUsage)
        builder = builder.add_extension(usage, True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), False)
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), False)
    for value, critical in extensions:
        builder = builder.add_extension(value, critical)
    signer = signing_key if signing_key is not None else issuer_key
    cert = builder.sign(signer, **_sign_kwargs(signer, rsa_pss))  # type: ignore[arg-type]
    return Entity(cert, key)


def make_crl(
    issuer: Entity,
    *,
    revoked: Iterable[
        tuple[Entity | int, x509.ReasonFlags | None]
        | tuple[Entity | int, x509.ReasonFlags | None, Sequence[tuple[x509.ExtensionType, bool]]]
    ] = (),
    this_update: datetime.datetime = T - DAY,
    next_update: datetime.datetime = T + 7 * DAY,
    number: int | None = 1,
    number_critical: bool = False,
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    entry_extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    signing_key: Key | None = None,
    rsa_pss: bool | padding.PSS = False,
) -> x509.CertificateRevocationList:
    """A CRL from ``issuer`` listing ``revoked`` (entity or serial, optional reason code,
    optional extensions of that entry).

    ``entry_extensions`` are added to every entry; ``number=None`` omits cRLNumber.
    """
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), number_critical)
    entry_extensions = list(entry_extensions)
    for item in revoked:
        target, reason = item[0], item[1]
        own_extensions = list(item[2]) if len(item) > 2 else []  # type: ignore[misc]
        serial = target.serial if isinstance(target, Entity) else target
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update - DAY)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), False)
        for value, critical in [*own_extensions, *entry_extensions]:
            entry = entry.add_extension(value, critical)
        builder = builder.add_revoked_certificate(entry.build())
    for value, critical in extensions:
        builder = builder.add_extension(value, critical)
    signer = signing_key if signing_key is not None else issuer.key
    return builder.sign(signer, **_sign_kwargs(signer, rsa_pss))  # type: ignore[arg-type]


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_elements(sequence: bytes) -> list[bytes]:
    """Complete encodings of the elements of a DER SEQUENCE (test inputs are well formed)."""

    def bounds(pos: int) -> tuple[int, int]:
        length, start = sequence[pos + 1], pos + 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(sequence[start : start + count], "big")
            start += count
        return start, start + length

    start, end = bounds(0)
    elements, pos = [], start
    while pos < end:
        _, element_end = bounds(pos)
        elements.append(sequence[pos:element_end])
        pos = element_end
    return elements


def crl_without_next_update(issuer: Entity) -> x509.CertificateRevocationList:
    """A current-looking CRL that omits nextUpdate, which pyca's builder cannot produce.

    Built from a normal CRL by dropping the nextUpdate field of the TBSCertList and
    re-signing (``issuer`` must have an ECDSA key).
    """
    assert isinstance(issuer.key, ec.EllipticCurvePrivateKey)
    original = make_crl(issuer)
    version, algorithm, issuer_name, this_update, _next_update, *rest = _der_elements(
        original.tbs_certlist_bytes
    )
    body = b"".join([version, algorithm, issuer_name, this_update, *rest])
    tbs = b"\x30" + _der_length(len(body)) + body
    signature = issuer.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    bit_string = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    outer_algorithm = _der_elements(original.public_bytes(Encoding.DER))[1]
    content = tbs + outer_algorithm + bit_string
    return x509.load_der_x509_crl(b"\x30" + _der_length(len(content)) + content)


def with_extension_oid_replaced(entity: Entity, signer: Key, old: str, new: str) -> x509.Certificate:
    """``entity``'s certificate with one extension OID rewritten in the DER and re-signed by
    ``signer`` (ECDSA): builds what pyca's builder refuses, such as duplicate extensions.
    """
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    old_oid = x509.ObjectIdentifier(old)
    new_oid = x509.ObjectIdentifier(new)
    old_der, new_der = _oid_der(old_oid), _oid_der(new_oid)
    assert len(old_der) == len(new_der)
    tbs = entity.cert.tbs_certificate_bytes
    assert tbs.count(old_der) == 1
    tbs = tbs.replace(old_der, new_der)
    signature = signer.sign(tbs, ec.ECDSA(hashes.SHA256()))
    bit_string = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    algorithm = _der_elements(entity.cert.public_bytes(Encoding.DER))[1]
    content = tbs + algorithm + bit_string
    return x509.load_der_x509_certificate(b"\x30" + _der_length(len(content)) + content)


def _oid_der(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return b"\x06" + _der_length(len(body)) + bytes(body)


def policy_mappings(pairs: Sequence[tuple[str, str]]) -> x509.UnrecognizedExtension:
    """A policyMappings extension (pyca has no type for it) from (issuer, subject) OIDs."""
    mappings = b""
    for issuer_policy, subject_policy in pairs:
        body = _oid_der(x509.ObjectIdentifier(issuer_policy)) + _oid_der(
            x509.ObjectIdentifier(subject_policy)
        )
        mappings += b"\x30" + _der_length(len(body)) + body
    return x509.UnrecognizedExtension(
        x509.ObjectIdentifier("2.5.29.33"), b"\x30" + _der_length(len(mappings)) + mappings
    )
