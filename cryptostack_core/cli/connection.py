"""The options every command that talks to a daemon takes, and the connection they make.

``--endpoint`` (or ``CRYPTOSTACK_ENDPOINT``) names the daemon's socket; ``--timeout`` bounds
each request. Unlike the library (whose default is ``inproc://``, a service inside the
calling process), the command line defaults to the system daemon's socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from cryptostack_core.client.stack import (
    ENDPOINT_ENV,
    CryptoStack,
    CryptoStackConfig,
    create_crypto_stack,
)

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_ENDPOINT = "unix:///run/cryptostack/daemon.sock"
DEFAULT_TIMEOUT = 30.0
__all__ = ["DEFAULT_ENDPOINT", "DEFAULT_TIMEOUT", "ENDPOINT_ENV", "connect", "endpoint_options"]


def endpoint_options(command: Callable[P, R]) -> Callable[P, R]:
    """``--endpoint URL`` (env ``CRYPTOSTACK_ENDPOINT``) and ``--timeout SECONDS``."""
    command = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="SECONDS",
        help="How long each request to the daemon may take.",
    )(command)
    return click.option(
        "--endpoint",
        envvar=ENDPOINT_ENV,
        default=DEFAULT_ENDPOINT,
        show_default=True,
        show_envvar=True,
        metavar="URL",
        help="The daemon to talk to: unix:///PATH/TO/daemon.sock.",
    )(command)


def connect(endpoint: str, timeout: float) -> CryptoStack:
    """A stack on the daemon at ``endpoint`` (CONNECTION_FAILED if none answers)."""
    return create_crypto_stack(
        CryptoStackConfig().set_connection_endpoint(endpoint).set_default_operation_timeout(timeout)
    )
