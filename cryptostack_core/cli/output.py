"""How a command's result and its errors reach the user.

With ``--json`` a command prints one JSON document on stdout (its result, or
``{"error": {"code", "message", "hint"}}``) and the exit status says the rest; otherwise text
and tables (rich) for people. An error always says what to do next: the hint names the
command or option that helps. Text never wraps when stdout is not a terminal, so
``grep`` and ``awk`` see one line per row.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cryptostack_core.cli.connection import DEFAULT_ENDPOINT, ENDPOINT_ENV
from cryptostack_core.wire.errors import CryptoError, ErrorCode

P = ParamSpec("P")
R = TypeVar("R")

# What to do next, per error code (the command's own hint, when it has one, comes first).
HINTS: dict[ErrorCode, str] = {
    ErrorCode.ACCESS_DENIED: "the daemon's configuration decides which uids may use or change "
    "each key slot (use_uids, write_uids) and who may connect (the "
    "socket's group): ask its operator, or run as a user it allows",
    ErrorCode.RESOURCE_NOT_FOUND: "'cryptostack key list' shows the key slots and "
    "'cryptostack status' everything else the daemon serves",
    ErrorCode.UNSUPPORTED_ALGORITHM: "'cryptostack algorithms' lists every algorithm the daemon knows",
    ErrorCode.NO_COMPATIBLE_PROVIDER: "'cryptostack explain --algorithm NAME --operation OP' "
    "says why each provider was skipped",
    ErrorCode.SLOT_EMPTY: "'cryptostack key generate SLOT' (or 'key import') puts a key in it",
    ErrorCode.KEY_OPERATION_NOT_PERMITTED: "'cryptostack key info SLOT' shows what the key allows",
    ErrorCode.OPERATION_TIMED_OUT: "give it longer with --timeout SECONDS",
    ErrorCode.PROVIDER_UNAVAILABLE: "'cryptostack health' shows which provider is down and why",
    ErrorCode.RESOURCE_EXHAUSTED: "the daemon's limits are in docs/security.md",
}


def connection_hint(endpoint: str, source: str) -> str:
    """What to do when no daemon answers at ``endpoint`` (given by ``source``)."""
    return (
        f"is the daemon running? Start one with 'cryptostack daemon --config FILE' (or "
        f"'systemctl start cryptostack.socket'), or point at a running one with "
        f"--endpoint unix:///PATH/TO/daemon.sock or {ENDPOINT_ENV}=unix:///PATH/TO/"
        f"daemon.sock (this endpoint came from {source})"
    )


def endpoint_source() -> str:
    """Where this command's ``--endpoint`` came from, in the user's words."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or "endpoint" not in ctx.params:
        return "the default"
    found = ctx.get_parameter_source("endpoint")
    if found is click.core.ParameterSource.COMMANDLINE:
        return "--endpoint"
    if found is click.core.ParameterSource.ENVIRONMENT:
        return f"{ENDPOINT_ENV}"
    return f"the default, as neither --endpoint nor {ENDPOINT_ENV} was given"


class CommandFailed(Exception):
    """A failure the command explains itself: its message, what to do, the exit status."""

    def __init__(self, message: str, hint: str = "", status: int = 1, code: str = "FAILED") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status
        self.code = code


class Output:
    """One command's output: JSON or text, stdout for results, stderr for notes."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json = json_mode
        terminal = sys.stdout.isatty()
        # Not a terminal: never wrap (one line per row for scripts), no colour, no markup.
        self.console = Console(highlight=False, soft_wrap=not terminal, width=None if terminal else 10_000)

    def result(self, data: Any, text: Callable[[], None] | None = None) -> None:
        """Print ``data`` as JSON, or call ``text`` to print it for people."""
        if self.json:
            click.echo(json.dumps(data, indent=2, sort_keys=True, default=_jsonable))
        elif text is not None:
            text()

    def line(self, text: str = "", style: str | None = None) -> None:
        """One line of text on stdout (ignored with ``--json``)."""
        if not self.json:
            self.console.print(text, style=style, markup=False)

    def note(self, text: str) -> None:
        """A remark on stderr (both modes: never mixed into the result); never wrapped."""
        click.echo(text, err=True)

    def table(self, table: Table) -> None:
        """A table on stdout; trailing blanks are trimmed when it is not a terminal."""
        if self.json:
            return
        if self.console.is_terminal:
            self.console.print(table)
            return
        with self.console.capture() as captured:
            self.console.print(table)
        click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def new_table(*columns: str) -> Table:
    """A borderless table with these column headers (rows read well in a pipe too)."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def add_row(table: Table, *cells: str) -> None:
    """A row of plain text (no rich markup: a provider's reason may hold brackets)."""
    table.add_row(*(Text(cell) for cell in cells))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if hasattr(value, "value"):  # enums
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fail(message: str, hint: str = "", status: int = 1) -> NoReturn:
    """Stop the command with an explained failure."""
    raise CommandFailed(message, hint, status)


def report_failure(exc: CommandFailed | CryptoError, json_mode: bool) -> int:
    """Print the failure (and what to do next); returns the exit status."""
    if isinstance(exc, CryptoError):
        code = exc.code.value
        message = exc.message or exc.code.value
        hint = HINTS.get(exc.code, "")
        if exc.code is ErrorCode.CONNECTION_FAILED:
            ctx = click.get_current_context(silent=True)
            endpoint = ctx.params.get("endpoint", DEFAULT_ENDPOINT) if ctx else DEFAULT_ENDPOINT
            message = f"cannot reach the daemon at {endpoint}: {message}"
            hint = connection_hint(endpoint, endpoint_source())
        status = 1
    else:
        code, message, hint, status = exc.code, exc.message, exc.hint, exc.status
    if json_mode:
        click.echo(
            json.dumps({"error": {"code": code, "message": message, "hint": hint}}, indent=2, sort_keys=True)
        )
    click.echo(f"cryptostack: {code}: {message}" if code != "FAILED" else f"cryptostack: {message}", err=True)
    if hint and hint.split("'")[1:2] != [] and hint.split("'")[1] in message:
        hint = ""  # the message already names the command that helps
    if hint:
        click.echo(f"  what to do: {hint}", err=True)
    return status


def explained(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a command's CryptoError or CommandFailed into an explained message and an exit
    status (1, or the failure's own) instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (CryptoError, CommandFailed) as exc:
            raise click.exceptions.Exit(report_failure(exc, bool(kwargs.get("json")))) from None

    return run


def json_option(command: Callable[P, R]) -> Callable[P, R]:
    """``--json``: print one JSON document instead of text."""
    return click.option(
        "--json", "json", is_flag=True, help="Print the result as JSON (errors too, on stdout)."
    )(command)
