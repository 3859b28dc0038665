"""What every operation context shares: its timeout, its connection, its error state."""

from __future__ import annotations

import datetime as dt
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Self, TypeVar, Union

from cryptostack_core.client.arguments import int_arg, str_arg, wrong_type
from cryptostack_core.client.channel import AsyncChannel, Channel, ChannelCore
from cryptostack_core.client.guards import GuardCore
from cryptostack_core.client.plans import Plan, run, run_async
from cryptostack_core.wire.algorithms import known_or_deferred
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.protocol import rid_to_wire
from cryptostack_core.wire.resources import CryptoResourceId

Duration = Union[dt.timedelta, float, int]
ResourceLike = Union[CryptoResourceId, GuardCore]
BytesLike = Union[bytes, bytearray, memoryview]
_C = TypeVar("_C", bound="ContextConfig")
T = TypeVar("T")
_UNSET: Any = object()


def to_seconds(value: Duration | None, what: str = "timeout") -> float | None:
    """A timedelta or number of seconds as float seconds (None stays None)."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise wrong_type(what, "a timedelta or a number of seconds", value)
    if not seconds > 0:  # also refuses NaN
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{what} must be positive, got {value!r}")
    return seconds


def rid_of(value: object, what: str = "resource") -> CryptoResourceId:
    """A resource id from an id or a guard (the design's implicit conversion)."""
    rid = getattr(value, "resource_id", None)
    if isinstance(rid, CryptoResourceId):
        return rid
    raise CryptoError(
        ErrorCode.INVALID_ARGUMENT,
        f"{what} must be a CryptoResourceId or CryptoResourceGuard, got {type(value).__name__}",
    )


def wire_rid(value: object, what: str = "resource") -> dict[str, Any]:
    """Wire form of an id or guard."""
    return rid_to_wire(rid_of(value, what))


def byte_view(data: object, what: str = "data") -> memoryview:
    """A flat byte view of a bytes-like argument (no copy); INVALID_ARGUMENT otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise wrong_type(what, "bytes-like (bytes, bytearray or memoryview)", data)
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        try:
            view = view.cast("B")
        except TypeError:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{what} must be a contiguous buffer") from None
    return view


def _close_dropped(channel: ChannelCore, close_op: str, handle: int, what: str) -> None:
    """Finalizer of an unclosed context: queue its close (no I/O here) and warn."""
    if channel.closed:
        return  # disconnecting freed it
    channel.queue_call(close_op, {"ctx": handle, "quiet": True})
    warnings.warn(
        f"cryptostack: {what} #{handle} was never closed; it is closed with the "
        "stack's next request (use 'with' or close())",
        ResourceWarning,
        stacklevel=2,
    )


class AlgorithmSetting:
    """Builder mixin: ``set_algorithm``. Names this client knows resolve to their canonical
    spelling at once; any other name (an algorithm a daemon's provider brings) is kept and
    resolved with the daemon when the context is created, where a name that neither knows
    fails with UNSUPPORTED_ALGORITHM."""

    algorithm: str | None = None

    def set_algorithm(self, algorithm: str) -> Self:
        """Algorithm by canonical name or alias (``"sha256"`` -> ``"SHA-256"``)."""
        self.algorithm = known_or_deferred(str_arg(algorithm, "algorithm"))
        return self


class KeySetting:
    """Builder mixin: ``set_key`` taking a key slot id, a key id or a guard."""

    key: ResourceLike | None = None

    def set_key(self, key: ResourceLike) -> Self:
        """The key: a key slot id, a key id or a guard."""
        rid_of(key, "key")
        self.key = key
        return self


class ContextConfig:
    """Builder-style settings every context config has: timeout and provider pinning."""

    def __init__(self) -> None:
        self._timeout: Any = _UNSET
        self.provider: int | None = None

    def set_operation_timeout(self: _C, timeout: Duration) -> _C:
        """Per-call deadline for this context, overriding the stack default."""
        self._timeout = to_seconds(timeout, "timeout")
        return self

    def disable_timeout(self: _C) -> _C:
        """No deadline for this context's calls (slow key generation, SLH-DSA signing)."""
        self._timeout = None
        return self

    def set_provider(self: _C, provider_id: int) -> _C:
        """Run on this provider (when it is eligible) instead of the preference order."""
        self.provider = int_arg(provider_id, "provider_id")
        return self

    def resolve_timeout(self, default: float | None) -> float | None:
        """The effective timeout given the stack default (seconds, or None: unbounded)."""
        if default is not None:
            to_seconds(default, "default")
        timeout: float | None = default if self._timeout is _UNSET else self._timeout
        return timeout


class ContextParent(Protocol):
    """What an operation context needs from the :class:`~cryptostack_core.CryptoContext`
    that creates it: the channel, and to be told of the new child (closed with it)."""

    _channel: Any

    def _register_child(self, child: Any) -> None: ...


class ContextCore:
    """What every operation context does, blocking or asyncio: a handle in the daemon, a
    timeout, the error state after a timeout, calls batched with the next one, large data
    in pieces -- as plans (:mod:`cryptostack_core.client.plans`), without I/O.

    A context with a daemon handle that becomes unreachable unclosed is closed with the
    stack's next request, with a ``ResourceWarning`` (like an unclosed file), so a loop that
    forgets ``close()`` never exhausts the daemon's per-client context limit.
    """

    _close_op = "context.close"
    _finalizer: weakref.finalize[Any, Any] | None = None

    def __init__(self, parent: ContextParent, config: ContextConfig) -> None:
        self._parent = parent
        self._channel = parent._channel
        self._timeout = config.resolve_timeout(self._channel.default_timeout)
        self._handle = None
        self._error: str | None = None
        self._closed = False
        self._pending: list[dict[str, Any]] = []
        parent._register_child(self)

    @property
    def _handle(self) -> int | None:
        """The daemon's number for this context (None until created)."""
        return self.__handle

    @_handle.setter
    def _handle(self, value: int | None) -> None:
        self.__handle = value
        if value is not None and self._finalizer is None:
            self._finalizer = weakref.finalize(
                self, _close_dropped, self._channel, self._close_op, value, type(self).__name__
            )
            self._finalizer.atexit = False

    @property
    def timeout(self) -> float | None:
        """Seconds each call may take (None: unbounded)."""
        return self._timeout

    @property
    def in_error_state(self) -> bool:
        """True after a call timed out: only close() is allowed."""
        return self._error is not None

    def _check(self) -> None:
        if self._closed:
            raise CryptoError(ErrorCode.RESOURCE_NOT_FOUND, "context is closed")
        if self._error is not None:
            raise CryptoError(
                ErrorCode.CONTEXT_IN_ERROR_STATE,
                f"context is in error state after {self._error}; close it and create a new one",
            )

    def _defer(self, op: str, args: Mapping[str, Any]) -> None:
        """Queue a call that returns nothing; it travels with the next real call."""
        self._check()
        self._pending.append({"op": op, "args": args})

    def _call(self, op: str, args: Mapping[str, Any], timeout: Any = ...) -> Plan[Any]:
        """One request (with the deferred calls before it, in one batch)."""
        self._check()
        if timeout is ...:
            timeout = self._timeout
        try:
            if self._pending:
                calls = [*self._pending, {"op": op, "args": args}]
                self._pending = []
                results = yield "batch", {"calls": calls}, timeout
                return results[-1]
            return (yield op, args, timeout)
        except CryptoError as exc:
            if exc.code is ErrorCode.OPERATION_TIMED_OUT:
                self._error = f"{op} timed out"
            elif exc.code is ErrorCode.CONTEXT_IN_ERROR_STATE:
                self._error = self._error or "a timeout"
            self._on_error(exc)
            raise

    def _send_data(
        self, op: str, data: memoryview, args: Callable[[memoryview], Mapping[str, Any]]
    ) -> Plan[list[Any]]:
        """Send ``data`` as one request or, when larger than the channel's chunk, as several
        requests in order under one deadline (this call's timeout, checked between pieces);
        returns each request's result."""
        chunk = self._channel.max_chunk
        if len(data) <= chunk:
            return [(yield from self._call(op, args(data)))]
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for offset in range(0, len(data), chunk):
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._error = f"{op} timed out"
                    self._on_error(CryptoError(ErrorCode.OPERATION_TIMED_OUT, ""))
                    raise CryptoError(
                        ErrorCode.OPERATION_TIMED_OUT,
                        f"{op}: the {(timeout or 0) * 1000:.0f} ms deadline "
                        f"passed after {offset} of {len(data)} bytes",
                    )
            results.append((yield from self._call(op, args(data[offset : offset + chunk]), remaining)))
        return results

    def _on_error(self, exc: CryptoError) -> None:
        """Subclasses resynchronise their view of the stream state."""

    def _p_close(self) -> Plan[None]:
        """Release the context in the daemon (always allowed, idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        self._pending = []
        if self._handle is not None and not self._channel.closed:
            try:
                yield self._close_op, {"ctx": self._handle}, self._channel.close_timeout
            except CryptoError:
                pass  # the daemon frees it at disconnect anyway


class OperationContext(ContextCore):
    """Base of the blocking contexts: cipher, hash, sign, verify, KEM, agreement, key
    management and certificates."""

    _channel: Channel

    def _run(self, plan: Plan[T]) -> T:
        return run(self._channel, plan)

    def close(self) -> None:
        """Release the context in the daemon (always allowed, idempotent)."""
        self._run(self._p_close())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncOperationContext(ContextCore):
    """Base of the asyncio contexts (``async with``; every call that may reach the daemon
    is a coroutine). Many tasks may use one stack; calls on one context are answered in
    the order they were made."""

    _channel: AsyncChannel

    async def _run(self, plan: Plan[T]) -> T:
        return await run_async(self._channel, plan)

    async def close(self) -> None:
        """Release the context in the daemon (always allowed, idempotent)."""
        await self._run(self._p_close())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class StreamCore(ContextCore):
    """init/update/finalize/reset with the order rules mirrored locally, so misuse is
    reported at once even though init/reset/small updates are sent with the next call."""

    _family = ""
    _buffer_limit = 64 * 1024  # updates smaller than this are coalesced client-side

    def __init__(self, parent: ContextParent, config: ContextConfig) -> None:
        super().__init__(parent, config)
        self._state = "idle"
        self._buffer: list[bytes] = []
        self._buffered = 0

    def _on_error(self, exc: CryptoError) -> None:
        # The daemon aborts the message on any failure; mirror that.
        self._buffer, self._buffered = [], 0
        if self._state == "active":
            self._state = "idle"

    def _need_active(self, what: str) -> None:
        self._check()
        if self._state != "active":
            hint = (
                "after finalize(), call init() to start a new message"
                if self._state == "done"
                else "call init() first"
            )
            raise CryptoError(ErrorCode.INVALID_STATE, f"{what}() needs an active message; {hint}")

    def _need_idle(self, what: str) -> None:
        self._check()
        if self._state == "active":
            raise CryptoError(
                ErrorCode.INVALID_STATE, f"{what}() while a message is in progress; reset() first"
            )

    def _start(self, args: dict[str, Any]) -> None:
        self._check()
        if self._state == "active":
            raise CryptoError(
                ErrorCode.INVALID_STATE,
                "init() called while a message is in progress; call reset() "
                "to discard it or finalize it first",
            )
        self._defer(f"{self._family}.init", {"ctx": self._handle, **args})
        self._state = "active"

    def _reset(self) -> None:
        self._check()
        self._buffer, self._buffered = [], 0
        self._pending = [c for c in self._pending if not c["op"].endswith(".update")]
        self._defer(f"{self._family}.reset", {"ctx": self._handle})
        self._state = "idle"

    def _flush_buffer(self) -> None:
        if self._buffer:
            data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
            self._buffer, self._buffered = [], 0
            self._defer(f"{self._family}.update", {"ctx": self._handle, "data": data})

    def _p_absorb(self, data: BytesLike) -> Plan[None]:
        """Hash/sign/verify update: small chunks are coalesced and sent later; large ones
        are split into pieces the daemon takes (see :meth:`_send_data`)."""
        view = byte_view(data)
        self._need_active("update")
        size = len(view)
        if size >= self._buffer_limit:
            self._flush_buffer()
            yield from self._send_data(
                f"{self._family}.update", view, lambda piece: {"ctx": self._handle, "data": piece}
            )
            return
        self._buffer.append(bytes(view))
        self._buffered += size
        if self._buffered >= self._buffer_limit:
            self._flush_buffer()
            yield from self._call("ping", {})  # send the queued work now; keeps memory bounded

    def _p_finish(self, args: dict[str, Any]) -> Plan[Any]:
        self._need_active("finalize")
        self._flush_buffer()
        result = yield from self._call(f"{self._family}.finalize", {"ctx": self._handle, **args})
        self._state = "done"
        return result

    def _p_whole(self, op: str, what: str, args: dict[str, Any], size: int) -> Plan[Any] | None:
        """A whole message in one request (``*.single_shot``), or None when it is too large
        for one (the caller then streams it)."""
        self._need_idle(what)
        if size > self._channel.max_chunk:
            return None
        return self._whole(op, args)

    def _whole(self, op: str, args: dict[str, Any]) -> Plan[Any]:
        result = yield from self._call(op, {"ctx": self._handle, **args})
        self._state = "done"
        return result


class StreamContext(StreamCore, OperationContext):
    """Blocking stream context."""

    def reset(self) -> None:
        """Discard any partial message; the context can be reused (no round trip now)."""
        self._reset()


class AsyncStreamContext(StreamCore, AsyncOperationContext):
    """asyncio stream context."""

    async def reset(self) -> None:
        """Discard any partial message; the context can be reused (sent with the next call)."""
        self._reset()
