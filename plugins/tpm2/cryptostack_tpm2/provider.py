"""TPM 2.0 provider: keys that never leave the TPM, via tpm2-pytss (ESAPI).

Options: see :mod:`.options`.

Design (see the modules for details): all TPM traffic runs in a worker process on the SDK's
worker host (:mod:`.worker`, :mod:`.hosting`; deadlines and restarts follow the host's one
rule) with a small object cache for the TPM's few transient slots (:mod:`.objects`); what the
TPM supports is discovered, not assumed (:mod:`.capabilities`).

Keys are created inside the TPM under the storage primary key (TPM2_Create; caller AES/HMAC
secrets go in as TPM2_Create sensitive data, caller private keys through TPM2_Import) and
kept as TPM blobs; persisting one stores its public/private blobs (``StoredKey(secret=False)``).
Keys are never extractable. Public keys imported for verification are loaded with
TPM2_LoadExternal and verification runs in the TPM (TPM2_VerifySignature). Pre-deployed keys
at persistent handles are imported with ``KeyFormat.RAW`` material ``b"tpm2-persistent:0x81..."``
and referenced, never evicted by the provider.

Signing hashes the message in software for ordinary keys (a digest is public; an unrestricted
TPM key signs any digest with a NULL ticket) and in the TPM for restricted keys (ticket).
ECDSA signatures are DER. RSA-PSS uses salt = digest length both ways: TPM2_Sign does so, and
since TPM2_VerifySignature accepts any salt, a verified signature's salt length is checked too.
AES-CBC is PKCS#7-padded in the provider (the TPM's CBC has no padding).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss.constants import TPM2_ALG
from tpm2_pytss.types import TPM2B_PUBLIC

from cryptostack_core.sdk import (
    AlgorithmKind,
    Capability,
    CipherDirection,
    CipherOperation,
    CryptoError,
    ErrorCode,
    HashOperation,
    KekSource,
    KeyFormat,
    Operation,
    Provider,
    ProviderEnvironment,
    ProviderKey,
    ProviderState,
    SignOperation,
    StoredKey,
    VerifyOperation,
)
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.sdk.workers import WorkerHost

from .capabilities import AES_MODES, CURVES, HASHES, HMACS, RSA_KEYS, RSA_PSS, derive_capabilities
from .hosting import worker_spec
from .kek import TpmSealedKek
from .keys import BLOB, EXTERNAL, PERSISTENT, TpmKey, decode_stored, encode_stored
from .operations import (
    TpmCipher,
    TpmHash,
    TpmMacSigner,
    TpmMacVerifier,
    TpmSigner,
    TpmVerifier,
)
from .options import TpmOptions, parse
from .templates import (
    check_public_matches,
    external_public,
    is_restricted,
    key_template,
    public_from_key,
    sensitive_from_key,
    signing_scheme,
)
from .worker import WorkerInfo

_PERSISTENT_REF = re.compile(rb"^tpm2-persistent:(0x81[0-9a-fA-F]{6})$")
_TSS2_PEM = b"-----BEGIN TSS2 PRIVATE KEY-----"
_OWNER = 0x40000001


_ASYNC_OPERATIONS = frozenset(
    {Operation.HASH, Operation.ENCRYPT, Operation.DECRYPT, Operation.SIGN, Operation.VERIFY}
)
_ASYNC_MAX_INPUT = 64 * 1024


class TPM2Provider(Provider):
    """cryptostack provider backed by a TPM 2.0 (see the module docstring for options)."""

    name = "tpm2"

    def __init__(
        self, provider_id: int, options: Mapping[str, Any], environment: ProviderEnvironment
    ) -> None:
        super().__init__(provider_id, options, environment)
        self.opts: TpmOptions = parse(options, environment.config_dir)
        self._min_mac = self.opts.min_mac_length
        self._host: WorkerHost | None = None
        self._info: WorkerInfo | None = None
        self._caps: frozenset[Capability] = frozenset()

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker process, connect to the TPM and discover what it supports."""
        self._host = WorkerHost(worker_spec(self.opts), self.opts.host_settings(), self.log)
        self._host.start()
        self._info = self._host.info
        self._caps = derive_capabilities(self.info.facts)
        self._capabilities = self._caps

    def close(self) -> None:
        """Stop the worker (it flushes its TPM objects first)."""
        if self._host is not None:
            self._host.close()

    def state(self) -> tuple[ProviderState, str]:
        """READY, DEGRADED while the worker restarts, UNAVAILABLE if it cannot."""
        if self._host is None:
            return ProviderState.UNAVAILABLE, "not started"
        return self._host.state()

    def describe(self) -> dict[str, Any]:
        """TPM facts, worker pid, restart and timeout counts."""
        if self._host is None or self._info is None:
            return {}
        return {
            "tcti": self.opts.tcti,
            **self._info.facts.describe(),
            "object_slots": self._info.capacity,
            **self._host.describe(),
        }

    @property
    def host(self) -> WorkerHost:
        """The worker host (started)."""
        if self._host is None:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "tpm2 provider not started")
        return self._host

    @property
    def info(self) -> WorkerInfo:
        """What the current worker found at start."""
        if self._info is None:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "tpm2 provider not started")
        return self._info

    def runs_async(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        """Stream calls are awaited on the TPM worker's host loop (the daemon's), up to
        64 KiB of input (local work: buffering, or hashing for signatures)."""
        return operation in _ASYNC_OPERATIONS and size <= _ASYNC_MAX_INPUT

    def event_loop(self) -> asyncio.AbstractEventLoop | None:
        """The TPM worker's host loop: awaited calls run there."""
        return self._host.loop if self._host is not None else None

    def capabilities(self) -> Iterable[Capability]:
        """Discovered at start from the TPM (see :mod:`.capabilities`)."""
        return self._caps

    def _require(self, algorithm: str, operation: Operation) -> None:
        if not self.supports(algorithm, operation):
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"this TPM does not support {algorithm} for {operation.value}",
            )

    @staticmethod
    def _key(key: ProviderKey) -> TpmKey:
        if not isinstance(key, TpmKey):
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "not a tpm2 key")
        return key

    # --- keys ------------------------------------------------------------------------
    def _new_blob_key(self, algorithm: str, public: bytes, private: bytes, size: int = 0) -> TpmKey:
        pub = TPM2B_PUBLIC.unmarshal(public)[0]
        return TpmKey(
            algorithm,
            BLOB,
            public,
            private=private,
            parent_name=self.info.primary_name,
            restricted=is_restricted(pub),
            size=size or self._size_of(algorithm, pub),
        )

    @staticmethod
    def _size_of(algorithm: str, public: TPM2B_PUBLIC) -> int:
        if algorithm in RSA_KEYS:
            return RSA_KEYS[algorithm] // 8
        if algorithm in CURVES:
            return CURVES[algorithm][2]
        if algorithm.startswith("AES-"):
            return int(algorithm[4:]) // 8
        return 0

    def generate_key(self, algorithm: str, permissions: P) -> ProviderKey:
        """TPM2_Create of a new key under the primary (the TPM generates the secret)."""
        self._require(algorithm, Operation.GENERATE_KEY)
        template = key_template(algorithm, permissions)
        public, private = self.host.call("create", template.marshal(), None)
        # The TPM makes HMAC secrets as long as the digest.
        size = self.spec(algorithm).key_size if algorithm in HMACS else 0
        return self._new_blob_key(algorithm, public, private, size)

    def import_key(self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: P) -> ProviderKey:
        """Bring a key into the TPM (see the module docstring for what goes where)."""
        self._require(algorithm, Operation.IMPORT_KEY)
        material = bytes(material)
        persistent = _PERSISTENT_REF.match(material) if fmt is KeyFormat.RAW else None
        if persistent:
            return self._import_persistent(algorithm, int(persistent.group(1), 16))
        spec = self.spec(algorithm)
        if algorithm.startswith("AES-"):
            if fmt is not KeyFormat.RAW or len(material) != spec.key_size:
                raise CryptoError(
                    ErrorCode.INVALID_ARGUMENT, f"{algorithm} keys are imported as {spec.key_size} RAW bytes"
                )
            return self._import_secret(algorithm, material, permissions)
        if algorithm in HMACS:
            if fmt is not KeyFormat.RAW or not material:
                raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{algorithm} keys are imported as RAW bytes")
            if len(material) > spec.block_size:
                # HMAC itself uses H(K) for a key longer than the hash block (RFC 2104), and
                # the TPM takes keys only up to the block size: storing H(K) is exact.
                material = hashlib.new(HMACS[algorithm].replace("-", "").lower(), material).digest()
            return self._import_secret(algorithm, material, permissions)
        if fmt is KeyFormat.PEM and _TSS2_PEM in material:
            return self._import_tss2(algorithm, material)
        return self._import_asymmetric(algorithm, material, fmt, permissions)

    def _import_secret(self, algorithm: str, secret: bytes, permissions: P) -> TpmKey:
        template = key_template(algorithm, permissions, tpm_generated=False)
        public, private = self.host.call("create", template.marshal(), secret)
        size = len(secret) if not algorithm.startswith("AES-") else 0
        return self._new_blob_key(algorithm, public, private, size)

    def _load_asymmetric(self, algorithm: str, material: bytes, fmt: KeyFormat) -> tuple[Any, bool]:
        """(pyca key, is_private) from SPKI/PKCS#8 DER or PEM; checks type and size."""
        try:
            if fmt is KeyFormat.SPKI_DER:
                key: Any = serialization.load_der_public_key(material)
            elif fmt is KeyFormat.PKCS8_DER:
                key = serialization.load_der_private_key(material, None)
            elif fmt is KeyFormat.PEM:
                if b"PRIVATE KEY" in material:
                    key = serialization.load_pem_private_key(material, None)
                else:
                    key = serialization.load_pem_public_key(material)
            else:
                raise ValueError(f"{fmt.value} is not a format for {algorithm} keys")
        except (ValueError, TypeError) as exc:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"malformed {algorithm} key: {exc}") from None
        private = isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
        if algorithm in CURVES:
            curve = {"ECDSA-P256": "secp256r1", "ECDSA-P384": "secp384r1"}[algorithm]
            ok = (
                isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey))
                and key.curve.name == curve
            )
        else:
            ok = (
                isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)) and key.key_size == RSA_KEYS[algorithm]
            )
        if not ok:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"the key is not a {algorithm} key")
        return key, private

    def _import_asymmetric(self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: P) -> TpmKey:
        key, private = self._load_asymmetric(algorithm, material, fmt)
        if not private:
            spki = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            public = external_public(spki, algorithm)
            return TpmKey(algorithm, EXTERNAL, public.marshal(), size=self._size_of(algorithm, public))
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        template = key_template(algorithm, permissions, tpm_generated=False, duplicable=True)
        public = public_from_key(pem, algorithm, template.publicArea.objectAttributes)
        sensitive = sensitive_from_key(pem, algorithm)
        private_blob = self.host.call("import", public.marshal(), sensitive.marshal())
        return self._new_blob_key(algorithm, public.marshal(), private_blob)

    def _import_tss2(self, algorithm: str, material: bytes) -> TpmKey:
        """A TSS2 PRIVATE KEY file (tpm2-openssl, tpm2-tss-engine) whose parent is the
        owner hierarchy's standard storage key, i.e. our default primary."""
        from tpm2_pytss.tsskey import TSSPrivKey

        try:
            tss = TSSPrivKey.from_pem(material)
        except (ValueError, TypeError) as exc:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"malformed TSS2 key: {exc}") from None
        if tss.parent != _OWNER or not tss.empty_auth:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                "only TSS2 keys under the owner storage key without a password can be imported",
            )
        check_public_matches(tss.public, algorithm)
        return self._new_blob_key(algorithm, tss.public.marshal(), tss.private.marshal())

    def _import_persistent(self, algorithm: str, handle: int) -> TpmKey:
        public_bytes = self.host.call("read_persistent", handle)
        public = TPM2B_PUBLIC.unmarshal(public_bytes)[0]
        check_public_matches(public, algorithm)
        return TpmKey(
            algorithm,
            PERSISTENT,
            public_bytes,
            handle=handle,
            restricted=is_restricted(public),
            size=self._size_of(algorithm, public),
        )

    def export_public_key(self, key: ProviderKey, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        """SubjectPublicKeyInfo (DER or PEM) of an ECDSA or RSA key."""
        tkey = self._key(key)
        if tkey.algorithm not in CURVES and tkey.algorithm not in RSA_KEYS:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{tkey.algorithm} keys have no public key")
        public = TPM2B_PUBLIC.unmarshal(tkey.public)[0]
        if fmt is KeyFormat.SPKI_DER:
            return bytes(public.to_der())
        if fmt is KeyFormat.PEM:
            return bytes(public.to_pem())
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT, f"public keys are exported as SPKI_DER or PEM, not {fmt.value}"
        )

    def release_key(self, key: ProviderKey) -> None:
        """Flush the key from the TPM (lazily, with the next worker call)."""
        tkey = self._key(key)
        if self._host is not None and self._host.generation is not None:
            self._host.queue_cleanup(self._host.generation, (tkey.key_id,))

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        """The key's TPM blobs (or persistent-handle reference) for the key store."""
        return encode_stored(self._key(key))

    def load_stored_key(self, stored: StoredKey, algorithm: str, permissions: P) -> ProviderKey:
        """A key from its stored blobs; it is loaded into the TPM on first use."""
        key = decode_stored(stored, algorithm)
        if key.source == BLOB and key.parent_name != self.info.primary_name:
            raise CryptoError(
                ErrorCode.ACCESS_DENIED,
                f"stored {algorithm} key was created under another TPM primary key (another "
                "TPM, a changed primary_template, or a cleared storage hierarchy)",
            )
        return key

    # --- operations ------------------------------------------------------------------
    def random_bytes(self, length: int) -> bytes:
        """TPM2_GetRandom (looped: a TPM returns at most a digest's worth per call)."""
        self._require("RANDOM", Operation.RANDOM)
        if length < 0:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "negative length")
        if length == 0:
            return b""
        return bytes(self.host.call("random", length))

    def create_hash(self, algorithm: str) -> HashOperation:
        """Digest computed by the TPM."""
        self._require(algorithm, Operation.HASH)
        return TpmHash(self.host, HASHES[algorithm], self.info.facts.input_buffer)

    def create_cipher(
        self, algorithm: str, key: ProviderKey, direction: CipherDirection, iv: bytes, tag_length: int
    ) -> CipherOperation:
        """AES-CFB/CTR/CBC through TPM2_EncryptDecrypt2."""
        operation = Operation.ENCRYPT if direction is CipherDirection.ENCRYPT else Operation.DECRYPT
        self._require(algorithm, operation)
        tkey = self._key(key)
        spec = self.spec(algorithm)
        if tkey.algorithm not in spec.key_algorithms:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{algorithm} needs a {spec.key_algorithms[0]} key")
        spec.check_iv(len(iv))
        mode = algorithm.rsplit("-", 1)[1]
        return TpmCipher(
            self.host, tkey, mode, AES_MODES[mode], direction is CipherDirection.DECRYPT, bytes(iv)
        )

    def _check_sign_args(self, algorithm: str, key: TpmKey, context: bytes, operation: Operation) -> None:
        self._require(algorithm, operation)
        if context:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{algorithm} takes no context string")
        if key.algorithm not in self.spec(algorithm).key_algorithms:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{algorithm} cannot use a {key.algorithm} key")

    def _scheme(self, algorithm: str) -> tuple[int, str]:
        if algorithm in CURVES:
            return int(TPM2_ALG.ECDSA), CURVES[algorithm][1]
        return int(TPM2_ALG.RSAPSS), RSA_PSS[algorithm]

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        """HMAC, ECDSA (DER) or RSA-PSS signing in the TPM."""
        tkey = self._key(key)
        self._check_sign_args(algorithm, tkey, context, Operation.SIGN)
        limit = self.info.facts.input_buffer
        if self.spec(algorithm).kind is AlgorithmKind.MAC:
            return TpmMacSigner(self.host, tkey, HASHES[HMACS[algorithm]], limit)
        if not tkey.has_private:
            raise CryptoError(ErrorCode.KEY_OPERATION_NOT_PERMITTED, "a public key cannot sign")
        scheme, hash_name = self._scheme(algorithm)
        if tkey.restricted:
            fixed = signing_scheme(TPM2B_PUBLIC.unmarshal(tkey.public)[0])
            if fixed not in (int(TPM2_ALG.NULL), scheme):
                raise CryptoError(
                    ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                    f"this restricted TPM key is bound to another scheme than {algorithm}",
                )
        return TpmSigner(self.host, tkey, scheme, hash_name, HASHES[hash_name], limit)

    def create_verifier(self, algorithm: str, key: ProviderKey, context: bytes) -> VerifyOperation:
        """HMAC, ECDSA or RSA-PSS verification in the TPM."""
        tkey = self._key(key)
        self._check_sign_args(algorithm, tkey, context, Operation.VERIFY)
        if self.spec(algorithm).kind is AlgorithmKind.MAC:
            return TpmMacVerifier(
                self.host, tkey, HASHES[HMACS[algorithm]], self.info.facts.input_buffer, self._min_mac
            )
        _scheme, hash_name = self._scheme(algorithm)
        if algorithm in CURVES:
            return TpmVerifier(self.host, tkey, algorithm, hash_name, HASHES[hash_name])
        area = TPM2B_PUBLIC.unmarshal(tkey.public)[0].publicArea
        n = int.from_bytes(bytes(area.unique.rsa), "big")
        e = int(area.parameters.rsaDetail.exponent) or 65537
        return TpmVerifier(self.host, tkey, algorithm, hash_name, HASHES[hash_name], rsa_public=(n, e))

    def kek_source(self) -> KekSource | None:
        """The key store's KEK sealed to this TPM (see :mod:`.kek`)."""
        return TpmSealedKek(self.host, self.info.primary_name)
