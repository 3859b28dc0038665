"""The ``pkcs11`` provider: keys and operations in a PKCS#11 token, via a worker process.

Architecture. The daemon never loads the PKCS#11 module. The provider runs a token worker
(:mod:`cryptostack_pkcs11.worker`) on the SDK's worker host (:mod:`cryptostack_core.sdk.workers`,
set up in :mod:`.hosting`): a fresh process that loads the module, finds the token by label,
logs in with the user PIN (read from ``pin_file`` or ``pin_env``, passed over the socket) and
runs up to ``sessions`` requests at once. Deadlines follow the host's one rule: the caller
gets ``OPERATION_TIMED_OUT`` at its deadline (the call is abandoned, what it creates later is
destroyed); a call still running at ``call_timeout`` kills and restarts the worker. Token
objects are recorded before they are made (:mod:`.registry`) for crash consistency. See
:mod:`.options` for the options.

Capabilities come from the token's mechanism list (:mod:`cryptostack_pkcs11.mechanisms`):
on SoftHSM2 that is SHA-224/256/384/512, AES-128/192/256 in CBC (PKCS#7), CTR and GCM,
HMAC-SHA-256/384/512, ECDSA P-256/P-384, Ed25519, RSA-PSS-SHA256 (2048-4096), key generation
and import of all these key types, and random bytes.

Keys (:mod:`cryptostack_pkcs11.keys`): generated and imported keys are session objects,
sensitive, extractable only with ``EXPORT``. ``persist_key`` copies a key to a token object
(``C_CopyObject`` with ``CKA_TOKEN``, ``CKA_LABEL = cryptostack:<slot>``, a random 16-byte
``CKA_ID`` per version) and returns a reference; ``load_stored_key`` finds it by ``CKA_ID``.
After a worker restart, token objects are found again and public keys re-created; session
keys with secret material are gone (``PROVIDER_ERROR`` naming the restart): replaying them
would mean keeping their material outside the token.

Export decision (``EXPORT`` -> ``CKA_EXTRACTABLE``; the daemon also exports a key to move it
to another provider): keys of the types the token can wrap (probed at worker start: AES,
generic secrets, EC, RSA on SoftHSM 2.6) stay ``CKA_SENSITIVE``; export wraps them in the
token under a one-time transport key (``CKM_AES_KEY_WRAP_PAD``) and unwraps the result in the
worker, so the value is never readable as an attribute. Key types the token cannot wrap
(EdDSA on SoftHSM 2.6) are created non-sensitive when, and only when, they may be exported,
and exported by reading ``CKA_VALUE``. Without ``EXPORT`` every key is sensitive and
non-extractable, and ``extractable`` is False so the daemon never tries to move it.

Parameter policy (:mod:`cryptostack_pkcs11.policy`) equals the software provider's: AES-GCM
IVs of 8 to 128 bytes, tags of 4, 8 or 12-16 bytes; HMAC tags truncated to no less than
``min_mac_length``; HMAC keys of 16 to 1024 bytes. HMAC keys shorter than the token's
minimum (SoftHSM2: the digest length) are zero-padded to it inside the token, which leaves
every MAC unchanged (RFC 2104 pads keys to the block size); export returns the original
length. AES-CTR messages may not run the 128-bit counter past its last value (PKCS#11
forbids counter reuse; pyca would wrap around).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from pkcs11.constants import Attribute, ObjectClass
from pkcs11.mechanisms import KeyType, Mechanism

from cryptostack_core.sdk import (
    REGISTRY,
    Capability,
    CipherDirection,
    CipherOperation,
    CryptoError,
    ErrorCode,
    HashOperation,
    KekSource,
    KeyFormat,
    Operation,
    OrphanDestroyed,
    Provider,
    ProviderEnvironment,
    ProviderKey,
    ProviderState,
    SignOperation,
    StoredKey,
    VerifyOperation,
    invalid_argument,
    remaining_time,
)
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.sdk.workers import StaleGeneration, WorkerHost

from . import keyformats
from .hosting import worker_spec
from .kek import TokenKek
from .keys import (
    TokenKey,
    parse_reference,
    private_template,
    public_template,
    secret_template,
    stored_reference,
)
from .mechanisms import EC_CURVES, ED25519_PARAMS, HMACS, RSA_SIZES, TokenProfile
from .mechanisms import mechanism_names as _mechanism_names
from .operations import (
    HostHashSigner,
    HostHashVerifier,
    KeyArgs,
    MacVerifier,
    StreamSigner,
    StreamVerifier,
    TokenCipher,
    TokenHash,
    WholeMessageSigner,
    WholeMessageVerifier,
)
from .options import Options, parse
from .registry import TokenObjectRegistry

_CLASS_SECRET = int(ObjectClass.SECRET_KEY)
_CLASS_PRIVATE = int(ObjectClass.PRIVATE_KEY)
_CLASS_PUBLIC = int(ObjectClass.PUBLIC_KEY)


T = TypeVar("T")
_ASYNC_OPERATIONS = frozenset(
    {Operation.HASH, Operation.ENCRYPT, Operation.DECRYPT, Operation.SIGN, Operation.VERIFY}
)
_ASYNC_MAX_INPUT = 64 * 1024


class PKCS11Provider(Provider):
    """Provider for one PKCS#11 token (entry point ``pkcs11``)."""

    name = "pkcs11"

    def __init__(
        self, provider_id: int, options: Mapping[str, Any], environment: ProviderEnvironment
    ) -> None:
        super().__init__(provider_id, options, environment)
        self.opts: Options = parse(options, environment.config_dir)
        self.host = WorkerHost(worker_spec(self.opts), self.opts.host_settings(), self.log)
        self.registry: TokenObjectRegistry | None = None
        self.profile: TokenProfile | None = None
        self._hmac_pad = 0

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker: load the module, find the token, log in, read mechanisms."""
        self.registry = TokenObjectRegistry(
            self.environment.state_dir / "token-objects.sqlite3", self.provider_id, self.opts.token_label
        )
        self.host.start()
        info = self.host.info
        self.profile = TokenProfile(
            {int(m): tuple(v) for m, v in info["mechanisms"].items()},  # type: ignore[misc]
            token_flags=int(info["token_flags"]),
            wrappable=info["wrappable"],
            exclude=self.opts.exclude_mechanisms,
        )
        self._capabilities = None
        # HMAC keys shorter than the largest token minimum are zero-padded up to it (never
        # past 64 bytes, the smallest HMAC block, so every MAC stays the same).
        minimums = [self.profile.mechanisms[int(m)][0] for m in HMACS.values() if self.profile.has(m)]
        self._hmac_pad = min(64, max(minimums, default=0))

    def close(self) -> None:
        """Stop the worker (session keys die with it; token objects stay)."""
        self.host.close()
        if self.registry is not None:
            self.registry.close()

    def state(self) -> tuple[ProviderState, str]:
        """READY; DEGRADED while and shortly after the worker restarts; UNAVAILABLE when it
        cannot start."""
        return self.host.state()

    def describe(self) -> dict[str, Any]:
        """Token, module and worker facts for ``status``."""
        info = dict(self.host.info or {})
        mechanisms = info.pop("mechanisms", {})
        info.pop("wrappable", None)
        info.update(
            {
                "module": str(self.opts.module),
                "mechanisms": _mechanism_names(int(m) for m in mechanisms),
                "sessions": self.opts.sessions,
                **self.host.describe(),
            }
        )
        return info

    # --- capabilities ----------------------------------------------------------------
    def capabilities(self) -> Iterable[Capability]:
        """Every (algorithm, operation) the token's mechanisms allow."""
        return self.profile.capabilities() if self.profile is not None else frozenset()

    def _profile(self) -> TokenProfile:
        if self.profile is None:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "the pkcs11 provider is not started")
        return self.profile

    def _require(self, algorithm: str, operation: Operation) -> None:
        if not self.supports(algorithm, operation):
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"token {self.opts.token_label!r} cannot {operation.value} {algorithm}",
            )

    # --- calls to the token worker ----------------------------------------------------
    def call_in(
        self,
        op: str,
        *args: Any,
        generation: int | None = None,
        what: str = "",
        overrides: dict[str, ErrorCode] | None = None,
    ) -> tuple[Any, int]:
        """Run ``op`` in the token worker from a thread: (result, generation). ``what`` names
        the call in error messages; ``overrides`` give CKR values a meaning specific to
        this call."""
        return self.host.call_in(op, *args, generation=generation, context=(what, overrides))

    def call(
        self,
        op: str,
        *args: Any,
        generation: int | None = None,
        what: str = "",
        overrides: dict[str, ErrorCode] | None = None,
    ) -> Any:
        """:meth:`call_in` without the generation."""
        return self.call_in(op, *args, generation=generation, what=what, overrides=overrides)[0]

    async def call_in_async(
        self,
        op: str,
        *args: Any,
        generation: int | None = None,
        what: str = "",
        overrides: dict[str, ErrorCode] | None = None,
    ) -> tuple[Any, int]:
        """:meth:`call_in` on the host's event loop."""
        return await self.host.call_async(op, *args, generation=generation, context=(what, overrides))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of this provider's on the host's loop (from a thread)."""
        return self.host.run(coro)

    # --- calls naming keys -----------------------------------------------------------
    def key_call_in(
        self,
        op: str,
        key: TokenKey,
        args: KeyArgs,
        *,
        what: str,
        overrides: dict[str, ErrorCode] | None = None,
    ) -> tuple[Any, int]:
        """Run ``op`` with the key's handles of the live worker generation (from a thread);
        returns (result, generation)."""
        live = self.host.generation
        if live is not None and key.generation == live and not key.released:
            try:  # the common case, without a coroutine
                return self.call_in(
                    op, *args(key.primary, key.public), generation=live, what=what, overrides=overrides
                )
            except StaleGeneration:
                pass  # the worker restarted in between: reload the key, on the loop
        return self.host.run(self.key_call_in_async(op, key, args, what=what, overrides=overrides))

    def key_call(
        self,
        op: str,
        key: TokenKey,
        args: KeyArgs,
        *,
        what: str,
        overrides: dict[str, ErrorCode] | None = None,
    ) -> Any:
        """:meth:`key_call_in` without the generation."""
        return self.key_call_in(op, key, args, what=what, overrides=overrides)[0]

    async def key_call_in_async(
        self,
        op: str,
        key: TokenKey,
        args: KeyArgs,
        *,
        what: str,
        overrides: dict[str, ErrorCode] | None = None,
    ) -> tuple[Any, int]:
        """:meth:`key_call_in` on the host's loop: the key is found again (token objects)
        or re-created (public keys) in a worker that replaced the one it was made in."""
        for _attempt in range(3):
            generation, primary, public = await self._resolve(key)
            try:
                return await self.call_in_async(
                    op, *args(primary, public), generation=generation, what=what, overrides=overrides
                )
            except StaleGeneration:
                continue  # the worker restarted in between: resolve again
        raise CryptoError(ErrorCode.PROVIDER_ERROR, "the token worker keeps restarting")

    async def _resolve(self, key: TokenKey) -> tuple[int, int | None, int | None]:
        """(generation, primary, public) of ``key`` in the live worker."""
        live = self.host.generation
        if live is not None and key.generation == live and not key.released:
            return key.generation, key.primary, key.public  # the common case: no lock
        # Another call may be finding the key in the new worker: wait for it, within this
        # call's deadline (or call_timeout).
        remaining = remaining_time()
        wait = self.opts.call_timeout if remaining is None else max(0.0, remaining)
        try:
            await asyncio.wait_for(key.reload_lock.acquire(), wait)
        except TimeoutError:
            raise CryptoError(
                ErrorCode.OPERATION_TIMED_OUT, "the key is being reloaded into the token worker"
            ) from None
        try:
            return await self._resolve_locked(key)
        finally:
            key.reload_lock.release()

    async def _resolve_locked(self, key: TokenKey) -> tuple[int, int | None, int | None]:
        if key.released:
            raise CryptoError(ErrorCode.INVALID_STATE, "the key has been released")
        live = self.host.generation
        if live is not None and key.generation == live:
            return key.generation, key.primary, key.public
        if key.token_id is not None:
            found, generation = await self.call_in_async("find", key.token_id, what="finding a token key")
            fresh = self._key_from_found(key.algorithm, found, generation, key.token_id, key.size)
            key.primary, key.public, key.generation = fresh.primary, fresh.public, generation
            return generation, key.primary, key.public
        if key.kind == "public" and key.public_attrs is not None:
            handle, generation = await self.call_in_async(
                "create_public", key.public_attrs, what="re-creating a public key"
            )
            key.public, key.generation = int(handle), generation
            return generation, None, key.public
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR,
            f"this {key.algorithm} key was a session object of token worker "
            f"generation {key.generation}, which was restarted "
            f"({self.host.last_restart_reason}); the key no longer exists",
        )

    def runs_async(self, operation: Operation, size: int, algorithm: str | None = None) -> bool:
        """Stream calls are awaited on the token worker's host loop (the daemon's), up to
        64 KiB of input (local work: buffering, or hashing for ECDSA/RSA-PSS)."""
        return operation in _ASYNC_OPERATIONS and size <= _ASYNC_MAX_INPUT

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The token worker's host loop: awaited calls run there."""
        return self.host.loop

    def abort_later(self, generation: int, op_id: int) -> None:
        """End a multi-part token operation nobody will finish (with the next request)."""
        self.host.queue_cleanup(generation, (("abort", op_id),))

    # --- keys ------------------------------------------------------------------------
    def _export_mode(self, permissions: P, key_type: int) -> tuple[bool, bool]:
        """(extractable, sensitive) of a new key: see the module docstring."""
        if not permissions & P.EXPORT:
            return False, True
        method = self._profile().export_method(key_type)
        if method is None:
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                f"token {self.opts.token_label!r} cannot export keys of this type (it cannot wrap them)",
            )
        return True, method == "wrap"

    def generate_key(self, algorithm: str, permissions: P) -> ProviderKey:
        """A new session key generated inside the token."""
        self._require(algorithm, Operation.GENERATE_KEY)
        if keyformats.is_symmetric(algorithm):
            key_type = keyformats.secret_key_type(algorithm)
            extractable, sensitive = self._export_mode(permissions, key_type)
            if algorithm.startswith("AES-"):
                length, mech = int(algorithm[4:]) // 8, Mechanism.AES_KEY_GEN
            else:
                length = keyformats.GENERATED_SECRET_LENGTHS[algorithm]
                mech = Mechanism.GENERIC_SECRET_KEY_GEN
            template = secret_template(
                permissions,
                extractable=extractable,
                sensitive=sensitive,
                mac=not algorithm.startswith("AES-"),
            )
            handle, generation = self.call_in(
                "generate_secret",
                key_type,
                length,
                int(mech),
                template,
                what=f"generating an {algorithm} key",
            )
            return TokenKey(
                algorithm=algorithm,
                kind="secret",
                size=length,
                extractable=extractable,
                generation=generation,
                primary=int(handle),
                public=None,
                can_sign=bool(template[int(Attribute.SIGN)]),
            )
        key_type = keyformats.asymmetric_key_type(algorithm)
        extractable, sensitive = self._export_mode(permissions, key_type)
        is_rsa = key_type == KeyType.RSA
        pub_t = public_template(permissions, rsa=is_rsa)
        priv_t = private_template(permissions, extractable=extractable, rsa=is_rsa, sensitive=sensitive)
        bits: int | None = None
        if algorithm in EC_CURVES:
            mech, pub_t[int(Attribute.EC_PARAMS)] = Mechanism.EC_KEY_PAIR_GEN, EC_CURVES[algorithm][0]
        elif algorithm == "Ed25519":
            mech, pub_t[int(Attribute.EC_PARAMS)] = Mechanism.EC_EDWARDS_KEY_PAIR_GEN, ED25519_PARAMS
        else:
            mech, bits = Mechanism.RSA_PKCS_KEY_PAIR_GEN, RSA_SIZES[algorithm]
        result, generation = self.call_in(
            "generate_pair",
            key_type,
            int(mech),
            bits,
            pub_t,
            priv_t,
            what=f"generating an {algorithm} key pair",
        )
        private, public, attrs = result
        public_key = keyformats.public_from_attributes(algorithm, attrs)
        return TokenKey(
            algorithm=algorithm,
            kind="pair",
            size=_size(algorithm),
            extractable=extractable,
            generation=generation,
            primary=int(private),
            public=int(public),
            can_sign=bool(priv_t[int(Attribute.SIGN)]),
            public_key=public_key,
        )

    def import_key(self, algorithm: str, material: bytes, fmt: KeyFormat, permissions: P) -> ProviderKey:
        """A session key from caller material (secrets and private keys are unwrapped by
        the token; public keys created)."""
        self._require(algorithm, Operation.IMPORT_KEY)
        if keyformats.is_symmetric(algorithm):
            value = keyformats.parse_secret(algorithm, material, fmt)
            key_type = keyformats.secret_key_type(algorithm)
            extractable, sensitive = self._export_mode(permissions, key_type)
            stored = value
            if not algorithm.startswith("AES-") and len(value) < self._hmac_pad:
                stored = value + bytes(self._hmac_pad - len(value))
            template = secret_template(
                permissions,
                extractable=extractable,
                sensitive=sensitive,
                mac=not algorithm.startswith("AES-"),
            )
            handle, generation = self.call_in(
                "import_secret", key_type, stored, template, what=f"importing an {algorithm} key"
            )
            return TokenKey(
                algorithm=algorithm,
                kind="secret",
                size=len(value),
                extractable=extractable,
                generation=generation,
                primary=int(handle),
                public=None,
                stored_size=len(stored),
                can_sign=bool(template[int(Attribute.SIGN)]),
            )
        parsed = keyformats.parse_asymmetric(algorithm, material, fmt, permissions)
        key_type = keyformats.asymmetric_key_type(algorithm)
        is_rsa = key_type == KeyType.RSA
        pub_attrs = keyformats.public_attributes(algorithm, parsed.public)
        pub_attrs.update(public_template(permissions, rsa=is_rsa))
        if not parsed.is_private:
            handle, generation = self.call_in(
                "create_public", pub_attrs, what=f"importing an {algorithm} public key"
            )
            return TokenKey(
                algorithm=algorithm,
                kind="public",
                size=_size(algorithm),
                extractable=True,
                generation=generation,
                primary=None,
                public=int(handle),
                public_key=parsed.public,
                public_attrs=pub_attrs,
            )
        extractable, sensitive = self._export_mode(permissions, key_type)
        priv_t = private_template(permissions, extractable=extractable, rsa=is_rsa, sensitive=sensitive)
        components = keyformats.private_components(algorithm, parsed.private)
        result, generation = self.call_in(
            "import_pair",
            key_type,
            parsed.pkcs8,
            components,
            priv_t,
            pub_attrs,
            what=f"importing an {algorithm} key pair",
        )
        return TokenKey(
            algorithm=algorithm,
            kind="pair",
            size=_size(algorithm),
            extractable=extractable,
            generation=generation,
            primary=int(result[0]),
            public=int(result[1]),
            can_sign=bool(priv_t[int(Attribute.SIGN)]),
            public_key=parsed.public,
        )

    def export_key(self, key: ProviderKey, fmt: KeyFormat) -> bytes:
        """Material of an extractable key, wrapped out of the token and unwrapped here."""
        token_key = _token_key(key)
        if token_key.kind == "public":
            return keyformats.export_public(token_key.public_key, fmt)
        if not token_key.extractable:
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                f"this {key.algorithm} key is not extractable (CKA_EXTRACTABLE is false in the token)",
            )
        if token_key.kind == "secret" and fmt is not KeyFormat.RAW:
            raise invalid_argument(f"{key.algorithm} keys are exported as RAW, not {fmt.value}")
        if token_key.kind == "secret":
            key_type = keyformats.secret_key_type(key.algorithm)
        else:
            key_type = keyformats.asymmetric_key_type(key.algorithm)
        method = "wrap" if key_type in self._profile().wrappable else "value"
        material = bytes(
            self.key_call(
                "export",
                token_key,
                lambda primary, public: (int(primary or 0), method),
                what=f"exporting an {key.algorithm} key",
            )
        )
        if token_key.kind == "secret":
            return material[: token_key.size]
        if method == "wrap":
            private = keyformats.load_exported_pkcs8(key.algorithm, material)
        else:
            private = keyformats.private_from_value(key.algorithm, material)
        return keyformats.export_private(key.algorithm, private, fmt)

    def export_public_key(self, key: ProviderKey, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
        """Public key of a pair or public key (kept in the provider; no token call)."""
        token_key = _token_key(key)
        if token_key.public_key is None:
            raise invalid_argument(f"{key.algorithm} is not an asymmetric key")
        return keyformats.export_public(token_key.public_key, fmt)

    def release_key(self, key: ProviderKey) -> None:
        """Destroy a session key's objects (piggybacked on the next request); a loaded token
        key is only forgotten."""
        token_key = _token_key(key)
        # no key lock: a reload in progress may hold it for a whole call, and releasing must
        # not wait (a second destroy of the same handle is ignored by the worker)
        if token_key.released:
            return
        token_key.released = True
        if token_key.token_id is not None:
            return
        handles = tuple(h for h in (token_key.primary, token_key.public) if h is not None)
        self.host.queue_cleanup(token_key.generation, (("destroy", handles),))

    def _registry(self) -> TokenObjectRegistry:
        if self.registry is None:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, "the pkcs11 provider is not started")
        return self.registry

    def _test_crash(self, point: str) -> None:
        if self.opts.test_crash_at == point:  # tests only: the daemon dies right here
            os.kill(os.getpid(), signal.SIGKILL)

    def persist_key(self, key: ProviderKey, slot_name: str) -> StoredKey:
        """Copy the key to token objects (``C_CopyObject``, ``CKA_TOKEN``); returns their
        reference (label, ``CKA_ID``, kind, algorithm). The objects are recorded in the
        token-object registry first (see :mod:`.registry`)."""
        token_key = _token_key(key)
        key_id = os.urandom(16)
        label = f"cryptostack:{slot_name}"

        def args(primary: int | None, public: int | None) -> tuple[Any, ...]:
            handles = tuple(h for h in (primary, public) if h is not None)
            return (handles, label, key_id)

        self._registry().add(key_id, label)
        self.key_call("persist", token_key, args, what=f"persisting a key for slot {slot_name}")
        self._test_crash("persist")
        return stored_reference(token_key, token_label=self.opts.token_label, label=label, key_id=key_id)

    def load_stored_key(self, stored: StoredKey, algorithm: str, permissions: P) -> ProviderKey:
        """The token objects a :meth:`persist_key` reference names."""
        ref = parse_reference(stored)
        if ref["algorithm"] != algorithm:
            raise invalid_argument(f"the stored key is {ref['algorithm']}, not {algorithm}")
        found, generation = self.call_in("find", ref["id"], what="loading a token key")
        return self._key_from_found(algorithm, found, generation, ref["id"], int(ref.get("size", 0)))

    def _key_from_found(
        self,
        algorithm: str,
        found: list[tuple[int, int, dict[int, Any]]],
        generation: int,
        token_id: bytes,
        size: int,
    ) -> TokenKey:
        objects = {cls: (handle, attrs) for handle, cls, attrs in found}
        if not objects:
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"token {self.opts.token_label!r} has no object with CKA_ID "
                f"{token_id.hex()} (deleted outside cryptostack?)",
            )
        if _CLASS_SECRET in objects:
            handle, attrs = objects[_CLASS_SECRET]
            stored_size = int(attrs.get(int(Attribute.VALUE_LEN), 0))
            return TokenKey(
                algorithm=algorithm,
                kind="secret",
                size=size or stored_size,
                extractable=bool(attrs.get(int(Attribute.EXTRACTABLE))),
                generation=generation,
                primary=handle,
                public=None,
                can_sign=bool(attrs.get(int(Attribute.SIGN))),
                token_id=token_id,
                stored_size=stored_size,
            )
        public = objects.get(_CLASS_PUBLIC)
        private = objects.get(_CLASS_PRIVATE)
        if public is None:
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND, f"the public key of token object {token_id.hex()} is missing"
            )
        public_key = keyformats.public_from_attributes(algorithm, public[1])
        if private is None:
            return TokenKey(
                algorithm=algorithm,
                kind="public",
                size=_size(algorithm),
                extractable=True,
                generation=generation,
                primary=None,
                public=public[0],
                public_key=public_key,
                token_id=token_id,
            )
        return TokenKey(
            algorithm=algorithm,
            kind="pair",
            size=_size(algorithm),
            extractable=bool(private[1].get(int(Attribute.EXTRACTABLE))),
            generation=generation,
            primary=private[0],
            public=public[0],
            can_sign=bool(private[1].get(int(Attribute.SIGN))),
            public_key=public_key,
            token_id=token_id,
        )

    def delete_stored_key(self, stored: StoredKey) -> None:
        """Destroy the token objects of a reference (nothing to do if already gone); their
        record goes once they are gone."""
        ref = parse_reference(stored)
        self._test_crash("delete")
        self.call("delete_token", ref["id"], what="deleting a token key")
        self._registry().remove(ref["id"])

    def reconcile_stored(self, references: list[StoredKey]) -> list[OrphanDestroyed]:
        """Destroy the recorded token objects no key-store reference names (a crash between
        making them and recording the slot, or between clearing a slot and destroying them;
        see :mod:`.registry`)."""
        live = set()
        for stored in references:
            try:
                live.add(parse_reference(stored)["id"])
            except CryptoError:
                continue  # not ours to judge
        destroyed = []
        registry = self._registry()
        for key_id, label in registry.entries():
            if key_id in live:
                continue
            count = int(self.call("delete_token", key_id, what="destroying an orphaned token object"))
            registry.remove(key_id)
            if count:
                destroyed.append(
                    OrphanDestroyed(
                        label,
                        (
                            f"destroyed {count} token object(s) with CKA_ID {key_id.hex()} on token "
                            f"{self.opts.token_label!r}: no key slot names them (left by a crash)"
                        ),
                    )
                )
        return destroyed

    # --- operations ------------------------------------------------------------------
    def create_hash(self, algorithm: str) -> HashOperation:
        """A digest in the token."""
        mechanism = self._profile().hash_mechanism(algorithm)
        if mechanism is None:
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"token {self.opts.token_label!r} does not hash with {algorithm}",
            )
        return TokenHash(self, algorithm, mechanism)

    def create_cipher(
        self, algorithm: str, key: ProviderKey, direction: CipherDirection, iv: bytes, tag_length: int
    ) -> CipherOperation:
        """AES-CBC/CTR/GCM in the token; IV, tag and key checked here first."""
        found = self._profile().cipher(algorithm)
        if found is None:
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"token {self.opts.token_label!r} does not support {algorithm}",
            )
        mechanism, mode, key_bytes = found
        token_key = _token_key(key)
        wanted = f"AES-{key_bytes * 8}"
        if token_key.kind != "secret" or token_key.algorithm != wanted:
            raise invalid_argument(f"{algorithm} needs a {wanted} key, not {key.algorithm}")
        iv = bytes(iv)
        limits = self.spec(algorithm)  # IV and tag limits are declared on the algorithm
        limits.check_iv(len(iv))
        if mode == "GCM":
            limits.check_tag_length(tag_length)
        encrypt = direction is CipherDirection.ENCRYPT
        return TokenCipher(self, algorithm, mode, mechanism, token_key, encrypt, iv, tag_length)

    def signature_size(self, algorithm: str, key: ProviderKey) -> int:
        """Largest signature or MAC ``key`` makes with ``algorithm``."""
        spec = self.spec(algorithm)
        if spec.signature_size:
            return spec.signature_size
        return key.size

    def _sign_setup(
        self, algorithm: str, key: ProviderKey, context: bytes, operation: Operation
    ) -> tuple[Any, TokenKey]:
        plan = self._profile().sign_plan(algorithm)
        if plan is None:
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM,
                f"token {self.opts.token_label!r} cannot {operation.value} with {algorithm}",
            )
        if context:
            raise invalid_argument(f"{algorithm} takes no context string")
        token_key = _token_key(key)
        if not REGISTRY.key_algorithm_accepted(algorithm, token_key.algorithm):
            raise invalid_argument(f"{algorithm} cannot use a {token_key.algorithm} key")
        return plan, token_key

    def create_signer(self, algorithm: str, key: ProviderKey, context: bytes) -> SignOperation:
        """Sign or MAC one message with the key in the token."""
        plan, token_key = self._sign_setup(algorithm, key, context, Operation.SIGN)
        if token_key.kind == "public":
            raise invalid_argument(f"a public {token_key.algorithm} key cannot sign")
        out_size = max(self.signature_size(algorithm, token_key), 64) * 2
        if plan.mode == "host-hash":
            return HostHashSigner(self, plan, token_key, out_size)
        if plan.mode == "whole-message":
            return WholeMessageSigner(self, plan, token_key, out_size)
        return StreamSigner(self, plan, token_key, out_size)

    def create_verifier(self, algorithm: str, key: ProviderKey, context: bytes) -> VerifyOperation:
        """Verify one signature or MAC in the token."""
        plan, token_key = self._sign_setup(algorithm, key, context, Operation.VERIFY)
        if plan.mode == "host-hash":
            return HostHashVerifier(self, plan, token_key)
        if plan.mode == "whole-message":
            return WholeMessageVerifier(self, plan, token_key)
        if algorithm in HMACS:
            return MacVerifier(self, plan, token_key, self.spec(algorithm).signature_size)
        return StreamVerifier(self, plan, token_key)

    def kek_source(self) -> KekSource | None:
        """The key store's KEK derived in the token (:mod:`.kek`): nothing on disk."""
        return TokenKek(self.call, self.opts.token_label)

    def random_bytes(self, length: int) -> bytes:
        """``C_GenerateRandom``."""
        if not self._profile().has_rng:
            raise CryptoError(
                ErrorCode.UNSUPPORTED_ALGORITHM, f"token {self.opts.token_label!r} has no random generator"
            )
        most = self.spec("RANDOM").max_output
        if not 0 <= length <= most:
            raise invalid_argument(f"random length must be 0 to {most}")
        if length == 0:
            return b""
        return bytes(self.call("random", length, what="generating random bytes"))


def _token_key(key: ProviderKey) -> TokenKey:
    if not isinstance(key, TokenKey):
        raise invalid_argument(f"{key!r} is not a key of the pkcs11 provider")
    return key


def _size(algorithm: str) -> int:
    if algorithm in RSA_SIZES:
        return RSA_SIZES[algorithm] // 8
    if algorithm in EC_CURVES:
        return EC_CURVES[algorithm][1] // 8
    return 32  # Ed25519
