"""Provider SDK: what a cryptostack provider implements.

A provider is a class registered as an entry point in the group ``cryptostack.providers``
(the openssl provider's own ``pyproject.toml`` says)::

    [project.entry-points."cryptostack.providers"]
    openssl = "cryptostack_openssl.provider:OpenSSLProvider"

The daemon loads the class, registers the algorithms it brings (:meth:`Provider.algorithms`),
instantiates it as ``ProviderClass(provider_id, options, environment)``, calls
:meth:`Provider.start`, then asks it for :meth:`Provider.capabilities`. Everything a provider
does is synchronous; the daemon runs calls in worker threads (unless
:meth:`Provider.run_inline` says a call is cheap) and enforces deadlines around them.
``docs/provider-guide.md`` walks through writing, testing (the conformance kit) and
publishing one.

Capabilities are (algorithm, :class:`~cryptostack_core.wire.algorithms.Operation`) pairs; the
daemon asks a provider only for pairs it claims. Keys: claim ``GENERATE_KEY`` and/or
``IMPORT_KEY`` with the *key* algorithm (``AES-256``, ``ECDSA-P256``, ``GENERIC-SECRET``), and
the operations with the *operation* algorithm (``AES-256-GCM``/``ENCRYPT``). A slot with
``provision = "generate"`` needs ``GENERATE_KEY``, ``import = FILE`` needs ``IMPORT_KEY``,
and a key used on a compatible provider other than its home is copied there with
``IMPORT_KEY`` (the home provider exports it). A MAC is claimed as ``SIGN`` and ``VERIFY``.

The daemon owns the state machine of every context (init/update/finalize order, reset,
error state after a timeout, permission checks, size limits on buffered messages). A
provider only creates *operation objects* for one message at a time and holds *keys*.

Errors: raise :class:`~cryptostack_core.wire.errors.CryptoError` with the matching code
(``INVALID_ARGUMENT`` for bad input, ``AUTHENTICATION_FAILED`` for a tag mismatch,
``UNSUPPORTED_ALGORITHM``...). Any other exception is reported to the client as
``PROVIDER_ERROR`` with its message, and logged in the daemon with its traceback.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmSpec, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission
from cryptostack_core.wire.resources import CipherDirection, KeyFormat

Buffer = Union[bytes, bytearray, memoryview]
"""Input data handed to operations; may be a memoryview into shared memory: copy it if kept."""

__all__ = [
    "Buffer",
    "Capability",
    "CipherOperation",
    "HashOperation",
    "KekSource",
    "OrphanDestroyed",
    "Provider",
    "ProviderEnvironment",
    "ProviderKey",
    "ProviderState",
    "SignOperation",
    "StoredKey",
    "VerifyOperation",
    "Operation",
]


@dataclass(frozen=True)
class Capability:
    """One (algorithm, operation) pair a provider supports. ``algorithm`` is canonical."""

    algorithm: str
    operation: Operation


class ProviderState(enum.Enum):
    """Health of a loaded provider, shown by ``status`` and used by selection."""

    READY = "ready"
    DEGRADED = "degraded"  # working, but recovering from a fault (e.g. worker restarted)
    UNAVAILABLE = "unavailable"  # failed to load or start, or lost its backend


@dataclass(frozen=True)
class ProviderEnvironment:
    """Where a provider may keep files, and the daemon's logger for it."""

    state_dir: Path
    config_dir: Path
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("cryptostack.provider"))


class ProviderKey(abc.ABC):
    """A key held by a provider: an opaque handle the daemon passes back to it.

    The daemon keeps the authoritative metadata (algorithm, permissions); these
    attributes let it make decisions without asking the provider.
    """

    algorithm: str
    """Canonical key algorithm (``AES-256``, ``ECDSA-P256``, ``GENERIC-SECRET``...)."""
    has_private: bool = True
    """False for a public key alone (usable for verify / encapsulate / as a peer)."""
    extractable: bool = True
    """Whether the provider can hand the material out (export, or use on another provider)."""
    size: int = 0
    """Key size in bytes where meaningful (secret length, RSA modulus length)."""


@dataclass(frozen=True)
class StoredKey:
    """What the key store keeps for a persistent key.

    ``secret=True``: ``blob`` is key material that the key store wraps at rest (software
    providers). ``secret=False``: ``blob`` is a reference (token object id, TPM blobs)
    that is useless without the provider's backend and is stored as is.
    """

    blob: bytes
    secret: bool


@dataclass(frozen=True)
class OrphanDestroyed:
    """A backend object :meth:`Provider.reconcile_stored` destroyed (one audit event)."""

    resource: str
    """What it was (a token object's label)."""
    detail: str
    """Why and what exactly (ids), for the audit log."""


class HashOperation(abc.ABC):
    """One message digest in progress."""

    @abc.abstractmethod
    def update(self, data: Buffer) -> None:
        """Absorb more data."""

    @abc.abstractmethod
    def finalize(self) -> bytes:
        """Return the digest; the object is not used afterwards."""

    async def update_async(self, data: Buffer) -> None:
        """:meth:`update` on the daemon's event loop (see :meth:`Provider.runs_async`)."""
        self.update(data)

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the daemon's event loop."""
        return self.finalize()


class CipherOperation(abc.ABC):
    """One message being encrypted or decrypted (IV, key and direction fixed at creation).

    AEAD: encryption output is ciphertext followed by the tag; decryption input is
    ciphertext followed by the tag, and a provider must return no plaintext before the tag
    has verified (return ``b""`` from :meth:`update` and everything from :meth:`finalize`;
    the daemon bounds how much is buffered). A bad tag raises ``AUTHENTICATION_FAILED``.
    """

    def update_aad(self, data: Buffer) -> None:
        """Add associated data (AEAD only, before the first :meth:`update`)."""
        raise CryptoError(ErrorCode.INVALID_STATE, "associated data needs an AEAD algorithm")

    @abc.abstractmethod
    def update(self, data: Buffer) -> bytes:
        """Process more data, returning whatever output is ready."""

    @abc.abstractmethod
    def finalize(self) -> bytes:
        """Finish the message (padding, tag) and return the remaining output."""

    async def update_aad_async(self, data: Buffer) -> None:
        """:meth:`update_aad` on the daemon's event loop (see :meth:`Provider.runs_async`)."""
        self.update_aad(data)

    async def update_async(self, data: Buffer) -> bytes:
        """:meth:`update` on the daemon's event loop."""
        return self.update(data)

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the daemon's event loop."""
        return self.finalize()


class SignOperation(abc.ABC):
    """One message being signed or MACed."""

    @abc.abstractmethod
    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""

    @abc.abstractmethod
    def finalize(self) -> bytes:
        """Return the signature (DER for ECDSA) or the MAC tag."""

    async def update_async(self, data: Buffer) -> None:
        """:meth:`update` on the daemon's event loop (see :meth:`Provider.runs_async`)."""
        self.update(data)

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the daemon's event loop."""
        return self.finalize()


class VerifyOperation(abc.ABC):
    """One message whose signature or MAC is being checked."""

    @abc.abstractmethod
    def update(self, data: Buffer) -> None:
        """Absorb more of the message."""

    @abc.abstractmethod
    def finalize(self, signature: bytes) -> bool:
        """True if ``signature`` is valid for the message; False otherwise (never raises for a
        merely wrong or malformed signature)."""

    async def update_async(self, data: Buffer) -> None:
        """:meth:`update` on the daemon's event loop (see :meth:`Provider.runs_async`)."""
        self.update(data)

    async def finalize_async(self, signature: bytes) -> bool:
        """:meth:`finalize` on the daemon's event loop."""
        return self.finalize(signature)


class KekSource(abc.ABC):
    """Source of the key store's key-encryption key (a file by default; a TPM may seal it
    into a file; a PKCS#11 token may derive it, with nothing on the host's disk)."""

    uses_file = True
    """Whether the KEK (or a sealed form of it) lives in the configured ``kek_file``. False
    for a source that keeps nothing on disk: the daemon then never creates or checks the
    file."""

    @abc.abstractmethod
    def load_or_create(self, path: Path) -> bytes:
        """Return the 32-byte KEK, creating and protecting it at ``path`` on first start."""

    def exists(self, path: Path) -> bool:
        """Whether a KEK was created at ``path`` (the key store never re-creates one behind
        an existing store). Sources that keep it elsewhere override this."""
        return path.exists()

    def describe(self, path: Path) -> str:
        """Where the KEK is, for messages (the file by default)."""
        return str(path)


def _unsupported(what: str) -> CryptoError:
    return CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, what)


class Provider(abc.ABC):
    """Base class of every provider. Override what the backend can do; the defaults refuse.

    Thread-safety: the daemon may call methods concurrently from several threads, but
    never two calls on the same operation object at once. Providers with
    single-threaded backends serialise internally.
    """

    name: ClassVar[str] = "provider"
    """Entry-point name; used in logs and status."""
    test_only: ClassVar[bool] = False
    """True for providers made for tests (the mock): a daemon serves them only when its
    config says ``allow_test_providers = true``, and then warns at start and in ``status``."""

    def __init__(
        self, provider_id: int, options: Mapping[str, Any], environment: ProviderEnvironment
    ) -> None:
        self.provider_id = provider_id
        self.options = dict(options)
        self.environment = environment
        self.log = environment.logger
        self._capabilities: frozenset[Capability] | None = None

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Connect to the backend. Raise ``PROVIDER_UNAVAILABLE`` with a reason if it can't."""

    def close(self) -> None:
        """Release every backend resource; called once at daemon shutdown."""

    def state(self) -> tuple[ProviderState, str]:
        """Current health and a short human reason (empty when READY)."""
        return ProviderState.READY, ""

    def describe(self) -> dict[str, Any]:
        """Extra facts for ``status`` (library versions, token label...)."""
        return {}

    # --- algorithms and capabilities --------------------------------------------------
    @classmethod
    def algorithms(cls) -> Iterable[AlgorithmSpec]:
        """Algorithms this provider brings that the core does not define (default: none).

        Called on the class before it is instantiated, so a name is known even when the
        backend is missing; the daemon registers each spec (a name that already means
        something else makes the provider fail to load) and then checks ``[[key_slots]]``.
        Clients learn the names from the daemon; they need not install the provider.
        """
        return ()

    @abc.abstractmethod
    def capabilities(self) -> Iterable[Capability]:
        """Every (algorithm, operation) pair supported; algorithms use canonical names
        (built in, or from :meth:`algorithms`)."""

    def supports(self, algorithm: str, operation: Operation) -> bool:
        """Whether ``algorithm`` (canonical) is supported for ``operation``."""
        if self._capabilities is None:
            self._capabilities = frozenset(self.capabilities())
        return Capability(algorithm, operation) in self._capabilities

    def run_inline(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        """True when a call is cheap enough for the daemon's event loop (no worker hop).

        ``size`` is the input length (0 for calls without data, such as a finalisation);
        ``algorithm`` is the context's canonical algorithm when known. Only return True for
        calls that never block and finish within tens of microseconds.
        """
        return False

    def runs_async(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        """True when the daemon may run a stream call (``update``, ``finalize``... of a hash,
        cipher, sign or verify context) by awaiting the operation object's ``*_async``
        methods on its event loop instead of sending it to a thread.

        For providers whose backend is a worker process on the SDK's worker host (which
        runs on the daemon's loop): a call then costs one round trip to the worker and no
        thread. The provider promises that its ``*_async`` methods never block, that
        ``create_hash``/``create_cipher``/``create_signer``/``create_verifier`` are cheap
        (they run on the loop too), and that local work on ``size`` bytes stays small.
        """
        return False

    def event_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the ``*_async`` methods must be awaited on (a worker host's:
        the daemon's own loop in the daemon, a background loop elsewhere); None when any
        loop will do."""
        return None

    @staticmethod
    def spec(algorithm: str) -> AlgorithmSpec:
        """Registry facts for a canonical algorithm name."""
        return REGISTRY.get(algorithm)

    # --- keys ------------------------------------------------------------------------
    def generate_key(self, algorithm: str, permissions: KeyOperationPermission) -> ProviderKey:
        """Create a new ephemeral key of key algorithm ``algorithm``.

        ``permissions`` are already checked by the daemon; a hardware provider maps them
        to backend attributes (EXPORT -> extractable).
        """
        raise _unsupported(f"{self.name} cannot generate {algorithm} keys")

    def import_key(
        self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: KeyOperationPermission
    ) -> ProviderKey:
        """Create an ephemeral key from caller material; malformed input -> INVALID_ARGUMENT.

        Public-key formats yield keys with ``has_private=False``.
        """
        raise _unsupported(f"{self.name} cannot import {algorithm} keys")

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        """Secret/private material in ``fmt`` (RAW for secrets, PKCS8_DER/RAW/SEED for pairs).

        The daemon has already checked EXPORT (or that this is a transfer to a compatible
        provider). Raise KEY_OPERATION_NOT_PERMITTED when the backend forbids it.
        """
        raise CryptoError(ErrorCode.KEY_OPERATION_NOT_PERMITTED, f"{self.name} keys cannot be exported")

    def export_public_key(self, key: ProviderKey, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        """Public key of an asymmetric key, SPKI DER by default (RAW where defined)."""
        raise _unsupported(f"{self.name} cannot export public keys")

    def release_key(self, key: ProviderKey) -> None:
        """Forget an ephemeral key or the loaded copy of a stored one (flush, destroy)."""

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        """Make a durable copy of ``key`` for slot ``slot_name`` (copy semantics: ``key``
        stays usable). Software providers return the material with ``secret=True``."""
        raise _unsupported(f"{self.name} cannot persist keys")

    def load_stored_key(
        self, stored: StoredKey, algorithm: str, permissions: KeyOperationPermission
    ) -> ProviderKey:
        """Load a key from what :meth:`persist_key` returned (unwrapped by the key store)."""
        raise _unsupported(f"{self.name} cannot load stored keys")

    def delete_stored_key(self, stored: StoredKey) -> None:
        """Destroy the durable copy (token object, TPM persistent handle) when a slot is
        overwritten or cleared. Nothing to do for material kept in the key store."""

    def reconcile_stored(self, references: list[StoredKey]) -> list[OrphanDestroyed]:
        """Crash consistency of durable backend objects, called once at daemon start with
        every reference (``secret=False``) the key store holds for this provider.

        The daemon records a slot after :meth:`persist_key` returned and destroys the old
        copy after the slot changed: a crash in between leaves a backend object no slot
        names. A provider that creates such objects keeps a durable record of them (before
        creating one, until it is destroyed) and destroys here every recorded object that no
        reference names; each one is audited. The default has nothing to reconcile.
        """
        return []

    # --- operations ------------------------------------------------------------------
    def create_hash(self, algorithm: str) -> HashOperation:
        """Start one digest."""
        raise _unsupported(f"{self.name} does not hash with {algorithm}")

    def create_cipher(
        self, algorithm: str, key: ProviderKey, direction: CipherDirection, iv: bytes, tag_length: int
    ) -> CipherOperation:
        """Start one message; wrong IV or key length -> INVALID_ARGUMENT."""
        raise _unsupported(f"{self.name} does not support {algorithm}")

    def signature_size(self, algorithm: str, key: ProviderKey) -> int:
        """Maximum size of a signature or MAC this key makes with ``algorithm``."""
        spec = self.spec(algorithm)
        if spec.signature_size:
            return spec.signature_size
        if key.size:
            return key.size
        raise _unsupported(f"{self.name} cannot size {algorithm} signatures")

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        """Start signing (or MACing) one message; ``context`` is the ML-DSA/SLH-DSA context.

        MACs run here in both directions: to verify a tag the daemon computes the full MAC
        with a signer and compares it (in constant time, honouring the verify context's
        tag length) itself.
        """
        raise _unsupported(f"{self.name} does not sign with {algorithm}")

    def create_verifier(self, algorithm: str, key: ProviderKey, context: bytes) -> VerifyOperation:
        """Start verifying one message with a signature algorithm (never called for MACs:
        see :meth:`create_signer`)."""
        raise _unsupported(f"{self.name} does not verify with {algorithm}")

    def encapsulate(
        self, algorithm: str, key: ProviderKey, secret_permissions: KeyOperationPermission
    ) -> tuple[bytes, ProviderKey]:
        """KEM encapsulation to public ``key``: (ciphertext, shared secret as GENERIC-SECRET key)."""
        raise _unsupported(f"{self.name} does not encapsulate with {algorithm}")

    def decapsulate(
        self, algorithm: str, key: ProviderKey, ciphertext: bytes, secret_permissions: KeyOperationPermission
    ) -> ProviderKey:
        """KEM decapsulation; a wrong-length ciphertext -> INVALID_ARGUMENT."""
        raise _unsupported(f"{self.name} does not decapsulate with {algorithm}")

    def agree(
        self, algorithm: str, key: ProviderKey, peer_public: bytes, secret_permissions: KeyOperationPermission
    ) -> ProviderKey:
        """Key agreement with a peer public key (SPKI DER, or RAW for X25519);
        invalid peer keys -> INVALID_ARGUMENT. Returns a GENERIC-SECRET key."""
        raise _unsupported(f"{self.name} does not support {algorithm}")

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
        """Derive a new key (e.g. HKDF-SHA-256) of ``output_algorithm`` and ``length`` bytes."""
        raise _unsupported(f"{self.name} does not derive with {algorithm}")

    def random_bytes(self, length: int) -> bytes:
        """Cryptographically secure random bytes."""
        raise _unsupported(f"{self.name} has no random generator")

    def kek_source(self) -> KekSource | None:
        """A KEK source backed by this provider (e.g. a TPM-sealed key), if it offers one."""
        return None
