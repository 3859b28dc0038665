"""The crypto service: every request the daemon (or an in-process stack) serves.

The service is transport-agnostic. Front ends (:mod:`.daemon` over a unix socket,
:mod:`.inproc` in the caller's process) open a session per client, parse each request once
into a :class:`~.request.Request`, ask :meth:`Service.runs_inline` whether it is cheap enough
for their own thread or loop (otherwise :meth:`Service.provider_for` names the provider whose
worker pool should run it), hand it to :meth:`Service.handle`, and, when a request outlives
its deadline, call :meth:`Service.abandon` so the contexts involved enter their error state.

The operations themselves live in :mod:`.ops`, one module per family, over the shared
:class:`~.core.ServiceCore`; this module only routes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cbor2
import pluggy

from cryptostack_core.sdk.deadline import deadline_scope_until, enter_deadline, leave_deadline
from cryptostack_core.server.config import DaemonConfig
from cryptostack_core.server.core import Call, ServiceCore
from cryptostack_core.server.hooks import PeerIdentity
from cryptostack_core.server.ops.certificates import CertificateOps
from cryptostack_core.server.ops.contexts import (
    SECRET_OPERATION,
    STREAM_OPERATION,
    AsyncOp,
    ContextBusy,
    ContextOps,
    Pieces,
)
from cryptostack_core.server.ops.control import ControlOps
from cryptostack_core.server.ops.keys import KeyOps
from cryptostack_core.server.ops.sealing import SealOps
from cryptostack_core.server.request import Request
from cryptostack_core.server.selection import KeyPlacement
from cryptostack_core.server.session import Session
from cryptostack_core.server.states import ContextState
from cryptostack_core.wire.algorithms import REGISTRY, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.protocol import rid_from_wire
from cryptostack_core.wire.resources import ResourceType
from cryptostack_core.wire.shm import OUTPUT_OPERATIONS, SHM_ARGUMENTS

log = logging.getLogger("cryptostack.service")

Op = Callable[[Call, Mapping[str, Any]], Any]
CONTROL_OPS = frozenset({"ping", "algorithms", "resource.resolve", "resource.describe"})
"""Requests that never touch a provider and cost next to nothing: always served inline
(``algorithms`` reads the registry and the providers' claims, all in memory).
(``status`` probes every provider and ``explain`` may load a slot's key: they are scheduled
like any other work; ``resource.release`` is inline unless it frees a key.)"""
_INLINE_OPS = CONTROL_OPS | {"hash.create"}
WHOLE_MESSAGE_OPS = frozenset(
    {"hash.single_shot", "cipher.single_shot", "sign.single_shot", "verify.single_shot"}
)
"""Calls that start and finish a message (init, data, finalisation) in one request."""
INLINE_BATCH_LENGTH = 16
"""Longer batches never run on the event loop, however cheap each member."""
_SELECTED: dict[str, Operation] = {
    "hash.create": Operation.HASH,
    "sign.create": Operation.SIGN,
    "verify.create": Operation.VERIFY,
    "kem.create": Operation.ENCAPSULATE,
    "agree.create": Operation.AGREE,
    "key.generate": Operation.GENERATE_KEY,
    "key.import": Operation.IMPORT_KEY,
    "key.derive": Operation.DERIVE,
}
"""Requests that create something on the provider selection picks for (algorithm, operation)."""

__all__ = ["Call", "ContextBusy", "Request", "Route", "Service"]


_RUNNING_LOOP = object()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Route(enum.Enum):
    """How a front end runs a request (see :meth:`Service.route`)."""

    INLINE = "inline"
    AWAITED = "awaited"
    THREAD = "thread"


class Service:
    """One crypto service instance: the core, the operation families and their op table."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.core = ServiceCore(config, plugin_manager=plugin_manager, state_dir=state_dir)
        self.config = self.core.config  # key slot algorithms resolved after providers loaded
        certificates = CertificateOps(self.core)
        contexts = ContextOps(self.core)
        self._async_ops: dict[str, AsyncOp] = contexts.async_operations()
        families: list[Mapping[str, Op]] = [
            ControlOps(self.core, certificates.slot_status).operations(),
            contexts.operations(),
            KeyOps(self.core).operations(),
            SealOps(self.core).operations(),
            certificates.operations(),
        ]
        self._ops: dict[str, Op] = {}
        for table in families:
            clash = self._ops.keys() & table.keys()
            assert not clash, f"operations defined twice: {sorted(clash)}"
            self._ops.update(table)
        # The provider operation behind each call on an existing context (inline decisions).
        self._context_operations: dict[str, Operation] = {}
        for op in self._ops:
            family, _, verb = op.partition(".")
            operation = SECRET_OPERATION.get(op) or (
                STREAM_OPERATION.get(family) if verb != "create" else None
            )
            if operation is not None:
                self._context_operations[op] = operation

    @property
    def pm(self) -> pluggy.PluginManager:
        """The hook manager (audit, access, metrics)."""
        return self.core.pm

    @property
    def operations(self) -> frozenset[str]:
        """Every operation name this service answers (``batch`` included)."""
        return frozenset(self._ops) | {"batch"}

    # --- lifecycle -----------------------------------------------------------------------
    def open_session(self, peer: PeerIdentity) -> Session:
        """Register a client."""
        return self.core.open_session(peer)

    def close_session(self, session: Session) -> None:
        """Free everything a client held (it disconnected or died)."""
        self.core.close_session(session)

    def close(self) -> None:
        """Close every session, provider and the key store."""
        self.core.close()

    # --- serving -------------------------------------------------------------------------
    def handle(self, call: Call, request: Request) -> Any:
        """Serve one request (synchronously) under its deadline."""
        op = request.op
        if op == "batch":
            return self._batch(call, request)
        fn = self._ops.get(op)
        if fn is None:
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, f"unknown operation {op!r}")
        args, held = _snapshot(call, request)
        try:
            if self.core.pm.hook.cryptostack_metric.get_hookimpls():
                return _placed(request, self._observed(call, request, fn, args))
            deadline = call.deadline
            token = enter_deadline(deadline)
            try:
                if deadline is not None and time.monotonic() > deadline:
                    raise CryptoError(
                        ErrorCode.OPERATION_TIMED_OUT,
                        "the deadline passed before the daemon could start the call",
                    )
                return _placed(request, fn(call, args))
            except CryptoError:
                raise
            except Exception as exc:  # a provider bug becomes PROVIDER_ERROR, never a traceback
                log.exception("%s failed inside a provider", op)
                raise CryptoError(ErrorCode.PROVIDER_ERROR, f"{type(exc).__name__}: {exc}") from None
            finally:
                leave_deadline(token)
        finally:
            if held:
                call.session.memory.release(held, "request frames")

    def _observed(self, call: Call, request: Request, fn: Op, args: Mapping[str, Any]) -> Any:
        """:meth:`handle` when metrics hooks are registered: the request's duration and
        outcome are reported to them."""
        started = time.perf_counter()
        result = "ok"
        try:
            with deadline_scope_until(call.deadline):
                if call.deadline is not None and time.monotonic() > call.deadline:
                    raise CryptoError(
                        ErrorCode.OPERATION_TIMED_OUT,
                        "the deadline passed before the daemon could start the call",
                    )
                return fn(call, args)
        except CryptoError as exc:
            result = exc.code.value
            raise
        except Exception as exc:  # a provider bug becomes PROVIDER_ERROR, never a traceback
            result = ErrorCode.PROVIDER_ERROR.value
            log.exception("%s failed inside a provider", request.op)
            raise CryptoError(ErrorCode.PROVIDER_ERROR, f"{type(exc).__name__}: {exc}") from None
        finally:
            self.core.metric(
                "request.seconds", time.perf_counter() - started, {"op": request.op, "result": result}
            )

    def _batch(self, call: Call, request: Request) -> list[Any]:
        """Members run one after the other; the first failure ends the batch. The results
        are charged to the client's memory budget as they accumulate, and refused once the
        answer could no longer be sent in one frame."""
        memory = call.session.memory
        limit = self.config.max_frame_size
        held = 0
        results = []
        try:
            for n, member in enumerate(request.members):
                expected = _announced_size(member)
                if held + expected > limit:  # refused before the provider allocates it
                    raise _batch_too_large(n, limit)
                result = self.handle(call, member)
                size = _size_of(result)
                if held + size > limit:
                    raise _batch_too_large(n, limit)
                memory.reserve(size, "batch results")
                held += size
                results.append(result)
        finally:
            memory.release(held, "batch results")
        return results

    def runs_async(self, session: Session, request: Request) -> bool:
        """Whether a front end on an event loop may await :meth:`handle_async` for this
        request instead of sending :meth:`handle` to a thread (see :meth:`route`)."""
        return self.route(session, request) is Route.AWAITED

    def route(self, session: Session, request: Request, loop: Any = _RUNNING_LOOP) -> Route:
        """How a front end runs a request: inline (cheap: no provider, or the provider's
        :meth:`~cryptostack_core.sdk.Provider.run_inline`), awaited on ``loop`` (a stream
        call, or a batch of them on one context, whose provider's backend is a worker:
        :meth:`~cryptostack_core.sdk.Provider.runs_async`, when the provider's
        :meth:`~cryptostack_core.sdk.Provider.event_loop` is ``loop``; by default the
        caller's running loop), or on a thread."""
        if request.op == "batch":
            routes = {self.route(session, member, loop) for member in request.members}
            if routes <= {Route.INLINE} and len(request.members) <= INLINE_BATCH_LENGTH:
                return Route.INLINE
            members = request.members
            if routes == {Route.AWAITED} and all(m.context == members[0].context for m in members):
                return Route.AWAITED
            return Route.THREAD
        op = request.op
        operation = self._context_operations.get(op)
        if operation is None:
            if op == "resource.release":
                # Freeing a key may call its provider; other handles are plain bookkeeping.
                return Route.THREAD if self._released_key(session, request) is not None else Route.INLINE
            if op in _INLINE_OPS or op not in self._ops:
                return Route.INLINE  # no provider involved, or fails fast with an error
            return Route.THREAD
        ctx = self._context_of(session, request)
        if ctx is None:
            return Route.INLINE  # fails fast: no such context
        hint = ctx.inline_hint(op.rpartition(".")[2], request.data_size)
        if hint is not None:  # the context knows better than its provider (split keys)
            return Route.INLINE if hint else Route.THREAD
        instance = ctx.loaded.instance
        size, algorithm = request.data_size, ctx.algorithm
        whole = op in WHOLE_MESSAGE_OPS  # its data, then the finalisation: both must qualify
        if instance is None or (
            instance.run_inline(operation, size, algorithm=algorithm)
            and (not whole or instance.run_inline(operation, 0, algorithm=algorithm))
        ):
            return Route.INLINE
        if (
            op in self._async_ops
            and instance.runs_async(operation, size, algorithm=algorithm)
            and (not whole or instance.runs_async(operation, 0, algorithm=algorithm))
        ):
            if loop is _RUNNING_LOOP:
                loop = _running_loop()
            own = instance.event_loop()
            if loop is not None and (own is None or own is loop):
                return Route.AWAITED
        return Route.THREAD

    def provider_loop(self, session: Session, request: Request) -> asyncio.AbstractEventLoop | None:
        """The event loop of the provider a (stream) request targets, if it has one: a
        front end without a loop of its own (``inproc://``) may await the request there."""
        leaf = request.members[0] if request.op == "batch" and request.members else request
        ctx = self._context_of(session, leaf)
        instance = ctx.loaded.instance if ctx is not None else None
        return instance.event_loop() if instance is not None else None

    async def handle_async(self, call: Call, request: Request) -> Any:
        """:meth:`handle` for a request :meth:`runs_async` accepted, on the front end's loop.
        Raises :class:`ContextBusy` (nothing done) when another call holds the context: run
        the request on the thread path then."""
        if request.op != "batch":
            return await self._handle_awaited(call, request, locked=False)
        ctx = self._context_of(call.session, request.members[0])
        if ctx is None or not ctx.lock.acquire(blocking=False):
            raise ContextBusy()
        try:  # members run one after the other; the first failure ends the batch
            return [await self._handle_awaited(call, member, locked=True) for member in request.members]
        finally:
            ctx.lock.release()

    async def _handle_awaited(self, call: Call, request: Request, *, locked: bool) -> Any:
        fn = self._async_ops[request.op]
        args, held = _snapshot(call, request)
        observed = bool(self.core.pm.hook.cryptostack_metric.get_hookimpls())
        started = time.perf_counter() if observed else 0.0
        result = "ok"
        try:
            with deadline_scope_until(call.deadline):
                if call.deadline is not None and time.monotonic() > call.deadline:
                    raise CryptoError(
                        ErrorCode.OPERATION_TIMED_OUT,
                        "the deadline passed before the daemon could start the call",
                    )
                return _placed(request, await fn(call, args, locked=locked))
        except ContextBusy:
            observed = False
            raise
        except CryptoError as exc:
            result = exc.code.value
            raise
        except Exception as exc:  # a provider bug becomes PROVIDER_ERROR, never a traceback
            result = ErrorCode.PROVIDER_ERROR.value
            log.exception("%s failed inside a provider", request.op)
            raise CryptoError(ErrorCode.PROVIDER_ERROR, f"{type(exc).__name__}: {exc}") from None
        finally:
            if held:
                call.session.memory.release(held, "request frames")
            if observed:
                self.core.metric(
                    "request.seconds", time.perf_counter() - started, {"op": request.op, "result": result}
                )

    def runs_inline(self, session: Session, request: Request) -> bool:
        """Whether a request is cheap enough to run on the front end's own thread or loop."""
        return self.route(session, request) is Route.INLINE

    def provider_for(self, session: Session, request: Request) -> int | None:
        """The provider whose worker pool should run a (non-inline) request: the one the
        request will touch, worked out up front from the context it targets, the provider the
        caller pinned, the key it names or the provider selection picks for its algorithm.
        None when no provider is involved (or it cannot be told before running): the front
        end's control pool then runs it. A batch goes where its first member that touches a
        provider goes (releases aside)."""
        leaves = list(request.leaves())
        # Releases of collected guards ride along with other requests: they do not decide.
        chosen = [leaf for leaf in leaves if leaf.op != "resource.release"] or leaves
        for leaf in chosen:
            provider = self._provider_of(session, leaf)
            if provider is not None:
                return provider
        return None

    def _provider_of(self, session: Session, request: Request) -> int | None:
        ctx = self._context_of(session, request)
        if ctx is not None:
            return ctx.loaded.id
        if request.provider is not None:
            return request.provider
        op, args, core = request.op, request.args, self.core
        try:
            if op == "resource.release":
                entry = self._released_key(session, request)
                return entry.home.id if entry is not None else None
            if op in (
                "key.load",
                "key.slot_info",
                "key.clear_slot",
                "key.persist",
                "key.retire_version",
                "key.set_minimum_version",
            ):
                name = session.get(rid_from_wire(args.get("slot"))).obj.name
                slot = core.slot_config(name)
                if slot.provider is not None or op != "key.persist":
                    return slot.provider
                return self._key_home(session, args.get("key"))
            if (
                op in ("key.export", "key.export_public", "explain", "aead.seal", "aead.open")
                and "key" in args
            ):
                return self._key_home(session, args.get("key"))
            if op == "random.generate":
                return core.providers.select("RANDOM", Operation.RANDOM).id
            if op not in _SELECTED and op != "cipher.create" and op.endswith(".create") and "key" in args:
                return self._key_home(session, args.get("key"))  # its key's provider
            operation = _SELECTED.get(op)
            if op == "cipher.create":
                operation = Operation.DECRYPT if args.get("direction") == "DECRYPT" else Operation.ENCRYPT
            if operation is None:
                return None
            spec = REGISTRY.get(args["algorithm"])
            placement = self._placement(session, args.get("key")) if "key" in args else None
            return core.providers.select(spec.name, operation, key=placement).id
        except (CryptoError, KeyError, TypeError, AttributeError):
            return None  # the request fails fast with its own error, wherever it runs

    def _key_home(self, session: Session, value: object) -> int | None:
        placement = self._placement(session, value)
        return placement.home if placement is not None else None

    def _placement(self, session: Session, value: object) -> KeyPlacement | None:
        """Where a key named by a guard or a slot lives, from memory and configuration only
        (no key store or provider call on the event loop)."""
        rid = rid_from_wire(value)
        handle = session.get(rid)
        if rid.type is ResourceType.KEY:
            placement: KeyPlacement = handle.obj.placement
            return placement
        if rid.type is ResourceType.KEY_SLOT:
            slot = self.core.slot_config(handle.obj.name)
            if slot.algorithm is not None and slot.provider is not None:
                return KeyPlacement(slot.algorithm, slot.provider, slot.compatible_providers, False)
        return None

    @staticmethod
    def _released_key(session: Session, request: Request) -> Any:
        """The key a ``resource.release`` would free in its provider, if any."""
        try:
            handle = session.get(rid_from_wire(request.args.get("id")))
        except CryptoError:
            return None
        return handle.obj if handle.kind == "key" else None

    def abandon(self, call: Call, request: Request, reason: str) -> None:
        """The front end stopped waiting for ``call``: the contexts involved enter their error
        state and anything the call creates later is released."""
        call.abandoned = True
        for leaf in request.leaves():
            ctx = self._context_of(call.session, leaf)
            if ctx is not None:
                ctx.mark_error(reason)
        with call.session.lock:
            created = list(call.created)
        for number in created:
            handle = call.session.pop(number)
            if handle is not None:
                self.core.release_handle(handle)

    @staticmethod
    def _context_of(session: Session, request: Request) -> ContextState | None:
        if request.context is None:
            return None
        try:
            ctx: ContextState = session.context(request.context)
        except CryptoError:
            return None
        return ctx


def _snapshot(call: Call, request: Request) -> tuple[Mapping[str, Any], int]:
    """The request's arguments as its operation may see them, and the bytes of the memory
    budget that takes (to give back when it ends).

    Data in a shared-memory region the client can still write is copied into the daemon's
    memory first, so no provider sees it change while it works; an immutable region, and
    the data of a hash context (no key, a digest only the caller gets), are read in place.
    """
    args = request.args
    region = request.region
    if region is None or region.immutable or request.op.startswith("hash."):
        return args, 0
    copied = dict(args)
    held = 0
    memory = call.session.memory
    try:
        for name in SHM_ARGUMENTS:
            value = copied.get(name)
            if type(value) is memoryview:
                memory.reserve(len(value), "request frames")
                held += len(value)
                copied[name] = bytes(value)
    except BaseException:
        memory.release(held, "request frames")
        raise
    return copied, held


def _placed(request: Request, result: Any) -> Any:
    """A cipher's output written into the caller's region when it asked (``out``); an
    answer in :class:`Pieces` joined otherwise."""
    region = request.region
    if (
        region is not None
        and request.op in OUTPUT_OPERATIONS
        and isinstance(result, (bytes, bytearray, memoryview, Pieces))
    ):
        out = request.args.get("out")
        if out is not None:
            placed = region.output(out, result)
            if placed is not None:
                return placed
    return result.joined() if type(result) is Pieces else result


def _announced_size(request: Request) -> int:
    """Bytes a request's result will take, when its arguments say so up front."""
    if request.op == "random.generate":
        length = request.args.get("length")
        if type(length) is int and length > 0:
            return length
    return 0


def _size_of(value: Any) -> int:
    """The bytes ``value`` takes in an answer frame (at most 9 more)."""
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return len(value) + 9
    try:
        return len(cbor2.dumps(value))
    except Exception:  # noqa: BLE001 - not encodable: the answer will say so
        return 9


def _batch_too_large(done: int, limit: int) -> CryptoError:
    return CryptoError(
        ErrorCode.RESOURCE_EXHAUSTED,
        f"the batch's results would pass max_frame_size ({limit} bytes) at call "
        f"{done + 1}: the answer could not be sent; split the batch",
    )
