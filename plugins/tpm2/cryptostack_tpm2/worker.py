"""The TPM worker: the only process that talks to the TPM.

:class:`TpmWorker` is the backend the SDK's worker host (:mod:`cryptostack_core.sdk.workers`)
runs in a fresh worker process; the provider (in the multi-threaded daemon) sends it one
request per TPM interaction (``op_<name>`` methods below). A TPM command can block (a wedged
TPM, a stalled simulator); the host then kills this process and starts another, which is
only safe because all ESAPI state lives here. The TPM is serial, so the worker runs one
request at a time (``threads=1``); each is retried once when the TPM turns out to have lost
our objects (see :mod:`cryptostack_tpm2.objects`).

Cleanup items the host piggybacks on requests are key and sequence ids to flush. A broken
transport (see :func:`~cryptostack_tpm2.tpm_errors.is_fatal`) is fatal: the worker answers
and exits, and the host starts a new one.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_CC,
    TPM2_PT,
    TPM2_RC,
    TPM2_RH,
    TPM2_ST,
    TPM2_SU,
)
from tpm2_pytss.types import (
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMS_SENSITIVE_CREATE,
    TPMT_SIG_SCHEME,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF_OBJECT,
    TPMT_TK_HASHCHECK,
)
from tpm2_pytss.utils import wrap

from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.sdk.workers import WorkerBackend

from .capabilities import TpmFacts, discover
from .objects import ObjectTable, StaleHandles, is_stale_error
from .templates import primary_template, sealed_data_template
from .tpm_errors import is_fatal, tpm_error, translate

_TPM_CC_FLUSH_CONTEXT = 0x165
_TPM_ST_NO_SESSIONS = 0x8001
_TRANSIENT_FIRST = 0x80000000


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to connect (plain data: pickled to the new process)."""

    tcti: str
    primary_template: str = "ecc"
    primary_handle: int | None = None
    owner_auth: bytes | None = None
    lockout_auth: bytes | None = None
    reset_lockout: bool = False
    flush_transient: bool = True
    max_loaded: int | None = None


@dataclass(frozen=True)
class WorkerInfo:
    """What a started worker reports."""

    facts: TpmFacts
    primary_name: bytes
    primary_public: bytes
    pid: int
    flushed_leftovers: int
    capacity: int


class _FatalTransport(CryptoError):
    """A TPM failure after which this worker's connection cannot be trusted."""


class TpmWorker(WorkerBackend):
    """ESAPI session, storage primary key, object table and request handlers."""

    def __init__(self, config: WorkerConfig) -> None:
        super().__init__(config)
        # ESAPI logs every TPM error answer (a failed verification included) to stderr; the
        # worker reports errors to the provider instead. libtss2 reads this at its first log.
        os.environ.setdefault("TSS2_LOG", "all+NONE")
        self._config = config
        try:
            self.ectx = ESAPI(config.tcti)
        except TSS2_Exception as exc:
            raise CryptoError(
                ErrorCode.PROVIDER_UNAVAILABLE, f"cannot connect to the TPM at {config.tcti!r}: {exc}"
            ) from None
        self._startup_if_needed()
        if config.owner_auth is not None:
            self.ectx.tr_set_auth(ESYS_TR.OWNER, config.owner_auth)
        if config.lockout_auth is not None:
            self.ectx.tr_set_auth(ESYS_TR.LOCKOUT, config.lockout_auth)
        if config.reset_lockout:
            self._run(
                "DictionaryAttackLockReset", lambda: self.ectx.dictionary_attack_lock_reset(ESYS_TR.LOCKOUT)
            )
        flushed = self._flush_leftovers() if config.flush_transient else 0
        self.facts = discover(self.ectx)
        self._template = primary_template(config.primary_template)
        self._primary_public: Any = None
        capacity = config.max_loaded or self.facts.transient_slots
        self.table = ObjectTable(self.ectx, capacity, self._create_primary, config.primary_handle)
        self._run("CreatePrimary", self.table.primary)
        if config.primary_handle is not None:
            public = self._run("ReadPublic", lambda: self.ectx.read_public(self.table.primary()))
            self._primary_public = public[0]
        self.table.end_request()
        self._info = WorkerInfo(
            facts=self.facts,
            primary_name=bytes(self._primary_public.get_name()),
            primary_public=self._primary_public.marshal(),
            pid=os.getpid(),
            flushed_leftovers=flushed,
            capacity=self.table.capacity,
        )

    def info(self) -> WorkerInfo:
        """What the provider learns at start."""
        return self._info

    # --- plumbing --------------------------------------------------------------------
    def _run(self, command: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except TSS2_Exception as exc:
            raise translate(exc, command) from None

    def _startup_if_needed(self) -> None:
        try:
            self.ectx.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.MANUFACTURER, 1)
        except TSS2_Exception as exc:
            if int(exc.error) != int(TPM2_RC.INITIALIZE):
                raise CryptoError(
                    ErrorCode.PROVIDER_UNAVAILABLE, f"TPM at {self._config.tcti!r} does not answer: {exc}"
                ) from None
            self.ectx.startup(TPM2_SU.CLEAR)

    def _transient_handles(self) -> list[int]:
        _more, data = self.ectx.get_capability(TPM2_CAP.HANDLES, _TRANSIENT_FIRST, 64)
        handles = data.data.handles
        return [int(handles.handle[i]) for i in range(handles.count)]

    def _flush_leftovers(self) -> int:
        """Flush transient objects a killed predecessor left in a TPM without a resource
        manager (with /dev/tpmrm0 the list holds only this connection's objects: none).
        Raw TPM2_FlushContext through the TCTI, because ESAPI cannot name sequence objects
        it did not create."""
        tcti = self.ectx.tcti
        handles = self._transient_handles()
        for handle in handles:
            tcti.transmit(struct.pack(">HIII", _TPM_ST_NO_SESSIONS, 14, _TPM_CC_FLUSH_CONTEXT, handle))
            tcti.receive()
        return len(handles)

    def _create_primary(self) -> Any:
        handle, public, _data, _digest, _ticket = self.ectx.create_primary(
            None, self._template, ESYS_TR.OWNER
        )
        self._primary_public = public
        return handle

    # --- host hooks ------------------------------------------------------------------
    def cleanup(self, items: tuple[Any, ...]) -> None:
        """Flush released keys and abandoned sequences (their entry ids)."""
        for entry_id in items:
            self.table.drop(int(entry_id))
        self.table.end_request()

    def is_fatal(self, exc: BaseException) -> bool:
        """A broken TPM transport: the host starts a new worker."""
        return isinstance(exc, _FatalTransport)

    def close(self) -> None:
        """Flush every object we loaded, then close the connection."""
        self._shutdown()

    def dispatch(self, op: str, args: tuple[Any, ...]) -> Any:
        """Run ``op_<op>``; TPM errors become CryptoErrors naming the command, once retried
        when the TPM lost our objects or ran out of object memory."""
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise CryptoError(ErrorCode.INTERNAL_ERROR, f"unknown worker call {op}")
        for attempt in (0, 1):
            try:
                return handler(*args)
            except StaleHandles:
                self._invalidate()
            except TSS2_Exception as exc:
                if is_fatal(exc):
                    err = translate(exc, op)
                    raise _FatalTransport(err.code, err.message) from None
                if attempt == 0 and is_stale_error(exc):
                    self._invalidate()
                    continue
                if attempt == 0 and tpm_error(exc) == int(TPM2_RC.OBJECT_MEMORY):
                    # A command needed more scratch slots than foreseen: free ours, retry.
                    self.table.evict_idle()
                    continue
                raise translate(exc, op) from None
            except CryptoError:
                raise
            except Exception as exc:  # noqa: BLE001 - must reach the provider
                raise CryptoError(
                    ErrorCode.PROVIDER_ERROR, f"TPM worker {op}: {type(exc).__name__}: {exc}"
                ) from None
            finally:
                self.table.end_request()
        raise CryptoError(ErrorCode.PROVIDER_ERROR, f"TPM {op}: the TPM keeps losing its objects")

    def _invalidate(self) -> None:
        self.table.invalidate()
        if self._config.flush_transient:
            self._flush_leftovers()

    def _shutdown(self) -> None:
        try:
            self.table.flush_all()
        finally:
            self.ectx.close()

    # --- handlers: one per worker call ------------------------------------------------
    def op_ping(self) -> dict[str, int]:
        """Liveness and cache statistics."""
        return {
            "pid": os.getpid(),
            "loads": self.table.loads,
            "evictions": self.table.evictions,
            "capacity": self.table.capacity,
            "transient_in_tpm": len(self._transient_handles()),
        }

    def op_echo(self, value: Any) -> Any:
        """No TPM command: measures the pipe round trip alone."""
        return value

    def op_random(self, length: int) -> bytes:
        """``length`` bytes from TPM2_GetRandom, in as many calls as the TPM needs."""
        out = bytearray()
        while len(out) < length:
            chunk = bytes(self.ectx.get_random(min(length - len(out), self.facts.max_digest)))
            if not chunk:
                raise CryptoError(ErrorCode.PROVIDER_ERROR, "TPM GetRandom returned nothing")
            out += chunk
        return bytes(out)

    def _chunks(self, data: bytes) -> list[bytes]:
        size = self.facts.input_buffer
        return [data[i : i + size] for i in range(0, len(data), size)]

    def _ticket_hierarchy(self, ticket: bool) -> Any:
        return ESYS_TR.OWNER if ticket else ESYS_TR.NULL

    def op_hash(self, alg: int, data: bytes, ticket: bool) -> tuple[bytes, bytes | None]:
        """Digest of ``data``; with ``ticket``, also the hash-check ticket (restricted keys)."""
        if len(data) <= self.facts.input_buffer:
            digest, tk = self.ectx.hash(data, alg, self._ticket_hierarchy(ticket))
            return bytes(digest), tk.marshal() if ticket else None
        seq_id = self.op_seq_start("hash", alg, None, b"")
        try:
            self.op_seq_update(seq_id, data)
            return self.op_seq_finish(seq_id, b"", ticket)
        finally:
            self.table.drop(seq_id)  # no-op once completed

    def op_hmac(self, ref: Any, alg: int, data: bytes) -> bytes:
        """HMAC of ``data`` under the key ``ref``."""
        if len(data) <= self.facts.input_buffer:
            return bytes(self.ectx.hmac(self.table.key(ref), data, alg))
        seq_id = self.op_seq_start("hmac", alg, ref, b"")
        try:
            self.op_seq_update(seq_id, data)
            return self.op_seq_finish(seq_id, b"", False)[0]
        finally:
            self.table.drop(seq_id)  # no-op once completed

    def op_seq_start(self, kind: str, alg: int, ref: Any, data: bytes) -> int:
        """Open a hash (``ref`` None) or HMAC sequence and absorb ``data``."""
        if kind == "hmac":
            key = self.table.key(ref)
            seq_id = self.table.new_sequence(lambda: self.ectx.hmac_start(key, b"", alg))
        else:
            seq_id = self.table.new_sequence(lambda: self.ectx.hash_sequence_start(b"", alg))
        self.op_seq_update(seq_id, data)
        return seq_id

    def op_seq_update(self, seq_id: int, data: bytes) -> None:
        """Absorb ``data`` (any length: sent in TPM-buffer-sized pieces)."""
        if not data:
            return
        handle = self.table.sequence(seq_id)
        for chunk in self._chunks(data):
            self.ectx.sequence_update(handle, chunk)

    def op_seq_finish(self, seq_id: int, data: bytes, ticket: bool) -> tuple[bytes, bytes | None]:
        """Absorb the rest and complete: (digest or MAC, ticket or None)."""
        handle = self.table.sequence(seq_id)
        chunks = self._chunks(data)
        last = chunks.pop() if chunks else b""
        for chunk in chunks:
            self.ectx.sequence_update(handle, chunk)
        digest, tk = self.ectx.sequence_complete(handle, last, self._ticket_hierarchy(ticket))
        self.table.sequence_finished(seq_id)
        return bytes(digest), tk.marshal() if ticket else None

    def op_create(self, template: bytes, secret: bytes | None) -> tuple[bytes, bytes]:
        """TPM2_Create under the primary: (TPM2B_PUBLIC, TPM2B_PRIVATE), marshalled.
        ``secret`` is caller key material (AES, HMAC) or None to let the TPM generate."""
        public = TPM2B_PUBLIC.unmarshal(template)[0]
        sensitive = None
        if secret is not None:
            sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret)))
        parent = self.table.primary()
        self.table.make_room(1)  # TPM2_Create builds the object in a scratch slot
        private, out_public, *_ = self.ectx.create(parent, sensitive, public)
        self.table.release_primary()
        return out_public.marshal(), private.marshal()

    def op_import(self, public: bytes, sensitive: bytes) -> bytes:
        """TPM2_Import of a clear private key under the primary: its TPM2B_PRIVATE.
        The duplicate is encrypted to the primary's public key (outer wrapper only)."""
        pub = TPM2B_PUBLIC.unmarshal(public)[0]
        sens = TPM2B_SENSITIVE.unmarshal(sensitive)[0]
        parent = self.table.primary()
        self.table.make_room(1)  # TPM2_Import unwraps into a scratch slot
        enc_key, duplicate, seed = wrap(self._primary_public.publicArea, pub, sens, None, None)
        private = self.ectx.import_(
            parent, enc_key, pub, duplicate, seed, TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL)
        )
        return bytes(private.marshal())

    def op_read_persistent(self, handle: int) -> bytes:
        """Public area of the object at a persistent handle (pre-deployed keys)."""
        try:
            tr = self.ectx.tr_from_tpmpublic(handle)
        except TSS2_Exception as exc:
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND, f"no object at TPM persistent handle 0x{handle:08x}: {exc}"
            ) from None
        try:
            public, _name, _qualified = self.ectx.read_public(tr)
        finally:
            self.ectx.tr_close(tr)
        return bytes(public.marshal())

    def op_sign(
        self, ref: Any, digest: bytes, scheme: int, hash_alg: int, ticket: bytes | None
    ) -> tuple[Any, ...]:
        """TPM2_Sign of a digest: ("ecdsa", r, s) or ("rsapss", signature)."""
        key = self.table.key(ref)
        in_scheme = TPMT_SIG_SCHEME(scheme=scheme)
        in_scheme.details.any.hashAlg = hash_alg
        if ticket is None:
            validation = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        else:
            validation = TPMT_TK_HASHCHECK.unmarshal(ticket)[0]
        sig = self.ectx.sign(key, digest, in_scheme, validation)
        if sig.sigAlg == TPM2_ALG.ECDSA:
            return ("ecdsa", bytes(sig.signature.ecdsa.signatureR), bytes(sig.signature.ecdsa.signatureS))
        if sig.sigAlg == TPM2_ALG.RSAPSS:
            return ("rsapss", bytes(sig.signature.rsapss.sig))
        raise CryptoError(ErrorCode.PROVIDER_ERROR, f"unexpected TPM signature {sig.sigAlg}")

    def op_verify(self, ref: Any, digest: bytes, signature: tuple[Any, ...], hash_alg: int) -> bool:
        """TPM2_VerifySignature: True if valid; False for any signature the TPM rejects."""
        key = self.table.key(ref)
        if signature[0] == "ecdsa":
            sig = TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA)
            sig.signature.ecdsa.hash = hash_alg
            sig.signature.ecdsa.signatureR = signature[1]
            sig.signature.ecdsa.signatureS = signature[2]
        else:
            sig = TPMT_SIGNATURE(sigAlg=TPM2_ALG.RSAPSS)
            sig.signature.rsapss.hash = hash_alg
            sig.signature.rsapss.sig = signature[1]
        try:
            self.ectx.verify_signature(key, digest, sig)
        except TSS2_Exception as exc:
            # Parameter 2 is the signature: any complaint about it means "not valid".
            if int(exc.error) == int(TPM2_RC.SIGNATURE) or (exc.fmt1 and exc.parameter == 2):
                return False
            # libtpms answers TPM_RC_FAILURE for signatures that hit the point at infinity
            # (Wycheproof "ArithmeticError"/"PointDuplication") without entering failure
            # mode: if the self-test state is still fine, the signature was just invalid.
            if int(exc.error) == int(TPM2_RC.FAILURE) and self._tpm_healthy():
                return False
            raise
        return True

    def _tpm_healthy(self) -> bool:
        try:
            _data, rc = self.ectx.get_test_result()
        except TSS2_Exception:
            return False
        return int(rc) == int(TPM2_RC.SUCCESS)

    def op_cipher(self, ref: Any, decrypt: bool, mode: int, iv: bytes, data: bytes) -> tuple[bytes, bytes]:
        """TPM2_EncryptDecrypt2 (or EncryptDecrypt) over ``data``: (output, next IV).
        The provider sends whole blocks except at the end of a message."""
        key = self.table.key(ref)
        out = bytearray()
        use2 = int(TPM2_CC.EncryptDecrypt2) in self.facts.commands
        for chunk in self._chunks(data):
            if use2:
                result, iv_out = self.ectx.encrypt_decrypt_2(key, decrypt, mode, iv, chunk)
            else:
                result, iv_out = self.ectx.encrypt_decrypt(key, decrypt, mode, iv, chunk)
            out += bytes(result)
            iv = bytes(iv_out)
        return bytes(out), iv

    def op_seal(self, secret: bytes) -> tuple[bytes, bytes]:
        """Seal ``secret`` in a data object under the primary: (public, private) blobs."""
        return self.op_create(sealed_data_template().marshal(), secret)

    def op_unseal(self, public: bytes, private: bytes) -> bytes:
        """Load a sealed data object just for TPM2_Unseal and flush it at once."""
        parent = self.table.primary()
        self.table.make_room(1)
        try:
            handle = self.ectx.load(
                parent, TPM2B_PRIVATE.unmarshal(private)[0], TPM2B_PUBLIC.unmarshal(public)[0]
            )
        except TSS2_Exception as exc:
            raise translate(exc, "Load (sealed data)") from None
        try:
            return bytes(self.ectx.unseal(handle))
        finally:
            self.ectx.flush_context(handle)
