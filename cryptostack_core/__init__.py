"""cryptostack: a crypto service with interchangeable providers.

Applications use this package's client API (see API.md); the daemon owns the keys and runs
operations through provider plugins. ``inproc://`` runs the same service in-process.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .algorithms import REGISTRY, AlgorithmKind, AlgorithmSpec, Operation, canonical_name
from .contexts.certificates import (
    CertificateManagementContext,
    CertificateManagementContextConfig,
    CertificateVerificationContext,
    CertificateVerificationContextConfig,
    VerificationReport,
)
from .contexts.cipher import CipherContext, CipherContextConfig
from .contexts.hash import HashContext, HashContextConfig
from .contexts.kem import (
    KemContext,
    KemContextConfig,
    KeyAgreementContext,
    KeyAgreementContextConfig,
)
from .contexts.keys import (
    DeriveKeyParams,
    GenerateKeyParams,
    ImportKeyParams,
    KeyManagementContext,
    KeyManagementContextConfig,
)
from .contexts.sign import SignContext, SignContextConfig, VerifyContext, VerifyContextConfig
from .errors import CryptoError, ErrorCode
from .permissions import KeyOperationPermission, has_permission
from .resources import (
    CertVerifyResult,
    CipherDirection,
    CryptoResourceId,
    KeyFormat,
    KeySlotInfo,
    KeySlotStatus,
    ResourcePersistence,
    ResourceType,
    RevocationCheckPolicy,
)
from .stack import (
    CryptoContext,
    CryptoResourceGuard,
    CryptoStack,
    CryptoStackConfig,
    KeySlotObject,
    create_crypto_stack,
)

__all__ = [
    "REGISTRY",
    "AlgorithmKind",
    "AlgorithmSpec",
    "CertVerifyResult",
    "CertificateManagementContext",
    "CertificateManagementContextConfig",
    "CertificateVerificationContext",
    "CertificateVerificationContextConfig",
    "CipherContext",
    "CipherContextConfig",
    "CipherDirection",
    "CryptoContext",
    "CryptoError",
    "CryptoResourceGuard",
    "CryptoResourceId",
    "CryptoStack",
    "CryptoStackConfig",
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
    "Operation",
    "ResourcePersistence",
    "ResourceType",
    "RevocationCheckPolicy",
    "SignContext",
    "SignContextConfig",
    "VerificationReport",
    "VerifyContext",
    "VerifyContextConfig",
    "canonical_name",
    "create_crypto_stack",
    "has_permission",
]
