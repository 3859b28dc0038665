"""The entry point of the client API: stack, context, resource guards."""

from __future__ import annotations

import os
import weakref
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar, cast

from cryptostack_core.client.aio import connect_async
from cryptostack_core.client.arguments import (
    components_arg,
    enum_arg,
    instance_arg,
    optional_int_arg,
    str_arg,
    wrong_type,
)
from cryptostack_core.client.channel import AsyncChannel, AsyncTransport, Channel, ChannelCore
from cryptostack_core.client.contexts.base import (
    AsyncOperationContext,
    ContextCore,
    Duration,
    OperationContext,
    ResourceLike,
    rid_of,
    to_seconds,
    wire_rid,
)
from cryptostack_core.client.contexts.certificates import (
    AsyncCertificateManagementContext,
    AsyncCertificateVerificationContext,
    CertificateManagementContext,
    CertificateManagementContextConfig,
    CertificateVerificationContext,
    CertificateVerificationContextConfig,
)
from cryptostack_core.client.contexts.cipher import (
    AsyncCipherContext,
    CipherContext,
    CipherContextConfig,
)
from cryptostack_core.client.contexts.hash import AsyncHashContext, HashContext, HashContextConfig
from cryptostack_core.client.contexts.kem import (
    AsyncKemContext,
    AsyncKeyAgreementContext,
    KemContext,
    KemContextConfig,
    KeyAgreementContext,
    KeyAgreementContextConfig,
)
from cryptostack_core.client.contexts.keys import (
    AsyncKeyManagementContext,
    KeyManagementContext,
    KeyManagementContextConfig,
    slot_info_from_wire,
)
from cryptostack_core.client.contexts.seal import (
    AsyncSealContext,
    SealContext,
    SealContextConfig,
)
from cryptostack_core.client.contexts.sign import (
    AsyncSignContext,
    AsyncVerifyContext,
    SignContext,
    SignContextConfig,
    VerifyContext,
    VerifyContextConfig,
)
from cryptostack_core.client.contexts.streaming import (
    AsyncStreamingAeadContext,
    StreamingAeadContext,
    StreamingAeadContextConfig,
)
from cryptostack_core.client.guards import KeySlotObject
from cryptostack_core.client.plans import Plan, run, run_async
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


def _p_status(channel: ChannelCore) -> Plan[DaemonStatus]:
    result: DaemonStatus = yield "status", {}, channel.default_timeout
    return result


def _p_explain(
    channel: ChannelCore,
    algorithm: str,
    operation: str,
    key: ResourceLike | None,
    provider: int | None,
    placement: str | None = None,
    components: Mapping[str, int | list[int]] | None = None,
) -> Plan[list[ProviderCandidate]]:
    args: dict[str, Any] = {
        "algorithm": str_arg(algorithm, "algorithm"),
        "operation": str_arg(operation, "operation"),
        "provider": optional_int_arg(provider, "provider"),
    }
    if placement is not None:
        args["placement"] = str_arg(placement, "placement")
    if components is not None:
        args["components"] = components_arg(components, "components")
    if key is not None:
        args["key"] = wire_rid(key, "key")
    result: list[ProviderCandidate] = yield "explain", args, channel.default_timeout
    return result


def _p_algorithms(channel: ChannelCore) -> Plan[list[AlgorithmEntry]]:
    table = yield from channel._p_algorithms()
    return [cast(AlgorithmEntry, dict(entry)) for entry in table]


def _p_ping(channel: ChannelCore) -> Plan[None]:
    yield "ping", {}, channel.default_timeout


def _p_resolve(channel: ChannelCore, name: str, resource_type: ResourceType) -> Plan[CryptoResourceId]:
    args = {
        "name": str_arg(name, "name"),
        "type": enum_arg(resource_type, ResourceType, "resource_type").value,
    }
    result = yield "resource.resolve", args, channel.default_timeout
    return rid_from_wire(result, name)


def _p_slot_object(channel: ChannelCore, slot: ResourceLike) -> Plan[KeySlotObject]:
    rid_of(slot, "slot")
    info = yield "key.slot_info", {"slot": wire_rid(slot, "slot")}, channel.default_timeout
    return KeySlotObject(slot_info_from_wire(info))


class CryptoStack:
    """A connection to the crypto service. Thread-safe (threads share the connection, their
    requests in flight together); context manager."""

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
        return run(self._channel, _p_status(self._channel))

    def explain(
        self,
        algorithm: str,
        operation: str,
        key: ResourceLike | None = None,
        provider: int | None = None,
        *,
        placement: str | None = None,
        components: Mapping[str, int | list[int]] | None = None,
    ) -> list[ProviderCandidate]:
        """Provider selection for (algorithm, operation[, key]): each candidate and why.

        Hybrid algorithms: each candidate has a ``role`` -- ``native`` (one provider for
        both halves), ``pq``/``classical`` (a half, when they are split), ``combiner`` (the
        daemon, provider 0) or ``split`` (why it cannot be split); ``placement`` and
        ``components`` ask as :meth:`GenerateKeyParams.set_placement` and
        :meth:`GenerateKeyParams.set_component_providers` would (docs/hybrid.md)."""
        return run(
            self._channel,
            _p_explain(self._channel, algorithm, operation, key, provider, placement, components),
        )

    def algorithms(self) -> list[AlgorithmEntry]:
        """Every algorithm the service knows: name, kind, aliases, key types, sizes, the
        provider ids that registered it (``registered_by``) and, per operation, the
        providers that can run it (``providers``). Asked once per connection."""
        return run(self._channel, _p_algorithms(self._channel))

    def ping(self) -> None:
        """One round trip."""
        run(self._channel, _p_ping(self._channel))

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
        return run(self._channel, _p_resolve(self._channel, name, resource_type))

    def get_key_slot_object(self, slot: ResourceLike) -> KeySlotObject:
        """The slot's metadata object (permitted operations...)."""
        return run(self._channel, _p_slot_object(self._channel, slot))

    def create_cipher_context(self, config: CipherContextConfig) -> CipherContext:
        """Symmetric encryption/decryption."""
        return CipherContext(self, instance_arg(config, CipherContextConfig, "config"))

    def create_hash_context(self, config: HashContextConfig) -> HashContext:
        """Message digests."""
        return HashContext(self, instance_arg(config, HashContextConfig, "config"))

    def create_sign_context(self, config: SignContextConfig) -> SignContext:
        """Signatures and MACs (a :class:`VerifyContextConfig` is refused: verify with
        :meth:`create_verify_context`)."""
        return SignContext(self, _sign_config(config))

    def create_verify_context(self, config: VerifyContextConfig) -> VerifyContext:
        """Signature and MAC verification."""
        return VerifyContext(self, instance_arg(config, VerifyContextConfig, "config"))

    def create_streaming_aead_context(
        self,
        config: StreamingAeadContextConfig,
    ) -> StreamingAeadContext:
        """Authenticated encryption of data of any size, segment by segment."""
        return StreamingAeadContext(self, instance_arg(config, StreamingAeadContextConfig, "config"))

    def create_kem_context(self, config: KemContextConfig) -> KemContext:
        """Key encapsulation (a :class:`KeyAgreementContextConfig` is refused)."""
        return KemContext(self, _kem_config(config))

    def create_key_agreement_context(
        self,
        config: KeyAgreementContextConfig,
    ) -> KeyAgreementContext:
        """Key agreement."""
        return KeyAgreementContext(self, instance_arg(config, KeyAgreementContextConfig, "config"))

    def create_seal_context(self, config: SealContextConfig) -> SealContext:
        """Seal and open messages on a key slot: the daemon picks the nonce, the output
        names the key version (works across key rotation)."""
        return SealContext(self, instance_arg(config, SealContextConfig, "config"))

    def create_key_management_context(
        self,
        config: KeyManagementContextConfig | None = None,
    ) -> KeyManagementContext:
        """Key lifecycle."""
        return KeyManagementContext(self, _or_default(config, KeyManagementContextConfig))

    def create_certificate_verification_context(
        self,
        config: CertificateVerificationContextConfig | None = None,
    ) -> CertificateVerificationContext:
        """Certificate path validation."""
        return CertificateVerificationContext(self, _or_default(config, CertificateVerificationContextConfig))

    def create_certificate_management_context(
        self,
        config: CertificateManagementContextConfig | None = None,
    ) -> CertificateManagementContext:
        """Certificate, CRL and trust-store management."""
        return CertificateManagementContext(self, _or_default(config, CertificateManagementContextConfig))

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


def _sign_config(config: SignContextConfig) -> SignContextConfig:
    if isinstance(config, VerifyContextConfig):
        raise wrong_type("config", "a SignContextConfig", config)
    return instance_arg(config, SignContextConfig, "config")


def _kem_config(config: KemContextConfig) -> KemContextConfig:
    if isinstance(config, KeyAgreementContextConfig):
        raise wrong_type("config", "a KemContextConfig", config)
    return instance_arg(config, KemContextConfig, "config")


_D = TypeVar("_D")


def _or_default(config: _D | None, cls: type[_D]) -> _D:
    return cls() if config is None else instance_arg(config, cls, "config")


def create_crypto_stack(config: CryptoStackConfig | None = None) -> CryptoStack:
    """Connect to the service named by ``config`` (default: ``inproc://``)."""
    if config is None:
        config = CryptoStackConfig()
    instance_arg(config, CryptoStackConfig, "config")
    transport = connect(config.endpoint, config.daemon_config, config.connect_timeout)
    return CryptoStack(transport, config)


# --- asyncio --------------------------------------------------------------------------------
_C = TypeVar("_C", bound=ContextCore)


class AsyncCryptoStack:
    """:class:`CryptoStack` for asyncio: one connection, the requests of every task in
    flight on it together (up to the daemon's ``max_in_flight``). ``async with``."""

    def __init__(self, transport: AsyncTransport, config: CryptoStackConfig) -> None:
        self._channel = AsyncChannel(transport, config.default_timeout)
        self.endpoint = config.endpoint
        self._contexts: weakref.WeakSet[AsyncCryptoContext] = weakref.WeakSet()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._channel.closed

    def create_crypto_context(self) -> AsyncCryptoContext:
        """A context: the factory of operation contexts and the resolver of named resources."""
        ctx = AsyncCryptoContext(self)
        self._contexts.add(ctx)
        return ctx

    async def status(self) -> DaemonStatus:
        """The daemon's providers, slots and clients (keys typed by
        :class:`~cryptostack_core.DaemonStatus`)."""
        return await run_async(self._channel, _p_status(self._channel))

    async def explain(
        self,
        algorithm: str,
        operation: str,
        key: ResourceLike | None = None,
        provider: int | None = None,
        *,
        placement: str | None = None,
        components: Mapping[str, int | list[int]] | None = None,
    ) -> list[ProviderCandidate]:
        """Provider selection for (algorithm, operation[, key]): each candidate and why
        (``placement``/``components``: see :meth:`CryptoStack.explain`)."""
        return await run_async(
            self._channel,
            _p_explain(self._channel, algorithm, operation, key, provider, placement, components),
        )

    async def algorithms(self) -> list[AlgorithmEntry]:
        """Every algorithm the service knows (see :meth:`CryptoStack.algorithms`)."""
        return await run_async(self._channel, _p_algorithms(self._channel))

    async def ping(self) -> None:
        """One round trip."""
        await run_async(self._channel, _p_ping(self._channel))

    async def close(self) -> None:
        """Disconnect; the daemon frees every context and guard of this stack."""
        if self.closed:
            return
        for ctx in list(self._contexts):
            await ctx.close()
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncCryptoContext:
    """:class:`CryptoContext` for asyncio: ``await ctx.create_hash_context(config)`` ...;
    ``async with``."""

    def __init__(self, stack: AsyncCryptoStack) -> None:
        self._channel = stack._channel
        self._children: weakref.WeakSet[AsyncOperationContext] = weakref.WeakSet()
        self._closed = False

    def _register_child(self, child: AsyncOperationContext) -> None:
        if self._closed:
            raise CryptoError(ErrorCode.INVALID_STATE, "the crypto context is closed")
        self._children.add(child)

    async def _created(self, context: _C, plan: Plan[None]) -> _C:
        await run_async(self._channel, plan)
        return context

    async def resolve_resource(self, name: str, resource_type: ResourceType) -> CryptoResourceId:
        """Id of a named key slot, certificate slot or trust store."""
        return await run_async(self._channel, _p_resolve(self._channel, name, resource_type))

    async def get_key_slot_object(self, slot: ResourceLike) -> KeySlotObject:
        """The slot's metadata object (permitted operations...)."""
        return await run_async(self._channel, _p_slot_object(self._channel, slot))

    async def create_cipher_context(self, config: CipherContextConfig) -> AsyncCipherContext:
        """Symmetric encryption/decryption."""
        ctx = AsyncCipherContext(self, instance_arg(config, CipherContextConfig, "config"))
        return await self._created(ctx, ctx._p_create(config))

    async def create_hash_context(self, config: HashContextConfig) -> AsyncHashContext:
        """Message digests."""
        ctx = AsyncHashContext(self, instance_arg(config, HashContextConfig, "config"))
        return await self._created(ctx, ctx._p_create(config))

    async def create_sign_context(self, config: SignContextConfig) -> AsyncSignContext:
        """Signatures and MACs."""
        ctx = AsyncSignContext(self, _sign_config(config))
        return await self._created(ctx, ctx._p_create(config))

    async def create_verify_context(self, config: VerifyContextConfig) -> AsyncVerifyContext:
        """Signature and MAC verification."""
        ctx = AsyncVerifyContext(self, instance_arg(config, VerifyContextConfig, "config"))
        return await self._created(ctx, ctx._p_create(config))

    async def create_streaming_aead_context(
        self,
        config: StreamingAeadContextConfig,
    ) -> AsyncStreamingAeadContext:
        """Authenticated encryption of data of any size, segment by segment."""
        ctx = AsyncStreamingAeadContext(self, instance_arg(config, StreamingAeadContextConfig, "config"))
        return await self._created(ctx, ctx._p_create(config))

    async def create_kem_context(self, config: KemContextConfig) -> AsyncKemContext:
        """Key encapsulation."""
        ctx = AsyncKemContext(self, _kem_config(config))
        return await self._created(ctx, ctx._p_create(config))

    async def create_key_agreement_context(
        self,
        config: KeyAgreementContextConfig,
    ) -> AsyncKeyAgreementContext:
        """Key agreement."""
        ctx = AsyncKeyAgreementContext(self, instance_arg(config, KeyAgreementContextConfig, "config"))
        return await self._created(ctx, ctx._p_create(config))

    def create_seal_context(self, config: SealContextConfig) -> AsyncSealContext:
        """Seal and open messages on a key slot (no round trip to create it); see
        :meth:`CryptoContext.create_seal_context`."""
        return AsyncSealContext(self, instance_arg(config, SealContextConfig, "config"))

    def create_key_management_context(
        self,
        config: KeyManagementContextConfig | None = None,
    ) -> AsyncKeyManagementContext:
        """Key lifecycle (no round trip to create it)."""
        return AsyncKeyManagementContext(self, _or_default(config, KeyManagementContextConfig))

    def create_certificate_verification_context(
        self,
        config: CertificateVerificationContextConfig | None = None,
    ) -> AsyncCertificateVerificationContext:
        """Certificate path validation (no round trip to create it)."""
        return AsyncCertificateVerificationContext(
            self, _or_default(config, CertificateVerificationContextConfig)
        )

    def create_certificate_management_context(
        self,
        config: CertificateManagementContextConfig | None = None,
    ) -> AsyncCertificateManagementContext:
        """Certificate, CRL and trust-store management (no round trip to create it)."""
        return AsyncCertificateManagementContext(
            self, _or_default(config, CertificateManagementContextConfig)
        )

    async def close(self) -> None:
        """Close every operation context created here."""
        if self._closed:
            return
        self._closed = True
        for child in list(self._children):
            await child.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _StackOpening:
    """What :func:`create_async_crypto_stack` returns: await it for the stack, or use it
    with ``async with`` (the stack closes at the end of the block)."""

    def __init__(self, config: CryptoStackConfig) -> None:
        self._config = config
        self._stack: AsyncCryptoStack | None = None

    async def _open(self) -> AsyncCryptoStack:
        config = self._config
        transport = await connect_async(config.endpoint, config.daemon_config, config.connect_timeout)
        return AsyncCryptoStack(transport, config)

    def __await__(self) -> Generator[Any, None, AsyncCryptoStack]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncCryptoStack:
        self._stack = await self._open()
        return self._stack

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.close()


def create_async_crypto_stack(config: CryptoStackConfig | None = None) -> _StackOpening:
    """Connect an asyncio stack to the service named by ``config`` (default ``inproc://``)::

    async with cs.create_async_crypto_stack(config) as stack: ...
    stack = await cs.create_async_crypto_stack(config)
    """
    return _StackOpening(_or_default(config, CryptoStackConfig))
