"""The token worker: the only process that loads the PKCS#11 module.

:class:`TokenWorker` is the backend the SDK's worker host
(:mod:`cryptostack_core.sdk.workers`) runs in a fresh worker process: it loads the module,
initialises it for threaded use, finds the token by label and logs in once (login is per
application in PKCS#11, so every session of this process shares it). The host then sends it
requests (``op_<name>`` methods below), up to ``sessions`` of them at once on as many threads.

Sessions:

* one *admin* session (read/write, the login session) owns every object this worker creates
  and runs object management (generate, import, copy, find, destroy, wrap), serialised by a
  lock. Session objects die with the session that created them, and this one is never
  closed, so ephemeral keys live exactly as long as the worker.
* a pool of *operation* sessions runs cryptographic operations by key handle, one operation
  per session at a time (PKCS#11 sessions hold one active operation). A multi-part
  operation keeps its session between requests; the pool opens more sessions on demand up
  to ``max_sessions``.

Key transport: when the module offers ``CKM_AES_KEY_WRAP_PAD``, the worker generates an
AES-256 session key with ``CKA_EXTRACTABLE`` and without ``CKA_SENSITIVE``, reads it once,
and uses it to move secret and private key material in and out of the token: imports are
wrapped here (RFC 5649) and unwrapped by the token (``C_UnwrapKey``); exports of
``CKA_EXTRACTABLE`` keys are wrapped by the token (``C_WrapKey``) and unwrapped here, so
those keys stay ``CKA_SENSITIVE``. At start the worker probes which key types the token
wraps (SoftHSM 2.6 wraps AES, generic secrets, EC and RSA keys, not EdDSA keys); the others
are imported with ``C_CreateObject`` and, when exportable, created non-sensitive and exported
by reading ``CKA_VALUE`` (see :mod:`cryptostack_pkcs11.provider`).

Failures go back as ``(kind, name, message)``: kind ``"ckr"`` with the ``CKR_*`` name the
module returned, or ``"crypto"`` with an ErrorCode (see :mod:`.errors`). A return value in
:data:`~.errors.WORKER_FATAL` means the module's state cannot be trusted: the worker answers
fatally and exits, and the host starts a new one (new sessions, new login).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pkcs11.attributes import ALL_CAPABILITIES
from pkcs11.constants import DEFAULT, Attribute, MechanismFlag, ObjectClass
from pkcs11.mechanisms import KeyType, Mechanism

from cryptostack_core.sdk import ErrorCode
from cryptostack_core.sdk.workers import ErrorInfo, WorkerBackend

from .cryptoki import CKR_OK, CKRError, Cryptoki, MechanismSpec
from .errors import WORKER_FATAL, WorkerError, describe_failure

CKR_OPERATION_ACTIVE = 0x90
_PUBLIC_EC = (Attribute.EC_PARAMS, Attribute.EC_POINT)
_PUBLIC_RSA = (Attribute.MODULUS, Attribute.PUBLIC_EXPONENT)
_USAGE = (
    Attribute.ENCRYPT,
    Attribute.DECRYPT,
    Attribute.WRAP,
    Attribute.UNWRAP,
    Attribute.SIGN,
    Attribute.VERIFY,
    Attribute.DERIVE,
)


_NO_USAGE = MechanismFlag(0)


def _exact(template: Mapping[Any, Any]) -> dict[Any, Any]:
    """``template`` with python-pkcs11's default usage attributes left out unless given:
    its templates set every usage flag, and tokens reject e.g. CKA_ENCRYPT on a private key."""
    exact: dict[Any, Any] = {attr: DEFAULT for attr in ALL_CAPABILITIES}
    exact.update(template)
    return exact


class SessionPool:
    """Operation sessions: ``keep`` idle ones are kept open, at most ``limit`` exist."""

    def __init__(self, token: Any, keep: int, limit: int) -> None:
        self._token = token
        self._keep = keep
        self._limit = max(limit, keep)
        self._lock = threading.Lock()
        self._idle = [token.open(rw=False) for _ in range(keep)]
        self._count = keep

    def take(self) -> Any:
        """A session with no active operation."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._count >= self._limit:
                raise WorkerError(ErrorCode.RESOURCE_EXHAUSTED, f"all {self._limit} token sessions are busy")
            self._count += 1
        try:
            return self._token.open(rw=False)
        except BaseException:
            with self._lock:
                self._count -= 1
            raise

    @property
    def open_count(self) -> int:
        """Operation sessions open now."""
        return self._count

    def give(self, session: Any) -> None:
        """Return a session whose operation has ended."""
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(session)
                return
            self._count -= 1
        self._close(session)

    def discard(self, session: Any) -> None:
        """Close a session whose state is unknown (closing ends any operation on it)."""
        with self._lock:
            self._count -= 1
        self._close(session)

    @staticmethod
    def _close(session: Any) -> None:
        try:
            session.close()
        except Exception:  # noqa: BLE001 - a session that will not close is gone anyway
            pass


@dataclass
class _Active:
    """A multi-part operation between requests."""

    session: Any
    kind: str
    mechanism: Any  # keeps the CK_MECHANISM parameter buffers alive
    lock: threading.Lock = field(default_factory=threading.Lock)
    aborted: bool = False  # nobody will finish it: whoever holds ``lock`` last ends it
    ended: bool = False


class TokenConfig(TypedDict):
    """What the provider sends a starting worker (the PIN travels only over the socket)."""

    module: str
    token_label: str
    pin: str
    sessions: int
    max_sessions: int


class TokenWorker(WorkerBackend):
    """Module, token, sessions and objects of one worker process."""

    def __init__(self, init: TokenConfig) -> None:
        super().__init__(init)
        import pkcs11  # imported here: only the worker process loads python-pkcs11

        self._p11 = pkcs11
        self.lib = pkcs11.lib(init["module"])
        # python-pkcs11 initialised with NULL arguments ("single-threaded application");
        # initialise again with OS locking so the module protects its state itself.
        self.lib.finalize()
        self.ck = Cryptoki(init["module"])
        self.ck.initialize_threaded()
        # Both bindings must reach one instance of the module: the sessions python-pkcs11
        # opens are used by the ctypes calls. A module that hands every C_GetFunctionList
        # call an instance of its own (p11-kit's client and proxy modules, each with its own
        # connection) leaves python-pkcs11's instance finalised: say so, not "not initialized".
        try:
            self.lib.get_slots()
        except pkcs11.PKCS11Error as exc:
            if "not initialized" not in str(exc).lower():
                raise
            raise WorkerError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"module {init['module']} gives every C_GetFunctionList call a separate "
                "instance (as p11-kit's client and proxy modules do); the pkcs11 provider "
                "needs the token's own module, one instance per process (docs/scaling.md, "
                "'KEK in a network HSM')",
            ) from None
        try:
            token = self.lib.get_token(token_label=init["token_label"])
        except pkcs11.NoSuchToken:
            raise WorkerError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"no token labelled {init['token_label']!r} in {init['module']}",
            ) from None
        except pkcs11.MultipleTokensReturned:
            raise WorkerError(
                ErrorCode.PROVIDER_UNAVAILABLE, f"several tokens are labelled {init['token_label']!r}"
            ) from None
        self.token = token
        try:
            self.admin = token.open(rw=True, user_pin=init["pin"])
        except pkcs11.PinIncorrect:
            raise WorkerError(
                ErrorCode.ACCESS_DENIED, f"the user PIN of token {token.label!r} is wrong (CKR_PIN_INCORRECT)"
            ) from None
        self.admin_lock = threading.Lock()
        self.pool = SessionPool(token, init["sessions"], init["max_sessions"])
        # multi-part operations hold a session between requests; they may not take the last
        # ``sessions`` ones, which stay for one-shot calls (clients holding streams open
        # cannot starve everyone else)
        self.max_streams = max(1, init["max_sessions"] - init["sessions"])
        self.objects: dict[int, Any] = {}
        self._pending_destroy: list[int] = []
        self.ops: dict[int, _Active] = {}
        self._op_ids = itertools.count(1)
        self.mechanisms: dict[int, tuple[int, int, int]] = {}
        for mech in token.slot.get_mechanisms():
            try:
                info = token.slot.get_mechanism_info(mech)
                self.mechanisms[int(mech)] = (
                    int(info.min_key_length or 0),
                    int(info.max_key_length or 0),
                    int(info.flags or 0),
                )
            except pkcs11.PKCS11Error:
                self.mechanisms[int(mech)] = (0, 0, 0)
        self.transport: Any = None
        self.transport_value = b""
        self.wrappable: set[int] = set()
        if int(Mechanism.AES_KEY_WRAP_PAD) in self.mechanisms:
            self._make_transport_key()
            self._probe_wrapping()

    def _make_transport_key(self) -> None:
        key = self.admin.generate_key(
            KeyType.AES,
            256,
            capabilities=_NO_USAGE,
            template={
                Attribute.TOKEN: False,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
                Attribute.WRAP: True,
                Attribute.UNWRAP: True,
                Attribute.LABEL: "cryptostack-transport",
            },
        )
        self.transport = key
        self.transport_value = bytes(key[Attribute.VALUE])

    def _probe_wrapping(self) -> None:
        """Find the key types the token wraps (SoftHSM 2.6 cannot wrap EdDSA keys): for
        each, generate a throwaway extractable key and wrap it under the transport key."""
        has = self.mechanisms.__contains__
        probes: list[tuple[KeyType, Callable[[], list[Any]]]] = []
        extractable = {Attribute.TOKEN: False, Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}
        if has(int(Mechanism.AES_KEY_GEN)):
            probes.append(
                (
                    KeyType.AES,
                    lambda: [
                        self.admin.generate_key(
                            KeyType.AES, 128, capabilities=_NO_USAGE, template=_exact(extractable)
                        )
                    ],
                )
            )
        if has(int(Mechanism.GENERIC_SECRET_KEY_GEN)):
            probes.append(
                (
                    KeyType.GENERIC_SECRET,
                    lambda: [
                        self.admin.generate_key(
                            KeyType.GENERIC_SECRET,
                            256,
                            capabilities=_NO_USAGE,
                            template=_exact(extractable),
                            mechanism=Mechanism.GENERIC_SECRET_KEY_GEN,
                        )
                    ],
                )
            )

        def pair(
            key_type: KeyType, mechanism: Mechanism, bits: int | None, public: dict[Any, Any]
        ) -> Callable[[], list[Any]]:
            return lambda: list(
                self.admin.generate_keypair(
                    key_type,
                    bits,
                    capabilities=_NO_USAGE,
                    mechanism=mechanism,
                    public_template=_exact({Attribute.TOKEN: False, **public}),
                    private_template=_exact(extractable),
                )
            )[::-1]

        if has(int(Mechanism.EC_KEY_PAIR_GEN)):
            probes.append(
                (
                    KeyType.EC,
                    pair(
                        KeyType.EC,
                        Mechanism.EC_KEY_PAIR_GEN,
                        None,
                        {Attribute.EC_PARAMS: bytes.fromhex("06082A8648CE3D030107")},
                    ),
                )
            )
        if has(int(Mechanism.EC_EDWARDS_KEY_PAIR_GEN)):
            probes.append(
                (
                    KeyType.EC_EDWARDS,
                    pair(
                        KeyType.EC_EDWARDS,
                        Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                        None,
                        {Attribute.EC_PARAMS: bytes.fromhex("06032B6570")},
                    ),
                )
            )
        if has(int(Mechanism.RSA_PKCS_KEY_PAIR_GEN)):
            bits = max(1024, self.mechanisms[int(Mechanism.RSA_PKCS_KEY_PAIR_GEN)][0])
            probes.append((KeyType.RSA, pair(KeyType.RSA, Mechanism.RSA_PKCS_KEY_PAIR_GEN, bits, {})))
        for key_type, make in probes:
            objects: list[Any] = []
            try:
                objects = make()
                self.transport.wrap_key(objects[0], mechanism=Mechanism.AES_KEY_WRAP_PAD)
                self.wrappable.add(int(key_type))
            except self._p11.PKCS11Error:
                pass
            finally:
                for obj in objects:
                    try:
                        obj.destroy()
                    except self._p11.PKCS11Error:
                        pass

    def info(self) -> dict[str, Any]:
        """Facts sent back with ``ready``."""
        tok = self.token
        return {
            "token_label": tok.label,
            "token_serial": tok.serial.decode("ascii", "replace"),
            "token_model": tok.model,
            "token_manufacturer": tok.manufacturer_id,
            "token_flags": int(tok.flags),
            "slot_id": int(tok.slot.slot_id),
            "library": self.lib.library_description,
            "library_manufacturer": self.lib.manufacturer_id,
            "library_version": "{}.{}".format(*self.lib.library_version),
            "cryptoki_version": "{}.{}".format(*self.lib.cryptoki_version),
            "mechanisms": dict(self.mechanisms),
            "wrappable": sorted(self.wrappable),
        }

    # --- host hooks ------------------------------------------------------------------
    def describe_failure(self, exc: BaseException) -> ErrorInfo:
        """``("ckr", CKR name, message)`` for module failures (see :mod:`.errors`)."""
        return describe_failure(exc)

    def is_fatal(self, exc: BaseException) -> bool:
        """A return value after which the module's state cannot be trusted."""
        kind, name, _message = describe_failure(exc)
        return kind == "ckr" and name in WORKER_FATAL

    def cleanup(self, items: tuple[tuple[str, Any], ...]) -> None:
        """Deferred work piggybacked on a request. It never makes that request wait: aborts
        do not block (see :meth:`op_abort`) and destroys wait for the object-management lock
        only if it is free (a slow key generation may hold it), else they stay queued here.
        Failures are only logged."""
        for kind, value in items:
            if kind == "destroy":
                self._pending_destroy.extend(int(h) for h in value)
            elif kind == "abort":
                try:
                    self.op_abort(int(value))
                except Exception as exc:  # noqa: BLE001
                    print(f"cryptostack-pkcs11 worker: abort failed: {exc}", file=sys.stderr)
        if self._pending_destroy and self.admin_lock.acquire(blocking=False):
            try:
                handles, self._pending_destroy = self._pending_destroy, []
                self._destroy_locked(handles)
            finally:
                self.admin_lock.release()

    # --- sessions --------------------------------------------------------------------
    def _init_on_fresh_session(self, kind: str, spec: MechanismSpec, key: int) -> tuple[Any, Any]:
        """A pool session with operation ``kind`` initialised: (session, mechanism)."""
        for attempt in (1, 2):
            session = self.pool.take()
            try:
                return session, self.ck.init(kind, session.handle, spec, key)
            except CKRError as exc:
                if exc.rv == CKR_OPERATION_ACTIVE and attempt == 1:
                    # a leftover operation (should not happen): drop that session, retry
                    self.pool.discard(session)
                    continue
                self.pool.give(session)
                raise
            except BaseException:
                self.pool.discard(session)
                raise
        raise AssertionError("unreachable")

    def _finish_session(self, session: Any, failure: BaseException | None) -> None:
        # PKCS#11: a call that fails (other than CKR_BUFFER_TOO_SMALL) ends the operation, so
        # the session is clean again; anything else leaves it in an unknown state.
        if failure is None or isinstance(failure, CKRError):
            self.pool.give(session)
        else:
            self.pool.discard(session)

    # --- one-shot operations ---------------------------------------------------------
    def op_ping(self) -> int:
        """Liveness check: the worker's pid."""
        return os.getpid()

    def op_stats(self) -> dict[str, int]:
        """Counts for diagnostics: objects known, multi-part operations, open sessions."""
        return {"objects": len(self.objects), "operations": len(self.ops), "sessions": self.pool.open_count}

    def op_digest(self, spec: MechanismSpec, data: bytes) -> bytes:
        """``C_DigestInit`` + ``C_Digest``."""
        return self._single("Digest", spec, 0, data, 64)

    def op_crypt(self, kind: str, spec: MechanismSpec, key: int, data: bytes, out_size: int) -> bytes:
        """One-shot ``C_Encrypt`` or ``C_Decrypt``."""
        if kind not in ("Encrypt", "Decrypt"):
            raise WorkerError(ErrorCode.PROTOCOL_ERROR, f"bad crypt kind {kind!r}")
        return self._single(kind, spec, key, data, out_size)

    def op_sign(self, spec: MechanismSpec, key: int, data: bytes, out_size: int) -> bytes:
        """One-shot ``C_Sign``."""
        return self._single("Sign", spec, key, data, out_size)

    def op_verify(self, spec: MechanismSpec, key: int, data: bytes, signature: bytes) -> bool:
        """One-shot ``C_Verify``: True when valid, False for an invalid signature."""
        session, _mech = self._init_on_fresh_session("Verify", spec, key)
        failure: BaseException | None = None
        try:
            return self.ck.verify(session.handle, data, signature) == CKR_OK
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._finish_session(session, failure)

    def _single(self, kind: str, spec: MechanismSpec, key: int, data: bytes, out_size: int) -> bytes:
        session, _mech = self._init_on_fresh_session(kind, spec, key)
        failure: BaseException | None = None
        try:
            return self.ck.single(kind, session.handle, data, out_size)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._finish_session(session, failure)

    def op_random(self, length: int) -> bytes:
        """``C_GenerateRandom``."""
        session = self.pool.take()
        failure: BaseException | None = None
        try:
            return bytes(session.generate_random(length * 8))
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._finish_session(session, failure)

    # --- multi-part operations -------------------------------------------------------
    def op_begin(
        self, kind: str, spec: MechanismSpec, key: int, data: bytes, out_size: int
    ) -> tuple[int, bytes]:
        """``C_xxxInit`` (+ first ``Update``); returns (operation id, output so far)."""
        if len(self.ops) >= self.max_streams:
            raise WorkerError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"{self.max_streams} multi-part token operations are open already",
            )
        session, mech = self._init_on_fresh_session(kind, spec, key)
        try:
            out = self.ck.update(kind, session.handle, data, out_size) if data else b""
        except BaseException as exc:
            self._finish_session(session, exc)
            raise
        op_id = next(self._op_ids)
        self.ops[op_id] = _Active(session, kind, mech)
        return op_id, out

    def _active(self, op_id: int) -> _Active:
        active = self.ops.get(op_id)
        if active is None:
            raise WorkerError(ErrorCode.INVALID_STATE, f"no token operation {op_id}")
        return active

    def op_update(self, op_id: int, data: bytes, out_size: int) -> bytes:
        """``C_xxxUpdate``; a failure ends the operation."""
        active = self._active(op_id)
        try:
            with active.lock:
                try:
                    return self.ck.update(active.kind, active.session.handle, data, out_size)
                except BaseException as exc:
                    self.ops.pop(op_id, None)
                    active.ended = True
                    self._finish_session(active.session, exc)
                    raise
        finally:
            # an abort that came while this update ran could not take the lock: end it now
            if active.aborted and active.lock.acquire(blocking=False):
                try:
                    self._end_aborted(active)
                finally:
                    active.lock.release()

    def op_finish(self, op_id: int, data: bytes, out_size: int, signature: bytes | None) -> bytes | bool:
        """Last data, then ``C_xxxFinal`` (``C_VerifyFinal(signature)`` for Verify)."""
        active = self.ops.pop(op_id, None)
        if active is None:
            raise WorkerError(ErrorCode.INVALID_STATE, f"no token operation {op_id}")
        failure: BaseException | None = None
        handle = active.session.handle
        with active.lock:
            active.ended = True
            try:
                out = self.ck.update(active.kind, handle, data, out_size) if data else b""
                if active.kind == "Verify":
                    return self.ck.verify_final(handle, signature or b"") == CKR_OK
                return out + self.ck.final(active.kind, handle, out_size)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self._finish_session(active.session, failure)

    def op_abort(self, op_id: int) -> None:
        """End a multi-part operation nobody will finish. Never waits: if a (late) request is
        still running on it, that request ends it when done."""
        active = self.ops.pop(op_id, None)
        if active is None:
            return
        active.aborted = True
        if active.lock.acquire(blocking=False):
            try:
                self._end_aborted(active)
            finally:
                active.lock.release()

    def _end_aborted(self, active: _Active) -> None:
        # caller holds active.lock
        if active.ended:
            return
        active.ended = True
        try:
            if active.kind == "Verify":
                self.ck.verify_final(active.session.handle, b"")
            else:
                self.ck.final(active.kind, active.session.handle, 1 << 16)
        except CKRError:
            pass  # any error also ends the operation
        except BaseException:
            self.pool.discard(active.session)
            return
        self.pool.give(active.session)

    # --- objects ---------------------------------------------------------------------
    def _register(self, obj: Any) -> int:
        handle = int(obj.handle or 0)
        self.objects[handle] = obj
        return handle

    def _object(self, handle: int) -> Any:
        obj = self.objects.get(handle)
        if obj is None:
            raise WorkerError(ErrorCode.RESOURCE_NOT_FOUND, f"no token object {handle}")
        return obj

    def op_generate_secret(self, key_type: int, length: int, mechanism: int, template: dict[int, Any]) -> int:
        """``C_GenerateKey`` of a session secret key of ``length`` bytes."""
        with self.admin_lock:
            key = self.admin.generate_key(
                KeyType(key_type),
                length * 8,
                capabilities=_NO_USAGE,
                mechanism=Mechanism(mechanism),
                template=_exact(template),
            )
            return self._register(key)

    def op_generate_pair(
        self,
        key_type: int,
        mechanism: int,
        bits: int | None,
        public_template: dict[int, Any],
        private_template: dict[int, Any],
    ) -> tuple[int, int, dict[int, bytes]]:
        """``C_GenerateKeyPair``; returns (private handle, public handle, public attributes)."""
        with self.admin_lock:
            public, private = self.admin.generate_keypair(
                KeyType(key_type),
                bits,
                capabilities=_NO_USAGE,
                mechanism=Mechanism(mechanism),
                public_template=_exact(public_template),
                private_template=_exact(private_template),
            )
            pub_handle = self._register(public)
            priv_handle = self._register(private)
            return priv_handle, pub_handle, self._public_attributes(public, key_type)

    def _public_attributes(self, obj: Any, key_type: int) -> dict[int, bytes]:
        wanted = _PUBLIC_RSA if key_type == KeyType.RSA else _PUBLIC_EC
        return {int(k): bytes(v) for k, v in obj.get_attributes(list(wanted)).items()}

    def _unwrap(
        self, object_class: ObjectClass, key_type: int, material: bytes, template: dict[int, Any]
    ) -> Any:
        from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

        wrapped = aes_key_wrap_with_padding(self.transport_value, material)
        return self.transport.unwrap_key(
            object_class,
            KeyType(key_type),
            wrapped,
            mechanism=Mechanism.AES_KEY_WRAP_PAD,
            capabilities=_NO_USAGE,
            template=_exact(template),
        )

    def _create(
        self,
        object_class: ObjectClass,
        key_type: int,
        components: Mapping[Any, Any],
        template: Mapping[Any, Any],
    ) -> Any:
        attrs: dict[Any, Any] = {Attribute.CLASS: object_class, Attribute.KEY_TYPE: key_type}
        attrs.update(components)
        attrs.update(template)
        return self.admin.create_object(attrs)

    def op_import_secret(self, key_type: int, value: bytes, template: dict[int, Any]) -> int:
        """A secret key from caller material: wrapped here and unwrapped by the token where it
        can (``C_CreateObject`` with the value otherwise)."""
        with self.admin_lock:
            if key_type in self.wrappable:
                key = self._unwrap(ObjectClass.SECRET_KEY, key_type, value, template)
            else:
                key = self._create(ObjectClass.SECRET_KEY, key_type, {int(Attribute.VALUE): value}, template)
            return self._register(key)

    def op_import_pair(
        self,
        key_type: int,
        pkcs8: bytes,
        components: dict[int, Any],
        private_template: dict[int, Any],
        public_template: dict[int, Any],
    ) -> tuple[int, int]:
        """A private key (PKCS#8 unwrapped by the token where it can, created from its
        components otherwise) and its public key; all or nothing."""
        with self.admin_lock:
            if key_type in self.wrappable:
                key = self._unwrap(ObjectClass.PRIVATE_KEY, key_type, pkcs8, private_template)
            else:
                key = self._create(ObjectClass.PRIVATE_KEY, key_type, components, private_template)
            private = self._register(key)
        try:
            public = self.op_create_public(public_template)
        except BaseException:
            self.op_destroy((private,))
            raise
        return private, public

    def op_create_public(self, template: dict[Any, Any]) -> int:
        """``C_CreateObject`` of a public key."""
        with self.admin_lock:
            return self._register(self.admin.create_object(template))

    def op_public_attributes(self, handle: int, key_type: int) -> dict[int, bytes]:
        """EC parameters and point, or RSA modulus and exponent, of a public key."""
        with self.admin_lock:
            return self._public_attributes(self._object(handle), key_type)

    def op_export(self, handle: int, method: str) -> bytes:
        """Material of a ``CKA_EXTRACTABLE`` key. ``wrap``: wrapped by the token under the
        transport key and unwrapped here (raw secret, or PKCS#8 DER); ``value``: the
        ``CKA_VALUE`` of a non-sensitive key (raw secret, EC scalar, EdDSA seed)."""
        with self.admin_lock:
            obj = self._object(handle)
            if method == "value":
                return bytes(obj[Attribute.VALUE])
            if self.transport is None:
                raise WorkerError(
                    ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                    "the token has no CKM_AES_KEY_WRAP_PAD to wrap keys",
                )
            wrapped = self.transport.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

        return aes_key_unwrap_with_padding(self.transport_value, bytes(wrapped))

    def op_persist(self, handles: tuple[int, ...], label: str, key_id: bytes) -> tuple[int, ...]:
        """``C_CopyObject`` of each object to a token object with ``label`` and ``key_id``;
        all or nothing."""
        copies: list[Any] = []
        with self.admin_lock:
            try:
                for handle in handles:
                    copies.append(
                        self._object(handle).copy(
                            {Attribute.TOKEN: True, Attribute.LABEL: label, Attribute.ID: key_id}
                        )
                    )
            except BaseException:
                for copy in copies:
                    try:
                        copy.destroy()
                    except Exception:  # noqa: BLE001, S110 - best effort undo
                        pass
                raise
            return tuple(self._register(copy) for copy in copies)

    def op_find(self, key_id: bytes) -> list[tuple[int, int, dict[int, Any]]]:
        """Token objects with ``CKA_ID == key_id``: (handle, class, attributes)."""
        found = []
        with self.admin_lock:
            for obj in self.admin.get_objects({Attribute.ID: key_id, Attribute.TOKEN: True}):
                handle = self._register(obj)
                cls = int(obj[Attribute.CLASS])
                key_type = int(obj[Attribute.KEY_TYPE])
                wanted = list(_USAGE)
                if cls != ObjectClass.PUBLIC_KEY:
                    wanted += [Attribute.EXTRACTABLE, Attribute.SENSITIVE]
                if cls == ObjectClass.SECRET_KEY:
                    wanted.append(Attribute.VALUE_LEN)
                attrs: dict[int, Any] = {int(k): v for k, v in obj.get_attributes(wanted).items()}
                attrs[int(Attribute.KEY_TYPE)] = key_type
                if cls == ObjectClass.PUBLIC_KEY:
                    attrs.update(self._public_attributes(obj, key_type))
                found.append((handle, cls, attrs))
        return found

    def op_destroy(self, handles: tuple[int, ...]) -> None:
        """``C_DestroyObject`` of each handle this worker knows (others are ignored)."""
        with self.admin_lock:
            self._destroy_locked(handles)

    def _destroy_locked(self, handles: Iterable[int]) -> None:
        for handle in handles:
            obj = self.objects.pop(int(handle), None)
            if obj is None:
                continue
            try:
                obj.destroy()
            except self._p11.PKCS11Error:
                pass  # already gone

    def op_delete_token(self, key_id: bytes) -> int:
        """Destroy every token object with ``CKA_ID == key_id``; returns how many."""
        count = 0
        with self.admin_lock:
            for obj in list(self.admin.get_objects({Attribute.ID: key_id, Attribute.TOKEN: True})):
                self.objects.pop(int(obj.handle or 0), None)
                obj.destroy()
                count += 1
        return count
