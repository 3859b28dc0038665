"""Fixtures: private SoftHSM2 tokens and providers on them.

Every token lives in its own directory under the test's temporary directory, reached through
a private ``SOFTHSM2_CONF``; nothing touches a system-wide token. The token is initialised
with ``softhsm2-util --init-token --free`` and its directory removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptostack_pkcs11.provider import PKCS11Provider

from cryptostack_core.provider import ProviderEnvironment

MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so",
                     "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/local/lib/softhsm/libsofthsm2.so")


def softhsm_module() -> str:
    """Path of the SoftHSM2 module; the tests fail (not skip) without it."""
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

    def init_token(self, label: str, pin: str) -> None:
        """Initialise one more token in the same directory (next free slot)."""
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                        "--pin", pin, "--so-pin", self.so_pin],
                       env=dict(os.environ, SOFTHSM2_CONF=str(self.conf)), check=True,
                       capture_output=True)


_LIST_OBJECTS = r"""
import json, sys, pkcs11
from pkcs11 import Attribute as A
lib = pkcs11.lib(sys.argv[1])
session = lib.get_token(token_label=sys.argv[2]).open(user_pin=sys.argv[3])
names = ["CLASS", "KEY_TYPE", "TOKEN", "PRIVATE", "SENSITIVE", "EXTRACTABLE", "LOCAL",
         "NEVER_EXTRACTABLE", "ENCRYPT", "DECRYPT", "SIGN", "VERIFY", "WRAP", "UNWRAP", "DERIVE"]
out = []
for obj in session.get_objects({A.TOKEN: True}):
    item = {"label": obj[A.LABEL], "id": bytes(obj[A.ID]).hex()}
    for name in names:
        try:
            item[name.lower()] = int(obj[getattr(A, name)])
        except pkcs11.PKCS11Error:
            pass
    out.append(item)
print(json.dumps(out))
"""


def token_objects(token: SoftHSMToken) -> list[dict[str, Any]]:
    """Token objects as another application sees them (separate process, own login)."""
    done = subprocess.run([sys.executable, "-c", _LIST_OBJECTS, token.module, token.label,
                           token.pin], env=dict(os.environ, SOFTHSM2_CONF=str(token.conf)),
                          check=True, capture_output=True, text=True)
    return list(json.loads(done.stdout))


def _make_token(base: Path, mp: pytest.MonkeyPatch) -> SoftHSMToken:
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
    # The worker processes inherit the environment: the private configuration and the PIN.
    mp.setenv("SOFTHSM2_CONF", str(conf))
    mp.setenv(token.pin_env, token.pin)
    return token


@pytest.fixture
def list_token_objects() -> Callable[[SoftHSMToken], list[dict[str, Any]]]:
    """:func:`token_objects` as a fixture (test modules do not import the conftest)."""
    return token_objects


@pytest.fixture
def softhsm_token(tmp_path: Path) -> Iterator[SoftHSMToken]:
    """A fresh private token for one test."""
    with pytest.MonkeyPatch.context() as mp:
        token = _make_token(tmp_path, mp)
        yield token
    shutil.rmtree(token.tokendir, ignore_errors=True)


ProviderFactory = Callable[..., PKCS11Provider]


def _factory(token: SoftHSMToken, state: Path,
             started: list[PKCS11Provider]) -> ProviderFactory:
    def make(provider_id: int = 11, **options: Any) -> PKCS11Provider:
        provider = PKCS11Provider(provider_id, token.options(**options),
                                  ProviderEnvironment(state_dir=state, config_dir=state))
        provider.start()
        started.append(provider)
        return provider
    return make


@pytest.fixture
def make_provider(softhsm_token: SoftHSMToken, tmp_path: Path) -> Iterator[ProviderFactory]:
    """Start providers on the test's token; all are closed afterwards."""
    started: list[PKCS11Provider] = []
    yield _factory(softhsm_token, tmp_path, started)
    for provider in started:
        provider.close()


@pytest.fixture
def provider(make_provider: ProviderFactory) -> PKCS11Provider:
    """A started provider on a fresh token."""
    return make_provider()
