"""Contexts over split hybrid keys: the daemon is the combiner, each provider runs its half.

Composite signatures: the message is hashed here (PH of the composite draft) as it arrives;
at finalisation the daemon forms ``M' = Prefix || Label || len(ctx) || ctx || PH(M)`` and
asks the pq half's provider for ML-DSA over M' with the Label as its context, and the
classical half's provider for its standalone signature over M' (ECDSA hashes M' itself,
Ed25519 signs it whole), then joins ``mldsaSig || tradSig``. Verification is the mirror:
both halves must verify, and a signature of impossible length is simply False. No private
key leaves its provider.

X25519MLKEM768: the ML-KEM-768 half encapsulates or decapsulates on its provider; the
X25519 half agrees (a fresh ephemeral key with the peer's share when encapsulating, the
private half with the ciphertext's share when decapsulating) on its provider. The two
32-byte secrets are taken out of their providers as internal keys created for this call
alone, concatenated in the daemon (``ss_ML-KEM || ss_X25519``, the TLS group's order) and
imported on one provider as the context's shared secret, with exactly the derived-key
permissions the caller asked for; the component secrets are released before the call
returns and are never handles.

The halves run one after the other on the request's thread under its one deadline: a
half that would start after the deadline fails the call with OPERATION_TIMED_OUT.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptostack_core.sdk.deadline import remaining_time
from cryptostack_core.sdk.hybrid import COMPOSITE_SIGNATURES, HYBRID_KEMS, CompositeSignatureSpec
from cryptostack_core.sdk.provider import (
    Buffer,
    Provider,
    ProviderKey,
    SignOperation,
    VerifyOperation,
)
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.server.session import KeyEntry
from cryptostack_core.server.split.keys import half_error, instance
from cryptostack_core.server.split.plan import CLASSICAL, PQ
from cryptostack_core.server.states import KemState, SignState, VerifyState
from cryptostack_core.wire.algorithms import AlgorithmSpec
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.resources import KeyFormat

INLINE_UPDATE = 64 * 1024
"""Largest update of a split signature context hashed on the daemon's event loop (it only
feeds PH); larger ones, and every finalisation (two provider calls), run on a thread."""
_INTERNAL = P.EXPORT
"""Permissions of a component secret: taken out by the daemon, then released."""


@dataclass(frozen=True)
class Half:
    """One half of a split key as a context uses it: its provider, the standalone
    algorithm it runs there, and the key on that provider."""

    role: str
    loaded: LoadedProvider
    algorithm: str
    pkey: ProviderKey

    @property
    def provider(self) -> Provider:
        """The provider instance (PROVIDER_UNAVAILABLE if it is gone)."""
        return instance(self.loaded)

    def describe(self) -> dict[str, Any]:
        """Role, provider and algorithm, for the wire."""
        return {"role": self.role, "provider": self.loaded.id, "algorithm": self.algorithm}


def _still_in_time(done: str) -> None:
    left = remaining_time()
    if left is not None and left <= 0:
        raise CryptoError(
            ErrorCode.OPERATION_TIMED_OUT,
            f"the call's deadline passed after {done}; the other half did not run",
        )


@contextlib.contextmanager
def _running(half: Half) -> Iterator[None]:
    """Provider calls of one half: its provider going down fails the whole key, naming
    the half (PROVIDER_UNAVAILABLE)."""
    try:
        yield
    except CryptoError as exc:
        raise half_error(half.role, half.algorithm, half.loaded, exc) from None


def _sign(half: Half, message: bytes, context: bytes) -> bytes:
    with _running(half):
        op = half.provider.create_signer(half.algorithm, half.pkey, context)
        op.update(message)
        return bytes(op.finalize())


def _verify(half: Half, message: bytes, context: bytes, signature: bytes) -> bool:
    with _running(half):
        op = half.provider.create_verifier(half.algorithm, half.pkey, context)
        op.update(message)
        return bool(op.finalize(signature))


class SplitSigner(SignOperation):
    """PH of the message here; both halves sign M' at finalisation."""

    def __init__(self, spec: CompositeSignatureSpec, context: bytes, pq: Half, classical: Half) -> None:
        self._spec = spec
        self._context = context
        self._pq = pq
        self._classical = classical
        self._hash = spec.prehash()

    def update(self, data: Buffer) -> None:
        """Hash more of the message (PH)."""
        self._hash.update(data)

    def finalize(self) -> bytes:
        """``mldsaSig || tradSig`` over M'."""
        spec = self._spec
        message = spec.message_representative(self._context, self._hash.finalize())
        mldsa_signature = _sign(self._pq, message, spec.label)
        _still_in_time(f"the {self._pq.algorithm} half")
        trad_signature = _sign(self._classical, message, b"")
        try:
            return spec.join_signature(mldsa_signature, trad_signature)
        except CryptoError as exc:
            raise CryptoError(
                ErrorCode.PROVIDER_ERROR,
                f"a provider returned a component signature of the wrong length: {exc.message}",
            ) from None


class SplitVerifier(VerifyOperation):
    """PH of the message here; each half checks its signature over M' on its provider."""

    def __init__(self, spec: CompositeSignatureSpec, context: bytes, pq: Half, classical: Half) -> None:
        self._spec = spec
        self._context = context
        self._pq = pq
        self._classical = classical
        self._hash = spec.prehash()

    def update(self, data: Buffer) -> None:
        """Hash more of the message (PH)."""
        self._hash.update(data)

    def finalize(self, signature: bytes) -> bool:
        """True iff both halves verify."""
        spec = self._spec
        message = spec.message_representative(self._context, self._hash.finalize())
        halves = spec.split_signature(signature)
        if halves is None:
            return False
        mldsa_signature, trad_signature = halves
        if not _verify(self._pq, message, spec.label, mldsa_signature):
            return False
        _still_in_time(f"the {self._pq.algorithm} half")
        return _verify(self._classical, message, b"", trad_signature)


class _Split:
    """What every split context adds: its halves, for describe, audit and scheduling."""

    halves: dict[str, Half]

    def provider_ids(self) -> tuple[int, ...]:
        """Both halves' providers (pq first)."""
        return tuple(self.halves[role].loaded.id for role in (PQ, CLASSICAL))

    def audit_detail(self) -> str:
        """Where each half ran, for the one audit record of an outcome."""
        return (
            "split: "
            + ", ".join(
                f"{half.role} {half.algorithm} on {half.loaded.name} ({half.loaded.id})"
                for half in (self.halves[PQ], self.halves[CLASSICAL])
            )
            + "; combiner: daemon"
        )

    def components(self) -> list[dict[str, Any]]:
        """The halves for the wire."""
        return [self.halves[role].describe() for role in (PQ, CLASSICAL)]

    def inline_hint(self, verb: str, size: int) -> bool | None:
        """Start, reset and modest updates only touch the daemon's hash: inline;
        finalisation calls both providers: a thread."""
        if verb in ("init", "reset"):
            return True
        if verb == "update":
            return size <= INLINE_UPDATE
        return False


class SplitSignState(_Split, SignState):
    """A composite signature over a split key."""

    def __init__(
        self, spec: AlgorithmSpec, key: KeyEntry, halves: dict[str, Half], max_buffered: int, context: bytes
    ) -> None:
        SignState.__init__(self, spec, halves[PQ].loaded, key, key.pkey, max_buffered, context)
        self.halves = halves
        self.composite = COMPOSITE_SIGNATURES[spec.name]

    def _start(self, **params: Any) -> SignOperation:
        return SplitSigner(self.composite, self.context_string, self.halves[PQ], self.halves[CLASSICAL])

    def _buffers_message(self) -> bool:
        return False  # PH absorbs the message as it comes

    def signature_size(self) -> int:
        return self.composite.max_signature_size

    def describe(self) -> dict[str, Any]:
        info = SignState.describe(self)
        info["components"] = self.components()
        return info


class SplitVerifyState(_Split, VerifyState):
    """Composite verification over a split key."""

    def __init__(
        self, spec: AlgorithmSpec, key: KeyEntry, halves: dict[str, Half], max_buffered: int, context: bytes
    ) -> None:
        VerifyState.__init__(self, spec, halves[PQ].loaded, key, key.pkey, max_buffered, context, None)
        self.halves = halves
        self.composite = COMPOSITE_SIGNATURES[spec.name]

    def _start(self, **params: Any) -> Any:
        return SplitVerifier(self.composite, self.context_string, self.halves[PQ], self.halves[CLASSICAL])

    def _buffers_message(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        info = VerifyState.describe(self)
        info["components"] = self.components()
        return info


class SplitKemState(_Split, KemState):
    """X25519MLKEM768 over a split key; the shared secret is held by ``secret_home``."""

    def __init__(
        self,
        spec: AlgorithmSpec,
        key: KeyEntry,
        halves: dict[str, Half],
        derived_permissions: P,
        secret_home: LoadedProvider,
    ) -> None:
        KemState.__init__(self, spec, halves[PQ].loaded, key, key.pkey, derived_permissions)
        self.halves = halves
        self.kem = HYBRID_KEMS[spec.name]
        self.secret_home = secret_home

    def describe(self) -> dict[str, Any]:
        info = KemState.describe(self)
        info["components"] = self.components()
        info["secret_provider"] = self.secret_home.id
        return info

    def encapsulate(self) -> tuple[bytes, ProviderKey, LoadedProvider]:
        """(ciphertext, shared secret, its provider) to the key's public halves."""
        assert self.key is not None and self.key.public_key is not None
        pq, classical = self.halves[PQ], self.halves[CLASSICAL]
        _, x25519_public = self.kem.split_public_key(self.key.public_key)
        with _running(pq):
            mlkem_ciphertext, mlkem_secret = pq.provider.encapsulate(pq.algorithm, pq.pkey, _INTERNAL)
            ss_mlkem = _take_out(pq, mlkem_secret)
        _still_in_time(f"the {pq.algorithm} half")
        with _running(classical):
            backend = classical.provider
            ephemeral = backend.generate_key(classical.algorithm, P.AGREE)
            try:
                x25519_ciphertext = backend.export_public_key(ephemeral, KeyFormat.RAW)
                ss_x25519 = _take_out(
                    classical, backend.agree(classical.algorithm, ephemeral, x25519_public, _INTERNAL)
                )
            finally:
                _quiet_release(backend, ephemeral)
        secret = self.kem.combine(ss_mlkem, ss_x25519, x25519_ciphertext, x25519_public)
        ciphertext = self.kem.join_ciphertext(mlkem_ciphertext, x25519_ciphertext)
        return ciphertext, self._hold(secret), self.secret_home

    def decapsulate(self, ciphertext: bytes) -> tuple[ProviderKey, LoadedProvider]:
        """The shared secret ``ciphertext`` carries (the length is checked first)."""
        assert self.key is not None and self.key.public_key is not None
        pq, classical = self.halves[PQ], self.halves[CLASSICAL]
        mlkem_ciphertext, x25519_ciphertext = self.kem.split_ciphertext(ciphertext)
        with _running(pq):
            ss_mlkem = _take_out(
                pq, pq.provider.decapsulate(pq.algorithm, pq.pkey, mlkem_ciphertext, _INTERNAL)
            )
        _still_in_time(f"the {pq.algorithm} half")
        with _running(classical):
            ss_x25519 = _take_out(
                classical,
                classical.provider.agree(classical.algorithm, classical.pkey, x25519_ciphertext, _INTERNAL),
            )
        _, x25519_public = self.kem.split_public_key(self.key.public_key)
        secret = self.kem.combine(ss_mlkem, ss_x25519, x25519_ciphertext, x25519_public)
        return self._hold(secret), self.secret_home

    def _hold(self, secret: bytes) -> ProviderKey:
        return instance(self.secret_home).import_key(
            "GENERIC-SECRET", secret, KeyFormat.RAW, self.derived_permissions
        )


def _take_out(half: Half, secret: ProviderKey) -> bytes:
    """A component secret's bytes; the provider's key for it is released at once."""
    backend = half.provider
    try:
        value = bytes(backend.export_key(secret, KeyFormat.RAW))
    finally:
        _quiet_release(backend, secret)
    if len(value) != 32:
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR,
            f"provider {half.loaded.id} returned a {len(value)}-byte {half.algorithm} secret",
        )
    return value


def _quiet_release(backend: Provider, key: ProviderKey) -> None:
    try:
        backend.release_key(key)
    except Exception:  # noqa: BLE001 - freeing an internal key is best effort
        pass
