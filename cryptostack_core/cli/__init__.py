"""The ``cryptostack`` command line (click for the commands, rich for tables and progress).

One module per command group: ``files`` (hash, encrypt, decrypt, sign, verify), ``keys``
(key list|info|generate|import|export-public|rotate|clear), ``status`` (status, health,
algorithms, explain), ``admin`` (daemon, check, keystore); ``app`` is the top-level group,
``output`` how results and errors are shown, ``connection`` the daemon options, ``streams``
files, stdin/stdout and progress.
"""

from cryptostack_core.cli.app import cli, main

__all__ = ["cli", "main"]
