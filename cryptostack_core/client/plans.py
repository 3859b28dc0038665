"""Client operations as plans: what to send, and what to do with each answer -- no I/O.

Every client method is written once, as a generator (a *plan*) that yields the requests it
needs, one :data:`Step` at a time, and receives each result (or has the request's
:class:`~cryptostack_core.wire.errors.CryptoError` thrown in). The blocking API runs a plan
with :func:`run`; the asyncio API awaits :func:`run_async`. Argument checks, the local
mirror of a context's state, batching and splitting of large data therefore exist once, for
both (httpx's sans-I/O idea), and the two APIs cannot drift apart::

    def _p_digest(self, data) -> Plan[bytes]:          # shared
        digest = yield ("hash.single_shot", {...}, self._timeout)
        return digest

    def single_shot(self, data):                        # HashContext
        return self._run(self._p_digest(data))

    async def single_shot(self, data):                  # AsyncHashContext
        return await self._run(self._p_digest(data))
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Mapping
from typing import Any, Protocol, TypeVar

from cryptostack_core.wire.errors import CryptoError

T = TypeVar("T")
Step = tuple[str, Mapping[str, Any], "float | None"]
"""One request: operation, arguments, timeout in seconds (None: no deadline)."""
Plan = Generator[Step, Any, T]
"""A client operation: yields requests, receives their results, returns its own."""


class Caller(Protocol):
    """What :func:`run` needs: a blocking ``call`` (a :class:`~.channel.Channel`)."""

    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any: ...


class AsyncCaller(Protocol):
    """What :func:`run_async` needs: an awaitable ``call`` (an :class:`~.channel.AsyncChannel`)."""

    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Awaitable[Any]: ...


def run(channel: Caller, plan: Plan[T]) -> T:
    """Carry out ``plan`` over a blocking channel."""
    send, throw, call = plan.send, plan.throw, channel.call
    value: Any = None
    while True:
        try:
            op, args, timeout = send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        while True:
            try:
                value = call(op, args, timeout)
                break
            except CryptoError as exc:
                try:
                    op, args, timeout = throw(exc)
                except StopIteration as stop:
                    result = stop.value
                    return result


async def run_async(channel: AsyncCaller, plan: Plan[T]) -> T:
    """Carry out ``plan`` over an asyncio channel."""
    send, throw, call = plan.send, plan.throw, channel.call
    value: Any = None
    while True:
        try:
            op, args, timeout = send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        while True:
            try:
                value = await call(op, args, timeout)
                break
            except CryptoError as exc:
                try:
                    op, args, timeout = throw(exc)
                except StopIteration as stop:
                    result = stop.value
                    return result
