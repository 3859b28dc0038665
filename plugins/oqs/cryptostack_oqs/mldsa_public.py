"""Recover the public key of an expanded ML-DSA secret key (FIPS 204), checking it.

liboqs keeps ML-DSA secret keys in the FIPS 204 ``skEncode`` form
``rho || K || tr || s1 || s2 || t0`` and offers no way to get the public key back from
one. Importing such a key (RAW, or PKCS#8 ``expandedKey``) still needs the public key, so
this module recomputes ``t = NTT^-1(A_hat * NTT(s1)) + s2`` (FIPS 204 Algorithm 6, lines
5-6) and splits it with Power2Round into ``t1`` (public) and ``t0``. The result is accepted
only if it reproduces the secret key's own ``t0`` *and* ``tr = H(pk, 64)``: a secret key
whose parts do not belong together is refused, and any slip in this code would show up
as a refusal, never as a wrong public key.

This runs on key import only (about 10-25 ms in CPython); signing stays in liboqs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

Q = 8380417
N = 256
D = 13
_ZETA = 1753
_N_INV = 8347681  # 256^-1 mod q


@dataclass(frozen=True)
class Params:
    """ML-DSA parameter set sizes (FIPS 204 Table 1)."""

    k: int
    l: int  # noqa: E741 - the standard's name
    eta: int

    @property
    def eta_bits(self) -> int:
        """Bits per packed s1/s2 coefficient."""
        return 3 if self.eta == 2 else 4

    @property
    def secret_key_size(self) -> int:
        """Length of skEncode output."""
        return 128 + 32 * (self.k + self.l) * self.eta_bits + 32 * D * self.k

    @property
    def public_key_size(self) -> int:
        """Length of pkEncode output."""
        return 32 + 320 * self.k


PARAMS = {"ML-DSA-44": Params(4, 4, 2), "ML-DSA-65": Params(6, 5, 4), "ML-DSA-87": Params(8, 7, 2)}


def _bitrev8(x: int) -> int:
    return int(f"{x:08b}"[::-1], 2)


_ZETAS = [pow(_ZETA, _bitrev8(i), Q) for i in range(256)]


def _ntt(w: list[int]) -> list[int]:
    # FIPS 204 Algorithm 41.
    a = list(w)
    m = 0
    length = 128
    while length >= 1:
        start = 0
        while start < N:
            m += 1
            z = _ZETAS[m]
            for j in range(start, start + length):
                t = z * a[j + length] % Q
                a[j + length] = (a[j] - t) % Q
                a[j] = (a[j] + t) % Q
            start += 2 * length
        length //= 2
    return a


def _ntt_inverse(w: list[int]) -> list[int]:
    # FIPS 204 Algorithm 42.
    a = list(w)
    m = 256
    length = 1
    while length < N:
        start = 0
        while start < N:
            m -= 1
            z = Q - _ZETAS[m]
            for j in range(start, start + length):
                t = a[j]
                a[j] = (t + a[j + length]) % Q
                a[j + length] = z * (t - a[j + length]) % Q
            start += 2 * length
        length *= 2
    return [x * _N_INV % Q for x in a]


def _rej_ntt_poly(seed: bytes) -> list[int]:
    # FIPS 204 Algorithm 30: uniform coefficients < q from SHAKE128, 3 bytes at a time.
    want = 840
    while True:
        stream = hashlib.shake_128(seed).digest(want)
        coeffs: list[int] = []
        for pos in range(0, want - 2, 3):
            z = stream[pos] | stream[pos + 1] << 8 | (stream[pos + 2] & 0x7F) << 16
            if z < Q:
                coeffs.append(z)
                if len(coeffs) == N:
                    return coeffs
        want *= 2


def _unpack(data: bytes, bits: int, count: int) -> list[int]:
    # SimpleBitUnpack: little-endian bit order across the byte string.
    value = int.from_bytes(data, "little")
    mask = (1 << bits) - 1
    return [(value >> (bits * i)) & mask for i in range(count)]


def _pack(values: list[int], bits: int) -> bytes:
    acc = 0
    for i, v in enumerate(values):
        acc |= v << (bits * i)
    return acc.to_bytes(len(values) * bits // 8, "little")


class InconsistentKey(ValueError):
    """The secret key's parts do not belong together."""


def public_key_from_secret(algorithm: str, secret_key: bytes) -> bytes:
    """``pkEncode(rho, t1)`` for an expanded secret key, after checking ``t0`` and ``tr``."""
    p = PARAMS[algorithm]
    if len(secret_key) != p.secret_key_size:
        raise InconsistentKey(f"{algorithm} secret keys are {p.secret_key_size} bytes")
    rho, tr = secret_key[:32], secret_key[64:128]
    poly_eta = 32 * p.eta_bits
    offset = 128
    s1 = []
    for _ in range(p.l):
        raw = _unpack(secret_key[offset : offset + poly_eta], p.eta_bits, N)
        if any(v > 2 * p.eta for v in raw):
            raise InconsistentKey("s1 coefficient out of range")
        s1.append([(p.eta - v) % Q for v in raw])
        offset += poly_eta
    s2 = []
    for _ in range(p.k):
        raw = _unpack(secret_key[offset : offset + poly_eta], p.eta_bits, N)
        if any(v > 2 * p.eta for v in raw):
            raise InconsistentKey("s2 coefficient out of range")
        s2.append([(p.eta - v) % Q for v in raw])
        offset += poly_eta
    t0_packed = secret_key[offset:]

    s1_hat = [_ntt(poly) for poly in s1]
    t1_polys: list[list[int]] = []
    t0_polys: list[list[int]] = []
    for r in range(p.k):
        acc = [0] * N
        for s in range(p.l):
            a_hat = _rej_ntt_poly(rho + bytes([s, r]))
            s_hat = s1_hat[s]
            for i in range(N):
                acc[i] += a_hat[i] * s_hat[i]
        t = _ntt_inverse([x % Q for x in acc])
        t1_row, t0_row = [], []
        for i in range(N):
            value = (t[i] + s2[r][i]) % Q
            low = value & ((1 << D) - 1)
            if low > 1 << (D - 1):
                low -= 1 << D
            t1_row.append((value - low) >> D)
            t0_row.append((1 << (D - 1)) - low)  # skEncode stores 2^(d-1) - t0
        t1_polys.append(t1_row)
        t0_polys.append(t0_row)

    if b"".join(_pack(row, D) for row in t0_polys) != t0_packed:
        raise InconsistentKey("t0 does not match s1, s2 and rho")
    public_key = rho + b"".join(_pack(row, 10) for row in t1_polys)
    if hashlib.shake_256(public_key).digest(64) != tr:
        raise InconsistentKey("tr does not match the recomputed public key")
    return public_key
