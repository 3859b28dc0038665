"""Test and benchmark support for the PKCS#11 provider: private SoftHSM2 tokens.

:func:`create_token` initialises a token in a directory of the caller's, reached through a
private ``SOFTHSM2_CONF``; nothing touches a system-wide token. The caller puts
:meth:`SoftHSMToken.environment` into the environment of whatever loads the module (the
provider's worker processes inherit it, and SoftHSM2 reads ``SOFTHSM2_CONF`` when loaded).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MODULE_CANDIDATES",
    "P11KitServer",
    "SoftHSMToken",
    "create_token",
    "p11kit_client_module",
    "softhsm_module",
]

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def softhsm_module() -> str:
    """Path of the SoftHSM2 module; raises RuntimeError (never a skip) without it."""
    for path in MODULE_CANDIDATES:
        if os.path.exists(path):
            return path
    raise RuntimeError("SoftHSM2 is not installed (apt-get install softhsm2)")


@dataclass(frozen=True)
class SoftHSMToken:
    """One initialised private token."""

    module: str
    label: str
    pin: str
    so_pin: str
    pin_env: str
    conf: Path
    tokendir: Path

    def options(self, **extra: Any) -> dict[str, Any]:
        """Provider options for this token (PIN from the environment variable)."""
        return {"module": self.module, "token_label": self.label, "pin_env": self.pin_env, **extra}

    def environment(self) -> dict[str, str]:
        """Variables the token's users need: the private configuration and the PIN."""
        return {"SOFTHSM2_CONF": str(self.conf), self.pin_env: self.pin}

    def init_token(self, label: str, pin: str) -> None:
        """Initialise one more token in the same directory (next free slot)."""
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin,
                "--so-pin",
                self.so_pin,
            ],
            env=dict(os.environ, SOFTHSM2_CONF=str(self.conf)),
            check=True,
            capture_output=True,
        )


def create_token(base: Path) -> SoftHSMToken:
    """A fresh token in ``base/softhsm-tokens`` with its ``base/softhsm2.conf``.

    Labels, PINs and the PIN variable name carry a random tag, so tokens made by concurrent
    runs never collide. The environment is left alone (see :meth:`SoftHSMToken.environment`).
    """
    tag = uuid.uuid4().hex[:8]
    tokendir = base / "softhsm-tokens"
    tokendir.mkdir(parents=True)
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    token = SoftHSMToken(
        module=softhsm_module(),
        label=f"cs-test-{tag}",
        pin=f"pin-{tag}",
        so_pin=f"so-{tag}",
        pin_env=f"CS_TEST_PIN_{tag.upper()}",
        conf=conf,
        tokendir=tokendir,
    )
    token.init_token(token.label, token.pin)
    return token


CLIENT_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/pkcs11/p11-kit-client.so",
)


def p11kit_client_module() -> str:
    """Path of p11-kit's client module; RuntimeError (never a skip) without it."""
    for path in (*CLIENT_CANDIDATES, *glob.glob("/usr/lib/*/pkcs11/p11-kit-client.so")):
        if os.path.exists(path):
            return path
    raise RuntimeError(
        "p11-kit's client module is not installed (apt-get install p11-kit-modules; `make setup` does it)"
    )


class P11KitServer:
    """``p11-kit server`` exporting one SoftHSM2 token on a unix socket: the set-up of a
    shared (network) token in docs/scaling.md, on one machine. Clients load
    :func:`p11kit_client_module` with :meth:`environment` (``P11_KIT_SERVER_ADDRESS``) and
    see that token only."""

    def __init__(self, token: SoftHSMToken, directory: Path) -> None:
        if shutil.which("p11-kit") is None:
            raise RuntimeError("p11-kit is not installed (apt-get install p11-kit)")
        self.token = token
        self.socket = directory / "p11-kit.sock"
        self.module = p11kit_client_module()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "p11-kit-server.log"

    def start(self, timeout: float = 20.0) -> P11KitServer:
        """Run the server in the foreground of a child process; wait for its socket."""
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                "p11-kit",
                "server",
                "--foreground",
                "--provider",
                self.token.module,
                "--name",
                str(self.socket),
                f"pkcs11:token={self.token.label}",
            ],
            env=dict(os.environ, SOFTHSM2_CONF=str(self.token.conf)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"p11-kit server did not start: {self.log.read_text(errors='replace')}")
            time.sleep(0.02)
        return self

    def environment(self) -> dict[str, str]:
        """What a client of the remoted token needs: the server's address and the PIN."""
        return {"P11_KIT_SERVER_ADDRESS": f"unix:path={self.socket}", self.token.pin_env: self.token.pin}

    def options(self, **extra: Any) -> dict[str, Any]:
        """pkcs11 provider options for the remoted token."""
        return {**self.token.options(**extra), "module": self.module}

    def stop(self) -> None:
        """Terminate the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
