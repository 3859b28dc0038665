"""Honest defaults (issue 11, findings 2 and 3): the mock provider only when a config asks
for it, randomness from the OS, and a daemon that persists its keys by default with its
KEK outside the store's directory."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess, to_toml

MockConfig = Callable[..., dict[str, Any]]
IV = bytes(16)


def test_the_default_stack_never_picks_the_mock(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only the core installed there is no honest default provider: say what to do."""
    from cryptostack_core.server import defaults

    monkeypatch.setattr(defaults, "available_provider_names", lambda: ["mock"])
    with pytest.raises(cs.CryptoError) as err:
        cs.create_crypto_stack()
    assert err.value.code is E.PROVIDER_UNAVAILABLE
    assert "no provider installed: pip install cryptostack-openssl" in err.value.message


def test_the_mock_needs_allow_test_providers(mock_config: MockConfig, tmp_path: Path) -> None:
    config = mock_config()
    del config["daemon"]["allow_test_providers"]
    with pytest.raises(cs.CryptoError) as err:
        cs.create_crypto_stack(cs.CryptoStackConfig().set_daemon_config(config))
    assert err.value.code is E.PROVIDER_UNAVAILABLE
    assert "test provider" in err.value.message and "allow_test_providers" in err.value.message
    # A daemon refuses to start (status 2) and says why.
    proc = DaemonProcess(tmp_path / "d", config)
    done = subprocess.run(
        [sys.executable, "-m", "cryptostack_core", "daemon", "--config", str(proc.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "allow_test_providers = true" in done.stderr and "mock" in done.stderr
    assert not proc.socket_path.exists()


def test_an_allowed_mock_is_a_warning_at_start_and_in_status(daemon: DaemonProcess) -> None:
    assert "TEST provider" in daemon.log_text()
    with daemon.stack() as stack:
        warnings = stack.status()["warnings"]
    assert any("mock" in w and "test provider" in w for w in warnings)
    text = subprocess.run(
        [sys.executable, "-m", "cryptostack_core", "status", "--endpoint", daemon.endpoint],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "WARNING: provider mock (1) is a test provider" in text


def _mock_secrets(seed: str | None) -> tuple[bytes, bytes]:
    options = {} if seed is None else {"seed": seed}
    config = {
        "daemon": {"allow_test_providers": True},
        "providers": [{"name": "mock", "id": 1, "options": options}],
    }
    with cs.create_crypto_stack(cs.CryptoStackConfig().set_daemon_config(config)) as stack:
        km = stack.create_crypto_context().create_key_management_context()
        key = km.generate_key(
            cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.EXPORT)
        )
        return km.export_key(key), km.generate_random(32)


def test_mock_randomness_comes_from_the_os_unless_a_test_seeds_it() -> None:
    first, second = _mock_secrets(None), _mock_secrets(None)
    assert first[0] != second[0] and first[1] != second[1]
    assert _mock_secrets("a test seed") == _mock_secrets("a test seed")
    assert _mock_secrets("a test seed") != _mock_secrets("another seed")


def _persist_and_encrypt(stack: cs.CryptoStack) -> bytes:
    ctx = stack.create_crypto_context()
    km = ctx.create_key_management_context()
    key = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
    km.persist_key(ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT), key)
    enc = ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm("AES-256-CBC").set_key(key).set_direction(D.ENCRYPT)
    )
    enc.init(IV)
    return enc.update(b"kept across restarts") + enc.finalize()


def _decrypt_from_slot(stack: cs.CryptoStack, ciphertext: bytes) -> bytes:
    ctx = stack.create_crypto_context()
    dec = ctx.create_cipher_context(
        cs.CipherContextConfig()
        .set_algorithm("AES-256-CBC")
        .set_key(ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT))
        .set_direction(D.DECRYPT)
    )
    dec.init(IV)
    return dec.update(ciphertext) + dec.finalize()


def _minimal(directory: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> DaemonProcess:
    """A daemon on exactly ``config`` (DaemonProcess would add a key store path)."""
    proc = DaemonProcess(directory, config, env=env)
    proc.config_path.write_text(to_toml(config))
    return proc


@pytest.mark.parametrize("systemd", [False, True])
def test_restart_keeps_keys_with_a_minimal_config(
    mock_config: MockConfig, tmp_path: Path, systemd: bool
) -> None:
    """No [daemon] keystore: the store goes under the state directory ($STATE_DIRECTORY,
    else beside the socket), its KEK beside (not inside) that directory."""
    config = mock_config(socket=str(tmp_path / "run" / "daemon.sock"), allow_root=True)
    state = tmp_path / "state" if systemd else tmp_path / "run"
    env = {"STATE_DIRECTORY": str(state)} if systemd else None
    proc = _minimal(tmp_path, config, env)
    with proc, proc.stack() as stack:
        ciphertext = _persist_and_encrypt(stack)
    store = state / "keystore.sqlite3"
    kek = state.with_name(state.name + "-kek") / "keystore.sqlite3.kek"
    assert store.is_file() and kek.is_file()
    assert not list(state.glob("*.kek")), "the KEK must not live in the store's directory"
    assert oct(kek.stat().st_mode & 0o777) == "0o600"
    assert "in memory" not in proc.log_text()
    with proc, proc.stack() as stack:
        assert _decrypt_from_slot(stack, ciphertext) == b"kept across restarts"


def test_an_in_memory_store_is_a_configured_choice_with_a_warning(
    mock_config: MockConfig, tmp_path: Path
) -> None:
    config = mock_config(socket=str(tmp_path / "d.sock"), keystore=":memory:", allow_root=True)
    proc = _minimal(tmp_path, config)
    with proc, proc.stack() as stack:
        ciphertext = _persist_and_encrypt(stack)
        assert any("in memory" in w for w in stack.status()["warnings"])
    assert "WARNING" in proc.log_text() and "in memory" in proc.log_text()
    assert not list(tmp_path.glob("*.sqlite3"))
    with proc, proc.stack() as stack, pytest.raises(cs.CryptoError) as err:
        _decrypt_from_slot(stack, ciphertext)
    assert err.value.code is E.SLOT_EMPTY  # as configured, and as the warning said


def test_a_kek_at_its_former_default_is_used_with_a_warning_and_never_replaced(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig, tmp_path: Path
) -> None:
    d = daemon_factory(mock_config(), name="old")
    with d.stack() as stack:
        ciphertext = _persist_and_encrypt(stack)
    d.stop()
    store = d.directory / "keystore.sqlite3"
    kek = d.directory.with_name("old-kek") / "keystore.sqlite3.kek"
    legacy = d.directory / "keystore.sqlite3.kek"
    kek.rename(legacy)  # as an earlier version laid it out
    with d, d.stack() as stack:
        assert _decrypt_from_slot(stack, ciphertext) == b"kept across restarts"
        assert any(str(legacy) in w and "move it" in w for w in stack.status()["warnings"])
    assert not kek.exists()
    # A KEK that is gone is never silently replaced: the wrapped keys would be lost.
    legacy.rename(tmp_path / "kek.saved")
    with pytest.raises(RuntimeError) as err:
        d.start()
    assert "key-encryption key" in str(err.value) and "restore" in str(err.value)
    assert not kek.exists() and not legacy.exists() and store.is_file()
    d.stop()


def test_keys_persist_through_inproc_only_with_a_key_store(mock_config: MockConfig, tmp_path: Path) -> None:
    config = copy.deepcopy(mock_config())
    config["daemon"]["keystore"] = str(tmp_path / "store" / "keystore.sqlite3")
    stack_config = cs.CryptoStackConfig().set_daemon_config(config)
    with cs.create_crypto_stack(stack_config) as stack:
        ciphertext = _persist_and_encrypt(stack)
        assert stack.status()["warnings"] == [
            "provider mock (1) is a test provider (allow_test_providers = true): not for production"
        ]
    assert (tmp_path / "store-kek" / "keystore.sqlite3.kek").is_file()
    with cs.create_crypto_stack(stack_config) as stack:
        assert _decrypt_from_slot(stack, ciphertext) == b"kept across restarts"
    assert os.stat(tmp_path / "store" / "keystore.sqlite3").st_mode & 0o077 == 0
