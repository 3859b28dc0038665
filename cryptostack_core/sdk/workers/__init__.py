"""The worker host: run a provider's C library in a child process, within deadlines.

For providers that drive a library which may block, crash or leak (PKCS#11 modules, TPM
stacks, any third-party HSM, TEE or smart-card library). The provider (in the daemon)
owns a :class:`WorkerHost`; the library is loaded only in the worker process, by a
:class:`WorkerBackend` subclass the provider ships::

    class TokenBackend(WorkerBackend):          # runs in the worker
        def __init__(self, config): ...         # load the library, log in
        def op_sign(self, handle, data): ...    # one method per request

    host = WorkerHost(WorkerSpec(name="token worker", backend="mypkg.backend:TokenBackend",
                                 config=lambda: {...}, threads=4),
                      HostSettings(call_timeout=30.0), log)
    host.start()
    signature = host.call("sign", handle, data)          # from a thread
    signature, generation = await host.call_async("sign", handle, data)  # on the loop

What the host guarantees -- a fresh interpreter per worker (never a fork of the daemon), a
handshake, a generation guard against stale handles, one deadline rule, bounded restart
back-off, cleanup of late answers, workers that exit with the daemon, a hang hook for tests
-- is described in :mod:`.host`; the protocol in :mod:`.wire`, the worker side in
:mod:`.child`; :mod:`.fake` tests all of it with events instead of real libraries and clocks.
"""

from cryptostack_core.sdk.workers.child import WorkerBackend, describe_failure
from cryptostack_core.sdk.workers.host import (
    HangHook,
    HostSettings,
    StaleGeneration,
    WorkerHost,
    WorkerSpec,
    default_translate,
)
from cryptostack_core.sdk.workers.launcher import Launcher, SubprocessLauncher, WorkerProcess
from cryptostack_core.sdk.workers.loop import use_event_loop, worker_event_loop
from cryptostack_core.sdk.workers.options import WorkerOptions, parse_hang_hooks
from cryptostack_core.sdk.workers.wire import HANG_FOREVER, ErrorInfo

__all__ = [
    "HANG_FOREVER",
    "ErrorInfo",
    "HangHook",
    "HostSettings",
    "Launcher",
    "StaleGeneration",
    "SubprocessLauncher",
    "WorkerBackend",
    "WorkerHost",
    "WorkerOptions",
    "WorkerProcess",
    "WorkerSpec",
    "default_translate",
    "describe_failure",
    "parse_hang_hooks",
    "use_event_loop",
    "worker_event_loop",
]
