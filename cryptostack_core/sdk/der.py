"""Strict DER and PEM: the few ASN.1 constructs key and signature encodings need.

One reader for every provider (and the SDK's hybrid constructions): definite, minimal
lengths; low tag numbers; minimal INTEGERs; no trailing bytes unless asked for -- so two
encodings of one value are never both accepted. Failures are :class:`DerError` (a
``ValueError``); callers turn them into ``INVALID_ARGUMENT`` naming the format, or
``PROVIDER_ERROR`` when a backend produced them.

Reading: :func:`read` (one element at an offset), :func:`read_all` (a concatenation),
:func:`expect` (exactly one element of a tag), :func:`first_element` (the leading element of
padded output). Writing: :func:`tlv`. Values: OBJECT IDENTIFIER, INTEGER, OCTET STRING.
Shells: SubjectPublicKeyInfo and PKCS#8 / OneAsymmetricKey for algorithms whose identifier
has no parameters (post-quantum and hybrid keys). Text: PEM (RFC 7468).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

SEQUENCE = 0x30
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
CONTEXT_0_PRIMITIVE = 0x80
CONTEXT_0_CONSTRUCTED = 0xA0
CONTEXT_1_PRIMITIVE = 0x81

MAX_ENCODED = 1 << 20
"""Largest DER or PEM input the shells parse (keys are far smaller; composite keys < 4 KiB)."""


class DerError(ValueError):
    """Malformed or non-canonical DER (or PEM)."""


# --- elements -----------------------------------------------------------------------------


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element."""
    return bytes([tag]) + _length(len(content)) + bytes(content)


def read(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """(tag, content, next offset) of the element at ``offset``."""
    if offset + 2 > len(data):
        raise DerError("truncated element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used in key encodings")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DerError("indefinite or oversized length")
        if pos + count > len(data):
            raise DerError("truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if data[pos] == 0 or length < 0x80:
            raise DerError("non-minimal length encoding")
        pos += count
    end = pos + length
    if end > len(data):
        raise DerError("element runs past the end of the data")
    return tag, bytes(data[pos:end]), end


def read_all(data: bytes) -> list[tuple[int, bytes]]:
    """Every (tag, content) in ``data``, which must be a concatenation of elements."""
    items = []
    offset = 0
    while offset < len(data):
        tag, content, offset = read(data, offset)
        items.append((tag, content))
    return items


def expect(data: bytes, tag: int, what: str) -> bytes:
    """Content of ``data``, which must be exactly one element with ``tag``."""
    got, content, end = read(data)
    if got != tag:
        raise DerError(f"{what}: expected tag {tag:#04x}, got {got:#04x}")
    if end != len(data):
        raise DerError(f"{what}: trailing data")
    return content


def first_element(data: bytes) -> bytes:
    """The complete encoding of the leading element (output padded after it, such as a
    PKCS#8 key a token padded to its wrapping block size)."""
    _tag, _content, end = read(data)
    return bytes(data[:end])


# --- values -------------------------------------------------------------------------------


def encode_oid(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    first = arcs[0] * 40 + arcs[1]
    out = bytearray()
    for arc in [first, *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def decode_oid(content: bytes) -> str:
    """Dotted form of OBJECT IDENTIFIER content octets."""
    if not content or content[-1] & 0x80:
        raise DerError("truncated object identifier")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in content:
        if fresh and byte == 0x80:
            raise DerError("non-minimal object identifier arc")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def encode_integer(value: int) -> bytes:
    """A DER INTEGER element (minimal two's complement)."""
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8  # and the sign bit
    return tlv(INTEGER, value.to_bytes(size, "big", signed=True))


def decode_integer(content: bytes, *, non_negative: bool = False) -> int:
    """The value of INTEGER content octets; refuses non-minimal encodings (and negative
    values when ``non_negative``)."""
    if not content:
        raise DerError("empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0 and not content[1] & 0x80) or (content[0] == 0xFF and content[1] & 0x80)
    ):
        raise DerError("non-minimal INTEGER")
    value = int.from_bytes(content, "big", signed=True)
    if non_negative and value < 0:
        raise DerError("negative INTEGER")
    return value


def unwrap_octet_string(data: bytes) -> bytes:
    """Content of a DER OCTET STRING that is all of ``data``."""
    return expect(data, OCTET_STRING, "OCTET STRING")


# --- key shells -----------------------------------------------------------------------------


def algorithm_identifier(oid: str) -> bytes:
    """AlgorithmIdentifier with absent parameters (as every post-quantum OID requires)."""
    return tlv(SEQUENCE, tlv(OID, encode_oid(oid)))


def read_algorithm(content: bytes) -> str:
    """The OID of AlgorithmIdentifier content whose parameters are absent."""
    parts = read_all(content)
    if not parts or parts[0][0] != OID:
        raise DerError("AlgorithmIdentifier without an OID")
    if len(parts) != 1:
        raise DerError("AlgorithmIdentifier parameters must be absent")
    return decode_oid(parts[0][1])


def _bounded(data: bytes) -> bytes:
    if len(data) > MAX_ENCODED:
        raise DerError(f"encodings are at most {MAX_ENCODED} bytes here")
    return bytes(data)


def encode_spki(oid: str, public_key: bytes) -> bytes:
    """SubjectPublicKeyInfo carrying ``public_key`` as the BIT STRING's bytes."""
    return tlv(SEQUENCE, algorithm_identifier(oid) + tlv(BIT_STRING, b"\x00" + public_key))


def decode_spki(data: bytes) -> tuple[str, bytes]:
    """(OID, public key bytes) of a SubjectPublicKeyInfo whose algorithm has no parameters."""
    parts = read_all(expect(_bounded(data), SEQUENCE, "SubjectPublicKeyInfo"))
    if len(parts) != 2 or parts[0][0] != SEQUENCE or parts[1][0] != BIT_STRING:
        raise DerError("SubjectPublicKeyInfo must be SEQUENCE { AlgorithmIdentifier, BIT STRING }")
    bits = parts[1][1]
    if not bits or bits[0] != 0:
        raise DerError("public key BIT STRING has unused bits")
    return read_algorithm(parts[0][1]), bits[1:]


@dataclass(frozen=True)
class PrivateKeyInfo:
    """The parts of a PKCS#8 / OneAsymmetricKey (RFC 5958) that matter here."""

    oid: str
    private_key: bytes
    """Content of the privateKey OCTET STRING (algorithm-specific encoding inside)."""
    public_key: bytes | None
    """The optional [1] publicKey of a version-2 OneAsymmetricKey."""


def encode_pkcs8(oid: str, private_key: bytes) -> bytes:
    """Version-1 PrivateKeyInfo (no attributes, no public key) -- the form pyca writes."""
    return tlv(SEQUENCE, tlv(INTEGER, b"\x00") + algorithm_identifier(oid) + tlv(OCTET_STRING, private_key))


def decode_pkcs8(data: bytes) -> PrivateKeyInfo:
    """Parse PrivateKeyInfo / OneAsymmetricKey (version 0 or 1); attributes are ignored,
    each optional field may appear once."""
    parts = read_all(expect(_bounded(data), SEQUENCE, "PrivateKeyInfo"))
    if len(parts) < 3 or parts[0][0] != INTEGER or parts[1][0] != SEQUENCE or parts[2][0] != OCTET_STRING:
        raise DerError("PrivateKeyInfo must be SEQUENCE { version, AlgorithmIdentifier, OCTET STRING, ... }")
    version = parts[0][1]
    if version not in (b"\x00", b"\x01"):
        raise DerError("PrivateKeyInfo version must be 0 or 1")
    public_key = None
    seen: set[int] = set()
    for tag, content in parts[3:]:
        if tag in seen:
            raise DerError(f"repeated element {tag:#04x} in PrivateKeyInfo")
        seen.add(tag)
        if tag == CONTEXT_0_CONSTRUCTED:
            continue  # attributes
        if tag == CONTEXT_1_PRIMITIVE and version == b"\x01":
            if not content or content[0] != 0:
                raise DerError("publicKey BIT STRING has unused bits")
            public_key = content[1:]
            continue
        raise DerError(f"unexpected element {tag:#04x} in PrivateKeyInfo")
    return PrivateKeyInfo(read_algorithm(parts[1][1]), parts[2][1], public_key)


# --- PEM ----------------------------------------------------------------------------------


def pem_encode(label: str, der: bytes) -> bytes:
    """RFC 7468 text: base64 in 64-column lines between BEGIN/END ``label`` lines."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode("ascii")


def pem_decode(data: bytes) -> tuple[str, bytes]:
    """(label, DER) of the first PEM block in ``data``."""
    try:
        text = _bounded(data).decode("ascii")
    except UnicodeDecodeError:
        raise DerError("PEM must be ASCII") from None
    begin = text.find("-----BEGIN ")
    if begin < 0:
        raise DerError("no PEM BEGIN line")
    head_end = text.find("-----", begin + 11)
    if head_end < 0:
        raise DerError("malformed PEM BEGIN line")
    label = text[begin + 11 : head_end]
    if not label or not all(c.isupper() or c.isdigit() or c == " " for c in label):
        raise DerError("malformed PEM label")
    footer = f"-----END {label}-----"
    end = text.find(footer, head_end)
    if end < 0:
        raise DerError(f"no PEM END line for {label}")
    body = "".join(text[head_end + 5 : end].split())
    try:
        return label, base64.b64decode(body, validate=True)
    except binascii.Error:
        raise DerError("invalid base64 in PEM") from None
