"""The key store's key-encryption key from a PKCS#11 token (``[daemon] kek_provider``).

Nothing is written to the host's disk: the KEK is derived inside the token, as
HMAC-SHA-256 (``CKM_SHA256_HMAC``) of a fixed label under a 32-byte generic secret that is a
token object, sensitive and never extractable, made on first use (``CKA_LABEL``
``cryptostack-kek``, a fixed ``CKA_ID``). Every daemon that reaches the same token -- a
network HSM through its vendor's module (docs/scaling.md) -- derives the same KEK, so
daemons on several hosts share one key store without copying a key file around; a host
that loses the token, or reaches another one, cannot open the store.

The token key is never destroyed by cryptostack. Losing it loses every key in the store,
as losing a KEK file would; back it up with the HSM's own means.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pkcs11.constants import Attribute
from pkcs11.mechanisms import KeyType, Mechanism

from cryptostack_core.sdk import CryptoError, ErrorCode, KekSource

from .cryptoki import MechanismSpec

KEK_LABEL = "cryptostack-kek"
KEK_ID = b"cryptostack-kek/1"
_DERIVATION = b"cryptostack key store KEK v1"
_CLASS_SECRET = 4  # CKO_SECRET_KEY


class TokenKek(KekSource):
    """A KEK derived in the token under a non-extractable HMAC key."""

    uses_file = False

    def __init__(self, call: Callable[..., Any], token_label: str) -> None:
        self._call = call
        """The provider's ``call`` (a request to its token worker)."""
        self._token = token_label

    def _found(self) -> list[int]:
        found = self._call("find", KEK_ID, what="looking for the key store's KEK key")
        return [int(handle) for handle, cls, _attrs in found if int(cls) == _CLASS_SECRET]

    def exists(self, path: Path) -> bool:
        """Whether the token holds the KEK key (the file path is not used)."""
        return bool(self._found())

    def describe(self, path: Path) -> str:
        """The token key, for messages."""
        return f"the HMAC key {KEK_LABEL!r} (CKA_ID {KEK_ID.hex()}) on token {self._token!r}"

    def load_or_create(self, path: Path) -> bytes:
        """The KEK: made on first use, then derived the same way on every start and host."""
        handles = self._found()
        if not handles:
            template: dict[int, Any] = {
                int(a): False
                for a in (
                    Attribute.ENCRYPT,
                    Attribute.DECRYPT,
                    Attribute.VERIFY,
                    Attribute.WRAP,
                    Attribute.UNWRAP,
                    Attribute.DERIVE,
                    Attribute.EXTRACTABLE,
                )
            }
            template.update(
                {
                    int(Attribute.TOKEN): True,
                    int(Attribute.PRIVATE): True,
                    int(Attribute.SENSITIVE): True,
                    int(Attribute.SIGN): True,
                    int(Attribute.LABEL): KEK_LABEL,
                    int(Attribute.ID): KEK_ID,
                }
            )
            self._call(
                "generate_secret",
                int(KeyType.GENERIC_SECRET),
                32,
                int(Mechanism.GENERIC_SECRET_KEY_GEN),
                template,
                what="making the key store's KEK key",
            )
            handles = self._found()
        if len(handles) != 1:
            raise CryptoError(
                ErrorCode.PROVIDER_ERROR,
                f"token {self._token!r} holds {len(handles)} "
                f"KEK keys (CKA_ID {KEK_ID.hex()}): two daemons made one at once "
                "on an empty token. Keep the one the store was made with (start "
                "one daemon first on a new store) and delete the other",
            )
        kek = bytes(
            self._call(
                "sign",
                MechanismSpec(int(Mechanism.SHA256_HMAC)),
                handles[0],
                _DERIVATION,
                32,
                what="deriving the key store's KEK",
            )
        )
        if len(kek) != 32:
            raise CryptoError(ErrorCode.PROVIDER_ERROR, f"the token's HMAC gave {len(kek)} bytes, not 32")
        return kek
