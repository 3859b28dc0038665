"""ECDSA signature encodings: the API's DER ``Ecdsa-Sig-Value`` and the raw ``r || s`` of
PKCS#11 tokens and TPMs.

One range rule for every provider: a signature whose DER is not strict (:mod:`.der`), or
whose ``r`` or ``s`` lies outside ``[1, n - 1]`` for the curve order ``n``, is invalid -- it
is refused here, before any backend sees it, whatever the backend would say.
"""

from __future__ import annotations

from . import der

CURVE_ORDERS: dict[str, int] = {
    "ECDSA-P256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ECDSA-P384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
    "ECDSA-P521": int(
        "01FF" + "FFFFFFFF" * 7 + "FFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}
"""Group order ``n`` of each ECDSA curve, by key algorithm name."""


def coordinate_size(algorithm: str) -> int:
    """Bytes of one of ``r`` and ``s`` in the raw form (32 for P-256, 66 for P-521)."""
    return (_order(algorithm).bit_length() + 7) // 8


def _order(algorithm: str) -> int:
    try:
        return CURVE_ORDERS[algorithm]
    except KeyError:
        raise ValueError(f"{algorithm} is not an ECDSA curve") from None


def encode_der(r: int, s: int) -> bytes:
    """DER ``SEQUENCE { r INTEGER, s INTEGER }``."""
    return der.tlv(der.SEQUENCE, der.encode_integer(r) + der.encode_integer(s))


def raw_to_der(raw: bytes) -> bytes:
    """``r || s`` (equal halves, as PKCS#11 and TPMs return them) to DER."""
    if not raw or len(raw) % 2:
        raise ValueError("a raw ECDSA signature is two equal halves")
    half = len(raw) // 2
    return encode_der(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


def decode_der(signature: bytes, algorithm: str) -> tuple[int, int] | None:
    """(r, s) of a strict DER signature with both in ``[1, n - 1]``; None otherwise (such a
    signature is simply invalid)."""
    order = _order(algorithm)
    try:
        parts = der.read_all(der.expect(bytes(signature), der.SEQUENCE, "ECDSA signature"))
        if len(parts) != 2 or parts[0][0] != der.INTEGER or parts[1][0] != der.INTEGER:
            return None
        r = der.decode_integer(parts[0][1])
        s = der.decode_integer(parts[1][1])
    except der.DerError:
        return None
    if not (0 < r < order and 0 < s < order):
        return None
    return r, s


def der_to_raw(signature: bytes, algorithm: str) -> bytes | None:
    """A DER signature as ``r || s`` of fixed-size halves, or None when it is invalid (see
    :func:`decode_der`)."""
    decoded = decode_der(signature, algorithm)
    if decoded is None:
        return None
    size = coordinate_size(algorithm)
    return decoded[0].to_bytes(size, "big") + decoded[1].to_bytes(size, "big")
