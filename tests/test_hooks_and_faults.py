"""Hooks (audit, access decisions, metrics), injected provider faults, and a daemon that
never answers."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

import cryptostack_core as cs
from cryptostack_core import ErrorCode as E
from cryptostack_core.server.hooks import AccessRequest, AuditEvent, hookimpl
from cryptostack_core.testing.daemon import DaemonProcess


class Recorder:
    """A hook plugin as a third party would write one."""

    def __init__(self, deny_slot: str | None = None) -> None:
        self.events: list[AuditEvent] = []
        self.metrics: list[tuple[str, float, dict[str, str]]] = []
        self.deny_slot = deny_slot

    @hookimpl
    def cryptostack_audit(self, event: AuditEvent) -> None:
        self.events.append(event)

    @hookimpl
    def cryptostack_metric(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.metrics.append((name, value, labels))

    @hookimpl
    def cryptostack_access_decision(self, request: AccessRequest) -> bool | None:
        if request.resource_name == self.deny_slot:
            return False
        return None


def test_hook_plugins_see_audit_metrics_and_decide_access(mock_config: Any) -> None:
    with cs.create_crypto_stack(cs.CryptoStackConfig().set_daemon_config(mock_config())) as stack:
        recorder = Recorder(deny_slot="SigningKey")
        stack._channel.transport.service.pm.register(recorder)  # type: ignore[attr-defined]
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm("AES-256-CBC")
            .set_key(slot)
            .set_direction(cs.CipherDirection.ENCRYPT)
        )
        enc.init(bytes(16))
        enc.update(b"audited at its outcome")
        enc.finalize()
        denied = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
        with pytest.raises(cs.CryptoError) as err:
            ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(denied))
        assert err.value.code is E.ACCESS_DENIED
    uses = [(e.action, e.resource, e.result) for e in recorder.events]
    assert ("key.use", "PreDeployedSlot", "ok") in uses
    assert ("access.use", "SigningKey", "ACCESS_DENIED") in uses
    ops = {(m[2]["op"], m[2]["result"]) for m in recorder.metrics}
    assert ("cipher.create", "ok") in ops and ("sign.create", "ACCESS_DENIED") in ops
    assert all(m[0] == "request.seconds" and m[1] >= 0 for m in recorder.metrics)


def test_injected_provider_failures_abort_the_message_only() -> None:
    config = {
        "daemon": {"allow_test_providers": True},
        "providers": [
            {
                "name": "mock",
                "id": 1,
                "options": {"fail": {"hash.finalize": "PROVIDER_ERROR", "sign.init": "crash"}},
            }
        ],
    }
    with cs.create_crypto_stack(cs.CryptoStackConfig().set_daemon_config(config)) as stack:
        ctx = stack.create_crypto_context()
        h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        h.init()
        h.update(b"x")
        with pytest.raises(cs.CryptoError) as err:
            h.finalize()
        assert err.value.code is E.PROVIDER_ERROR and "injected" in err.value.message
        h.init()  # the context is usable again: the failure aborted only that message
        km = ctx.create_key_management_context()
        key = km.generate_key(cs.GenerateKeyParams().set_algorithm("HMAC-SHA-256"))
        signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(key))
        with pytest.raises(cs.CryptoError) as err:
            signer.sign(b"m")  # a provider exception that is not a CryptoError
        assert err.value.code is E.PROVIDER_ERROR and "RuntimeError" in err.value.message


def test_client_gives_up_when_the_daemon_never_answers(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    finished = threading.Event()

    def silent_daemon() -> None:
        conn, _ = server.accept()
        header = conn.recv(4)
        conn.recv(struct.unpack(">I", header)[0])
        body = cbor2.dumps({"hello": {"version": 1, "max_frame": 1 << 20}})
        conn.sendall(struct.pack(">I", len(body)) + body)
        finished.wait(60)  # reads requests, answers nothing
        conn.close()

    thread = threading.Thread(target=silent_daemon, daemon=True)
    thread.start()
    cfg = cs.CryptoStackConfig().set_connection_endpoint(f"unix://{path}").set_default_operation_timeout(0.3)
    with cs.create_crypto_stack(cfg) as stack:
        started = time.monotonic()
        with pytest.raises(cs.CryptoError) as err:
            stack.ping()
        elapsed = time.monotonic() - started
        assert err.value.code is E.OPERATION_TIMED_OUT  # only its deadline can end the call
        assert elapsed < 20
    finished.set()
    server.close()


def test_no_daemon_is_connection_failed(tmp_path: Path) -> None:
    cfg = cs.CryptoStackConfig().set_connection_endpoint(f"unix://{tmp_path}/none.sock")
    with pytest.raises(cs.CryptoError) as err:
        cs.create_crypto_stack(cfg)
    assert err.value.code is E.CONNECTION_FAILED


def test_cli_explain(daemon: DaemonProcess) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cryptostack_core",
            "explain",
            "--endpoint",
            daemon.endpoint,
            "--algorithm",
            "aes-256-cbc",
            "--operation",
            "encrypt",
            "--key-slot",
            "PreDeployedSlot",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-> " in out and "mock" in out and "home provider" in out
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "cryptostack_core",
            "explain",
            "--endpoint",
            daemon.endpoint,
            "--algorithm",
            "SHA-224",
            "--operation",
            "hash",
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "no compatible provider" in missing.stdout


def test_aead_decryption_is_bounded_by_the_buffered_message_limit(mock_config: Any) -> None:
    config = mock_config(max_buffered_message=4096)
    with cs.create_crypto_stack(cs.CryptoStackConfig().set_daemon_config(config)) as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        key = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
        dec = ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm("AES-256-GCM")
            .set_key(key)
            .set_direction(cs.CipherDirection.DECRYPT)
        )
        dec.init(bytes(12))
        assert dec.update(bytes(3000)) == b""
        with pytest.raises(cs.CryptoError) as err:
            dec.update(bytes(2000))
        assert err.value.code is E.RESOURCE_EXHAUSTED and "4096" in err.value.message
        with pytest.raises(cs.CryptoError) as err:
            dec.finalize()  # the message was discarded
        assert err.value.code is E.INVALID_STATE
        # Encryption refuses up front what decryption could not take (ciphertext + tag).
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm("AES-256-GCM")
            .set_key(key)
            .set_direction(cs.CipherDirection.ENCRYPT)
        )
        enc.init(bytes(12))
        assert len(enc.update(bytes(4080))) == 4080
        with pytest.raises(cs.CryptoError) as err:
            enc.update(b"x")  # 4081 + the 16-byte tag > 4096: nothing is sent
        assert err.value.code is E.RESOURCE_EXHAUSTED and "streaming AEAD" in err.value.message
        with pytest.raises(cs.CryptoError) as err:
            enc.finalize()  # the message was discarded
        assert err.value.code is E.INVALID_STATE
        enc.init(bytes(12))
        sealed = enc.update(b"m" * 4080) + enc.finalize()
        assert len(sealed) == 4096  # exactly the limit: decryption takes it
        dec.init(bytes(12))
        dec.update(sealed)
        assert dec.finalize() == b"m" * 4080
        # The daemon enforces the same bound for a client that does not check first.
        enc.init(bytes(12))
        enc.update(bytes(4000))
        handle = enc._handle
        with pytest.raises(cs.CryptoError) as err:
            stack._channel.call("cipher.update", {"ctx": handle, "data": bytes(81)}, 5)
        assert err.value.code is E.RESOURCE_EXHAUSTED and "4096" in err.value.message
