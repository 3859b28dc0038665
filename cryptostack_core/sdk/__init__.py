"""The provider SDK: everything a cryptostack provider needs, in one import.

A provider subclasses :class:`Provider`, registers it as an entry point in the group
``cryptostack.providers`` and raises :class:`CryptoError` with the matching
:class:`ErrorCode`. Providers import only this package, :mod:`cryptostack_core.wire` and
:mod:`cryptostack_core.testing`; never the client or the server.

Besides the names below: :mod:`.workers` (the worker host, for providers that drive a C
library in a child process) and :mod:`.options` (typed provider options).
"""

from cryptostack_core.sdk.deadline import (
    call_deadline,
    deadline_scope,
    deadline_scope_until,
    remaining_time,
)
from cryptostack_core.sdk.provider import (
    Buffer,
    Capability,
    CipherOperation,
    HashOperation,
    KekSource,
    OrphanDestroyed,
    Provider,
    ProviderEnvironment,
    ProviderKey,
    ProviderState,
    SignOperation,
    StoredKey,
    VerifyOperation,
)
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmKind, AlgorithmSpec, KeyClass, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode, invalid_argument
from cryptostack_core.wire.permissions import KeyOperationPermission
from cryptostack_core.wire.resources import CipherDirection, KeyFormat

__all__ = [
    "REGISTRY",
    "AlgorithmKind",
    "AlgorithmSpec",
    "Buffer",
    "Capability",
    "CipherDirection",
    "CipherOperation",
    "CryptoError",
    "ErrorCode",
    "HashOperation",
    "KekSource",
    "KeyClass",
    "KeyFormat",
    "KeyOperationPermission",
    "Operation",
    "OrphanDestroyed",
    "Provider",
    "ProviderEnvironment",
    "ProviderKey",
    "ProviderState",
    "SignOperation",
    "StoredKey",
    "VerifyOperation",
    "call_deadline",
    "deadline_scope",
    "deadline_scope_until",
    "invalid_argument",
    "remaining_time",
]
