"""Fixtures: private SoftHSM2 tokens and providers on them.

Every token lives in its own directory under the test's temporary directory, reached through
a private ``SOFTHSM2_CONF``; nothing touches a system-wide token. The token is initialised
by :func:`cryptostack_pkcs11.testing.create_token` (``softhsm2-util --init-token --free``;
``bench/pkcs11_latency.py`` uses it too) and its directory removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptostack_pkcs11.provider import PKCS11Provider
from cryptostack_pkcs11.testing import SoftHSMToken, create_token

from cryptostack_core.testing.instances import ProviderFactory as KitFactory

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
    done = subprocess.run(
        [sys.executable, "-c", _LIST_OBJECTS, token.module, token.label, token.pin],
        env=dict(os.environ, SOFTHSM2_CONF=str(token.conf)),
        check=True,
        capture_output=True,
        text=True,
    )
    return list(json.loads(done.stdout))


@pytest.fixture
def list_token_objects() -> Callable[[SoftHSMToken], list[dict[str, Any]]]:
    """:func:`token_objects` as a fixture (test modules do not import the conftest)."""
    return token_objects


@pytest.fixture
def softhsm_token(tmp_path: Path) -> Iterator[SoftHSMToken]:
    """A fresh private token for one test."""
    with pytest.MonkeyPatch.context() as mp:
        token = create_token(tmp_path)
        # The worker processes inherit the environment: the private configuration and the PIN.
        for name, value in token.environment().items():
            mp.setenv(name, value)
        yield token
    shutil.rmtree(token.tokendir, ignore_errors=True)


ProviderFactory = Callable[..., PKCS11Provider]


@pytest.fixture
def make_provider(
    softhsm_token: SoftHSMToken, tmp_path: Path, cryptostack_provider_factory: KitFactory
) -> ProviderFactory:
    """Start providers on the test's token (sharing one state directory, as restarts of one
    provider do); the testing kit's factory closes them afterwards."""

    def make(provider_id: int = 11, **options: Any) -> PKCS11Provider:
        provider = cryptostack_provider_factory(
            "pkcs11", provider_id, state_dir=tmp_path, **softhsm_token.options(**options)
        )
        assert isinstance(provider, PKCS11Provider)
        return provider

    return make


@pytest.fixture
def provider(make_provider: ProviderFactory) -> PKCS11Provider:
    """A started provider on a fresh token."""
    return make_provider()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A private PostgreSQL cluster for the shared-store scenarios (removed afterwards)."""
    from cryptostack_core.testing.postgres import PostgresCluster

    cluster = PostgresCluster()
    yield cluster
    cluster.close()
