"""Signature encodings between the API and the TPM.

* ECDSA: the API speaks DER (``SEQUENCE { r INTEGER, s INTEGER }``), the TPM raw r and s;
  the SDK's :mod:`cryptostack_core.sdk.ecdsa` converts, parsing strictly and range-checking
  r and s before the TPM sees them.
* RSA-PSS: the TPM's TPM2_VerifySignature accepts any salt length (checked on swtpm 0.7:
  salts of 0, 20, 32 and the maximum all pass), while the API fixes the salt to the digest
  length. After the TPM has found a signature valid, :func:`pss_salt_length` decodes the
  encoded message with the public key to enforce that; it checks structure only, the
  cryptographic verification was the TPM's. TPM2_Sign itself uses salt = digest length.
"""

from __future__ import annotations

import hashlib

from cryptostack_core.sdk import ecdsa


def ecdsa_to_der(r: bytes, s: bytes) -> bytes:
    """DER signature from the TPM's big-endian r and s."""
    return ecdsa.encode_der(int.from_bytes(r, "big"), int.from_bytes(s, "big"))


def ecdsa_from_der(signature: bytes, algorithm: str) -> tuple[bytes, bytes] | None:
    """(r, s) as curve-sized big-endian values, or None when the signature is invalid
    (:func:`cryptostack_core.sdk.ecdsa.decode_der`: not strict DER, or r, s outside
    [1, n-1]) -- whatever the TPM would say."""
    raw = ecdsa.der_to_raw(signature, algorithm)
    if raw is None:
        return None
    half = len(raw) // 2
    return raw[:half], raw[half:]


def _mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.new(hash_name, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def pss_salt_length(signature: bytes, n: int, e: int, hash_name: str) -> int | None:
    """Salt length inside an RSA-PSS signature (RFC 8017 section 9.1.2 decoding), or None
    when the encoded message is not PSS-shaped."""
    h_len = hashlib.new(hash_name).digest_size
    em_bits = n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    m = pow(int.from_bytes(signature, "big"), e, n)
    if m.bit_length() > em_bits or em_len < h_len + 2:
        return None
    em = m.to_bytes(em_len, "big")
    if em[-1] != 0xBC:
        return None
    masked_db, digest = em[: em_len - h_len - 1], em[em_len - h_len - 1 : -1]
    db = bytearray(a ^ b for a, b in zip(masked_db, _mgf1(digest, len(masked_db), hash_name)))
    db[0] &= 0xFF >> (8 * em_len - em_bits)
    start = next((i for i, byte in enumerate(db) if byte), None)
    if start is None or db[start] != 0x01:
        return None
    return len(db) - start - 1
