"""Operation objects (one message each), in the provider process, driving the worker.

Round trips to the TPM dominate, so the objects batch:

* hash and HMAC input is buffered; a message that ends within one TPM buffer (1024 bytes
  on swtpm) costs one TPM2_Hash / TPM2_HMAC at finalize. Longer messages open a TPM
  sequence (HashSequenceStart / HMAC_Start) and stream in batches of up to 32 KiB per
  worker call, which the worker splits into TPM-buffer-sized SequenceUpdates.
* ECDSA / RSA-PSS with an ordinary (unrestricted) TPM key hash the message in software --
  a digest is public, and TPM2_Sign of an unrestricted key needs no hash ticket -- and make
  one TPM2_Sign or TPM2_VerifySignature. A *restricted* key (pre-deployed attestation-style
  keys) signs only digests the TPM computed itself, so the message then goes through a TPM
  hash sequence that yields the required ticket.
* ciphers send whole blocks (the IV chains across calls only on block boundaries) and keep
  the partial tail for later; AES-CBC adds and strips PKCS#7 padding here, since the TPM's
  CBC has none.
"""

from __future__ import annotations

import hashlib
import hmac
import weakref
from typing import Any

from cryptography.hazmat.primitives import padding

from cryptostack_core.sdk import (
    Buffer,
    CipherOperation,
    CryptoError,
    ErrorCode,
    HashOperation,
    SignOperation,
    VerifyOperation,
)
from cryptostack_core.sdk.workers import StaleGeneration, WorkerHost

from .hosting import lost_sequence
from .keys import TpmKey
from .signatures import ecdsa_from_der, ecdsa_to_der, pss_salt_length

STREAM_BATCH = 32 * 1024
"""Bytes buffered before a long message is sent on to the TPM sequence."""

_BLOCK = 16


class _TpmStream:
    """A hash or HMAC computed by the TPM over a streamed message."""

    def __init__(self, proxy: WorkerHost, kind: str, alg: int, key: TpmKey | None,
                 one_shot_limit: int, ticket: bool = False) -> None:
        self._proxy = proxy
        self._kind = kind
        self._alg = alg
        self._key = key
        self._limit = one_shot_limit
        self._ticket = ticket
        self._pending = bytearray()
        self._seq: int | None = None
        self._generation = 0
        self._finalizer: Any = None

    def update(self, data: Buffer) -> None:
        self._pending += data
        if len(self._pending) >= STREAM_BATCH:
            self._send()

    def _send(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        if self._seq is None:
            ref = self._key.ref if self._key is not None else None
            self._seq, self._generation = self._proxy.call_in(
                "seq_start", self._kind, self._alg, ref, data)
            # A context dropped without finalize must not keep a TPM slot or saved context.
            self._finalizer = weakref.finalize(self, self._proxy.queue_cleanup,
                                               self._generation, (self._seq,))
        else:
            try:
                self._proxy.call("seq_update", self._seq, data, generation=self._generation)
            except StaleGeneration:
                raise lost_sequence() from None

    def complete(self) -> tuple[bytes, bytes | None]:
        """(digest or MAC, hash-check ticket when asked for)."""
        data = bytes(self._pending)
        self._pending.clear()
        if self._seq is None:
            if self._kind == "hmac":
                assert self._key is not None
                return self._proxy.call("hmac", self._key.ref, self._alg, data), None
            result: tuple[bytes, bytes | None] = self._proxy.call(
                "hash", self._alg, data, self._ticket)
            return result
        self._finalizer.detach()
        try:
            result = self._proxy.call("seq_finish", self._seq, data, self._ticket,
                                      generation=self._generation)
        except StaleGeneration:
            raise lost_sequence() from None
        return result


class TpmHash(HashOperation):
    """SHA-2 digest computed by the TPM."""

    def __init__(self, proxy: WorkerHost, alg: int, one_shot_limit: int) -> None:
        self._stream = _TpmStream(proxy, "hash", alg, None, one_shot_limit)

    def update(self, data: Buffer) -> None:
        """Absorb more data."""
        self._stream.update(data)

    def finalize(self) -> bytes:
        """The digest."""
        return self._stream.complete()[0]


class TpmMacSigner(SignOperation):
    """HMAC computed by the TPM with a TPM-resident key."""

    def __init__(self, proxy: WorkerHost, key: TpmKey, alg: int, one_shot_limit: int) -> None:
        self._stream = _TpmStream(proxy, "hmac", alg, key, one_shot_limit)

    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""
        self._stream.update(data)

    def finalize(self) -> bytes:
        """The full MAC."""
        return self._stream.complete()[0]


class TpmMacVerifier(VerifyOperation):
    """HMAC check: the TPM computes the MAC; the comparison is constant-time here.

    A truncated tag (a prefix of the MAC) is accepted down to ``min_length`` bytes."""

    def __init__(self, proxy: WorkerHost, key: TpmKey, alg: int, one_shot_limit: int,
                 min_length: int) -> None:
        self._stream = _TpmStream(proxy, "hmac", alg, key, one_shot_limit)
        self._min_length = min_length

    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""
        self._stream.update(data)

    def finalize(self, signature: bytes) -> bool:
        """True if ``signature`` is the MAC (or an allowed prefix of it)."""
        mac = self._stream.complete()[0]
        tag = bytes(signature)
        if not self._min_length <= len(tag) <= len(mac):
            return False
        return hmac.compare_digest(mac[:len(tag)], tag)


class TpmSigner(SignOperation):
    """ECDSA or RSA-PSS signature made by TPM2_Sign (DER for ECDSA)."""

    def __init__(self, proxy: WorkerHost, key: TpmKey, scheme: int, hash_name: str,
                 hash_alg: int, one_shot_limit: int) -> None:
        self._proxy = proxy
        self._key = key
        self._scheme = scheme
        self._hash_alg = hash_alg
        self._software = hashlib.new(hash_name.replace("-", "").lower())
        self._tpm: _TpmStream | None = None
        if key.restricted:
            self._tpm = _TpmStream(proxy, "hash", hash_alg, None, one_shot_limit, ticket=True)

    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""
        if self._tpm is not None:
            self._tpm.update(data)
        else:
            self._software.update(data)

    def finalize(self) -> bytes:
        """Sign the digest in the TPM."""
        ticket = None
        if self._tpm is not None:
            digest, ticket = self._tpm.complete()
        else:
            digest = self._software.digest()
        signature = self._proxy.call("sign", self._key.ref, digest, self._scheme,
                                     self._hash_alg, ticket)
        if signature[0] == "ecdsa":
            return ecdsa_to_der(signature[1], signature[2])
        return bytes(signature[1])


class TpmVerifier(VerifyOperation):
    """ECDSA or RSA-PSS verification by TPM2_VerifySignature."""

    def __init__(self, proxy: WorkerHost, key: TpmKey, algorithm: str, hash_name: str,
                 hash_alg: int, *, rsa_public: tuple[int, int] | None = None
                 ) -> None:
        self._proxy = proxy
        self._key = key
        self._algorithm = algorithm
        self._hash_name = hash_name.replace("-", "").lower()
        self._hash_alg = hash_alg
        self._software = hashlib.new(self._hash_name)
        self._rsa_public = rsa_public

    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""
        self._software.update(data)

    def finalize(self, signature: bytes) -> bool:
        """True if the TPM accepts ``signature`` (and, for PSS, the salt is digest-sized)."""
        digest = self._software.digest()
        sig: tuple[Any, ...]
        if self._rsa_public is None:
            parsed = ecdsa_from_der(signature, self._algorithm)
            if parsed is None:
                return False
            sig = ("ecdsa", *parsed)
        else:
            n, e = self._rsa_public
            if len(signature) != (n.bit_length() + 7) // 8:
                return False
            sig = ("rsapss", bytes(signature))
        ok = bool(self._proxy.call("verify", self._key.ref, digest, sig, self._hash_alg))
        if ok and self._rsa_public is not None:
            n, e = self._rsa_public
            ok = pss_salt_length(bytes(signature), n, e, self._hash_name) == len(digest)
        return ok


class TpmCipher(CipherOperation):
    """AES in CFB, CTR or CBC mode (PKCS#7 padded) through TPM2_EncryptDecrypt2."""

    def __init__(self, proxy: WorkerHost, key: TpmKey, mode: str, tpm_mode: int,
                 decrypt: bool, iv: bytes) -> None:
        self._proxy = proxy
        self._key = key
        self._mode = mode
        self._tpm_mode = tpm_mode
        self._decrypt = decrypt
        self._iv = iv
        self._buffer = bytearray()

    def _run(self, data: bytes) -> bytes:
        if not data:
            return b""
        out, self._iv = self._proxy.call("cipher", self._key.ref, self._decrypt,
                                         self._tpm_mode, self._iv, data)
        return bytes(out)

    def update(self, data: Buffer) -> bytes:
        """Process the whole blocks available (CBC decryption keeps the last one back,
        since it holds the padding)."""
        self._buffer += data
        if self._mode == "CBC" and self._decrypt:
            ready = max(0, (len(self._buffer) - 1) // _BLOCK * _BLOCK)
        else:
            ready = len(self._buffer) // _BLOCK * _BLOCK
        chunk = bytes(self._buffer[:ready])
        del self._buffer[:ready]
        return self._run(chunk)

    def finalize(self) -> bytes:
        """The tail: a partial block (CFB/CTR), the padded block (CBC encryption) or the
        unpadded last block (CBC decryption; bad padding -> INVALID_ARGUMENT)."""
        tail = bytes(self._buffer)
        self._buffer.clear()
        if self._mode != "CBC":
            return self._run(tail)
        if not self._decrypt:
            padder = padding.PKCS7(128).padder()
            return self._run(padder.update(tail) + padder.finalize())
        if len(tail) != _BLOCK:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              "AES-CBC ciphertext is not a whole number of blocks")
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(self._run(tail)) + unpadder.finalize()
        except ValueError:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              "AES-CBC decryption failed: bad PKCS#7 padding") from None
