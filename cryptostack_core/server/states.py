"""Context states: the daemon's state machine around provider calls, one class per context
kind (named ``...State`` so they are never confused with the client's contexts).

A stream context is IDLE after creation or ``reset``, ACTIVE between ``init`` and
``finalize``, DONE after ``finalize``/``single_shot`` (``init`` may start the next message).
Calls out of order raise ``INVALID_STATE``. A call that times out puts the context in
ERROR: every later call but ``close`` raises ``CONTEXT_IN_ERROR_STATE``. A provider failure
mid-message aborts that message (back to IDLE) but leaves the context usable.
"""

from __future__ import annotations

import enum
import hmac
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from cryptostack_core.sdk.provider import (
    Buffer,
    CipherOperation,
    HashOperation,
    Provider,
    ProviderKey,
    SignOperation,
    VerifyOperation,
)
from cryptostack_core.server.budget import UNLIMITED, Account
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.server.session import KeyEntry
from cryptostack_core.wire.algorithms import AlgorithmKind, AlgorithmSpec
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission
from cryptostack_core.wire.resources import CipherDirection


class MessagePhase(enum.Enum):
    """Where a stream context is in its message."""

    IDLE = "idle"
    ACTIVE = "active"
    DONE = "done"


# Algorithms whose providers must see the whole message at once; the daemon bounds them.
_BUFFERING_KINDS = {AlgorithmKind.SIGNATURE}


class ContextState:
    """Base of all daemon-side contexts."""

    kind = "context"

    def __init__(
        self,
        spec: AlgorithmSpec,
        provider: LoadedProvider,
        key: KeyEntry | None = None,
        pkey: ProviderKey | None = None,
    ) -> None:
        self.spec = spec
        self.algorithm = spec.name
        self.loaded = provider
        self.key = key
        self.pkey = pkey
        self.error: str | None = None
        self.closed = False
        self.lock = threading.Lock()

    @property
    def provider(self) -> Provider:
        """The provider instance running this context."""
        instance = self.loaded.instance
        if instance is None:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"provider {self.loaded.name} is unavailable")
        return instance

    def check_usable(self) -> None:
        """Raise unless the context may run a call."""
        if self.closed:
            raise CryptoError(ErrorCode.RESOURCE_NOT_FOUND, "context is closed")
        if self.error is not None:
            raise CryptoError(
                ErrorCode.CONTEXT_IN_ERROR_STATE,
                f"context is in error state after {self.error}; close it and create a new one",
            )

    def mark_error(self, reason: str) -> None:
        """Enter the error state (after a timeout)."""
        if self.error is None:
            self.error = reason
        self.abort()

    def abort(self) -> None:
        """Drop any message in progress."""

    def close(self) -> None:
        """Release the key reference and any operation in progress."""
        if self.closed:
            return
        self.closed = True
        self.abort()
        if self.key is not None:
            self.key.release()
            self.key = None

    def describe(self) -> dict[str, Any]:
        """What the client learns at creation."""
        return {"algorithm": self.algorithm, "provider": self.loaded.id}

    def provider_ids(self) -> tuple[int, ...]:
        """Every provider this context runs on (two for a split hybrid key), for audit."""
        return (self.loaded.id,)

    def audit_detail(self) -> str:
        """What an outcome's audit record adds about where the context ran."""
        return ""

    def inline_hint(self, verb: str, size: int) -> bool | None:
        """Whether call ``verb`` with ``size`` bytes is cheap enough for the front end's own
        thread or loop, when the context (not its provider) knows; None: ask the provider."""
        return None


class StreamContextState(ContextState):
    """init / update / finalize / reset over one provider operation object."""

    def __init__(
        self,
        spec: AlgorithmSpec,
        provider: LoadedProvider,
        key: KeyEntry | None,
        pkey: ProviderKey | None,
        max_buffered: int,
    ) -> None:
        super().__init__(spec, provider, key, pkey)
        self.state = MessagePhase.IDLE
        self.op: Any = None
        self.max_buffered = max_buffered
        self.buffered = 0
        """Bytes of the message the provider holds, charged to :attr:`memory`."""
        self.counted = 0
        """Bytes of the message counted against ``max_buffered_message`` without being held
        (AEAD encryption, bounded like the decryption that must open it)."""
        self.memory: Account = UNLIMITED.account()
        """The client's memory budget; a buffered message is charged to it."""
        self.data_seen = False

    def _unbuffer(self) -> None:
        self.counted = 0
        if self.buffered:
            self.memory.release(self.buffered, "buffered messages")
            self.buffered = 0

    def abort(self) -> None:
        self.op = None
        self._unbuffer()
        self.data_seen = False
        if self.state is MessagePhase.ACTIVE:
            self.state = MessagePhase.IDLE

    # The provider object is created here; subclasses say how.
    def _start(self, **params: Any) -> Any:
        raise NotImplementedError

    def _buffers_message(self) -> bool:
        return False

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run a provider call; a failure aborts the message but keeps the context."""
        try:
            return fn()
        except BaseException:
            self.abort()
            raise

    async def _guard_async(self, call: Awaitable[Any]) -> Any:
        """:meth:`_guard` for an awaited provider call (cancellation aborts too)."""
        try:
            return await call
        except BaseException:
            self.abort()
            raise

    def init(self, **params: Any) -> None:
        """Start a message."""
        if self.state is MessagePhase.ACTIVE:
            raise CryptoError(
                ErrorCode.INVALID_STATE,
                "init() called while a message is in progress; call reset() "
                "to discard it or finalize it first",
            )
        self.op = self._guard(lambda: self._start(**params))
        self._unbuffer()
        self.data_seen = False
        self.state = MessagePhase.ACTIVE

    def _require_active(self, what: str) -> None:
        if self.state is not MessagePhase.ACTIVE:
            hint = (
                "after finalize(), call init() to start a new message"
                if self.state is MessagePhase.DONE
                else "call init() first"
            )
            raise CryptoError(ErrorCode.INVALID_STATE, f"{what}() needs an active message; {hint}")

    def _count(self, data: Buffer) -> None:
        """Charge a part of a message the provider holds until finalize, before it gets it."""
        size = len(data)
        if self.buffered + size > self.max_buffered:
            self.abort()
            raise CryptoError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"message exceeds max_buffered_message ({self.max_buffered} bytes) "
                f"for {self.algorithm} (the whole message is held in memory); "
                "the message was discarded",
            )
        try:
            self.memory.reserve(size, "buffered messages")
        except CryptoError as exc:
            self.abort()
            raise CryptoError(exc.code, f"{exc.message}; the message was discarded") from None
        self.buffered += size

    def update(self, data: Buffer) -> Any:
        """Feed the message in progress; returns the provider's output (ciphers) or None."""
        self._require_active("update")
        if self._buffers_message():
            self._count(data)
        self.data_seen = True
        op = self.op
        assert op is not None
        return self._guard(lambda: op.update(data))

    def finalize(self) -> Any:
        """Finish the message: digest, signature, or the cipher's last output."""
        self._require_active("finalize")
        op = self.op
        assert op is not None
        result = self._guard(op.finalize)
        self.op, self.state = None, MessagePhase.DONE
        self._unbuffer()
        return result

    # Twins of update/finalize for providers whose calls are awaited on the daemon's loop
    # (Provider.runs_async): the same state machine, the provider's *_async methods.
    async def update_async(self, data: Buffer) -> Any:
        """:meth:`update`, awaiting the provider."""
        self._require_active("update")
        if self._buffers_message():
            self._count(data)
        self.data_seen = True
        op = self.op
        assert op is not None
        return await self._guard_async(op.update_async(data))

    async def finalize_async(self) -> Any:
        """:meth:`finalize`, awaiting the provider."""
        self._require_active("finalize")
        op = self.op
        assert op is not None
        result = await self._guard_async(op.finalize_async())
        self.op, self.state = None, MessagePhase.DONE
        self._unbuffer()
        return result

    def reset(self) -> None:
        """Discard any partial message; the context can be reused."""
        self.op = None
        self._unbuffer()
        self.data_seen = False
        self.state = MessagePhase.IDLE


class HashState(StreamContextState):
    """Message digest."""

    kind = "hash"
    op: HashOperation | None

    def _start(self, **params: Any) -> HashOperation:
        return self.provider.create_hash(self.algorithm)

    def single_shot(self, data: Buffer) -> bytes:
        """Digest of ``data`` in one call."""
        if self.state is MessagePhase.ACTIVE:
            raise CryptoError(
                ErrorCode.INVALID_STATE, "single_shot() while a message is in progress; reset() first"
            )
        self.init()
        self.update(data)
        digest: bytes = self.finalize()
        return digest

    async def single_shot_async(self, data: Buffer) -> bytes:
        """:meth:`single_shot`, awaiting the provider."""
        if self.state is MessagePhase.ACTIVE:
            raise CryptoError(
                ErrorCode.INVALID_STATE, "single_shot() while a message is in progress; reset() first"
            )
        self.init()
        await self.update_async(data)
        digest: bytes = await self.finalize_async()
        return digest


class CipherState(StreamContextState):
    """Symmetric encryption or decryption (AEAD included)."""

    kind = "cipher"
    op: CipherOperation | None

    def __init__(
        self,
        spec: AlgorithmSpec,
        provider: LoadedProvider,
        key: KeyEntry,
        pkey: ProviderKey,
        max_buffered: int,
        direction: CipherDirection,
        tag_length: int,
    ) -> None:
        super().__init__(spec, provider, key, pkey, max_buffered)
        self.direction = direction
        self.tag_length = tag_length
        self.aead = spec.kind is AlgorithmKind.AEAD

    def _buffers_message(self) -> bool:
        # AEAD decryption releases nothing before the tag: the provider holds the message.
        # Encryption is bounded the same way, so nothing is sealed that could not be opened.
        return self.aead

    def _count(self, data: Buffer) -> None:
        if self.direction is CipherDirection.DECRYPT:
            super()._count(data)
            return
        # Counted, not charged: the provider holds none of it (charging nothing here and
        # releasing it later would give back memory another context of the client holds).
        self.counted += len(data)
        if self.counted + self.tag_length > self.max_buffered:
            self.abort()
            raise CryptoError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"an {self.algorithm} message above {self.max_buffered} bytes with "
                "its tag could not be decrypted by this daemon (it holds an AEAD "
                "message whole; max_buffered_message): use a streaming AEAD such "
                "as AES-256-GCM-HKDF-1MB; the message was discarded",
            )

    def _start(self, **params: Any) -> CipherOperation:
        iv = params.get("iv", b"")
        assert self.pkey is not None
        return self.provider.create_cipher(self.algorithm, self.pkey, self.direction, iv, self.tag_length)

    def update_aad(self, data: Buffer) -> None:
        """Add associated data."""
        self._require_active("update_aad")
        if not self.aead:
            raise CryptoError(
                ErrorCode.INVALID_STATE, f"{self.algorithm} is not an AEAD; it takes no associated data"
            )
        if self.data_seen:
            raise CryptoError(ErrorCode.INVALID_STATE, "update_aad() must come before the first update()")
        op = self.op
        assert op is not None
        self._guard(lambda: op.update_aad(data))

    async def update_aad_async(self, data: Buffer) -> None:
        """:meth:`update_aad`, awaiting the provider."""
        self._require_active("update_aad")
        if not self.aead:
            raise CryptoError(
                ErrorCode.INVALID_STATE, f"{self.algorithm} is not an AEAD; it takes no associated data"
            )
        if self.data_seen:
            raise CryptoError(ErrorCode.INVALID_STATE, "update_aad() must come before the first update()")
        op = self.op
        assert op is not None
        await self._guard_async(op.update_aad_async(data))


class SignState(StreamContextState):
    """Signature or MAC creation."""

    kind = "sign"
    op: SignOperation | None

    def __init__(
        self,
        spec: AlgorithmSpec,
        provider: LoadedProvider,
        key: KeyEntry,
        pkey: ProviderKey,
        max_buffered: int,
        context: bytes,
    ) -> None:
        super().__init__(spec, provider, key, pkey, max_buffered)
        self.context_string = context

    def _start(self, **params: Any) -> SignOperation:
        assert self.pkey is not None
        return self.provider.create_signer(self.algorithm, self.pkey, self.context_string)

    def _buffers_message(self) -> bool:
        return (
            self.spec.kind in _BUFFERING_KINDS
            and not self.spec.hash_algorithm
            and not self.algorithm.startswith("RSA")
        )

    def signature_size(self) -> int:
        """Maximum signature/tag size."""
        assert self.pkey is not None
        return self.provider.signature_size(self.algorithm, self.pkey)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["signature_size"] = self.signature_size()
        return info


class VerifyState(SignState):
    """Signature or MAC verification.

    MACs are verified by recomputing the tag with the provider and comparing in constant
    time here, so every provider gets identical truncation rules: a tag shorter than the
    full MAC is accepted only when the context was created with that ``tag_length``.
    """

    kind = "verify"

    def __init__(
        self,
        spec: AlgorithmSpec,
        provider: LoadedProvider,
        key: KeyEntry,
        pkey: ProviderKey,
        max_buffered: int,
        context: bytes,
        tag_length: int | None,
    ) -> None:
        super().__init__(spec, provider, key, pkey, max_buffered, context)
        self.tag_length = tag_length
        self.is_mac = spec.kind is AlgorithmKind.MAC

    def _start(self, **params: Any) -> Any:
        assert self.pkey is not None
        if self.is_mac:
            return self.provider.create_signer(self.algorithm, self.pkey, self.context_string)
        return self.provider.create_verifier(self.algorithm, self.pkey, self.context_string)

    def describe(self) -> dict[str, Any]:
        return ContextState.describe(self)

    def finalize_verify(self, signature: bytes) -> bool:
        """True if ``signature`` is valid for the message."""
        self._require_active("verify_finalize")
        op = self.op
        assert op is not None
        if self.is_mac:
            full: bytes = self._guard(op.finalize)
            self.op, self.state = None, MessagePhase.DONE
            wanted = len(full) if self.tag_length is None else self.tag_length
            return len(signature) == wanted and hmac.compare_digest(full[:wanted], signature)
        verifier: VerifyOperation = op  # type: ignore[assignment]
        ok = bool(self._guard(lambda: verifier.finalize(signature)))
        self.op, self.state = None, MessagePhase.DONE
        return ok

    async def finalize_verify_async(self, signature: bytes) -> bool:
        """:meth:`finalize_verify`, awaiting the provider."""
        self._require_active("verify_finalize")
        op = self.op
        assert op is not None
        if self.is_mac:
            full: bytes = await self._guard_async(op.finalize_async())
            self.op, self.state = None, MessagePhase.DONE
            wanted = len(full) if self.tag_length is None else self.tag_length
            return len(signature) == wanted and hmac.compare_digest(full[:wanted], signature)
        verifier: VerifyOperation = op  # type: ignore[assignment]
        ok = bool(await self._guard_async(verifier.finalize_async(signature)))
        self.op, self.state = None, MessagePhase.DONE
        return ok


class KemState(ContextState):
    """Key encapsulation with a public key or key pair."""

    kind = "kem"

    def __init__(
        self,
        spec: AlgorithmSpec,
        provider: LoadedProvider,
        key: KeyEntry,
        pkey: ProviderKey,
        derived_permissions: KeyOperationPermission,
    ) -> None:
        super().__init__(spec, provider, key, pkey)
        self.derived_permissions = derived_permissions

    def encapsulate(self) -> tuple[bytes, ProviderKey, LoadedProvider]:
        """(ciphertext, shared secret, the provider holding the secret)."""
        assert self.pkey is not None
        ciphertext, secret = self.provider.encapsulate(self.algorithm, self.pkey, self.derived_permissions)
        return ciphertext, secret, self.loaded

    def decapsulate(self, ciphertext: bytes) -> tuple[ProviderKey, LoadedProvider]:
        """(shared secret, the provider holding it) of ``ciphertext``."""
        assert self.pkey is not None
        return self.provider.decapsulate(
            self.algorithm, self.pkey, ciphertext, self.derived_permissions
        ), self.loaded


class AgreementState(KemState):
    """Key agreement with a private key."""

    kind = "agree"
