"""Keys held in the token: the provider-side handle object, attribute templates, references.

A :class:`TokenKey` names token objects by handle *in one worker generation*. What happens
when the worker restarts depends on where the key lives:

* token objects (persisted slots, found by ``CKA_ID``) are found again in the new worker;
* public keys alone are re-created from the public key the provider keeps;
* session objects holding secret or private material (generated or imported ephemeral
  keys) die with the worker: using one afterwards raises ``PROVIDER_ERROR`` naming the
  restart. Keeping their material outside the token to replay it would defeat the token.

Permissions map to usage attributes one to one (``ENCRYPT``->``CKA_ENCRYPT``... ``MAC`` grants
``CKA_SIGN`` and ``CKA_VERIFY``, ``AGREE`` grants ``CKA_DERIVE``; for HMAC and generic secrets
``VERIFY`` also grants ``CKA_SIGN``, since verifying a MAC means computing it); ``EXPORT`` is
``CKA_EXTRACTABLE``. Secret and private keys are ``CKA_PRIVATE`` and ``CKA_SENSITIVE``; only an
exportable key of a type the token cannot wrap is created non-sensitive (see
:mod:`cryptostack_pkcs11.provider`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pkcs11.constants import Attribute

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderKey, StoredKey
from cryptostack_core.sdk import KeyOperationPermission as P

A = Attribute


def _usage(perms: P, pairs: dict[Attribute, P]) -> dict[int, Any]:
    return {int(attr): bool(perms & wanted) for attr, wanted in pairs.items()}


def secret_template(
    perms: P, *, extractable: bool, sensitive: bool = True, mac: bool = False
) -> dict[int, Any]:
    """Attributes of a secret session key with permissions ``perms``. For a MAC key
    (``mac``), VERIFY also grants ``CKA_SIGN``: a MAC is verified by computing it (the daemon
    compares the tags), so a verify-only HMAC key must still be able to MAC."""
    signing = P.SIGN | P.MAC | (P.VERIFY if mac else P.NONE)
    template = _usage(
        perms,
        {
            A.ENCRYPT: P.ENCRYPT,
            A.DECRYPT: P.DECRYPT,
            A.WRAP: P.WRAP,
            A.UNWRAP: P.UNWRAP,
            A.SIGN: signing,
            A.VERIFY: P.VERIFY | P.MAC,
            A.DERIVE: P.DERIVE | P.AGREE,
        },
    )
    template.update(
        {
            int(A.TOKEN): False,
            int(A.PRIVATE): True,
            int(A.SENSITIVE): sensitive,
            int(A.EXTRACTABLE): extractable,
        }
    )
    return template


def private_template(perms: P, *, extractable: bool, rsa: bool, sensitive: bool = True) -> dict[int, Any]:
    """Attributes of a private session key."""
    usage = {A.SIGN: P.SIGN, A.DERIVE: P.DERIVE | P.AGREE}
    if rsa:
        usage.update({A.DECRYPT: P.DECRYPT, A.UNWRAP: P.UNWRAP})
    template = _usage(perms, usage)
    template.update(
        {
            int(A.TOKEN): False,
            int(A.PRIVATE): True,
            int(A.SENSITIVE): sensitive,
            int(A.EXTRACTABLE): extractable,
        }
    )
    return template


def public_template(perms: P, *, rsa: bool) -> dict[int, Any]:
    """Attributes of a public session key."""
    usage = {A.VERIFY: P.VERIFY}
    if rsa:
        usage.update({A.ENCRYPT: P.ENCRYPT, A.WRAP: P.WRAP})
    template = _usage(perms, usage)
    template.update({int(A.TOKEN): False, int(A.PRIVATE): False})
    return template


class TokenKey(ProviderKey):
    """A key whose material is in the token.

    ``kind``: ``secret``, ``pair`` or ``public``. ``primary`` is the secret or private
    object, ``public`` the public object (pairs and public keys). ``can_sign`` tells
    whether the secret/private object has ``CKA_SIGN`` (MAC verification compares a
    token-computed tag when it may, so truncated tags work).
    """

    def __init__(
        self,
        *,
        algorithm: str,
        kind: str,
        size: int,
        extractable: bool,
        generation: int,
        primary: int | None,
        public: int | None,
        can_sign: bool = False,
        public_key: Any = None,
        token_id: bytes | None = None,
        stored_size: int = 0,
        public_attrs: dict[int, Any] | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.kind = kind
        self.has_private = kind != "public"
        self.size = size
        self.extractable = extractable
        self.generation = generation
        self.primary = primary
        self.public = public
        self.can_sign = can_sign
        self.public_key = public_key
        self.token_id = token_id
        self.stored_size = stored_size or size
        """Length of the value in the token (HMAC keys are zero-padded to the token's
        minimum, which leaves every MAC unchanged; ``size`` is the caller's length)."""
        self.public_attrs = public_attrs
        """For a public key alone: the attributes it was created with (to re-create it in a
        restarted worker; public keys are not secret)."""
        self.reload_lock = asyncio.Lock()
        """Held on the worker host's loop while the key is found again in a new worker."""
        self.released = False

    def __repr__(self) -> str:
        where = f"token id {self.token_id.hex()}" if self.token_id else "session"
        return f"TokenKey({self.algorithm}, {self.kind}, {where}, gen {self.generation})"


STORED_VERSION = 1


def stored_reference(key: TokenKey, *, token_label: str, label: str, key_id: bytes) -> StoredKey:
    """The key store's entry for a persisted key: a reference, not material."""
    blob = {
        "v": STORED_VERSION,
        "token": token_label,
        "label": label,
        "id": key_id.hex(),
        "kind": key.kind,
        "algorithm": key.algorithm,
        "size": key.size,
        "stored_size": key.stored_size,
    }
    return StoredKey(blob=json.dumps(blob, sort_keys=True).encode(), secret=False)


def parse_reference(stored: StoredKey) -> dict[str, Any]:
    """Read back :func:`stored_reference`; INVALID_ARGUMENT if it is not one."""
    try:
        ref = json.loads(bytes(stored.blob).decode())
        if not isinstance(ref, dict) or ref.get("v") != STORED_VERSION:
            raise ValueError("unknown version")
        ref["id"] = bytes.fromhex(ref["id"])
        for name in ("kind", "algorithm", "label"):
            if not isinstance(ref.get(name), str):
                raise ValueError(f"missing {name}")
        return ref
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"not a pkcs11 token-object reference: {exc}") from None
