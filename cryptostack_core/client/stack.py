"""The entry point of the client API: stack, context, resource guards."""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self, cast

from cryptostack_core.client.arguments import (
    components_arg,
    enum_arg,
    instance_arg,
    optional_int_arg,
    str_arg,
    wrong_type,
)
from cryptostack_core.client.channel import Channel
from cryptostack_core.client.contexts.base import (
    Duration,
    OperationContext,
    ResourceLike,
    rid_of,
    to_seconds,
    wire_rid,
)
from cryptostack_core.client.contexts.certificates import (
    CertificateManagementContext,
    CertificateManagementContextConfig,
    CertificateVerificationContext,
    CertificateVerificationContextConfig,
)
from cryptostack_core.client.contexts.cipher import CipherContext, CipherContextConfig
from cryptostack_core.client.contexts.hash import HashContext, HashContextConfig
from cryptostack_core.client.contexts.kem import (
    KemContext,
    KemContextConfig,
    KeyAgreementContext,
    KeyAgreementContextConfig,
)
from cryptostack_core.client.contexts.keys import (
    KeyManagementContext,
    KeyManagementContextConfig,
    slot_info_from_wire,
)
from cryptostack_core.client.contexts.sign import (
    SignContext,
    SignContextConfig,
    VerifyContext,
    VerifyContextConfig,
)
from cryptostack_core.client.contexts.streaming import (
    StreamingAeadContext,
    StreamingAeadContextConfig,
)
from cryptostack_core.client.guards import KeySlotObject
from cryptostack_core.client.transport import connect
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.protocol import rid_from_wire
from cryptostack_core.wire.resources import CryptoResourceId, ResourceType
from cryptostack_core.wire.status import AlgorithmEntry, DaemonStatus, ProviderCandidate
from cryptostack_core.wire.transport import Transport

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
        self.endpoint = str_arg(endpoint, "endpoint")
        return self

    def set_default_operation_timeout(self, timeout: Duration | None) -> Self:
        """Deadline of each call unless a context overrides it (None: unbounded)."""
        self.default_timeout = to_seconds(timeout, "timeout")
        return self

    def set_daemon_config(self, config: str | Path | Mapping[str, Any]) -> Self:
        """Config (TOML path or mapping) for the ``inproc://`` service."""
        if not isinstance(config, (str, Path, Mapping)):
            raise wrong_type("config", "a TOML file path (str or Path) or a mapping", config)
        self.daemon_config = config
        return self

    def set_connect_timeout(self, timeout: Duration | None) -> Self:
        """How long to wait for the daemon to accept the connection."""
        self.connect_timeout = to_seconds(timeout, "timeout")
        return self


class CryptoStack:
    """A connection to the crypto service. Thread-safe; context manager."""

    def __init__(self, transport: Transport, config: CryptoStackConfig) -> None:
        self._channel = Channel(transport, config.default_timeout)
        self.endpoint = config.endpoint
        self._contexts: weakref.WeakSet[CryptoContext] = weakref.WeakSet()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._channel.closed

    def create_crypto_context(self) -> CryptoContext:
        """A context: the factory of operation contexts and the resolver of named resources."""
        ctx = CryptoContext(self)
        self._contexts.add(ctx)
        return ctx

    def status(self) -> DaemonStatus:
        """The daemon's providers, slots and clients (a dict; its keys are typed by
        :class:`~cryptostack_core.DaemonStatus`)."""
        result: DaemonStatus = self._channel.call("status", {}, self._channel.default_timeout)
        return result

    def explain(self, algorithm: str, operation: str, key: ResourceLike | None = None,
                provider: int | None = None, *, placement: str | None = None,
                components: Mapping[str, int | list[int]] | None = None
                ) -> list[ProviderCandidate]:
        """Provider selection for (algorithm, operation[, key]): each candidate and why.

        Hybrid algorithms: each candidate has a ``role`` -- ``native`` (one provider for
        both halves), ``pq``/``classical`` (a half, when they are split), ``combiner`` (the
        daemon, provider 0) or ``split`` (why it cannot be split); ``placement`` and
        ``components`` ask as :meth:`GenerateKeyParams.set_placement` and
        :meth:`GenerateKeyParams.set_component_providers` would (docs/hybrid.md)."""
        args: dict[str, Any] = {"algorithm": str_arg(algorithm, "algorithm"),
                                "operation": str_arg(operation, "operation"),
                                "provider": optional_int_arg(provider, "provider")}
        if placement is not None:
            args["placement"] = str_arg(placement, "placement")
        if components is not None:
            args["components"] = components_arg(components, "components")
        if key is not None:
            args["key"] = wire_rid(key, "key")
        result: list[ProviderCandidate] = self._channel.call("explain", args,
                                                             self._channel.default_timeout)
        return result

    def algorithms(self) -> list[AlgorithmEntry]:
        """Every algorithm the service knows: name, kind, aliases, key types, sizes, the
        provider ids that registered it (``registered_by``) and, per operation, the
        providers that can run it (``providers``). Asked once per connection."""
        return [cast(AlgorithmEntry, dict(entry)) for entry in self._channel.algorithms()]

    def ping(self) -> None:
        """One round trip."""
        self._channel.call("ping", {}, self._channel.default_timeout)

    def close(self) -> None:
        """Disconnect; the daemon frees every context and guard of this stack."""
        if self.closed:
            return
        for ctx in list(self._contexts):
            ctx.close()
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CryptoContext:
    """Creates operation contexts and resolves named resources. Context manager."""

    def __init__(self, stack: CryptoStack) -> None:
        self._channel = stack._channel
        self._children: weakref.WeakSet[OperationContext] = weakref.WeakSet()
        self._closed = False

    def _register_child(self, child: OperationContext) -> None:
        if self._closed:
            raise CryptoError(ErrorCode.INVALID_STATE, "the crypto context is closed")
        self._children.add(child)

    def resolve_resource(self, name: str, resource_type: ResourceType) -> CryptoResourceId:
        """Id of a named key slot, certificate slot or trust store."""
        args = {"name": str_arg(name, "name"),
                "type": enum_arg(resource_type, ResourceType, "resource_type").value}
        result = self._channel.call("resource.resolve", args, self._channel.default_timeout)
        return rid_from_wire(result, name)

    def get_key_slot_object(self, slot: ResourceLike) -> KeySlotObject:
        """The slot's metadata object (permitted operations...)."""
        rid_of(slot, "slot")
        info = self._channel.call("key.slot_info", {"slot": wire_rid(slot, "slot")},
                                  self._channel.default_timeout)
        return KeySlotObject(slot_info_from_wire(info))

    def create_cipher_context(self, config: CipherContextConfig) -> CipherContext:
        """Symmetric encryption/decryption."""
        return CipherContext(self, instance_arg(config, CipherContextConfig, "config"))

    def create_hash_context(self, config: HashContextConfig) -> HashContext:
        """Message digests."""
        return HashContext(self, instance_arg(config, HashContextConfig, "config"))

    def create_sign_context(self, config: SignContextConfig) -> SignContext:
        """Signatures and MACs (a :class:`VerifyContextConfig` is refused: verify with
        :meth:`create_verify_context`)."""
        if isinstance(config, VerifyContextConfig):
            raise wrong_type("config", "a SignContextConfig", config)
        return SignContext(self, instance_arg(config, SignContextConfig, "config"))

    def create_verify_context(self, config: VerifyContextConfig) -> VerifyContext:
        """Signature and MAC verification."""
        return VerifyContext(self, instance_arg(config, VerifyContextConfig, "config"))

    def create_streaming_aead_context(self, config: StreamingAeadContextConfig,
                                      ) -> StreamingAeadContext:
        """Authenticated encryption of data of any size, segment by segment."""
        return StreamingAeadContext(self, instance_arg(config, StreamingAeadContextConfig,
                                                       "config"))

    def create_kem_context(self, config: KemContextConfig) -> KemContext:
        """Key encapsulation (a :class:`KeyAgreementContextConfig` is refused)."""
        if isinstance(config, KeyAgreementContextConfig):
            raise wrong_type("config", "a KemContextConfig", config)
        return KemContext(self, instance_arg(config, KemContextConfig, "config"))

    def create_key_agreement_context(self, config: KeyAgreementContextConfig,
                                     ) -> KeyAgreementContext:
        """Key agreement."""
        return KeyAgreementContext(self, instance_arg(config, KeyAgreementContextConfig,
                                                      "config"))

    def create_key_management_context(self, config: KeyManagementContextConfig | None = None,
                                      ) -> KeyManagementContext:
        """Key lifecycle."""
        if config is None:
            config = KeyManagementContextConfig()
        return KeyManagementContext(self, instance_arg(config, KeyManagementContextConfig,
                                                       "config"))

    def create_certificate_verification_context(
            self, config: CertificateVerificationContextConfig | None = None,
    ) -> CertificateVerificationContext:
        """Certificate path validation."""
        if config is None:
            config = CertificateVerificationContextConfig()
        return CertificateVerificationContext(self, instance_arg(
            config, CertificateVerificationContextConfig, "config"))

    def create_certificate_management_context(
            self, config: CertificateManagementContextConfig | None = None,
    ) -> CertificateManagementContext:
        """Certificate, CRL and trust-store management."""
        if config is None:
            config = CertificateManagementContextConfig()
        return CertificateManagementContext(self, instance_arg(
            config, CertificateManagementContextConfig, "config"))

    def close(self) -> None:
        """Close every operation context created here."""
        if self._closed:
            return
        self._closed = True
        for child in list(self._children):
            child.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_crypto_stack(config: CryptoStackConfig | None = None) -> CryptoStack:
    """Connect to the service named by ``config`` (default: ``inproc://``)."""
    if config is None:
        config = CryptoStackConfig()
    instance_arg(config, CryptoStackConfig, "config")
    transport = connect(config.endpoint, config.daemon_config, config.connect_timeout)
    return CryptoStack(transport, config)
