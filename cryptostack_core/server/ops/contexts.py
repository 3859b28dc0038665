"""Context operations: creating hash, cipher, sign, verify, KEM and agreement contexts, and
driving their state machines (:mod:`cryptostack_core.server.states`) call by call.

Each context family serves exactly the calls it has; the op table below lists every valid
``family.verb`` pair and nothing else.

Audit: a keyed context yields one ``key.use`` record per operation *outcome* (a message
finalised, verified, encapsulated ...), with ``result`` ``ok`` or the error code, and
``operation`` spelt as :class:`~cryptostack_core.wire.algorithms.Operation` values. A
decryption whose tag check fails, or a signature that does not verify, is recorded as
``AUTHENTICATION_FAILED``; a message aborted by a provider failure records that failure.
Creating a context is not an outcome (refusals at creation are audited by the checks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from cryptostack_core.sdk.provider import ProviderKey
from cryptostack_core.server.arguments import (
    algorithm_arg,
    data_arg,
    enum_arg,
    int_arg,
    invalid,
    permissions_arg,
)
from cryptostack_core.server.core import Call, ServiceCore
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.server.session import Handle, KeyEntry
from cryptostack_core.server.split.choice import choose_for_key, secret_home
from cryptostack_core.server.split.plan import plan_for
from cryptostack_core.server.split.states import (
    Half,
    SplitKemState,
    SplitSignState,
    SplitVerifyState,
)
from cryptostack_core.server.states import (
    AgreementState,
    CipherState,
    ContextState,
    HashState,
    KemState,
    MessagePhase,
    SignState,
    StreamContextState,
    VerifyState,
)
from cryptostack_core.server.streaming import StreamFormat, StreamingAeadState
from cryptostack_core.wire.algorithms import AlgorithmKind, AlgorithmSpec, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.resources import CipherDirection, ResourcePersistence

Op = Callable[[Call, Mapping[str, Any]], Any]
SplitBuilder = Callable[[KeyEntry, dict[str, "Half"]], ContextState]
"""Builds a context over a split hybrid key from its halves."""
AsyncOp = Callable[..., Awaitable[Any]]
"""``(call, args, *, locked=False)``: ``locked`` when the caller holds the context's lock."""
_S = TypeVar("_S", bound=StreamContextState)

STREAM_OPERATION = {
    "hash": Operation.HASH,
    "cipher": Operation.ENCRYPT,
    "sign": Operation.SIGN,
    "verify": Operation.VERIFY,
}
"""The provider operation behind each stream family (for inline decisions). Streaming AEAD
is absent on purpose: a call of any size may seal or open a whole held segment (up to
1 MiB), so it always runs on the provider's pool, never on the event loop."""
SECRET_OPERATION = {
    "kem.encapsulate": Operation.ENCAPSULATE,
    "kem.decapsulate": Operation.DECAPSULATE,
    "agree.agree": Operation.AGREE,
}
"""Calls that produce a secret key, and their provider operation."""


class Pieces(tuple[bytes, ...]):
    """A byte-string answer in parts (a cipher's output and its last block or tag): the
    front end writes the parts into the caller's region, or joins them, without an extra
    concatenation of a large message."""

    def joined(self) -> bytes:
        """The answer as one byte string."""
        return b"".join(self)


class ContextBusy(Exception):
    """A context another call is using: the awaited path leaves it to the thread path, whose
    call waits for the context's lock (the event loop must not)."""


class ContextOps:
    """Creation of contexts and every call on them."""

    def __init__(self, core: ServiceCore) -> None:
        self.core = core
        self.max_buffered = core.config.max_buffered_message

    def operations(self) -> dict[str, Op]:
        """Wire operations served here: only the valid (family, verb) pairs."""
        init, update, reset, finalize = _init, _update, _reset, _finalize
        stream = self._stream_call
        return {
            "hash.create": self.hash_create,
            "hash.init": stream(HashState, init),
            "hash.update": stream(HashState, update),
            "hash.finalize": stream(HashState, finalize),
            "hash.reset": stream(HashState, reset),
            "hash.single_shot": stream(HashState, _single_shot),
            "cipher.create": self.cipher_create,
            "cipher.single_shot": self._whole_message_call(CipherState, _cipher_prepare, _cipher_single_shot),
            "cipher.init": stream(CipherState, _cipher_init),
            "cipher.update_aad": stream(CipherState, _update_aad),
            "cipher.update": stream(CipherState, update),
            "cipher.finalize": stream(CipherState, finalize),
            "cipher.reset": stream(CipherState, reset),
            "sign.create": self.sign_create,
            "sign.init": stream(SignState, init),
            "sign.update": stream(SignState, update),
            "sign.finalize": stream(SignState, finalize),
            "sign.reset": stream(SignState, reset),
            "sign.single_shot": self._whole_message_call(SignState, _sign_prepare, _sign_single_shot),
            "verify.create": self.verify_create,
            "verify.init": stream(VerifyState, init),
            "verify.update": stream(VerifyState, update),
            "verify.finalize": stream(VerifyState, _verify_finalize),
            "verify.reset": stream(VerifyState, reset),
            "verify.single_shot": self._whole_message_call(VerifyState, _verify_prepare, _verify_single_shot),
            "streaming_aead.create": self.streaming_aead_create,
            "streaming_aead.init": stream(StreamingAeadState, _streaming_init),
            "streaming_aead.update": stream(StreamingAeadState, update),
            "streaming_aead.finalize": stream(StreamingAeadState, finalize),
            "streaming_aead.reset": stream(StreamingAeadState, reset),
            "kem.create": self.kem_create,
            "kem.encapsulate": self.encapsulate,
            "kem.decapsulate": self.decapsulate,
            "agree.create": self.agree_create,
            "agree.agree": self.agree,
        }

    def async_operations(self) -> dict[str, AsyncOp]:
        """The stream calls a front end may await on its event loop when the context's
        provider says so (:meth:`~cryptostack_core.sdk.Provider.runs_async`): the same state
        machine, with the provider's ``*_async`` methods."""
        stream = self._awaited_stream_call
        return {
            "hash.init": stream(HashState, _init_awaited),
            "hash.update": stream(HashState, _update_awaited),
            "hash.finalize": stream(HashState, _finalize_awaited),
            "hash.single_shot": stream(HashState, _single_shot_awaited),
            "cipher.single_shot": self._awaited_whole_message_call(
                CipherState, _cipher_prepare, _cipher_single_shot_awaited
            ),
            "sign.single_shot": self._awaited_whole_message_call(
                SignState, _sign_prepare, _sign_single_shot_awaited
            ),
            "verify.single_shot": self._awaited_whole_message_call(
                VerifyState, _verify_prepare, _verify_single_shot_awaited
            ),
            "cipher.init": stream(CipherState, _cipher_init_awaited),
            "cipher.update_aad": stream(CipherState, _update_aad_awaited),
            "cipher.update": stream(CipherState, _update_awaited),
            "cipher.finalize": stream(CipherState, _finalize_awaited),
            "sign.init": stream(SignState, _init_awaited),
            "sign.update": stream(SignState, _update_awaited),
            "sign.finalize": stream(SignState, _finalize_awaited),
            "verify.init": stream(VerifyState, _init_awaited),
            "verify.update": stream(VerifyState, _update_awaited),
            "verify.finalize": stream(VerifyState, _verify_finalize_awaited),
        }

    # --- creation ------------------------------------------------------------------------
    def _keyed_context(
        self,
        call: Call,
        args: Mapping[str, Any],
        spec: AlgorithmSpec,
        operation: Operation,
        wanted: P,
        build: Callable[[LoadedProvider, KeyEntry, ProviderKey], ContextState],
        alternatives: P = P.NONE,
        select_as: str | None = None,
        split: SplitBuilder | None = None,
    ) -> dict[str, Any]:
        core = self.core
        entry = core.key_argument(call, args)
        try:
            core.require_permission(call.session, entry, wanted, spec.name, alternatives, operation)
            core.check_key_algorithm(spec, entry)
            pinned = int_arg(args, "provider", default=None)
            if entry.components is not None:
                if split is None:
                    raise invalid(f"{spec.name} cannot use a key split across providers")
                operations = (
                    (operation, Operation.DECAPSULATE)
                    if operation is Operation.ENCAPSULATE and entry.has_private
                    else (operation,)
                )
                ctx = split(entry, self._halves(call, entry, operations, pinned))
            else:
                loaded = core.providers.select(
                    select_as or spec.name, operation, key=entry.placement, pinned=pinned
                )
                pkey = core.key_on(call.session, entry, loaded)
                ctx = build(loaded, entry, pkey)
        except BaseException:
            entry.release()
            raise
        try:
            info = ctx.describe()
            number = core.register(call, Handle("context", ctx))
        except BaseException:
            ctx.close()
            raise
        return {"ctx": number, **info}

    def _halves(
        self, call: Call, entry: KeyEntry, operations: tuple[Operation, ...], pinned: int | None
    ) -> dict[str, Half]:
        """The providers running the halves of split key ``entry`` (each half copied there
        when it lives elsewhere and may move), or the reason none can."""
        choice = choose_for_key(self.core.providers, entry, operations, pinned)
        choice.raise_error()
        assert choice.halves is not None and entry.components is not None
        plan = plan_for(entry.algorithm)
        assert plan is not None
        return {
            role: Half(
                role,
                loaded,
                plan.component(role).algorithm,
                self.core.key_on(call.session, entry.components[role], loaded),
            )
            for role, loaded in choice.halves.items()
        }

    def _audit_use(
        self, call: Call, ctx: ContextState, operation: Operation, result: str, detail: str = ""
    ) -> None:
        """One outcome of a keyed context (one record, naming both providers of a split
        key)."""
        key = ctx.key
        where = ctx.audit_detail()
        self.core.audit(
            call.session,
            "key.use",
            (key.slot if key else None) or "ephemeral key",
            result,
            provider=ctx.loaded.id,
            algorithm=ctx.algorithm,
            operation=operation.value,
            detail="; ".join(part for part in (detail, where) if part),
            providers=ctx.provider_ids(),
        )

    def hash_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """A hash context (no key)."""
        spec = algorithm_arg(args)
        if spec.kind is not AlgorithmKind.HASH:
            raise invalid(f"{spec.name} is not a hash algorithm")
        loaded = self.core.providers.select(
            spec.name, Operation.HASH, pinned=int_arg(args, "provider", default=None)
        )
        ctx = HashState(spec, loaded, None, None, self.max_buffered)
        number = self.core.register(call, Handle("context", ctx))
        return {"ctx": number, **ctx.describe()}

    def cipher_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """An encryption or decryption context."""
        spec = algorithm_arg(args)
        if spec.kind not in (AlgorithmKind.CIPHER, AlgorithmKind.AEAD):
            raise invalid(f"{spec.name} is not a cipher")
        direction = enum_arg(args, "direction", CipherDirection)
        tag_length = int_arg(args, "tag_length", default=spec.tag_size or 0, lo=0, hi=64)
        if spec.kind is AlgorithmKind.AEAD:
            spec.check_tag_length(tag_length)  # the limits are declared on the algorithm
        encrypt = direction is CipherDirection.ENCRYPT
        operation = Operation.ENCRYPT if encrypt else Operation.DECRYPT
        wanted = P.ENCRYPT if encrypt else P.DECRYPT
        return self._keyed_context(
            call,
            args,
            spec,
            operation,
            wanted,
            lambda loaded, entry, pkey: CipherState(
                spec, loaded, entry, pkey, self.max_buffered, direction, tag_length
            ),
        )

    def streaming_aead_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """A streaming AEAD context (:mod:`cryptostack_core.server.streaming`)."""
        spec = algorithm_arg(args)
        if spec.kind is not AlgorithmKind.STREAMING_AEAD:
            raise invalid(f"{spec.name} is not a streaming AEAD (AES-256-GCM-HKDF-1MB, ...)")
        direction = enum_arg(args, "direction", CipherDirection)
        encrypt = direction is CipherDirection.ENCRYPT
        fmt = StreamFormat.of(spec)

        def build(loaded: LoadedProvider, entry: KeyEntry, pkey: ProviderKey) -> ContextState:
            instance = self.core.provider_instance(loaded)
            if not instance.supports(fmt.kdf, Operation.DERIVE):
                raise CryptoError(
                    ErrorCode.NO_COMPATIBLE_PROVIDER,
                    f"provider {loaded.name} ({loaded.id}) runs {fmt.aead} but not "
                    f"{fmt.kdf}, which {spec.name} needs",
                )
            return StreamingAeadState(spec, loaded, entry, pkey, direction)

        return self._keyed_context(
            call,
            args,
            spec,
            Operation.ENCRYPT if encrypt else Operation.DECRYPT,
            P.ENCRYPT if encrypt else P.DECRYPT,
            build,
            select_as=fmt.aead,
        )

    @staticmethod
    def _context_string(spec: AlgorithmSpec, args: Mapping[str, Any]) -> bytes:
        context = bytes(data_arg(args, "context")) if args.get("context") is not None else b""
        spec.check_context_string(context)
        return context

    @staticmethod
    def _signature_spec(args: Mapping[str, Any]) -> AlgorithmSpec:
        spec = algorithm_arg(args)
        if spec.kind not in (AlgorithmKind.SIGNATURE, AlgorithmKind.MAC):
            raise invalid(f"{spec.name} is not a signature or MAC algorithm")
        return spec

    def sign_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """A signing (or MAC) context."""
        spec = self._signature_spec(args)
        context = self._context_string(spec, args)
        alternatives = P.MAC if spec.kind is AlgorithmKind.MAC else P.NONE
        return self._keyed_context(
            call,
            args,
            spec,
            Operation.SIGN,
            P.SIGN,
            lambda loaded, entry, pkey: SignState(spec, loaded, entry, pkey, self.max_buffered, context),
            alternatives,
            split=lambda entry, halves: SplitSignState(spec, entry, halves, self.max_buffered, context),
        )

    def verify_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """A verification context (MACs are verified by recomputing them)."""
        spec = self._signature_spec(args)
        context = self._context_string(spec, args)
        tag_length = int_arg(
            args, "tag_length", default=None, lo=max(1, spec.min_tag_size), hi=spec.digest_size or 64
        )
        is_mac = spec.kind is AlgorithmKind.MAC
        if tag_length is not None and not is_mac:
            raise invalid("tag_length applies to MAC algorithms only")
        # A MAC is checked by recomputing it, so the provider is asked for SIGN/MAC.
        operation = Operation.SIGN if is_mac else Operation.VERIFY
        alternatives = P.MAC if is_mac else P.NONE
        return self._keyed_context(
            call,
            args,
            spec,
            operation,
            P.VERIFY,
            lambda loaded, entry, pkey: VerifyState(
                spec, loaded, entry, pkey, self.max_buffered, context, tag_length
            ),
            alternatives,
            split=lambda entry, halves: SplitVerifyState(spec, entry, halves, self.max_buffered, context),
        )

    @staticmethod
    def _derived_permissions(args: Mapping[str, Any]) -> P:
        perms = permissions_arg(args, "derived_permissions")
        return perms if perms is not None else P.DERIVE

    def kem_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """A KEM context (encapsulate with a public key, decapsulate with the pair)."""
        spec = algorithm_arg(args)
        if spec.kind is not AlgorithmKind.KEM:
            raise invalid(f"{spec.name} is not a KEM")
        derived = self._derived_permissions(args)
        providers = self.core.providers

        def split(entry: KeyEntry, halves: dict[str, Half]) -> ContextState:
            home = secret_home(providers, [half.loaded.id for half in halves.values()])
            return SplitKemState(spec, entry, halves, derived, home)

        return self._keyed_context(
            call,
            args,
            spec,
            Operation.ENCAPSULATE,
            P.NONE,
            lambda loaded, entry, pkey: KemState(spec, loaded, entry, pkey, derived),
            P.ENCAPSULATE | P.DECAPSULATE,
            split=split,
        )

    def agree_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """A key-agreement context over the caller's private key."""
        spec = algorithm_arg(args)
        if spec.kind is not AlgorithmKind.KEY_AGREEMENT:
            raise invalid(f"{spec.name} is not a key-agreement algorithm")
        derived = self._derived_permissions(args)
        return self._keyed_context(
            call,
            args,
            spec,
            Operation.AGREE,
            P.AGREE,
            lambda loaded, entry, pkey: AgreementState(spec, loaded, entry, pkey, derived),
        )

    # --- secrets -------------------------------------------------------------------------
    def _secret_key(
        self, call: Call, ctx: KemState, pkey: ProviderKey, home: LoadedProvider | None = None
    ) -> dict[str, Any]:
        # A derived secret is not bound to a slot's compatible list: if its provider lets it
        # out, any provider may use it (e.g. HKDF on openssl from an ML-KEM-512 secret on oqs).
        entry = KeyEntry(
            algorithm=getattr(pkey, "algorithm", "GENERIC-SECRET"),
            permissions=ctx.derived_permissions,
            home=home or ctx.loaded,
            pkey=pkey,
            persistence=ResourcePersistence.EPHEMERAL,
            compatible=self.core.providers.preference,
        )
        return self.core.add_key(call, entry)

    def _secret_call(self, call: Call, ctx: KemState, operation: Operation, run: Callable[[], Any]) -> Any:
        """Run one secret-producing call and audit its outcome."""
        try:
            result = run()
        except CryptoError as exc:
            self._audit_use(call, ctx, operation, exc.code.value)
            raise
        except Exception:
            self._audit_use(call, ctx, operation, ErrorCode.PROVIDER_ERROR.value)
            raise
        self._audit_use(call, ctx, operation, "ok")
        return result

    def encapsulate(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """A ciphertext and the secret it carries (the secret stays in the daemon)."""
        ctx: KemState = self.core.context(call, args.get("ctx"), KemState)
        assert ctx.key is not None and ctx.pkey is not None
        self.core.require_permission(
            call.session, ctx.key, P.ENCAPSULATE, ctx.algorithm, operation=Operation.ENCAPSULATE
        )

        def run() -> dict[str, Any]:
            with ctx.lock:
                ct, secret, home = ctx.encapsulate()
            return {"ciphertext": ct, "key": self._secret_key(call, ctx, secret, home)}

        result: dict[str, Any] = self._secret_call(call, ctx, Operation.ENCAPSULATE, run)
        return result

    def decapsulate(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """The secret a ciphertext carries (needs the private key)."""
        ctx: KemState = self.core.context(call, args.get("ctx"), KemState)
        assert ctx.key is not None and ctx.pkey is not None
        self.core.require_permission(
            call.session, ctx.key, P.DECAPSULATE, ctx.algorithm, operation=Operation.DECAPSULATE
        )
        if not ctx.key.has_private:
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                "decapsulation needs the private key; this is a public key",
            )
        ciphertext = bytes(data_arg(args, "ciphertext"))

        def run() -> dict[str, Any]:
            with ctx.lock:
                secret, home = ctx.decapsulate(ciphertext)
            return self._secret_key(call, ctx, secret, home)

        result: dict[str, Any] = self._secret_call(call, ctx, Operation.DECAPSULATE, run)
        return result

    def agree(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """The shared secret with a peer's public key."""
        ctx: AgreementState = self.core.context(call, args.get("ctx"), AgreementState)
        assert ctx.pkey is not None
        peer = bytes(data_arg(args, "peer"))
        pkey = ctx.pkey

        def run() -> dict[str, Any]:
            with ctx.lock:
                secret = ctx.provider.agree(ctx.algorithm, pkey, peer, ctx.derived_permissions)
            return self._secret_key(call, ctx, secret)

        result: dict[str, Any] = self._secret_call(call, ctx, Operation.AGREE, run)
        return result

    # --- streams -------------------------------------------------------------------------
    def _stream_call(self, kind: type[_S], run: Callable[[_S, Mapping[str, Any]], Any]) -> Op:
        def serve(call: Call, args: Mapping[str, Any]) -> Any:
            ctx = self.core.context(call, args.get("ctx"), kind)
            with ctx.lock:
                ctx.check_usable()
                if ctx.key is None:  # hashing: no key, nothing to audit
                    return run(ctx, args)
                active = ctx.state is MessagePhase.ACTIVE
                try:
                    result = run(ctx, args)
                except Exception as exc:
                    # A failure that ended the message in progress is its outcome.
                    if active and ctx.state is not MessagePhase.ACTIVE:
                        code = exc.code if isinstance(exc, CryptoError) else ErrorCode.PROVIDER_ERROR
                        if ctx.error is not None:
                            code = ErrorCode.OPERATION_TIMED_OUT
                        self._audit_use(call, ctx, _outcome_operation(ctx), code.value)
                    raise
                if ctx.state is MessagePhase.DONE and active:
                    if ctx.error is not None:  # finished after the caller gave up on it
                        self._audit_use(
                            call,
                            ctx,
                            _outcome_operation(ctx),
                            ErrorCode.OPERATION_TIMED_OUT.value,
                            "completed after the caller's deadline; result dropped",
                        )
                    elif result is False:  # a signature or MAC that did not verify
                        self._audit_use(
                            call,
                            ctx,
                            _outcome_operation(ctx),
                            ErrorCode.AUTHENTICATION_FAILED.value,
                            "the signature did not verify",
                        )
                    else:
                        self._audit_use(call, ctx, _outcome_operation(ctx), "ok")
                return result

        return serve

    def _whole_message_call(
        self, kind: type[_S], prepare: Callable[[_S, Mapping[str, Any]], Any], run: Callable[[_S, Any], Any]
    ) -> Op:
        """A call that is a whole message (``*.single_shot``): ``prepare`` checks the
        arguments and the state (a refusal there is not an outcome), ``run`` starts and ends
        the message; its outcome is audited like a finalisation's."""

        def serve(call: Call, args: Mapping[str, Any]) -> Any:
            ctx = self.core.context(call, args.get("ctx"), kind)
            with ctx.lock:
                ctx.check_usable()
                prepared = prepare(ctx, args)
                try:
                    result = run(ctx, prepared)
                except Exception as exc:
                    self._audit_outcome(call, ctx, exc)
                    raise
                self._audit_outcome(call, ctx, None, result)
                return result

        return serve

    def _awaited_whole_message_call(
        self,
        kind: type[_S],
        prepare: Callable[[_S, Mapping[str, Any]], Any],
        run: Callable[[_S, Any], Awaitable[Any]],
    ) -> AsyncOp:
        """:meth:`_whole_message_call` awaiting the provider (see :meth:`async_operations`)."""

        async def serve(call: Call, args: Mapping[str, Any], *, locked: bool = False) -> Any:
            ctx = self.core.context(call, args.get("ctx"), kind)
            if not locked and not ctx.lock.acquire(blocking=False):
                raise ContextBusy()
            try:
                ctx.check_usable()
                prepared = prepare(ctx, args)
                try:
                    result = await run(ctx, prepared)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        self._audit_outcome(call, ctx, exc)
                    raise
                self._audit_outcome(call, ctx, None, result)
                return result
            finally:
                if not locked:
                    ctx.lock.release()

        return serve

    def _audit_outcome(
        self, call: Call, ctx: StreamContextState, exc: Exception | None, result: Any = None
    ) -> None:
        """Audit the outcome of a whole message on a keyed context (none for hashing)."""
        if ctx.key is None:
            return
        operation = _outcome_operation(ctx)
        if exc is not None:
            code = exc.code if isinstance(exc, CryptoError) else ErrorCode.PROVIDER_ERROR
            self._audit_use(call, ctx, operation, code.value)
        elif ctx.error is not None:  # finished after the caller gave up on it
            self._audit_use(
                call,
                ctx,
                operation,
                ErrorCode.OPERATION_TIMED_OUT.value,
                "completed after the caller's deadline; result dropped",
            )
        elif result is False:
            self._audit_use(
                call, ctx, operation, ErrorCode.AUTHENTICATION_FAILED.value, "the signature did not verify"
            )
        else:
            self._audit_use(call, ctx, operation, "ok")

    def _awaited_stream_call(
        self, kind: type[_S], run: Callable[[_S, Mapping[str, Any]], Awaitable[Any]]
    ) -> AsyncOp:
        async def serve(call: Call, args: Mapping[str, Any], *, locked: bool = False) -> Any:
            ctx = self.core.context(call, args.get("ctx"), kind)
            if locked:
                ctx.check_usable()
                return await run(ctx, args)
            if not ctx.lock.acquire(blocking=False):
                raise ContextBusy()
            try:
                ctx.check_usable()
                return await run(ctx, args)
            finally:
                ctx.lock.release()

        return serve


def _outcome_operation(ctx: ContextState) -> Operation:
    """The operation a stream context's message performed (the audit spelling)."""
    direction = getattr(ctx, "direction", None)
    if direction is not None:
        return Operation.ENCRYPT if direction is CipherDirection.ENCRYPT else Operation.DECRYPT
    return Operation.VERIFY if isinstance(ctx, VerifyState) else Operation.SIGN


# --- one call on a stream context's state machine (run under the context's lock) ----------
def _init(ctx: StreamContextState, args: Mapping[str, Any]) -> None:
    ctx.init()


def _cipher_init(ctx: CipherState, args: Mapping[str, Any]) -> None:
    iv = bytes(data_arg(args, "iv")) if args.get("iv") is not None else b""
    ctx.spec.check_iv(len(iv))  # the limits are declared on the algorithm
    ctx.init(iv=iv)


def _streaming_init(ctx: StreamingAeadState, args: Mapping[str, Any]) -> None:
    ctx.init(aad=bytes(data_arg(args, "aad")) if args.get("aad") is not None else b"")


def _update(ctx: StreamContextState, args: Mapping[str, Any]) -> Any:
    return ctx.update(data_arg(args))


def _update_aad(ctx: CipherState, args: Mapping[str, Any]) -> None:
    ctx.update_aad(data_arg(args))


def _finalize(ctx: StreamContextState, args: Mapping[str, Any]) -> Any:
    return ctx.finalize()


def _verify_finalize(ctx: VerifyState, args: Mapping[str, Any]) -> bool:
    return ctx.finalize_verify(bytes(data_arg(args, "signature")))


def _reset(ctx: StreamContextState, args: Mapping[str, Any]) -> None:
    ctx.reset()


def _single_shot(ctx: HashState, args: Mapping[str, Any]) -> bytes:
    return ctx.single_shot(data_arg(args))


def _idle(ctx: StreamContextState, what: str) -> None:
    if ctx.state is MessagePhase.ACTIVE:
        raise CryptoError(ErrorCode.INVALID_STATE, f"{what} while a message is in progress; reset() first")


def _optional_data(args: Mapping[str, Any], name: str) -> bytes | memoryview | None:
    return data_arg(args, name) if args.get(name) is not None else None


def _cipher_prepare(
    ctx: CipherState, args: Mapping[str, Any]
) -> tuple[bytes, bytes | memoryview | None, bytes | memoryview]:
    _idle(ctx, "a one-shot encrypt() or decrypt()")
    iv = bytes(data_arg(args, "iv")) if args.get("iv") is not None else b""
    ctx.spec.check_iv(len(iv))  # the limits are declared on the algorithm
    aad = _optional_data(args, "aad")
    if aad is not None and len(aad) and not ctx.aead:
        raise CryptoError(
            ErrorCode.INVALID_STATE, f"{ctx.algorithm} is not an AEAD; it takes no associated data"
        )
    return iv, aad, data_arg(args)


def _cipher_single_shot(ctx: CipherState, prepared: Any) -> Any:
    iv, aad, data = prepared
    ctx.init(iv=iv)
    if aad:
        ctx.update_aad(aad)
    out: bytes = ctx.update(data)
    last: bytes = ctx.finalize()
    return Pieces((out, last)) if out else last


def _sign_prepare(ctx: SignState, args: Mapping[str, Any]) -> bytes | memoryview:
    _idle(ctx, "a one-shot sign()")
    return data_arg(args)


def _sign_single_shot(ctx: SignState, data: bytes | memoryview) -> bytes:
    ctx.init()
    ctx.update(data)
    signature: bytes = ctx.finalize()
    return signature


def _verify_prepare(ctx: VerifyState, args: Mapping[str, Any]) -> tuple[bytes | memoryview, bytes]:
    _idle(ctx, "a one-shot verify()")
    return data_arg(args), bytes(data_arg(args, "signature"))


def _verify_single_shot(ctx: VerifyState, prepared: Any) -> bool:
    data, signature = prepared
    ctx.init()
    ctx.update(data)
    return ctx.finalize_verify(signature)


async def _cipher_single_shot_awaited(ctx: CipherState, prepared: Any) -> Any:
    iv, aad, data = prepared
    ctx.init(iv=iv)
    if aad:
        await ctx.update_aad_async(aad)
    out = await ctx.update_async(data)
    last = await ctx.finalize_async()
    return Pieces((out, last)) if out else last


async def _sign_single_shot_awaited(ctx: SignState, data: bytes | memoryview) -> bytes:
    ctx.init()
    await ctx.update_async(data)
    signature: bytes = await ctx.finalize_async()
    return signature


async def _verify_single_shot_awaited(ctx: VerifyState, prepared: Any) -> bool:
    data, signature = prepared
    ctx.init()
    await ctx.update_async(data)
    return await ctx.finalize_verify_async(signature)


# --- the same calls, awaiting the provider (see ContextOps.async_operations) ----------------
async def _init_awaited(ctx: StreamContextState, args: Mapping[str, Any]) -> None:
    ctx.init()  # creating the operation object is cheap for providers that run awaited


async def _cipher_init_awaited(ctx: CipherState, args: Mapping[str, Any]) -> None:
    _cipher_init(ctx, args)


async def _update_awaited(ctx: StreamContextState, args: Mapping[str, Any]) -> Any:
    return await ctx.update_async(data_arg(args))


async def _update_aad_awaited(ctx: CipherState, args: Mapping[str, Any]) -> None:
    await ctx.update_aad_async(data_arg(args))


async def _finalize_awaited(ctx: StreamContextState, args: Mapping[str, Any]) -> Any:
    return await ctx.finalize_async()


async def _verify_finalize_awaited(ctx: VerifyState, args: Mapping[str, Any]) -> bool:
    return await ctx.finalize_verify_async(bytes(data_arg(args, "signature")))


async def _single_shot_awaited(ctx: HashState, args: Mapping[str, Any]) -> bytes:
    return await ctx.single_shot_async(data_arg(args))
