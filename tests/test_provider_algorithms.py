"""Algorithms owned by providers: registered at load, checked in key slots after the providers
loaded, served to clients that never heard of them (``algorithms`` request, CLI)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.server.check import check_config
from cryptostack_core.server.config import ConfigError
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.entrypoints import on_sys_path, provider_environment, provider_path

TOY_ID = 1000
HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy_path(tmp_path: Path) -> Path:
    """An entry-point directory naming the toy providers (not installed anywhere else)."""
    return provider_path(
        tmp_path / "entry-points",
        {"toy": "toy_provider:ToyProvider", "clash": "toy_provider:ClashProvider"},
        modules=[HERE / "providers" / "toy_provider.py"],
    )


def toy_config(**extra_slot: Any) -> dict[str, Any]:
    slot = {
        "name": "ToyMacKey",
        "algorithm": "TOY-MAC",
        "provider": TOY_ID,
        "permissions": ["sign", "verify", "mac"],
        "provision": "generate",
        **extra_slot,
    }
    return {"providers": [{"name": "toy", "id": TOY_ID}], "key_slots": [slot]}


@pytest.fixture
def toy_daemon(tmp_path: Path, toy_path: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path / "daemon", toy_config(), env=provider_environment(toy_path)) as daemon:
        yield daemon


CLIENT = textwrap.dedent("""
    import json, sys
    import cryptostack_core as cs
    from cryptostack_core.wire.algorithms import REGISTRY
    assert REGISTRY.find("TOY-HASH") is None, "the client must not know the name itself"
    stack = cs.create_crypto_stack(cs.CryptoStackConfig().set_connection_endpoint(sys.argv[1]))
    ctx = stack.create_crypto_context()
    digest = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("toyhash")) \\
        .single_shot(b"abc")
    slot = ctx.resolve_resource("ToyMacKey", cs.ResourceType.KEY_SLOT)
    signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("TOY-MAC").set_key(slot))
    tag = signer.sign(b"message")
    verifier = ctx.create_verify_context(cs.VerifyContextConfig().set_algorithm("toy-mac")
                                         .set_key(slot))
    ok, bad = verifier.verify(b"message", tag), verifier.verify(b"massage", tag)
    try:
        ctx.create_hash_context(cs.HashContextConfig().set_algorithm("TOY-NOTHING"))
        unknown = "accepted"
    except cs.CryptoError as exc:
        unknown = exc.code.value
    print(json.dumps({"digest": digest.hex(), "algorithm": signer.algorithm, "ok": ok,
                      "bad": bad, "unknown": unknown, "tag_size": len(tag)}))
""")


def test_a_client_uses_a_provider_algorithm_it_has_never_heard_of(
    toy_daemon: DaemonProcess,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, toy_daemon.endpoint], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["digest"] == hashlib.shake_256(b"abc").hexdigest(32)
    assert result["algorithm"] == "TOY-MAC" and result["tag_size"] == 32
    assert result["ok"] is True and result["bad"] is False
    assert result["unknown"] == "UNSUPPORTED_ALGORITHM"


def test_the_daemon_lists_every_algorithm_with_its_providers(toy_daemon: DaemonProcess) -> None:
    with toy_daemon.stack() as stack:
        table = {entry["name"]: entry for entry in stack.algorithms()}
    toy = table["TOY-MAC"]
    assert toy["kind"] == "mac" and toy["key_class"] == "symmetric"
    assert toy["key_algorithms"] == ["TOY-MAC"] and toy["registered_by"] == [TOY_ID]
    assert toy["providers"] == {
        "generate_key": [TOY_ID],
        "import_key": [TOY_ID],
        "sign": [TOY_ID],
        "verify": [TOY_ID],
    }
    assert table["TOY-HASH"]["aliases"] == ["toyhash"]
    assert table["SHA-256"]["registered_by"] == [] and table["SHA-256"]["providers"] == {}
    cli = [sys.executable, "-m", "cryptostack_core", "algorithms", "--endpoint", toy_daemon.endpoint]
    listed = json.loads(
        subprocess.run([*cli, "--json"], capture_output=True, text=True, check=True, timeout=60).stdout
    )
    assert {e["name"] for e in listed} == set(table)
    text = subprocess.run(cli, capture_output=True, text=True, check=True, timeout=60).stdout
    line = next(row for row in text.splitlines() if row.startswith("TOY-MAC "))
    assert "mac" in line and f"sign: toy ({TOY_ID})" in line


def test_key_slots_are_checked_after_the_providers_registered_their_names(
    tmp_path: Path, toy_path: Path
) -> None:
    with on_sys_path(toy_path):
        stack = cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(toy_config())
        )
        with stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            slot = ctx.resolve_resource("ToyMacKey", cs.ResourceType.KEY_SLOT)
            assert km.get_key_slot_info(slot).algorithm == "TOY-MAC"
        # A slot naming an algorithm nobody registers is refused, naming slot and name.
        config = toy_config(algorithm="TOY-MACC")
        with pytest.raises(ConfigError) as err:
            cs.create_crypto_stack(
                cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
            )
        assert "'ToyMacKey'" in str(err.value) and "'TOY-MACC'" in str(err.value)
        # A name that is an operation, not a key type.
        with pytest.raises(ConfigError) as err:
            cs.create_crypto_stack(
                cs.CryptoStackConfig()
                .set_connection_endpoint("inproc://")
                .set_daemon_config(toy_config(algorithm="TOY-HASH"))
            )
        assert "TOY-HASH is not a key type" in str(err.value)


def test_an_uninstalled_provider_is_named_when_its_slot_algorithm_is_unknown(tmp_path: Path) -> None:
    config = {
        "providers": [{"name": "no-such-provider", "id": 1001, "optional": True}],
        "key_slots": [{"name": "Orphan", "algorithm": "NOT-BUILT-IN", "provider": 1001}],
    }
    daemon = DaemonProcess(tmp_path / "daemon", config)
    with pytest.raises(RuntimeError) as err:
        daemon.start()
    message = str(err.value)
    assert "'Orphan'" in message and "'NOT-BUILT-IN'" in message
    assert "no provider named 'no-such-provider' is installed" in message


def test_a_provider_redefining_a_name_is_refused(tmp_path: Path, toy_path: Path) -> None:
    config = {
        "daemon": {"allow_test_providers": True},
        "providers": [{"name": "clash", "id": 1002, "optional": True}, {"name": "mock", "id": 1}],
    }
    with on_sys_path(toy_path):
        stack = cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
        )
    with stack:
        clash = next(p for p in stack.status()["providers"] if p["id"] == 1002)
        assert clash["state"] == "unavailable"
        assert "'SHA-256'" in clash["reason"] and "other facts" in clash["reason"]
        digest = (
            stack.create_crypto_context()
            .create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
            .single_shot(b"abc")
        )
        assert digest == hashlib.sha256(b"abc").digest()


def test_check_knows_the_algorithms_providers_bring(tmp_path: Path, toy_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    slot = '[[key_slots]]\nname = "ToyMacKey"\nalgorithm = "{}"\nprovider = 1000\n'
    base = (
        f'[daemon]\nkeystore = "{tmp_path / "ks.sqlite3"}"\nallow_root = true\n'
        '[[providers]]\nname = "toy"\nid = 1000\n'
    )
    with on_sys_path(toy_path):
        config.write_text(base + slot.format("TOY-MAC"))
        report = check_config(config)
        assert report.ok, report.problems
        config.write_text(base + slot.format("TOY-MACC"))
        report = check_config(config)
        assert any("unknown key algorithm 'TOY-MACC'" in p for p in report.problems), report
