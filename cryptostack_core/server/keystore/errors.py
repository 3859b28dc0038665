"""What can go wrong with a key store, and what the operator is told to do about it."""

from __future__ import annotations

from dataclasses import dataclass

from cryptostack_core.wire.errors import CryptoError, ErrorCode

RECOVERY = (
    "see docs/security.md, 'Key store recovery': `cryptostack keystore verify --config "
    "FILE` explains; restore the store and its KEK from a backup, or `cryptostack "
    "keystore repair --config FILE` (drops what fails authentication: those keys are "
    "lost) or `cryptostack keystore reset --config FILE` (sets both aside, starts empty)"
)


class KeyStoreError(CryptoError):
    """The key store cannot be opened or used as it is (tampered, incomplete, wrong KEK,
    unknown schema). The message says what and how to recover."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INTERNAL_ERROR, message)


class KeyStoreUnavailable(CryptoError):
    """The database cannot be reached (or failed on its own). Keys a daemon already holds
    keep working; what needs the store fails with this until the backend reconnects."""

    def __init__(self, message: str, *, maybe_committed: bool = False) -> None:
        super().__init__(ErrorCode.KEYSTORE_UNAVAILABLE, message)
        self.maybe_committed = maybe_committed
        """True when the failure came while a commit was under way: the change may or may
        not have been made (the daemon then never destroys what it would have recorded)."""


@dataclass(frozen=True)
class Problem:
    """One finding of :meth:`~cryptostack_core.server.keystore.KeyStore.verify`."""

    kind: str  # "key", "cert", "trust", "store"
    name: str
    version: int | None
    what: str

    def __str__(self) -> str:
        label = {"key": "key slot", "cert": "certificate slot", "trust": "trust store", "store": "store"}[
            self.kind
        ]
        version = f" v{self.version}" if self.version is not None else ""
        return f"{label} {self.name!r}{version}: {self.what}"
