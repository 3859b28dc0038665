"""cryptostack: a crypto service with interchangeable providers.

Applications use this package's client API (see API.md); the daemon owns the keys and runs
operations through provider plugins. ``inproc://`` runs the same service in-process.
"""

from __future__ import annotations

from cryptostack_core.client.contexts.certificates import (
    AsyncCertificateManagementContext,
    AsyncCertificateVerificationContext,
    CertificateManagementContext,
    CertificateManagementContextConfig,
    CertificateVerificationContext,
    CertificateVerificationContextConfig,
    VerificationReport,
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
    DeriveKeyParams,
    GenerateKeyParams,
    ImportKeyParams,
    KeyManagementContext,
    KeyManagementContextConfig,
)
from cryptostack_core.client.contexts.seal import AsyncSealContext, SealContext, SealContextConfig
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
from cryptostack_core.client.guards import (
    AsyncCryptoResourceGuard,
    CryptoResourceGuard,
    KeySlotObject,
)
from cryptostack_core.client.stack import (
    AsyncCryptoContext,
    AsyncCryptoStack,
    CryptoContext,
    CryptoStack,
    CryptoStackConfig,
    create_async_crypto_stack,
    create_crypto_stack,
)
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmKind, AlgorithmSpec, Operation, canonical_name
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission, has_permission
from cryptostack_core.wire.resources import (
    CertVerifyResult,
    CipherDirection,
    CryptoResourceId,
    KeyFormat,
    KeySlotInfo,
    KeySlotStatus,
    KeyVersionInfo,
    KeyVersionState,
    ResourcePersistence,
    ResourceType,
    RevocationCheckPolicy,
)
from cryptostack_core.wire.status import (
    AlgorithmEntry,
    CertSlotSummary,
    ClientSummary,
    DaemonStatus,
    KeySlotSummary,
    KeystoreStatus,
    ProviderCandidate,
    ProviderStatus,
)
from cryptostack_core.wire.version import __version__

__all__ = [
    "__version__",
    "REGISTRY",
    "AlgorithmEntry",
    "AlgorithmKind",
    "AlgorithmSpec",
    "AsyncCertificateManagementContext",
    "AsyncCertificateVerificationContext",
    "AsyncCipherContext",
    "AsyncCryptoContext",
    "AsyncCryptoResourceGuard",
    "AsyncCryptoStack",
    "AsyncHashContext",
    "AsyncKemContext",
    "AsyncKeyAgreementContext",
    "AsyncKeyManagementContext",
    "AsyncSealContext",
    "AsyncSignContext",
    "AsyncStreamingAeadContext",
    "AsyncVerifyContext",
    "CertSlotSummary",
    "CertVerifyResult",
    "CertificateManagementContext",
    "CertificateManagementContextConfig",
    "CertificateVerificationContext",
    "CertificateVerificationContextConfig",
    "CipherContext",
    "CipherContextConfig",
    "CipherDirection",
    "ClientSummary",
    "CryptoContext",
    "CryptoError",
    "CryptoResourceGuard",
    "CryptoResourceId",
    "CryptoStack",
    "CryptoStackConfig",
    "DaemonStatus",
    "DeriveKeyParams",
    "ErrorCode",
    "GenerateKeyParams",
    "HashContext",
    "HashContextConfig",
    "ImportKeyParams",
    "KemContext",
    "KemContextConfig",
    "KeyAgreementContext",
    "KeyAgreementContextConfig",
    "KeyFormat",
    "KeyManagementContext",
    "KeyManagementContextConfig",
    "KeyOperationPermission",
    "KeySlotInfo",
    "KeySlotObject",
    "KeySlotStatus",
    "KeySlotSummary",
    "KeystoreStatus",
    "KeyVersionInfo",
    "KeyVersionState",
    "Operation",
    "ProviderCandidate",
    "ProviderStatus",
    "ResourcePersistence",
    "ResourceType",
    "RevocationCheckPolicy",
    "SealContext",
    "SealContextConfig",
    "SignContext",
    "SignContextConfig",
    "StreamingAeadContext",
    "StreamingAeadContextConfig",
    "VerificationReport",
    "VerifyContext",
    "VerifyContextConfig",
    "canonical_name",
    "create_async_crypto_stack",
    "create_crypto_stack",
    "has_permission",
]
