"""How the provider runs its TPM worker on the SDK's worker host: the spec and its hooks.

Processes, deadlines, restarts and late answers are the worker host's
(:mod:`cryptostack_core.sdk.workers`). What is TPM-specific:

* the worker is :class:`~.worker.TpmWorker`, one request at a time (the TPM is serial),
  started with a :class:`~.worker.WorkerConfig` (auth values read for each start);
* it reports :class:`~.worker.WorkerInfo` and :class:`~.capabilities.TpmFacts` at start,
  the only classes besides plain data that cross the socket;
* cleanup items are key and sequence ids to flush (:meth:`~.worker.TpmWorker.cleanup`); a
  sequence opened by a call abandoned at its deadline is flushed by :func:`late_cleanup`;
* a request continuing a sequence of a worker that is gone fails with
  ``CONTEXT_IN_ERROR_STATE`` (:func:`lost_sequence`): that state lived in the dead worker.
"""

from __future__ import annotations

from typing import Any

from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.sdk.workers import WorkerSpec

from .capabilities import TpmFacts
from .options import TpmOptions
from .worker import WorkerInfo


def late_cleanup(op: str, result: Any) -> tuple[Any, ...]:
    """A sequence opened by an abandoned ``seq_start`` is flushed."""
    return (int(result),) if op == "seq_start" else ()


def lost_sequence() -> CryptoError:
    """The error of a call that continued state of a worker that was restarted."""
    return CryptoError(
        ErrorCode.CONTEXT_IN_ERROR_STATE,
        "the TPM worker was restarted; this operation's state was lost (reset the context)",
    )


def worker_spec(options: TpmOptions) -> WorkerSpec:
    """The TPM worker for these options."""
    return WorkerSpec(
        name="TPM worker",
        backend="cryptostack_tpm2.worker:TpmWorker",
        config=options.worker_config,
        threads=1,
        wire_types=(WorkerInfo, TpmFacts),
        late_cleanup=late_cleanup,
    )
