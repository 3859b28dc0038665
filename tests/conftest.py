"""Fixtures for the core suite: the mock provider in-process and in a real daemon."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.plugin import DaemonFactory

TEST_DAEMON: dict[str, Any] = {"allow_test_providers": True}
"""The core suite runs on the mock provider, which a config must allow explicitly."""

BASE_CONFIG: dict[str, Any] = {
    "daemon": TEST_DAEMON,
    "providers": [{"name": "mock", "id": 1}],
    "key_slots": [
        {
            "name": "PreDeployedSlot",
            "algorithm": "AES-256",
            "provider": 1,
            "compatible_providers": [1],
            "permissions": ["encrypt", "decrypt"],
            "provision": "generate",
        },
        {
            "name": "MyNewSlot",
            "algorithm": "AES-256",
            "provider": 1,
            "permissions": ["encrypt", "decrypt"],
        },
        {
            "name": "SigningKey",
            "algorithm": "HMAC-SHA-256",
            "provider": 1,
            "permissions": ["sign", "verify", "mac"],
            "provision": "generate",
        },
        {"name": "EmptySlot", "algorithm": "Ed25519", "provider": 1},
    ],
}


def mock_config(**daemon: Any) -> dict[str, Any]:
    """A fresh copy of the base config, with extra ``[daemon]`` settings."""
    config = copy.deepcopy(BASE_CONFIG)
    config["daemon"].update(daemon)
    return config


@pytest.fixture(name="mock_config")
def mock_config_fixture() -> Callable[..., dict[str, Any]]:
    """The :func:`mock_config` factory, for tests (conftest is not importable as a module)."""
    return mock_config


@pytest.fixture
def inproc_stack() -> Iterator[cs.CryptoStack]:
    """An in-process stack on the mock provider."""
    stack = cs.create_crypto_stack(
        cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(mock_config())
    )
    yield stack
    stack.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start real daemon subprocesses (default: the base config); all are stopped at the end
    of the test (the testing plugin's factory)."""
    factory = DaemonFactory(tmp_path, mock_config())
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> DaemonProcess:
    """One daemon on the base config."""
    return daemon_factory(name="d")


@pytest.fixture(params=["inproc", "unix"])
def any_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[cs.CryptoStack]:
    """The same tests over ``inproc://`` and over a real daemon socket."""
    if request.param == "inproc":
        stack = cs.create_crypto_stack(
            cs.CryptoStackConfig()
            .set_connection_endpoint("inproc://")
            .set_daemon_config(mock_config())
        )
        yield stack
        stack.close()
        return
    with DaemonProcess(tmp_path / "d", mock_config()) as proc, proc.stack() as stack:
        yield stack
