"""The entry point of the client API: stack, context, resource guards."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from .contexts.base import Duration, OperationContext, ResourceLike, rid_of, to_seconds, wire_rid
from .contexts.certificates import (
    CertificateManagementContext,
    CertificateManagementContextConfig,
    CertificateVerificationContext,
    CertificateVerificationContextConfig,
)
from .contexts.cipher import CipherContext, CipherContextConfig
from .contexts.hash import HashContext, HashContextConfig
from .contexts.kem import (
    KemContext,
    KemContextConfig,
    KeyAgreementContext,
    KeyAgreementContextConfig,
)
from .contexts.keys import KeyManagementContext, KeyManagementContextConfig
from .contexts.sign import SignContext, SignContextConfig, VerifyContext, VerifyContextConfig
from .errors import CryptoError, ErrorCode
from .permissions import KeyOperationPermission
from .protocol import rid_from_wire
from .resources import CryptoResourceId, ResourcePersistence, ResourceType
from .transport import Transport, connect

DEFAULT_TIMEOUT = 30.0
ENDPOINT_ENV = "CRYPTOSTACK_ENDPOINT"


class CryptoStackConfig:
    """How to reach the service, and the default per-call timeout."""

    def __init__(self) -> None:
        self.endpoint: str = os.environ.get(ENDPOINT_ENV, "inproc://")
        self.default_timeout: float | None = DEFAULT_TIMEOUT
        self.daemon_config: Any = None
        self.connect_timeout: float | None = 5.0

    def set_connection_endpoint(self, endpoint: str) -> Self:
        """``unix:///path/to/daemon.sock`` or ``inproc://`` (the default)."""
        if not isinstance(endpoint, str):
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "endpoint must be a string")
        self.endpoint = endpoint
        return self

    def set_default_operation_timeout(self, timeout: Duration | None) -> Self:
        """Deadline of each call unless a context overrides it (None: unbounded)."""
        self.default_timeout = to_seconds(timeout)
        return self

    def set_daemon_config(self, config: str | Path | Mapping[str, Any]) -> Self:
        """Config (TOML path or mapping) for the ``inproc://`` service."""
        self.daemon_config = config
        return self

    def set_connect_timeout(self, timeout: Duration | None) -> Self:
        """How long to wait for the daemon to accept the connection."""
        self.connect_timeout = to_seconds(timeout)
        return self


class CryptoResourceGuard:
    """Owns a daemon-side resource (key, certificate, CRL, trust store) until released.

    Accepted everywhere a :class:`CryptoResourceId` is. ``release()`` is idempotent; a guard
    that is garbage-collected unreleased is released with the stack's next request.
    """

    def __init__(self, stack: CryptoStack, rid: CryptoResourceId,
                 persistence: ResourcePersistence, permitted: KeyOperationPermission,
                 algorithm: str | None = None, provider: int | None = None) -> None:
        self._stack = stack
        self._rid = rid
        self._persistence = persistence
        self._permitted = permitted
        self.algorithm = algorithm
        self.provider = provider
        self._released = False

    @classmethod
    def _from_wire(cls, stack: CryptoStack, info: Mapping[str, Any]) -> CryptoResourceGuard:
        return cls(stack, rid_from_wire(info["id"], info.get("label")),
                   ResourcePersistence(info.get("persistence", "EPHEMERAL")),
                   KeyOperationPermission(info.get("permissions") or 0),
                   info.get("algorithm"), info.get("provider"))

    @property
    def resource_id(self) -> CryptoResourceId:
        """The id this guard owns."""
        return self._rid

    @property
    def type(self) -> ResourceType:
        """Resource type (KEY, CERTIFICATE, CRL, VERIFICATION_TRUST_STORE)."""
        return self._rid.type

    @property
    def persistence(self) -> ResourcePersistence:
        """EPHEMERAL or PERSISTENT (loaded from a slot)."""
        return self._persistence

    @property
    def permitted_operations(self) -> KeyOperationPermission:
        """What the key may be used for."""
        return self._permitted

    @property
    def released(self) -> bool:
        """True once released."""
        return self._released

    def release(self) -> None:
        """Free the resource in the daemon; harmless if already released."""
        if self._released:
            return
        self._released = True
        self._stack._release(self._rid)

    def __enter__(self) -> CryptoResourceGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if not getattr(self, "_released", True):
            self._released = True
            try:
                self._stack._queue_release(self._rid)
            except Exception:  # noqa: BLE001 - never raise from a finalizer
                pass

    def __repr__(self) -> str:
        state = "released" if self._released else self._persistence.value.lower()
        return f"<CryptoResourceGuard {self._rid!r} {self.algorithm or ''} {state}>"


class KeySlotObject:
    """A key slot's stored metadata, as the design's ``GetKeySlotObject``."""

    def __init__(self, info: Any) -> None:
        self.info = info

    def get_permitted_operations(self) -> KeyOperationPermission:
        """Permissions of the key in the slot (or declared for an empty slot)."""
        return KeyOperationPermission(self.info.permissions)

    @property
    def algorithm(self) -> str | None:
        """Key algorithm."""
        return self.info.algorithm  # type: ignore[no-any-return]


class CryptoStack:
    """A connection to the crypto service. Thread-safe; context manager."""

    def __init__(self, transport: Transport, config: CryptoStackConfig) -> None:
        self._transport = transport
        self._default_timeout = config.default_timeout
        self._close_timeout = 5.0
        self.endpoint = config.endpoint
        self.closed = False
        self._releases: list[CryptoResourceId] = []
        self._release_lock = threading.Lock()
        self._contexts: weakref.WeakSet[CryptoContext] = weakref.WeakSet()

    def _queue_release(self, rid: CryptoResourceId) -> None:
        with self._release_lock:
            self._releases.append(rid)

    def _call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        if self.closed:
            raise CryptoError(ErrorCode.CONNECTION_FAILED, "the stack is closed")
        if not self._releases:
            return self._transport.call(op, args, timeout)
        with self._release_lock:
            queued, self._releases = self._releases, []
        # Releases of garbage-collected guards ride along with this request.
        releases = [{"op": "resource.release", "args": {"id": wire_rid(r), "quiet": True}}
                    for r in queued]
        if op == "batch":
            results = self._transport.call("batch", {"calls": [*releases, *args["calls"]]},
                                           timeout)
            return results[len(releases):]
        results = self._transport.call("batch", {"calls": [*releases, {"op": op, "args": args}]},
                                       timeout)
        return results[-1]

    def _release(self, rid: CryptoResourceId) -> None:
        if self.closed:
            return
        try:
            self._call("resource.release", {"id": wire_rid(rid)}, self._close_timeout)
        except CryptoError as exc:
            if exc.code not in (ErrorCode.RESOURCE_NOT_FOUND, ErrorCode.CONNECTION_FAILED):
                raise

    def create_crypto_context(self) -> CryptoContext:
        """A context: the factory of operation contexts and the resolver of named resources."""
        ctx = CryptoContext(self)
        self._contexts.add(ctx)
        return ctx

    def status(self) -> dict[str, Any]:
        """The daemon's providers, slots and clients."""
        result: dict[str, Any] = self._call("status", {}, self._default_timeout)
        return result

    def explain(self, algorithm: str, operation: str, key: ResourceLike | None = None,
                provider: int | None = None) -> list[dict[str, Any]]:
        """Provider selection for (algorithm, operation[, key]): each candidate and why."""
        args: dict[str, Any] = {"algorithm": algorithm, "operation": operation,
                                "provider": provider}
        if key is not None:
            args["key"] = wire_rid(key, "key")
        result: list[dict[str, Any]] = self._call("explain", args, self._default_timeout)
        return result

    def ping(self) -> None:
        """One round trip."""
        self._call("ping", {}, self._default_timeout)

    def close(self) -> None:
        """Disconnect; the daemon frees every context and guard of this stack."""
        if self.closed:
            return
        for ctx in list(self._contexts):
            ctx.close()
        self.closed = True
        self._transport.close()

    def __enter__(self) -> CryptoStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CryptoContext:
    """Creates operation contexts and resolves named resources. Context manager."""

    def __init__(self, stack: CryptoStack) -> None:
        self._stack = stack
        self._children: weakref.WeakSet[OperationContext] = weakref.WeakSet()
        self._closed = False

    def _register_child(self, child: OperationContext) -> None:
        if self._closed:
            raise CryptoError(ErrorCode.INVALID_STATE, "the crypto context is closed")
        self._children.add(child)

    def resolve_resource(self, name: str, resource_type: ResourceType) -> CryptoResourceId:
        """Id of a named key slot, certificate slot or trust store."""
        result = self._stack._call("resource.resolve",
                                   {"name": name, "type": ResourceType(resource_type).value},
                                   self._stack._default_timeout)
        return rid_from_wire(result, name)

    def get_key_slot_object(self, slot: ResourceLike) -> KeySlotObject:
        """The slot's metadata object (permitted operations...)."""
        from .contexts.keys import slot_info_from_wire

        rid_of(slot, "slot")
        info = self._stack._call("key.slot_info", {"slot": wire_rid(slot, "slot")},
                                 self._stack._default_timeout)
        return KeySlotObject(slot_info_from_wire(info))

    def create_cipher_context(self, config: CipherContextConfig) -> CipherContext:
        """Symmetric encryption/decryption."""
        return CipherContext(self, config)

    def create_hash_context(self, config: HashContextConfig) -> HashContext:
        """Message digests."""
        return HashContext(self, config)

    def create_sign_context(self, config: SignContextConfig) -> SignContext:
        """Signatures and MACs."""
        return SignContext(self, config)

    def create_verify_context(self, config: VerifyContextConfig) -> VerifyContext:
        """Signature and MAC verification."""
        return VerifyContext(self, config)

    def create_kem_context(self, config: KemContextConfig) -> KemContext:
        """Key encapsulation."""
        return KemContext(self, config)

    def create_key_agreement_context(self, config: KeyAgreementContextConfig,
                                     ) -> KeyAgreementContext:
        """Key agreement."""
        return KeyAgreementContext(self, config)

    def create_key_management_context(self, config: KeyManagementContextConfig | None = None,
                                      ) -> KeyManagementContext:
        """Key lifecycle."""
        return KeyManagementContext(self, config or KeyManagementContextConfig())

    def create_certificate_verification_context(
            self, config: CertificateVerificationContextConfig | None = None,
    ) -> CertificateVerificationContext:
        """Certificate path validation."""
        return CertificateVerificationContext(self, config or CertificateVerificationContextConfig())

    def create_certificate_management_context(
            self, config: CertificateManagementContextConfig | None = None,
    ) -> CertificateManagementContext:
        """Certificate, CRL and trust-store management."""
        return CertificateManagementContext(self, config or CertificateManagementContextConfig())

    def close(self) -> None:
        """Close every operation context created here."""
        if self._closed:
            return
        self._closed = True
        for child in list(self._children):
            child.close()

    def __enter__(self) -> CryptoContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_crypto_stack(config: CryptoStackConfig | None = None) -> CryptoStack:
    """Connect to the service named by ``config`` (default: ``inproc://``)."""
    config = config or CryptoStackConfig()
    transport = connect(config.endpoint, config.daemon_config, config.connect_timeout)
    return CryptoStack(transport, config)
