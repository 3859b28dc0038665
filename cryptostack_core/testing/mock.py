"""A deterministic, in-memory provider for core tests (entry point ``mock``).

It implements a small real algorithm set (so flows can be checked against known answers)
and adds fault injection:

It is a test provider (``test_only``): a daemon serves it only with ``[daemon]
allow_test_providers = true``, and the default stack never picks it.

``options``:
    ``seed`` (str): keys and random bytes are derived from it and a counter, so runs are
    reproducible. Without a seed they come from the OS (``os.urandom``).
    ``delay`` (float s): sleep in every call; ``delays`` ({call: seconds}) per call name.
    ``gates`` ({call: path}): the call stops at the :class:`~cryptostack_core.testing.waiting.Gate`
    listening at ``path`` until the test opens it (ordering across processes without sleeps).
    ``fail`` ({call: ERROR_CODE or "crash"}): raise that error from the call.
    ``algorithms`` (list): restrict the capabilities.
    ``extractable`` (bool, default true): whether keys may move to other providers.
    ``unavailable`` (str): fail ``start()`` with this reason.
    ``down_file`` (path): while this file exists, ``state()`` reports UNAVAILABLE with its
    content as the reason (a backend that goes away after start, for health checks).

Call names: ``generate_key import_key export_key persist_key load_stored_key random derive
hash.init hash.update hash.finalize cipher.init cipher.update cipher.finalize sign.init
sign.update sign.finalize verify.init verify.update verify.finalize``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_private_key,
    load_der_public_key,
)

from cryptostack_core.sdk import (
    Buffer,
    Capability,
    CipherDirection,
    CipherOperation,
    CryptoError,
    ErrorCode,
    HashOperation,
    KeyFormat,
    KeyOperationPermission,
    Operation,
    Provider,
    ProviderEnvironment,
    ProviderKey,
    ProviderState,
    SignOperation,
    StoredKey,
    VerifyOperation,
)
from cryptostack_core.testing.waiting import pass_gate

HASHES = {"SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512", "SHA3-256": "sha3_256"}
SYMMETRIC = {"AES-128": 16, "AES-256": 32, "HMAC-SHA-256": 32, "HMAC-SHA-512": 64, "GENERIC-SECRET": 32}
CIPHERS = {
    "AES-128-CBC": "AES-128",
    "AES-256-CBC": "AES-256",
    "AES-128-GCM": "AES-128",
    "AES-256-GCM": "AES-256",
}
MACS = {"HMAC-SHA-256": "sha256", "HMAC-SHA-512": "sha512"}
SIGNATURES = ("ECDSA-P256", "Ed25519")


class MockKey(ProviderKey):
    """Key material held in memory."""

    def __init__(
        self, algorithm: str, material: bytes, has_private: bool = True, extractable: bool = True
    ) -> None:
        self.algorithm = algorithm
        self.material = material
        self.has_private = has_private
        self.extractable = extractable
        self.size = len(material)


class MockProvider(Provider):
    """See the module docstring."""

    name = "mock"
    test_only = True

    def __init__(
        self, provider_id: int, options: Mapping[str, Any], environment: ProviderEnvironment
    ) -> None:
        super().__init__(provider_id, options, environment)
        seed = self.options.get("seed")
        self._seed = None if seed is None else str(seed).encode()
        self._counter = 0
        self._lock = threading.Lock()
        self.delay = float(self.options.get("delay", 0))
        self.delays: dict[str, float] = {k: float(v) for k, v in dict(self.options.get("delays", {})).items()}
        self.failures: dict[str, str] = dict(self.options.get("fail", {}))
        self.gates: dict[str, str] = {str(k): str(v) for k, v in dict(self.options.get("gates", {})).items()}
        self.extractable = bool(self.options.get("extractable", True))
        self.calls: list[str] = []

    def start(self) -> None:
        reason = self.options.get("unavailable")
        if reason:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, str(reason))

    def state(self) -> tuple[ProviderState, str]:
        down = self.options.get("down_file")
        if down:
            try:
                with open(down, encoding="utf-8") as reason:
                    return ProviderState.UNAVAILABLE, reason.read().strip() or "down"
            except FileNotFoundError:
                pass
        return ProviderState.READY, ""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "mock (test provider, not for production)",
            "randomness": "seeded (reproducible)" if self._seed is not None else "os.urandom",
        }

    # --- fault injection -------------------------------------------------------------
    def fault(self, call: str) -> None:
        """Apply the configured delay and failure for ``call``."""
        self.calls.append(call)
        gate = self.gates.get(call)
        if gate is not None:
            pass_gate(gate)
        delay = self.delays.get(call, self.delay)
        if delay:
            time.sleep(delay)
        failure = self.failures.get(call)
        if failure == "crash":
            raise RuntimeError(f"injected crash in {call}")
        if failure:
            raise CryptoError(ErrorCode(failure), f"injected failure in {call}")

    def _derive(self, label: str, size: int) -> bytes:
        if self._seed is None:
            return os.urandom(size)
        with self._lock:
            self._counter += 1
            counter = self._counter
        out = b""
        block = 0
        while len(out) < size:
            out += hashlib.sha256(
                self._seed + label.encode() + counter.to_bytes(8, "big") + block.to_bytes(4, "big")
            ).digest()
            block += 1
        return out[:size]

    # --- capabilities ----------------------------------------------------------------
    def capabilities(self) -> Iterable[Capability]:
        caps: list[Capability] = [Capability("RANDOM", Operation.RANDOM)]
        caps += [Capability(h, Operation.HASH) for h in HASHES]
        for key in (*SYMMETRIC, *SIGNATURES):
            caps += [Capability(key, Operation.GENERATE_KEY), Capability(key, Operation.IMPORT_KEY)]
        for c in CIPHERS:
            caps += [Capability(c, Operation.ENCRYPT), Capability(c, Operation.DECRYPT)]
        for m in (*MACS, *SIGNATURES):
            caps += [Capability(m, Operation.SIGN), Capability(m, Operation.VERIFY)]
        caps.append(Capability("HKDF-SHA-256", Operation.DERIVE))
        allowed = self.options.get("algorithms")
        if allowed:
            caps = [c for c in caps if c.algorithm in allowed or c.algorithm == "RANDOM"]
        return caps

    def run_inline(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        return not (self.delay or self.delays or self.failures or self.gates) and size <= 65536

    # --- keys ------------------------------------------------------------------------
    def _key(self, algorithm: str, material: bytes, has_private: bool = True) -> MockKey:
        return MockKey(algorithm, material, has_private, self.extractable)

    def generate_key(self, algorithm: str, permissions: KeyOperationPermission) -> ProviderKey:
        self.fault("generate_key")
        if algorithm in SYMMETRIC:
            return self._key(algorithm, self._derive(algorithm, SYMMETRIC[algorithm]))
        if algorithm == "Ed25519":
            return self._key(algorithm, self._derive(algorithm, 32))
        if algorithm == "ECDSA-P256":
            scalar = int.from_bytes(self._derive(algorithm, 40), "big") % (2**256 - 2**224) + 1
            return self._key(algorithm, scalar.to_bytes(32, "big"))
        raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"mock cannot generate {algorithm}")

    def import_key(
        self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: KeyOperationPermission
    ) -> ProviderKey:
        self.fault("import_key")
        if algorithm in SYMMETRIC:
            if fmt is not KeyFormat.RAW:
                raise CryptoError(ErrorCode.INVALID_ARGUMENT, "secret keys are imported RAW")
            size = SYMMETRIC[algorithm]
            if algorithm.startswith("AES") and len(material) != size:
                raise CryptoError(
                    ErrorCode.INVALID_ARGUMENT, f"{algorithm} keys are {size} bytes, got {len(material)}"
                )
            if not material:
                raise CryptoError(ErrorCode.INVALID_ARGUMENT, "empty key")
            return self._key(algorithm, bytes(material))
        if algorithm in SIGNATURES and fmt is KeyFormat.SPKI_DER:
            try:
                pub = load_der_public_key(material)
            except ValueError as exc:
                raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"malformed SPKI: {exc}") from None
            return self._key(
                algorithm,
                pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
                has_private=False,
            )
        if algorithm in SIGNATURES and fmt is KeyFormat.PKCS8_DER:
            # What export_key(PKCS8_DER) writes imports back (the daemon moves keys this way).
            try:
                private = load_der_private_key(bytes(material), None)
            except (ValueError, TypeError) as exc:
                raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"malformed PKCS#8: {exc}") from None
            if algorithm == "Ed25519" and isinstance(private, ed25519.Ed25519PrivateKey):
                return self._key(
                    algorithm, private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
                )
            if (
                algorithm == "ECDSA-P256"
                and isinstance(private, ec.EllipticCurvePrivateKey)
                and isinstance(private.curve, ec.SECP256R1)
            ):
                return self._key(algorithm, private.private_numbers().private_value.to_bytes(32, "big"))
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"the PKCS#8 key is not {algorithm}")
        if algorithm == "Ed25519" and fmt is KeyFormat.RAW and len(material) == 32:
            if not permissions & KeyOperationPermission.SIGN:
                # RAW is a public key unless a private-key operation was asked for (API.md).
                public = ed25519.Ed25519PublicKey.from_public_bytes(bytes(material))
                return self._key(
                    algorithm,
                    public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
                    has_private=False,
                )
            return self._key(algorithm, bytes(material))
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"mock cannot import {algorithm} as {fmt.value}")

    def _private(self, key: MockKey) -> Any:
        if key.algorithm == "Ed25519":
            return ed25519.Ed25519PrivateKey.from_private_bytes(key.material)
        return ec.derive_private_key(int.from_bytes(key.material, "big"), ec.SECP256R1())

    def _public(self, key: MockKey) -> Any:
        if not key.has_private:
            return load_der_public_key(key.material)
        return self._private(key).public_key()

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        self.fault("export_key")
        assert isinstance(key, MockKey)
        if key.algorithm in SYMMETRIC and fmt is KeyFormat.RAW:
            return key.material
        if key.algorithm in SIGNATURES and fmt is KeyFormat.PKCS8_DER:
            return self._private(key).private_bytes(  # type: ignore[no-any-return]
                Encoding.DER, PrivateFormat.PKCS8, NoEncryption()
            )
        if key.algorithm == "Ed25519" and fmt is KeyFormat.RAW:
            return key.material
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"mock cannot export {key.algorithm} as {fmt.value}")

    def export_public_key(self, key: ProviderKey, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        assert isinstance(key, MockKey)
        if key.algorithm not in SIGNATURES:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "not an asymmetric key")
        return self._public(key).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        self.fault("persist_key")
        assert isinstance(key, MockKey)
        return StoredKey(key.algorithm.encode() + b"\0" + key.material, secret=True)

    def load_stored_key(
        self, stored: StoredKey, algorithm: str, permissions: KeyOperationPermission
    ) -> ProviderKey:
        self.fault("load_stored_key")
        name, _, material = stored.blob.partition(b"\0")
        if name.decode() != algorithm:
            raise CryptoError(ErrorCode.INTERNAL_ERROR, "stored key algorithm mismatch")
        return self._key(algorithm, material)

    def random_bytes(self, length: int) -> bytes:
        self.fault("random")
        return self._derive("random", length)

    def derive(
        self,
        algorithm: str,
        key: ProviderKey,
        *,
        length: int,
        salt: bytes,
        info: bytes,
        output_algorithm: str,
        permissions: KeyOperationPermission,
    ) -> ProviderKey:
        self.fault("derive")
        assert isinstance(key, MockKey)
        if not 1 <= length <= 255 * 32:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"HKDF-SHA-256 output is 1..8160 bytes, got {length}"
            )
        out = HKDF(hashes.SHA256(), length, salt or None, info).derive(key.material)
        return self._key(output_algorithm, out)

    # --- operations ------------------------------------------------------------------
    def create_hash(self, algorithm: str) -> HashOperation:
        self.fault("hash.init")
        return _MockHash(self, hashlib.new(HASHES[algorithm]))

    def create_cipher(
        self, algorithm: str, key: ProviderKey, direction: CipherDirection, iv: bytes, tag_length: int
    ) -> CipherOperation:
        self.fault("cipher.init")
        assert isinstance(key, MockKey)
        if algorithm.endswith("GCM"):
            if len(iv) != 12:
                raise CryptoError(ErrorCode.INVALID_ARGUMENT, "mock AES-GCM takes a 12-byte nonce")
            return _MockGcm(self, key.material, iv, direction, tag_length)
        if len(iv) != 16:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"{algorithm} needs a 16-byte IV, got {len(iv)} bytes"
            )
        return _MockCbc(self, key.material, iv, direction)

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        self.fault("sign.init")
        assert isinstance(key, MockKey)
        return _MockSigner(self, algorithm, key)

    def create_verifier(self, algorithm: str, key: ProviderKey, context: bytes) -> VerifyOperation:
        self.fault("verify.init")
        assert isinstance(key, MockKey)
        return _MockVerifier(self, algorithm, key)


class _MockHash(HashOperation):
    def __init__(self, provider: MockProvider, state: Any) -> None:
        self.p, self.state = provider, state

    def update(self, data: Buffer) -> None:
        self.p.fault("hash.update")
        self.state.update(data)

    def finalize(self) -> bytes:
        self.p.fault("hash.finalize")
        return self.state.digest()  # type: ignore[no-any-return]


class _MockCbc(CipherOperation):
    def __init__(self, provider: MockProvider, key: bytes, iv: bytes, direction: CipherDirection) -> None:
        self.p = provider
        cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
        self.encrypting = direction is CipherDirection.ENCRYPT
        self.ctx = cipher.encryptor() if self.encrypting else cipher.decryptor()
        self.pad = padding.PKCS7(128).padder() if self.encrypting else padding.PKCS7(128).unpadder()

    def update(self, data: Buffer) -> bytes:
        self.p.fault("cipher.update")
        if self.encrypting:
            return self.ctx.update(self.pad.update(bytes(data)))
        return self.pad.update(self.ctx.update(bytes(data)))

    def finalize(self) -> bytes:
        self.p.fault("cipher.finalize")
        try:
            if self.encrypting:
                return self.ctx.update(self.pad.finalize()) + self.ctx.finalize()
            return self.pad.update(self.ctx.finalize()) + self.pad.finalize()
        except ValueError:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "bad padding or length of the ciphertext") from None


class _MockGcm(CipherOperation):
    def __init__(
        self, provider: MockProvider, key: bytes, iv: bytes, direction: CipherDirection, tag_length: int
    ) -> None:
        self.p, self.key, self.iv, self.tag_length = provider, key, iv, tag_length
        self.encrypting = direction is CipherDirection.ENCRYPT
        self.aad = b""
        self.data = bytearray()
        if self.encrypting:
            self.ctx = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()

    def update_aad(self, data: Buffer) -> None:
        self.aad += bytes(data)
        if self.encrypting:
            self.ctx.authenticate_additional_data(bytes(data))

    def update(self, data: Buffer) -> bytes:
        self.p.fault("cipher.update")
        if self.encrypting:
            return self.ctx.update(bytes(data))
        self.data += data
        return b""

    def finalize(self) -> bytes:
        self.p.fault("cipher.finalize")
        if self.encrypting:
            out = self.ctx.finalize()
            return out + self.ctx.tag[: self.tag_length]
        if len(self.data) < self.tag_length:
            raise CryptoError(ErrorCode.AUTHENTICATION_FAILED, "message shorter than the tag")
        body, tag = bytes(self.data[: -self.tag_length]), bytes(self.data[-self.tag_length :])
        ctx = Cipher(algorithms.AES(self.key), modes.GCM(self.iv, tag, min_tag_length=4)).decryptor()
        ctx.authenticate_additional_data(self.aad)
        try:
            return ctx.update(body) + ctx.finalize()
        except InvalidTag:
            raise CryptoError(ErrorCode.AUTHENTICATION_FAILED, "AES-GCM tag mismatch") from None


class _MockSigner(SignOperation):
    def __init__(self, provider: MockProvider, algorithm: str, key: MockKey) -> None:
        self.p, self.algorithm, self.key = provider, algorithm, key
        self.buf = bytearray()

    def update(self, data: Buffer) -> None:
        self.p.fault(f"{self._kind}.update")
        self.buf += data

    _kind = "sign"

    def _tag(self) -> bytes:
        return hmac.new(self.key.material, bytes(self.buf), MACS[self.algorithm]).digest()

    def finalize(self) -> bytes:
        self.p.fault("sign.finalize")
        if self.algorithm in MACS:
            return self._tag()
        private = self.p._private(self.key)
        if self.algorithm == "Ed25519":
            return private.sign(bytes(self.buf))  # type: ignore[no-any-return]
        return private.sign(bytes(self.buf), ec.ECDSA(hashes.SHA256()))  # type: ignore[no-any-return]


class _MockVerifier(_MockSigner, VerifyOperation):
    _kind = "verify"

    async def finalize_async(self, signature: bytes) -> bool:  # type: ignore[override]
        return self.finalize(signature)

    def finalize(self, signature: bytes) -> bool:  # type: ignore[override]
        self.p.fault("verify.finalize")
        if self.algorithm in MACS:
            return hmac.compare_digest(self._tag(), signature)
        public = self.p._public(self.key)
        try:
            if self.algorithm == "Ed25519":
                public.verify(signature, bytes(self.buf))
            else:
                public.verify(signature, bytes(self.buf), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True
