"""Symmetric ciphers: AES-CBC (PKCS#7), AES-CTR, AES-GCM and ChaCha20-Poly1305.

Encryption streams: every :meth:`update` returns the output for its input. AEAD decryption
holds the ciphertext until :meth:`finalize` and releases the plaintext only once the tag has
verified (the daemon bounds how much is held). AES-GCM runs on pyca's streaming ``Cipher``
for encryption and on the one-shot ``AESGCM`` for full-length-tag decryption. pyca has no
streaming ChaCha20-Poly1305, so encryption composes pyca's ChaCha20 and Poly1305 exactly as
RFC 8439 section 2.8 does (checked against the one-shot AEAD and the Wycheproof vectors);
decryption uses the one-shot ``ChaCha20Poly1305``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding, poly1305
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cryptostack_core.sdk import (
    REGISTRY,
    Buffer,
    CipherDirection,
    CipherOperation,
    CryptoError,
    ErrorCode,
    ProviderKey,
    invalid_argument,
)

from .keys import SecretKey


@dataclass(frozen=True)
class CipherSpec:
    """What a cipher algorithm needs: its mode, key algorithm and key length."""

    mode: str  # "CBC", "CTR", "GCM" or "CHACHA20-POLY1305"
    key_algorithm: str
    key_length: int

    @property
    def aead(self) -> bool:
        """Whether the algorithm authenticates (and so has associated data and a tag)."""
        return self.mode in ("GCM", "CHACHA20-POLY1305")


CIPHERS: dict[str, CipherSpec] = {
    f"AES-{bits}-{mode}": CipherSpec(mode, f"AES-{bits}", bits // 8)
    for bits in (128, 192, 256)
    for mode in ("CBC", "GCM", "CTR")
}
CIPHERS["ChaCha20-Poly1305"] = CipherSpec("CHACHA20-POLY1305", "ChaCha20-Poly1305", 32)


_CHACHA20_POLY1305_TAG = 16  # RFC 8439 defines no truncation


def create_cipher(
    algorithm: str, key: ProviderKey, direction: CipherDirection, iv: bytes, tag_length: int
) -> CipherOperation:
    """Start one message; wrong key, IV or tag length -> INVALID_ARGUMENT."""
    spec = CIPHERS.get(algorithm)
    if spec is None:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM, f"the openssl provider has no cipher {algorithm}"
        )
    if (
        not isinstance(key, SecretKey)
        or key.algorithm != spec.key_algorithm
        or len(key.secret) != spec.key_length
    ):
        raise invalid_argument(
            f"{algorithm} needs a {spec.key_length}-byte "
            f"{spec.key_algorithm} key, not {key.algorithm}"
        )
    iv = bytes(iv)
    encrypt = direction is CipherDirection.ENCRYPT
    limits = REGISTRY.get(algorithm)  # IV and tag limits are declared on the algorithm
    limits.check_iv(len(iv))
    if spec.mode in ("CBC", "CTR"):
        if spec.mode == "CTR":
            return _Ctr(key, iv)
        return _CbcEncrypt(key, iv) if encrypt else _CbcDecrypt(key, iv)
    limits.check_tag_length(tag_length)
    if spec.mode == "GCM":
        return _GcmEncrypt(key, iv, tag_length) if encrypt else _GcmDecrypt(key, iv, tag_length)
    return _ChaChaEncrypt(key, iv) if encrypt else _ChaChaDecrypt(key, iv)


def _aad_after_data() -> CryptoError:
    return CryptoError(ErrorCode.INVALID_STATE, "associated data must come before the data")


# --- unauthenticated modes -----------------------------------------------------------------


class _Ctr(CipherOperation):
    """AES-CTR with a 128-bit big-endian counter block (NIST SP 800-38A); both directions."""

    def __init__(self, key: SecretKey, iv: bytes) -> None:
        self._ctx = Cipher(key.aes, modes.CTR(iv)).encryptor()

    def update(self, data: Buffer) -> bytes:
        """Key stream XOR data."""
        return self._ctx.update(data)

    def finalize(self) -> bytes:
        """Nothing is held back in CTR mode."""
        return self._ctx.finalize()


class _CbcEncrypt(CipherOperation):
    """AES-CBC encryption with PKCS#7 padding."""

    def __init__(self, key: SecretKey, iv: bytes) -> None:
        self._padder = padding.PKCS7(128).padder()
        self._ctx = Cipher(key.aes, modes.CBC(iv)).encryptor()

    def update(self, data: Buffer) -> bytes:
        """Encrypt every complete block available."""
        return self._ctx.update(self._padder.update(data))

    def finalize(self) -> bytes:
        """Pad and encrypt the last block."""
        return self._ctx.update(self._padder.finalize()) + self._ctx.finalize()


class _CbcDecrypt(CipherOperation):
    """AES-CBC decryption; the last block is held back until the padding is checked."""

    def __init__(self, key: SecretKey, iv: bytes) -> None:
        self._unpadder = padding.PKCS7(128).unpadder()
        self._ctx = Cipher(key.aes, modes.CBC(iv)).decryptor()

    def update(self, data: Buffer) -> bytes:
        """Plaintext of every block but the last one seen so far."""
        return self._unpadder.update(self._ctx.update(data))

    def finalize(self) -> bytes:
        """Check and strip the padding; a malformed message raises INVALID_ARGUMENT."""
        try:
            tail = self._ctx.finalize()
        except ValueError:
            raise invalid_argument("AES-CBC ciphertext is not a whole number of blocks") from None
        try:
            return self._unpadder.update(tail) + self._unpadder.finalize()
        except ValueError:
            raise invalid_argument("AES-CBC decryption failed: bad PKCS#7 padding") from None


# --- AES-GCM -----------------------------------------------------------------------------------


class _GcmEncrypt(CipherOperation):
    """Streaming AES-GCM encryption; the tag (truncated to ``tag_length``) ends the output."""

    def __init__(self, key: SecretKey, iv: bytes, tag_length: int) -> None:
        self._ctx = Cipher(key.aes, modes.GCM(iv)).encryptor()
        self._tag_length = tag_length
        self._started = False

    def update_aad(self, data: Buffer) -> None:
        """Authenticate associated data."""
        if self._started:
            raise _aad_after_data()
        self._ctx.authenticate_additional_data(data)

    def update(self, data: Buffer) -> bytes:
        """Ciphertext for ``data``."""
        self._started = True
        return self._ctx.update(data)

    def finalize(self) -> bytes:
        """The tag."""
        self._started = True
        tail = self._ctx.finalize()
        return tail + self._ctx.tag[: self._tag_length]


class _HeldAeadDecrypt(CipherOperation):
    """AEAD decryption that holds ciphertext and associated data until :meth:`finalize`,
    where subclasses open the whole message: no plaintext before the tag has verified."""

    def __init__(self) -> None:
        self._aad: list[bytes] = []
        self._data = bytearray()
        self._started = False

    def update_aad(self, data: Buffer) -> None:
        """Collect associated data."""
        if self._started:
            raise _aad_after_data()
        self._aad.append(bytes(data))

    def update(self, data: Buffer) -> bytes:
        """Collect ciphertext; no plaintext is released before the tag has verified."""
        self._started = True
        self._data += data
        return b""


class _GcmDecrypt(_HeldAeadDecrypt):
    """AES-GCM decryption."""

    def __init__(self, key: SecretKey, iv: bytes, tag_length: int) -> None:
        super().__init__()
        self._key = key
        self._iv = iv
        self._tag_length = tag_length

    def finalize(self) -> bytes:
        """Verify the tag (constant time, in OpenSSL) and return the whole plaintext."""
        if len(self._data) < self._tag_length:
            raise invalid_argument(f"AES-GCM input is shorter than its {self._tag_length}-byte tag")
        aad = b"".join(self._aad)
        try:
            if self._tag_length == 16:
                return self._key.aesgcm.decrypt(self._iv, bytes(self._data), aad)
            split = len(self._data) - self._tag_length
            tag = bytes(self._data[split:])
            ctx = Cipher(
                self._key.aes, modes.GCM(self._iv, tag, min_tag_length=self._tag_length)
            ).decryptor()
            ctx.authenticate_additional_data(aad)
            plaintext = ctx.update(bytes(self._data[:split]))
            return plaintext + ctx.finalize()
        except InvalidTag:
            raise CryptoError(
                ErrorCode.AUTHENTICATION_FAILED,
                "AES-GCM tag mismatch: the message or its tag was altered",
            ) from None


# --- ChaCha20-Poly1305 -----------------------------------------------------------------------


def _pad16(length: int) -> bytes:
    return bytes(-length % 16)


class _ChaChaEncrypt(CipherOperation):
    """Streaming ChaCha20-Poly1305 encryption composed as in RFC 8439 section 2.8."""

    def __init__(self, key: SecretKey, nonce: bytes) -> None:
        # Block counter 0 yields the one-time Poly1305 key; the message starts at counter 1,
        # which is where this key stream continues after the first 64 bytes.
        self._stream = Cipher(
            algorithms.ChaCha20(key.secret, bytes(4) + nonce), mode=None
        ).encryptor()
        self._mac = poly1305.Poly1305(self._stream.update(bytes(64))[:32])
        self._aad_length = 0
        self._length = 0
        self._started = False

    def update_aad(self, data: Buffer) -> None:
        """Authenticate associated data."""
        if self._started:
            raise _aad_after_data()
        self._mac.update(data)
        self._aad_length += memoryview(data).nbytes

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._mac.update(_pad16(self._aad_length))

    def update(self, data: Buffer) -> bytes:
        """Ciphertext for ``data``."""
        self._start()
        out = self._stream.update(data)
        self._mac.update(out)
        self._length += len(out)
        return out

    def finalize(self) -> bytes:
        """The 16-byte tag."""
        self._start()
        self._mac.update(_pad16(self._length))
        self._mac.update(struct.pack("<QQ", self._aad_length, self._length))
        return self._mac.finalize()


class _ChaChaDecrypt(_HeldAeadDecrypt):
    """ChaCha20-Poly1305 decryption."""

    def __init__(self, key: SecretKey, nonce: bytes) -> None:
        super().__init__()
        self._key = key
        self._nonce = nonce

    def finalize(self) -> bytes:
        """Verify the tag and return the whole plaintext."""
        if len(self._data) < _CHACHA20_POLY1305_TAG:
            raise invalid_argument("ChaCha20-Poly1305 input is shorter than its 16-byte tag")
        try:
            return self._key.chacha20_poly1305.decrypt(
                self._nonce, bytes(self._data), b"".join(self._aad)
            )
        except InvalidTag:
            raise CryptoError(
                ErrorCode.AUTHENTICATION_FAILED,
                "ChaCha20-Poly1305 tag mismatch: the message or its tag was altered",
            ) from None
