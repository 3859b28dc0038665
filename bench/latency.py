"""Latency sampling and the table the provider benchmarks print (``bench/*_latency.py``).

Every figure is the median and the 99th percentile (nearest rank) of individually timed
calls, in microseconds. Each table row also carries its ratio to the direct-library row of
the same operation and to the IPC floor of the same run (a 64-byte round trip between two
processes over a unix socket), so figures from different machines compare by their ratios.
Measured, never asserted.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figures:
    """One measurement: median and p99 in microseconds over ``calls`` timed calls."""

    median_us: float
    p99_us: float
    calls: int


def measure(fn: Callable[[], object], calls: int, budget: float = 1.5) -> Figures:
    """Time ``fn`` call by call after a warm-up: ``calls`` samples, fewer when ``budget``
    seconds run out first (never fewer than 5), so slow operations cannot stretch the run."""
    warm_deadline = time.perf_counter() + budget / 10
    for _ in range(max(3, min(200, calls // 10))):
        fn()
        if time.perf_counter() > warm_deadline:
            break
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while len(samples) < calls and (len(samples) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    p99 = samples[max(0, math.ceil(len(samples) * 0.99) - 1)]
    return Figures(statistics.median(samples), p99, len(samples))


def measure_async(
    fn: Callable[[], Awaitable[object]], loop: asyncio.AbstractEventLoop, calls: int, budget: float = 1.5
) -> Figures:
    """:func:`measure` for a coroutine function, timed on ``loop`` (a running loop in another
    thread: the worker host's) -- the path the daemon takes, without the client's socket."""

    async def run() -> Figures:
        warm_deadline = time.perf_counter() + budget / 10
        for _ in range(max(3, min(200, calls // 10))):
            await fn()
            if time.perf_counter() > warm_deadline:
                break
        samples: list[float] = []
        deadline = time.perf_counter() + budget
        while len(samples) < calls and (len(samples) < 5 or time.perf_counter() < deadline):
            start = time.perf_counter_ns()
            await fn()
            samples.append((time.perf_counter_ns() - start) / 1000)
        samples.sort()
        p99 = samples[max(0, math.ceil(len(samples) * 0.99) - 1)]
        return Figures(statistics.median(samples), p99, len(samples))

    return asyncio.run_coroutine_threadsafe(run(), loop).result()


def _echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def ipc_floor(calls: int = 3000) -> Figures:
    """64-byte round trip to another process over a unix socket: the least any daemon call
    costs. Measure it before loading native libraries (the echo process is forked)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    echo = multiprocessing.get_context("fork").Process(target=_echo, args=(theirs,), daemon=True)
    echo.start()
    theirs.close()
    message = bytes(64)

    def round_trip() -> None:
        ours.sendall(message)
        received = 0
        while received < len(message):
            received += len(ours.recv(65536))

    try:
        return measure(round_trip, calls)
    finally:
        ours.close()
        echo.join(5)


class LatencyTable:
    """Rows grouped by operation; ratios against the ``direct`` path of each operation."""

    def __init__(self, title: str, direct: str, floor: Figures) -> None:
        self.title = title
        self.direct = direct
        self.floor = floor
        self.rows: list[tuple[str, str, Figures]] = []
        self.targets: list[tuple[str, str, str, float]] = []

    def add(self, operation: str, path: str, figures: Figures) -> None:
        """One measurement of ``operation`` through ``path``."""
        self.rows.append((operation, path, figures))

    def target(self, operation: str, path: str, how: str, limit: float = 2.5) -> None:
        """Report how far ``path`` is above the direct library for ``operation``, in IPC
        floors, against ``limit`` (``how``: the client calls it takes, for the reader)."""
        self.targets.append((operation, path, how, limit))

    def render(self) -> str:
        """The table as text, operations in the order first added."""
        operations = list(dict.fromkeys(operation for operation, _, _ in self.rows))
        op_width = max(len("operation"), *(len(op) for op in operations))
        path_width = max(len("path"), *(len(path) for _, path, _ in self.rows))
        lines = [
            self.title,
            f"IPC floor (64 B unix-socket round trip, two processes): median "
            f"{self.floor.median_us:.1f} µs, p99 {self.floor.p99_us:.1f} µs",
            f"{'operation':{op_width}}  {'path':{path_width}}  {'median µs':>10} "
            f"{'p99 µs':>10} {'calls':>6} {'x direct':>9} {'x floor':>8}",
        ]
        for operation in operations:
            rows = [(path, fig) for op, path, fig in self.rows if op == operation]
            direct = next((fig for path, fig in rows if path == self.direct), None)
            lines.append("")
            for index, (path, fig) in enumerate(rows):
                ratio = f"{fig.median_us / direct.median_us:9.2f}" if direct else f"{'-':>9}"
                lines.append(
                    f"{operation if index == 0 else '':{op_width}}  "
                    f"{path:{path_width}}  {fig.median_us:10.1f} {fig.p99_us:10.1f} "
                    f"{fig.calls:6d} {ratio} "
                    f"{fig.median_us / self.floor.median_us:8.1f}"
                )
        lines.append("")
        lines.append(
            f"(x direct, x floor: ratio of medians; {os.cpu_count()} CPUs; Python {sys.version.split()[0]})"
        )
        for operation, path, how, limit in self.targets:
            figures = {p: fig for op, p, fig in self.rows if op == operation}
            if path not in figures or self.direct not in figures:
                continue
            over = (figures[path].median_us - figures[self.direct].median_us) / self.floor.median_us
            verdict = "met" if over <= limit else "not met"
            lines.append(
                f"target {operation} via {path} ({how}): direct + {over:.1f} x floor "
                f"(target <= direct + {limit:g} x floor: {verdict})"
            )
        return "\n".join(lines)
