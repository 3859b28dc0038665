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

Async first: every step that talks to the TPM worker is a coroutine (``*_async``) that the
daemon awaits on its event loop, where the worker host runs; the synchronous methods do the
local part (buffering, hashing) in the caller's thread and run the worker part with
:meth:`~cryptostack_core.sdk.workers.WorkerHost.run`.
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

    def __init__(
        self,
        host: WorkerHost,
        kind: str,
        alg: int,
        key: TpmKey | None,
        one_shot_limit: int,
        ticket: bool = False,
    ) -> None:
        self._host = host
        self._kind = kind
        self._alg = alg
        self._key = key
        self._limit = one_shot_limit
        self._ticket = ticket
        self._pending = bytearray()
        self._seq: int | None = None
        self._generation = 0
        self._finalizer: Any = None

    def _hold(self, data: Buffer) -> bool:
        self._pending += data
        return len(self._pending) >= STREAM_BATCH

    def update(self, data: Buffer) -> None:
        """Absorb more (from a thread)."""
        if self._hold(data):
            self._host.run(self._send())

    async def update_async(self, data: Buffer) -> None:
        """Absorb more (on the host's loop)."""
        if self._hold(data):
            await self._send()

    async def _send(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        if self._seq is None:
            ref = self._key.ref if self._key is not None else None
            self._seq, self._generation = await self._host.call_async(
                "seq_start", self._kind, self._alg, ref, data
            )
            # A context dropped without finalize must not keep a TPM slot or saved context.
            self._finalizer = weakref.finalize(self, self._host.queue_cleanup, self._generation, (self._seq,))
        else:
            try:
                await self._host.call_async("seq_update", self._seq, data, generation=self._generation)
            except StaleGeneration:
                raise lost_sequence() from None

    async def complete(self) -> tuple[bytes, bytes | None]:
        """(digest or MAC, hash-check ticket when asked for)."""
        data = bytes(self._pending)
        self._pending.clear()
        if self._seq is None:
            if self._kind == "hmac":
                assert self._key is not None
                mac, _generation = await self._host.call_async("hmac", self._key.ref, self._alg, data)
                return mac, None
            result, _generation = await self._host.call_async("hash", self._alg, data, self._ticket)
            return result[0], result[1]
        self._finalizer.detach()
        try:
            result, _generation = await self._host.call_async(
                "seq_finish", self._seq, data, self._ticket, generation=self._generation
            )
        except StaleGeneration:
            raise lost_sequence() from None
        return result[0], result[1]


class TpmHash(HashOperation):
    """SHA-2 digest computed by the TPM."""

    def __init__(self, host: WorkerHost, alg: int, one_shot_limit: int) -> None:
        self._host = host
        self._stream = _TpmStream(host, "hash", alg, None, one_shot_limit)

    def update(self, data: Buffer) -> None:
        """Absorb more data."""
        self._stream.update(data)

    async def update_async(self, data: Buffer) -> None:
        """Absorb more data (on the host's loop)."""
        await self._stream.update_async(data)

    def finalize(self) -> bytes:
        """The digest."""
        return self._host.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """The digest (on the host's loop)."""
        return (await self._stream.complete())[0]


class TpmMacSigner(SignOperation):
    """HMAC computed by the TPM with a TPM-resident key."""

    def __init__(self, host: WorkerHost, key: TpmKey, alg: int, one_shot_limit: int) -> None:
        self._host = host
        self._stream = _TpmStream(host, "hmac", alg, key, one_shot_limit)

    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""
        self._stream.update(data)

    async def update_async(self, data: Buffer) -> None:
        """Absorb more of the message (on the host's loop)."""
        await self._stream.update_async(data)

    def finalize(self) -> bytes:
        """The full MAC."""
        return self._host.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """The full MAC (on the host's loop)."""
        return (await self._stream.complete())[0]


class TpmMacVerifier(VerifyOperation):
    """HMAC check: the TPM computes the MAC; the comparison is constant-time here.

    A truncated tag (a prefix of the MAC) is accepted down to ``min_length`` bytes."""

    def __init__(self, host: WorkerHost, key: TpmKey, alg: int, one_shot_limit: int, min_length: int) -> None:
        self._host = host
        self._stream = _TpmStream(host, "hmac", alg, key, one_shot_limit)
        self._min_length = min_length

    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""
        self._stream.update(data)

    async def update_async(self, data: Buffer) -> None:
        """Absorb more of the message (on the host's loop)."""
        await self._stream.update_async(data)

    def finalize(self, signature: bytes) -> bool:
        """True if ``signature`` is the MAC (or an allowed prefix of it)."""
        return self._host.run(self.finalize_async(signature))

    async def finalize_async(self, signature: bytes) -> bool:
        """:meth:`finalize` on the host's loop."""
        mac = (await self._stream.complete())[0]
        tag = bytes(signature)
        if not self._min_length <= len(tag) <= len(mac):
            return False
        return hmac.compare_digest(mac[: len(tag)], tag)


class TpmSigner(SignOperation):
    """ECDSA or RSA-PSS signature made by TPM2_Sign (DER for ECDSA)."""

    def __init__(
        self, host: WorkerHost, key: TpmKey, scheme: int, hash_name: str, hash_alg: int, one_shot_limit: int
    ) -> None:
        self._host = host
        self._key = key
        self._scheme = scheme
        self._hash_alg = hash_alg
        self._software = hashlib.new(hash_name.replace("-", "").lower())
        self._tpm: _TpmStream | None = None
        if key.restricted:
            self._tpm = _TpmStream(host, "hash", hash_alg, None, one_shot_limit, ticket=True)

    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""
        if self._tpm is not None:
            self._tpm.update(data)
        else:
            self._software.update(data)

    async def update_async(self, data: Buffer) -> None:
        """Absorb more of the message (on the host's loop)."""
        if self._tpm is not None:
            await self._tpm.update_async(data)
        else:
            self._software.update(data)

    def finalize(self) -> bytes:
        """Sign the digest in the TPM."""
        return self._host.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the host's loop."""
        ticket = None
        if self._tpm is not None:
            digest, ticket = await self._tpm.complete()
        else:
            digest = self._software.digest()
        signature, _generation = await self._host.call_async(
            "sign", self._key.ref, digest, self._scheme, self._hash_alg, ticket
        )
        if signature[0] == "ecdsa":
            return ecdsa_to_der(signature[1], signature[2])
        return bytes(signature[1])


class TpmVerifier(VerifyOperation):
    """ECDSA or RSA-PSS verification by TPM2_VerifySignature."""

    def __init__(
        self,
        host: WorkerHost,
        key: TpmKey,
        algorithm: str,
        hash_name: str,
        hash_alg: int,
        *,
        rsa_public: tuple[int, int] | None = None,
    ) -> None:
        self._host = host
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
        return self._host.run(self.finalize_async(signature))

    async def finalize_async(self, signature: bytes) -> bool:
        """:meth:`finalize` on the host's loop."""
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
        valid, _generation = await self._host.call_async("verify", self._key.ref, digest, sig, self._hash_alg)
        ok = bool(valid)
        if ok and self._rsa_public is not None:
            n, e = self._rsa_public
            ok = pss_salt_length(bytes(signature), n, e, self._hash_name) == len(digest)
        return ok


class TpmCipher(CipherOperation):
    """AES in CFB, CTR or CBC mode (PKCS#7 padded) through TPM2_EncryptDecrypt2."""

    def __init__(
        self, host: WorkerHost, key: TpmKey, mode: str, tpm_mode: int, decrypt: bool, iv: bytes
    ) -> None:
        self._host = host
        self._key = key
        self._mode = mode
        self._tpm_mode = tpm_mode
        self._decrypt = decrypt
        self._iv = iv
        self._buffer = bytearray()

    async def _crypt(self, data: bytes) -> bytes:
        if not data:
            return b""
        (out, self._iv), _generation = await self._host.call_async(
            "cipher", self._key.ref, self._decrypt, self._tpm_mode, self._iv, data
        )
        return bytes(out)

    def _whole_blocks(self, data: Buffer) -> bytes:
        """Take ``data``; the whole blocks ready for the TPM (CBC decryption keeps the last
        one back, since it holds the padding)."""
        self._buffer += data
        if self._mode == "CBC" and self._decrypt:
            ready = max(0, (len(self._buffer) - 1) // _BLOCK * _BLOCK)
        else:
            ready = len(self._buffer) // _BLOCK * _BLOCK
        chunk = bytes(self._buffer[:ready])
        del self._buffer[:ready]
        return chunk

    def update(self, data: Buffer) -> bytes:
        """Process the whole blocks available."""
        chunk = self._whole_blocks(data)
        return self._host.run(self._crypt(chunk)) if chunk else b""

    async def update_async(self, data: Buffer) -> bytes:
        """:meth:`update` on the host's loop."""
        return await self._crypt(self._whole_blocks(data))

    def finalize(self) -> bytes:
        """The tail: a partial block (CFB/CTR), the padded block (CBC encryption) or the
        unpadded last block (CBC decryption; bad padding -> INVALID_ARGUMENT)."""
        return self._host.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the host's loop."""
        tail = bytes(self._buffer)
        self._buffer.clear()
        if self._mode != "CBC":
            return await self._crypt(tail)
        if not self._decrypt:
            padder = padding.PKCS7(128).padder()
            return await self._crypt(padder.update(tail) + padder.finalize())
        if len(tail) != _BLOCK:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, "AES-CBC ciphertext is not a whole number of blocks"
            )
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(await self._crypt(tail)) + unpadder.finalize()
        except ValueError:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, "AES-CBC decryption failed: bad PKCS#7 padding"
            ) from None
