"""The options every worker-hosted provider accepts (its ``[[providers]] options``).

A provider's own option dataclass inherits :class:`WorkerOptions`, so the worker host's
timing is configured alike everywhere:

=====================  ===============================================================  ========
option                 meaning                                                          default
=====================  ===============================================================  ========
``call_timeout``       seconds one request may run in the worker before the library is  30
                       declared stuck and the worker killed and restarted; also the
                       longest wait of a call without a deadline
``start_timeout``      seconds a worker may take to start (load the library, log in)    20
``degraded_seconds``   how long the provider reports DEGRADED after a restart           10
``restart_backoff``    longest wait between restart attempts that keep failing (s)      5
``spin_microseconds``  how long a lone request polls for the worker's answer before     50
                       the event loop sleeps on it (0: never)
``test_hang``          tests only: ``{op, seconds, times}`` (or a list of them): the    unset
                       next ``times`` requests ``op`` block in the worker for
                       ``seconds`` (omitted: until the worker is killed)
=====================  ===============================================================  ========
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptostack_core.sdk.options import OptionError, option
from cryptostack_core.sdk.workers.host import HangHook, HostSettings
from cryptostack_core.sdk.workers.wire import HANG_FOREVER


def parse_hang_hooks(value: Any) -> tuple[HangHook, ...]:
    """``test_hang``: one table ``{op, seconds, times}`` or a list of them."""
    tables = value if isinstance(value, (list, tuple)) else [value]
    hooks = []
    for table in tables:
        if (
            not isinstance(table, Mapping)
            or not isinstance(table.get("op"), str)
            or set(table) - {"op", "seconds", "times"}
        ):
            raise OptionError(
                'test_hang must be a table {op = "...", seconds = N, times = N} or a list of them'
            )
        seconds, times = table.get("seconds", HANG_FOREVER), table.get("times", 1)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or isinstance(times, bool)
            or not isinstance(times, int)
            or times < 1
        ):
            raise OptionError("test_hang seconds must be a number and times a positive integer")
        hooks.append(HangHook(table["op"], float(seconds), times))
    return tuple(hooks)


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """The worker host's options (see the module docstring)."""

    call_timeout: float = option(
        30.0, positive=True, doc="seconds one request may run before the worker is restarted"
    )
    start_timeout: float = option(20.0, positive=True, doc="seconds a worker may take to start")
    degraded_seconds: float = option(
        10.0, minimum=0, doc="how long the provider reports DEGRADED after a restart"
    )
    restart_backoff: float = option(
        5.0, positive=True, doc="longest wait between failing restart attempts (s)"
    )
    spin_microseconds: int = option(
        50, minimum=0, maximum=10_000, doc="how long a lone request polls for the answer"
    )
    test_hang: tuple[HangHook, ...] = option(
        (), parse=parse_hang_hooks, doc="tests only: make requests block in the worker"
    )

    def host_settings(self) -> HostSettings:
        """These options as the host's settings."""
        return HostSettings(
            call_timeout=self.call_timeout,
            start_timeout=self.start_timeout,
            degraded_seconds=self.degraded_seconds,
            backoff_max=self.restart_backoff,
            hangs=self.test_hang,
            spin_microseconds=self.spin_microseconds,
        )
