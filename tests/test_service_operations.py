"""A daemon operators can run (issue 11, finding 6): readiness notification, socket
activation, SIGHUP reload with audit-log rotation, root refusal, providers that must start,
``check``, ``health``, key store backup, and an audit record per operation outcome."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess, to_toml

MockConfig = Callable[..., dict[str, Any]]
CLI = [sys.executable, "-m", "cryptostack_core"]
CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "systemd"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll an observable condition (a file, a log line), bounded by a generous limit."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class NotifySocket:
    """The receiving end of sd_notify, as systemd holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(30)

    def next(self) -> dict[str, str]:
        message = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in message.splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    notifier = NotifySocket(tmp_path / "notify.sock")
    yield notifier
    notifier.close()


def test_ready_reloading_and_stopping_are_notified(
    notify_socket: NotifySocket, mock_config: MockConfig, tmp_path: Path
) -> None:
    proc = DaemonProcess(tmp_path / "d", mock_config(), env={"NOTIFY_SOCKET": str(notify_socket.path)})
    with proc:
        ready = notify_socket.next()
        assert ready["READY"] == "1" and ready["MAINPID"] == str(proc.process.pid)  # type: ignore[union-attr]
        assert proc.socket_path.exists()  # READY=1 comes once the socket serves
        assert proc.process is not None
        proc.process.send_signal(signal.SIGHUP)
        assert notify_socket.next()["RELOADING"] == "1"
        assert notify_socket.next()["READY"] == "1"
    assert notify_socket.next()["STOPPING"] == "1"


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="make setup installs systemd-socket-activate"
)
def test_socket_activation_with_systemd_socket_activate(mock_config: MockConfig, tmp_path: Path) -> None:
    sock = tmp_path / "activated.sock"
    config = mock_config(
        socket=str(tmp_path / "unused.sock"), allow_root=True, state_dir=str(tmp_path / "state")
    )
    config_path = tmp_path / "daemon.toml"
    config_path.write_text(to_toml(config))
    keep = [f"{k}={v}" for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME", "VIRTUAL_ENV")]
    log = (tmp_path / "daemon.log").open("wb")
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(sock),
            *(f"-E{v}" for v in keep),
            sys.executable,
            "-m",
            "cryptostack_core",
            "daemon",
            "--config",
            str(config_path),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        # The socket file appears at bind(), before listen(): wait for the activator's own
        # "Listening on" line, printed once the socket accepts connections.
        wait_for(
            lambda: b"Listening on" in (tmp_path / "daemon.log").read_bytes(),
            "systemd-socket-activate to listen",
        )
        # The first connection starts the daemon, which takes over the listening socket.
        stack = cs.create_crypto_stack(
            cs.CryptoStackConfig()
            .set_connection_endpoint(f"unix://{sock}")
            .set_connect_timeout(60)
            .set_default_operation_timeout(30)
        )
        with stack:
            status = stack.status()
            assert status["pid"] == activator.pid  # exec'd in place of the activator
            h = stack.create_crypto_context().create_hash_context(
                cs.HashContextConfig().set_algorithm("SHA-256")
            )
            assert len(h.single_shot(b"activated")) == 32
        assert not (tmp_path / "unused.sock").exists()
        assert (tmp_path / "state" / "keystore.sqlite3").exists()
        activator.send_signal(signal.SIGTERM)
        assert activator.wait(30) == 0
    finally:
        if activator.poll() is None:
            activator.kill()
            activator.wait()
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert "socket activation" in text and "another daemon" not in text
    assert sock.exists()  # the activator's socket: not the daemon's to remove


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sighup_reopens_the_rotated_audit_log_and_reloads_slots(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    d = daemon_factory(mock_config(audit_log=str(audit)))
    assert d.process is not None
    with d.stack() as stack:
        km = stack.create_crypto_context().create_key_management_context()
        km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256")).release()
        wait_for(lambda: audit.exists() and audit.stat().st_size > 0, "the first audit record")
        rotated = tmp_path / "audit.jsonl.1"
        audit.rename(rotated)  # what logrotate does before it signals
        config = mock_config(audit_log=str(audit))
        config["key_slots"].append(
            {"name": "AddedOnReload", "algorithm": "AES-256", "provider": 1, "provision": "generate"}
        )
        config["key_slots"][0]["use_uids"] = [os.getuid()]
        config["key_slots"][1]["algorithm"] = "AES-128"  # not safe while running
        config["daemon"]["max_clients"] = 7  # needs a restart
        config["daemon"].update(
            socket=str(d.socket_path), keystore=d.config["daemon"]["keystore"], allow_root=True
        )
        d.config_path.write_text(to_toml(config))
        d.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload complete" in d.log_text(), "the reload")
        assert audit.exists()  # reopened at its path
        km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256")).release()
        ctx = stack.create_crypto_context()
        added = ctx.resolve_resource("AddedOnReload", cs.ResourceType.KEY_SLOT)
        assert km.get_key_slot_info(added).status is cs.KeySlotStatus.OCCUPIED
        assert (
            km.get_key_slot_info(ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)).algorithm
            == "AES-256"
        )
    log = d.log_text()
    assert "key slot 'AddedOnReload' added" in log
    assert "key slot 'PreDeployedSlot' updated" in log
    assert "key slot 'MyNewSlot': algorithm changed: not applied" in log
    assert "needs a restart): max_clients" in log
    assert d.process.poll() is None and d.socket_path.exists()
    d.stop()
    old, new = _events(rotated), _events(audit)
    assert [e["action"] for e in old].count("key.generate") == 1
    assert [e["action"] for e in new].count("key.generate") == 1


def test_a_bad_reload_keeps_the_running_configuration(daemon: DaemonProcess) -> None:
    assert daemon.process is not None
    daemon.config_path.write_text("this is not TOML [")
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload complete" in daemon.log_text(), "the reload")
    assert "the running configuration stays" in daemon.log_text()
    with daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)


def test_a_reload_with_a_bad_placement_keeps_the_running_configuration(daemon: DaemonProcess) -> None:
    """A slot whose placement the daemon would refuse at start is refused by a reload too
    (nothing of that configuration applied)."""
    assert daemon.process is not None
    config = tomllib.loads(daemon.config_path.read_text())
    config["key_slots"].append({"name": "Halves", "algorithm": "AES-256", "components": {"pq": [1]}})
    daemon.config_path.write_text(to_toml(config))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload complete" in daemon.log_text(), "the reload")
    log = daemon.log_text()
    assert "the running configuration stays" in log
    assert (
        "[[key_slots]] 'Halves': 'placement' and 'components' apply to hybrid key types "
        "only; AES-256 is not one" in log
    )
    with daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        with pytest.raises(cs.CryptoError) as err:
            ctx.resolve_resource("Halves", cs.ResourceType.KEY_SLOT)
        assert err.value.code is cs.ErrorCode.RESOURCE_NOT_FOUND


def test_root_without_allow_root_is_refused(mock_config: MockConfig, tmp_path: Path) -> None:
    config = mock_config(socket=str(tmp_path / "d.sock"))
    path = tmp_path / "daemon.toml"
    path.write_text(to_toml(config))
    # Run as root for real where the suite does; elsewhere make the daemon believe it is.
    prelude = "" if os.geteuid() == 0 else "import os; os.geteuid = lambda: 0; "
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            prelude + "import sys; from cryptostack_core.cli import main; sys.exit(main(sys.argv[1:]))",
            "daemon",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to run as root" in done.stderr and "allow_root = true" in done.stderr
    assert not (tmp_path / "d.sock").exists()


def test_a_provider_that_cannot_start_fails_the_start_unless_optional(
    mock_config: MockConfig, tmp_path: Path
) -> None:
    config = mock_config(allow_root=True)
    config["providers"].append({"name": "opennssl", "id": 2})  # misspelt
    proc = DaemonProcess(tmp_path / "d", config)
    done = cli("daemon", "--config", str(proc.config_path))
    assert done.returncode == 2
    assert "opennssl" in done.stderr and "optional = true" in done.stderr
    assert "is installed" in done.stderr  # no such entry point, and what is installed
    assert not proc.socket_path.exists()
    config["providers"][1]["optional"] = True
    with DaemonProcess(tmp_path / "d2", config) as running, running.stack() as stack:
        down = [p for p in stack.status()["providers"] if p["id"] == 2]
        assert down[0]["state"] == "unavailable" and down[0]["optional"] is True
        assert any("optional provider opennssl" in w for w in stack.status()["warnings"])


def test_check_validates_without_starting(mock_config: MockConfig, tmp_path: Path) -> None:
    good = DaemonProcess(tmp_path / "good", mock_config())
    done = cli("check", "--config", str(good.config_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("OK") and "test provider" in done.stdout
    assert not good.socket_path.exists()
    assert not (good.directory / "keystore.sqlite3").exists()  # nothing created
    bad = mock_config()
    del bad["daemon"]["allow_test_providers"]
    bad["providers"].append({"name": "nosuchprovider", "id": 3})
    bad["trust_stores"] = [{"name": "Root", "anchors": [str(tmp_path / "missing.pem")]}]
    proc = DaemonProcess(tmp_path / "bad", bad)
    done = cli("check", "--config", str(proc.config_path))
    assert done.returncode == 2
    assert "allow_test_providers" in done.stderr and "nosuchprovider" in done.stderr
    assert "missing.pem" in done.stderr
    (tmp_path / "broken.toml").write_text("[daemon\n")
    assert cli("check", "--config", str(tmp_path / "broken.toml")).returncode == 2


def test_health_exits_nonzero_when_a_required_provider_is_down(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig, tmp_path: Path
) -> None:
    down = tmp_path / "backend-down"
    config = mock_config()
    config["providers"] = [
        {"name": "mock", "id": 1, "options": {"down_file": str(down)}},
        {
            "name": "mock",
            "id": 9,
            "optional": True,
            "options": {"down_file": str(tmp_path / "optional-down")},
        },
    ]
    d = daemon_factory(config)
    healthy = cli("health", "--endpoint", d.endpoint)
    assert healthy.returncode == 0 and "healthy" in healthy.stdout
    (tmp_path / "optional-down").write_text("token removed")
    assert cli("health", "--endpoint", d.endpoint).returncode == 0  # optional: degraded only
    down.write_text("token removed")
    sick = cli("health", "--endpoint", d.endpoint)
    assert sick.returncode == 1
    assert "mock (1): DOWN: token removed" in sick.stdout and "unhealthy" in sick.stdout
    assert cli("health", "--endpoint", f"unix://{tmp_path}/none.sock").returncode == 1


def test_keystore_backup_while_running_and_restore(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig, tmp_path: Path
) -> None:
    d = daemon_factory(mock_config(), name="live")
    plaintext = b"restored from a backup"
    with d.stack() as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-CBC").set_key(slot).set_direction(D.ENCRYPT)
        )
        enc.init(bytes(16))
        ciphertext = enc.update(plaintext) + enc.finalize()
        backup = tmp_path / "backup.sqlite3"
        done = cli("keystore", "backup", "--config", str(d.config_path), str(backup))
        assert done.returncode == 0, done.stderr
        assert "NOT in this backup" in done.stdout and ".kek" in done.stdout
        assert "2 key slots" in done.stdout
        assert (
            cli("keystore", "backup", "--config", str(d.config_path), str(backup)).returncode == 1
        )  # never overwrites
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    raw = sqlite3.connect(backup)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file
    raw.close()
    # Restore: the store from the backup, the KEK from its own backup, on a new machine.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(backup, restored / "keystore.sqlite3")
    (tmp_path / "restored-kek").mkdir(mode=0o700)
    kek = d.directory.with_name("live-kek") / "keystore.sqlite3.kek"
    shutil.copy2(kek, tmp_path / "restored-kek" / "keystore.sqlite3.kek")
    with DaemonProcess(restored, mock_config()) as again, again.stack() as stack:
        ctx = stack.create_crypto_context()
        dec = ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm("AES-256-CBC")
            .set_key(ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT))
            .set_direction(D.DECRYPT)
        )
        dec.init(bytes(16))
        assert dec.update(ciphertext) + dec.finalize() == plaintext


def test_audit_has_one_record_per_outcome_in_one_spelling(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    d = daemon_factory(mock_config(audit_log=str(audit)))
    with d.stack() as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)

        def cipher(direction: D) -> cs.CipherContext:
            return ctx.create_cipher_context(
                cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(slot).set_direction(direction)
            )

        enc, dec = cipher(D.ENCRYPT), cipher(D.DECRYPT)  # creating is not an outcome
        enc.init(bytes(12))
        sealed = enc.update(b"payload") + enc.finalize()
        dec.init(bytes(12))
        dec.update(sealed[:-1] + bytes([sealed[-1] ^ 1]))
        with pytest.raises(cs.CryptoError) as err:
            dec.finalize()
        assert err.value.code is E.AUTHENTICATION_FAILED
        dec.init(bytes(12))
        dec.update(sealed)
        assert dec.finalize() == b"payload"
        mac_slot = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
        verifier = ctx.create_verify_context(
            cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(mac_slot)
        )
        assert verifier.verify(b"m", bytes(32)) is False
        km = ctx.create_key_management_context()
        weak = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.DECRYPT))
        with pytest.raises(cs.CryptoError):
            ctx.create_cipher_context(
                cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(weak).set_direction(D.ENCRYPT)
            )
    d.stop()
    uses = [(e["resource"], e["operation"], e["result"]) for e in _events(audit) if e["action"] == "key.use"]
    assert uses == [
        ("PreDeployedSlot", "encrypt", "ok"),
        ("PreDeployedSlot", "decrypt", "AUTHENTICATION_FAILED"),
        ("PreDeployedSlot", "decrypt", "ok"),
        ("SigningKey", "verify", "AUTHENTICATION_FAILED"),
        ("ephemeral key", "encrypt", "KEY_OPERATION_NOT_PERMITTED"),
    ]
    spellings = {o.value for o in cs.Operation}
    assert all(e["operation"] in spellings for e in _events(audit) if e["operation"])


def test_systemd_units_are_valid(tmp_path: Path) -> None:
    """contrib/systemd passes systemd-analyze (with ExecStart pointing at this install)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "make setup installs systemd's tools"
    executable = shutil.which("cryptostack") or str(Path(sys.executable).with_name("cryptostack"))
    assert os.access(executable, os.X_OK), executable
    for unit in ("cryptostack.service", "cryptostack.socket"):
        text = (CONTRIB / unit).read_text().replace("/usr/bin/cryptostack", executable)
        (tmp_path / unit).write_text(text)
    service = (CONTRIB / "cryptostack.service").read_text()
    assert "Type=notify" in service and "ExecReload=/bin/kill -HUP $MAINPID" in service
    assert "User=cryptostack" in service and "StateDirectory=cryptostack cryptostack-kek" in service
    done = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            str(tmp_path / "cryptostack.socket"),
            str(tmp_path / "cryptostack.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line for line in done.stderr.splitlines() if "cryptostack" in line and "Failed to" not in line
    ]
    assert not problems, done.stderr
    config = CONTRIB / "daemon.toml"
    assert cs.__version__ and config.exists()
    from cryptostack_core.server.config import DaemonConfig

    DaemonConfig.load(config)  # the example configuration parses
    assert "u     cryptostack" in (CONTRIB / "cryptostack.sysusers").read_text()
    assert "/var/lib/cryptostack-kek" in (CONTRIB / "cryptostack.tmpfiles").read_text()


def test_sighup_replaces_a_trust_store_only_when_its_files_changed(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig, tmp_path: Path
) -> None:
    pki = Path(__file__).resolve().parent.parent / "examples" / "pki"
    anchor, crl = tmp_path / "anchor.pem", tmp_path / "root.crl.pem"
    shutil.copy(pki / "root.pem", anchor)
    shutil.copy(pki / "root.crl.pem", crl)
    config = mock_config()
    config["trust_stores"] = [{"name": "RootCA", "anchors": [str(anchor)], "crls": [str(crl)]}]
    d = daemon_factory(config)
    assert d.process is not None

    def reload() -> str:
        before = d.log_text().count("reload complete")
        d.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_for(lambda: d.log_text().count("reload complete") > before, "the reload")
        return d.log_text().split("SIGHUP: reloading")[-1]

    assert "trust store 'RootCA'" not in reload()  # files unchanged: the store stays
    shutil.copy(pki / "device.pem", anchor)  # the operator drops in other files
    config["cert_slots"] = [{"name": "Device", "file": str(pki / "device.pem")}]
    config["daemon"].update(
        socket=str(d.socket_path), keystore=d.config["daemon"]["keystore"], allow_root=True
    )
    d.config_path.write_text(to_toml(config))
    text = reload()
    assert "trust store 'RootCA' reloaded from its files (1 anchors, 1 CRLs)" in text
    assert "certificate slot 'Device' seeded from" in text
    assert "trust store 'RootCA'" not in reload()
    with d.stack() as stack:
        status = stack.status()
        assert status["trust_stores"] == ["RootCA"]
        assert [c["name"] for c in status["cert_slots"] if c["occupied"]] == ["Device"]
