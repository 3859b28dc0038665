"""The message protocol between the provider (in the daemon) and its token worker process.

Transport: one ``socketpair`` per channel, framed and pickled by
:class:`multiprocessing.connection.Connection`. Both ends are this package, started by the
provider itself, so pickle carries only plain data (tuples, bytes, ints, str, dicts and
:class:`~cryptostack_pkcs11.cryptoki.MechanismSpec`).

Start: the provider sends an :class:`InitRequest` dict on channel 0; the worker answers
``("ready", info)`` or ``("error", (kind, name, message))``.

Then, on any channel, strictly one request at a time per channel::

    request = (seq, op, args, cleanup, hang_seconds)
    reply   = (seq, True, result) | (seq, False, (kind, name, message))

``cleanup`` is a tuple of deferred work the provider piggybacks on the next request instead
of paying a round trip: ``("destroy", (handles...))`` for released session keys and
``("abort", op_id)`` for multi-part operations dropped without ``finish``.
``hang_seconds`` is the test hook that makes the worker block inside the call.

Error ``kind``: ``"ckr"`` (``name`` is a ``CKR_*`` return value from the module) or
``"crypto"`` (``name`` is an :class:`~cryptostack_core.errors.ErrorCode` value).
"""

from __future__ import annotations

from typing import Any, TypedDict

Request = tuple[int, str, tuple[Any, ...], tuple[tuple[str, Any], ...], float]
Reply = tuple[int, bool, Any]
ErrorInfo = tuple[str, str, str]

OPS_CREATING_HANDLES = frozenset({
    "generate_secret", "generate_pair", "import_secret", "import_pair", "create_public",
    "persist",
})
"""Requests whose result names new objects: if the caller gave up waiting, the provider
destroys what they created (for ``persist``, token copies that no key store recorded)."""


class InitRequest(TypedDict):
    """First message on channel 0."""

    module: str
    token_label: str
    pin: str
    sessions: int
    max_sessions: int
    generation: int
    parent_pid: int


def handles_in_result(op: str, result: Any) -> tuple[int, ...]:
    """Object handles a late result of ``op`` created (see :data:`OPS_CREATING_HANDLES`)."""
    if op in ("generate_secret", "import_secret", "create_public"):
        return (int(result),)
    if op in ("generate_pair", "import_pair"):
        return (int(result[0]), int(result[1]))
    if op == "persist":
        return tuple(int(h) for h in result)
    return ()


def late_cleanup(op: str, result: Any) -> tuple[tuple[str, Any], ...]:
    """Cleanup for the result of a request whose caller gave up waiting."""
    if op == "begin":
        return (("abort", int(result[0])),)
    handles = handles_in_result(op, result) if op in OPS_CREATING_HANDLES else ()
    return (("destroy", handles),) if handles else ()
