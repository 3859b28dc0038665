"""How the provider runs its token worker on the SDK's worker host: the spec and its hooks.

Everything about processes, deadlines, restarts and late answers is the worker host's
(:mod:`cryptostack_core.sdk.workers`); this module only says what is PKCS#11 about it:

* the worker is :class:`~.worker.TokenWorker`, started with a :class:`~.worker.TokenConfig`
  (the PIN is read for each start and travels only over the worker's socket) and running
  ``sessions`` requests at once;
* failures are translated with :func:`~.errors.to_crypto_error`: a call passes ``(what,
  overrides)`` as its context, naming the call and the meaning a ``CKR_*`` value has there;
* the result of a call abandoned at its deadline is undone by :func:`late_cleanup`: objects
  it created are destroyed, a multi-part operation it began is aborted. Cleanup items travel
  with the next request (:meth:`~.worker.TokenWorker.cleanup`): ``("destroy", (handles...))``
  and ``("abort", op_id)``.
"""

from __future__ import annotations

from typing import Any

from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.sdk.workers import ErrorInfo, WorkerSpec

from .errors import to_crypto_error
from .options import Options
from .worker import TokenConfig

OPS_CREATING_HANDLES = frozenset(
    {
        "generate_secret",
        "generate_pair",
        "import_secret",
        "import_pair",
        "create_public",
        "persist",
    }
)
"""Requests whose result names new objects: if the caller gave up waiting, the provider
destroys what they created (for ``persist``, token copies that no key store recorded)."""

CallContext = tuple[str, "dict[str, ErrorCode] | None"]
"""What a call passes as the host's ``context``: (what it is doing, CKR overrides)."""


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


def translate(info: ErrorInfo, op: str, context: Any) -> CryptoError:
    """A worker failure as the caller's CryptoError (``context``: :data:`CallContext`)."""
    what, overrides = context if context is not None else (op, None)
    return to_crypto_error(info, what=what or op, overrides=overrides)


def worker_spec(options: Options) -> WorkerSpec:
    """The token worker for these options."""

    def config() -> TokenConfig:
        return {
            "module": str(options.module),
            "token_label": options.token_label,
            "pin": options.read_pin(),
            "sessions": options.sessions,
            "max_sessions": options.max_sessions,
        }

    return WorkerSpec(
        name="token worker",
        backend="cryptostack_pkcs11.worker:TokenWorker",
        config=config,
        threads=options.sessions,
        translate_error=translate,
        late_cleanup=late_cleanup,
    )
