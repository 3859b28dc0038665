"""The ``cryptostack`` command: its top-level group and where each command lives.

A command's module is imported only when that command runs (or when ``--help`` lists them
all): ``cryptostack --version`` imports no command, ``cryptostack hash`` only the client,
and only ``daemon``, ``check`` and ``keystore`` the server side (measured in the README).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from cryptostack_core.cli.connection import DEFAULT_ENDPOINT, ENDPOINT_ENV
from cryptostack_core.wire.version import __version__

# name -> (module under cryptostack_core.cli, attribute), in the order --help lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "hash": ("files", "hash_command"),
    "encrypt": ("files", "encrypt"),
    "decrypt": ("files", "decrypt"),
    "sign": ("files", "sign"),
    "verify": ("files", "verify"),
    "key": ("keys", "key"),
    "status": ("status", "status"),
    "health": ("status", "health"),
    "algorithms": ("status", "algorithms"),
    "explain": ("status", "explain"),
    "daemon": ("admin", "daemon"),
    "check": ("admin", "check"),
    "keystore": ("admin", "keystore"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see :data:`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        command: click.Command = getattr(
            importlib.import_module(f"cryptostack_core.cli.{where[0]}"), where[1]
        )
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=f"The commands that talk to a daemon find it with --endpoint URL or the "
    f"{ENDPOINT_ENV} environment variable (default {DEFAULT_ENDPOINT}). "
    "Exit status: 0 success; 1 failure (the message says what to do next); "
    "2 bad usage, or a configuration the daemon cannot start with. "
    "'cryptostack COMMAND --help' describes each command.",
)
@click.version_option(__version__, "--version", "-V", prog_name="cryptostack", message="%(prog)s %(version)s")
def cli() -> None:
    """cryptostack: a crypto service whose daemon owns the keys.

    Hash, encrypt, decrypt, sign and verify files with keys that never leave the daemon;
    manage key slots; ask a running daemon about its providers and algorithms; run and
    check the daemon itself.
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cryptostack`` and ``python -m cryptostack_core``; returns the exit
    status."""
    try:
        cli.main(args=argv, prog_name="cryptostack")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
