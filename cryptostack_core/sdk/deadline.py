"""The deadline of the call in progress: one context variable, set by the server.

The daemon (or the in-process service) sets it around every request with
:func:`deadline_scope_until`; providers read it with :func:`call_deadline` or
:func:`remaining_time`, e.g. to stop waiting for a worker process when it passes.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("cryptostack_deadline", default=None)


def call_deadline() -> float | None:
    """``time.monotonic()`` value by which the current call must finish, or None (no limit).

    The daemon sets it around every provider call. Providers that talk to a backend in a
    worker process use it to stop waiting (and restart the worker) when it passes.
    """
    return _DEADLINE.get()


def remaining_time() -> float | None:
    """Seconds left before :func:`call_deadline` (may be <= 0), or None for no limit."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def enter_deadline(deadline: float | None) -> contextvars.Token[float | None]:
    """Set the call's absolute deadline; give the token to :func:`leave_deadline` after the
    call (what :func:`deadline_scope_until` does, without a generator per request)."""
    return _DEADLINE.set(deadline)


def leave_deadline(token: contextvars.Token[float | None]) -> None:
    """Restore the deadline :func:`enter_deadline` replaced."""
    _DEADLINE.reset(token)


@contextlib.contextmanager
def deadline_scope_until(deadline: float | None) -> Iterator[None]:
    """Run the enclosed calls under an absolute ``time.monotonic()`` deadline (None: none)."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@contextlib.contextmanager
def deadline_scope(seconds: float | None) -> Iterator[None]:
    """Run provider calls under a deadline ``seconds`` from now, as the daemon does around
    each call. For provider tests and embedders that call a provider directly."""
    with deadline_scope_until(None if seconds is None else time.monotonic() + seconds):
        yield
