"""Recover the public key of a Falcon secret key: ``h = g / f mod (q, X^n + 1)``.

liboqs stores Falcon secret keys in the reference encoding (header ``0x50 + logn``, then
``f`` and ``g`` as signed ``fg_bits``-bit fields and ``F`` as signed 8-bit fields, all
packed most significant bit first) and public keys as ``0x00 + logn`` followed by ``h`` in
14-bit fields. It has no call that turns one into the other, so importing a RAW Falcon
secret key computes ``h`` here with a negacyclic NTT modulo 12289. The provider then signs
a test message with liboqs and verifies it under the recovered key before accepting the
import, which also catches a secret key whose ``F`` does not belong to ``f`` and ``g``.

Also decodes (and so validates) public keys: header byte and every coefficient below q.
"""

from __future__ import annotations

Q = 12289
_GENERATOR = 11  # a primitive root modulo 12289

_FG_BITS = {9: 6, 10: 5}
_BIG_F_BITS = 8


class InvalidFalconKey(ValueError):
    """Not a well-formed Falcon key of the expected degree."""


def _unpack_signed(data: bytes, bits: int, count: int) -> list[int]:
    total = bits * count
    if len(data) * 8 < total:
        raise InvalidFalconKey("truncated field")
    acc = int.from_bytes(data, "big")
    spare = len(data) * 8 - total
    if acc & ((1 << spare) - 1):
        raise InvalidFalconKey("non-zero padding bits")
    acc >>= spare
    mask = (1 << bits) - 1
    sign = 1 << (bits - 1)
    out = []
    for i in range(count - 1, -1, -1):
        w = (acc >> (bits * i)) & mask
        if w & sign:
            w -= 1 << bits
        if w == -sign:
            raise InvalidFalconKey("coefficient at the forbidden minimum")
        out.append(w)
    return out


def decode_public(logn: int, public_key: bytes) -> list[int]:
    """Coefficients of ``h``; raises :class:`InvalidFalconKey` on any malformation."""
    n = 1 << logn
    if len(public_key) != 1 + (14 * n + 7) // 8 or public_key[0] != logn:
        raise InvalidFalconKey(f"not a Falcon-{n} public key")
    acc = int.from_bytes(public_key[1:], "big")
    spare = (len(public_key) - 1) * 8 - 14 * n
    if acc & ((1 << spare) - 1):
        raise InvalidFalconKey("non-zero padding bits")
    acc >>= spare
    coeffs = [(acc >> (14 * i)) & 0x3FFF for i in range(n - 1, -1, -1)]
    if any(c >= Q for c in coeffs):
        raise InvalidFalconKey("public key coefficient not reduced modulo 12289")
    return coeffs


def _encode_public(logn: int, h: list[int]) -> bytes:
    acc = 0
    for c in h:
        acc = (acc << 14) | c
    n_bits = 14 * len(h)
    spare = (-n_bits) % 8
    return bytes([logn]) + (acc << spare).to_bytes((n_bits + spare) // 8, "big")


def _bit_reverse(values: list[int]) -> list[int]:
    n = len(values)
    bits = n.bit_length() - 1
    return [values[int(f"{i:0{bits}b}"[::-1], 2)] for i in range(n)]


def _cyclic_ntt(values: list[int], omega: int) -> list[int]:
    a = _bit_reverse(values)
    n = len(a)
    size = 2
    while size <= n:
        w_step = pow(omega, n // size, Q)
        half = size // 2
        twiddles = [pow(w_step, j, Q) for j in range(half)]
        for start in range(0, n, size):
            for j in range(half):
                u = a[start + j]
                v = a[start + j + half] * twiddles[j] % Q
                a[start + j] = (u + v) % Q
                a[start + j + half] = (u - v) % Q
        size *= 2
    return a


def public_key_from_secret(logn: int, secret_key: bytes) -> bytes:
    """The encoded public key of a liboqs/reference Falcon secret key of degree 2^logn."""
    n = 1 << logn
    fg_bits = _FG_BITS.get(logn)
    if fg_bits is None:
        raise InvalidFalconKey(f"unsupported Falcon degree 2^{logn}")
    fg_len = fg_bits * n // 8
    expected = 1 + 2 * fg_len + _BIG_F_BITS * n // 8
    if len(secret_key) != expected or secret_key[0] != 0x50 + logn:
        raise InvalidFalconKey(f"not a Falcon-{n} secret key")
    f = _unpack_signed(secret_key[1 : 1 + fg_len], fg_bits, n)
    g = _unpack_signed(secret_key[1 + fg_len : 1 + 2 * fg_len], fg_bits, n)
    _unpack_signed(secret_key[1 + 2 * fg_len :], _BIG_F_BITS, n)  # F: validate encoding
    psi = pow(_GENERATOR, (Q - 1) // (2 * n), Q)  # primitive 2n-th root of unity
    omega = psi * psi % Q
    twist = [pow(psi, i, Q) for i in range(n)]
    f_hat = _cyclic_ntt([c * t % Q for c, t in zip(f, twist)], omega)
    g_hat = _cyclic_ntt([c * t % Q for c, t in zip(g, twist)], omega)
    if any(x == 0 for x in f_hat):
        raise InvalidFalconKey("f is not invertible modulo 12289")
    h_hat = [gv * pow(fv, Q - 2, Q) % Q for gv, fv in zip(g_hat, f_hat)]
    h_twisted = _cyclic_ntt(h_hat, pow(omega, Q - 2, Q))
    n_inv = pow(n, Q - 2, Q)
    psi_inv = pow(psi, Q - 2, Q)
    h = [c * n_inv % Q * pow(psi_inv, i, Q) % Q for i, c in enumerate(h_twisted)]
    return _encode_public(logn, h)
