"""Test and benchmark support for the PKCS#11 provider: private SoftHSM2 tokens.

:func:`create_token` initialises a token in a directory of the caller's, reached through a
private ``SOFTHSM2_CONF``; nothing touches a system-wide token. The caller puts
:meth:`SoftHSMToken.environment` into the environment of whatever loads the module (the
provider's worker processes inherit it, and SoftHSM2 reads ``SOFTHSM2_CONF`` when loaded).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MODULE_CANDIDATES", "SoftHSMToken", "create_token", "softhsm_module"]

MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so",
                     "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/local/lib/softhsm/libsofthsm2.so")


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
        return {"module": self.module, "token_label": self.label, "pin_env": self.pin_env,
                **extra}

    def environment(self) -> dict[str, str]:
        """Variables the token's users need: the private configuration and the PIN."""
        return {"SOFTHSM2_CONF": str(self.conf), self.pin_env: self.pin}

    def init_token(self, label: str, pin: str) -> None:
        """Initialise one more token in the same directory (next free slot)."""
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                        "--pin", pin, "--so-pin", self.so_pin],
                       env=dict(os.environ, SOFTHSM2_CONF=str(self.conf)), check=True,
                       capture_output=True)


def create_token(base: Path) -> SoftHSMToken:
    """A fresh token in ``base/softhsm-tokens`` with its ``base/softhsm2.conf``.

    Labels, PINs and the PIN variable name carry a random tag, so tokens made by concurrent
    runs never collide. The environment is left alone (see :meth:`SoftHSMToken.environment`).
    """
    tag = uuid.uuid4().hex[:8]
    tokendir = base / "softhsm-tokens"
    tokendir.mkdir(parents=True)
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    token = SoftHSMToken(module=softhsm_module(), label=f"cs-test-{tag}", pin=f"pin-{tag}",
                         so_pin=f"so-{tag}", pin_env=f"CS_TEST_PIN_{tag.upper()}", conf=conf,
                         tokendir=tokendir)
    token.init_token(token.label, token.pin)
    return token
