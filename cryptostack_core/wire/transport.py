"""The request/response interface every transport implements (unix socket, in-process)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from cryptostack_core.wire.errors import CryptoError, ErrorCode


class Transport(abc.ABC):
    """Sends one request and returns its result (or raises :class:`CryptoError`)."""

    @abc.abstractmethod
    def call(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """Run ``op``; ``timeout`` seconds (None: no deadline)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect; the daemon frees everything this client held."""


def timed_out(timeout: float | None) -> CryptoError:
    """The error a transport raises when a call's deadline passes without an answer."""
    return CryptoError(
        ErrorCode.OPERATION_TIMED_OUT, f"no answer within {timeout * 1000:.0f} ms" if timeout else "timed out"
    )
