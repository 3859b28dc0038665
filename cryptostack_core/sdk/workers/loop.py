"""The event loop worker hosts run on.

A host does all its I/O and timing on one asyncio event loop. Inside the daemon that is the
daemon's own loop (it calls :func:`use_event_loop` before providers start), so a request
reaches a worker without any thread in between. Anywhere else (``inproc://``, provider
tests, scripts) the hosts of a process share one loop on a background thread, started on
first use.
"""

from __future__ import annotations

import asyncio
import threading

_lock = threading.Lock()
_chosen: asyncio.AbstractEventLoop | None = None
_background: asyncio.AbstractEventLoop | None = None


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def use_event_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Make hosts created from now on run on ``loop`` (the daemon's); None undoes it."""
    global _chosen
    with _lock:
        _chosen = loop


def worker_event_loop() -> asyncio.AbstractEventLoop:
    """The loop a new host runs on: the one given to :func:`use_event_loop`, else the
    process's background loop (started now if needed)."""
    global _background
    with _lock:
        if _chosen is not None and not _chosen.is_closed():
            return _chosen
        if _background is None or _background.is_closed():
            loop = _new_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="cryptostack-workers", daemon=True).start()
            ready.wait()
            _background = loop
        return _background


def on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is the one running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
