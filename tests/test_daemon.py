"""The daemon as a process: sockets, crashes, hostile input, concurrency, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import ErrorCode as E
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.waiting import Gate, eventually

MockConfig = Callable[..., dict[str, Any]]

IV = bytes(16)


class RawClient:
    """Speaks the wire protocol by hand, to send what a real client never would."""

    def __init__(self, path: Path, hello: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.buf = b""
        if hello:
            self.send({"hello": {"versions": [1], "client": "raw-test"}})
            assert self.recv()["hello"]["version"] == 1

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: Any) -> None:
        body = cbor2.dumps(message)
        self.send_raw(struct.pack(">I", len(body)) + body)

    def recv(self) -> dict[str, Any]:
        while True:
            if len(self.buf) >= 4:
                (size,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + size:
                    body, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
                    result: dict[str, Any] = cbor2.loads(body)
                    return result
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def request(self, op: str, args: Any, request_id: int = 1) -> dict[str, Any]:
        self.send({"id": request_id, "op": op, "args": args})
        return self.recv()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()


def error_code(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    code: str = reply["error"]["code"]
    assert reply["error"]["message"]
    return code


def test_socket_mode_status_and_clean_shutdown(daemon: DaemonProcess) -> None:
    mode = stat.S_IMODE(os.stat(daemon.socket_path).st_mode)
    assert mode == 0o660
    assert stat.S_ISSOCK(os.stat(daemon.socket_path).st_mode)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cryptostack_core",
            "status",
            "--endpoint",
            daemon.endpoint,
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(out.stdout)
    assert [p["name"] for p in status["providers"]] == ["mock"]
    assert {s["name"]: s["status"] for s in status["key_slots"]}["PreDeployedSlot"] == "OCCUPIED"
    text = subprocess.run(
        [sys.executable, "-m", "cryptostack_core", "status", "--endpoint", daemon.endpoint],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "PreDeployedSlot" in text and "mock" in text
    assert daemon.stop() == 0
    assert not daemon.socket_path.exists()


def test_sigint_also_shuts_down_cleanly(daemon: DaemonProcess) -> None:
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGINT)
    assert daemon.process.wait(10) == 0
    assert not daemon.socket_path.exists()


def test_bad_config_is_refused_with_file_entry_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        textwrap.dedent("""
        [daemon]
        socket = "d.sock"
        [[providers]]
        name = "mock"
        id = 1
        [[key_slots]]
        name = "Broken"
        algorithm = "AES-256"
        provider = 1
        permissions = ["encrypt", "teleport"]
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cryptostack_core", "daemon", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "Broken" in proc.stderr and "teleport" in proc.stderr
    assert not (tmp_path / "d.sock").exists()


def test_provider_that_fails_to_load_is_reported(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    config = mock_config()
    config["providers"] += [{"name": "mock", "id": 9, "options": {"unavailable": "no token"}}]
    config["providers"][1]["name"] = "mock"
    config["providers"] = [config["providers"][0], {"name": "nosuchprovider", "id": 8, "optional": True}]
    d = daemon_factory(config)
    with d.stack() as stack:
        providers = {p["id"]: p for p in stack.status()["providers"]}
        assert providers[1]["state"] == "ready"
        assert providers[8]["state"] == "unavailable"
        assert "nosuchprovider" in providers[8]["reason"]
        h = stack.create_crypto_context().create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        assert len(h.single_shot(b"still serving")) == 32


def test_hostile_input_gets_errors_and_never_harms_others(daemon: DaemonProcess) -> None:
    with daemon.stack() as bystander:
        ctx = bystander.create_crypto_context()
        h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        h.init()
        h.update(b"before ")

        # No hello first: error, connection closed.
        raw = RawClient(daemon.socket_path, hello=False)
        raw.send({"id": 1, "op": "ping", "args": {}})
        assert error_code(raw.recv()) == "PROTOCOL_ERROR"
        assert raw.closed()

        raw = RawClient(daemon.socket_path)
        # Garbage CBOR inside a well-formed frame: an error, the connection stays usable.
        raw.send_raw(struct.pack(">I", 3) + b"\xff\xfe\xfd")
        assert error_code(raw.recv()) == "PROTOCOL_ERROR"
        assert raw.request("ping", {}, 2) == {"id": 2, "ok": True, "result": "pong"}
        # Unknown operation, wrong argument types, unknown ids, wrong call order.
        assert error_code(raw.request("launch.missiles", {}, 3)) == "PROTOCOL_ERROR"
        assert error_code(raw.request("hash.create", {"algorithm": 256}, 4)) == "INVALID_ARGUMENT"
        assert (
            error_code(raw.request("hash.create", {"algorithm": "SHA-256", "provider": "one"}, 5))
            == "INVALID_ARGUMENT"
        )
        assert error_code(raw.request("hash.update", {"ctx": 999, "data": b"x"}, 6)) == "RESOURCE_NOT_FOUND"
        assert (
            error_code(raw.request("key.load", {"slot": {"type": "KEY_SLOT", "handle": 4242}}, 7))
            == "RESOURCE_NOT_FOUND"
        )
        assert error_code(raw.request("key.load", {"slot": "PreDeployedSlot"}, 8)) == "INVALID_ARGUMENT"
        created = raw.request("hash.create", {"algorithm": "SHA-256"}, 9)
        ctx_id = created["result"]["ctx"]
        assert error_code(raw.request("hash.finalize", {"ctx": ctx_id}, 10)) == "INVALID_STATE"
        assert error_code(raw.request("hash.update", {"ctx": ctx_id, "data": b"x"}, 11)) == "INVALID_STATE"
        assert raw.request("hash.init", {"ctx": ctx_id}, 12)["ok"]
        assert (
            error_code(raw.request("hash.update", {"ctx": ctx_id, "data": "text"}, 13)) == "INVALID_ARGUMENT"
        )
        assert error_code(raw.request("hash.update", {"ctx": ctx_id}, 14)) == "INVALID_ARGUMENT"
        raw.send({"op": "ping"})  # no id
        assert error_code(raw.recv()) == "PROTOCOL_ERROR"
        raw.send([1, 2, 3])  # not a map
        assert error_code(raw.recv()) == "PROTOCOL_ERROR"
        raw.close()

        # An oversized frame: error, then the connection is closed.
        raw = RawClient(daemon.socket_path)
        raw.send_raw(struct.pack(">I", 0xFFFFFFF0))
        assert error_code(raw.recv()) == "PROTOCOL_ERROR"
        assert raw.closed()

        # A truncated frame followed by a hang-up.
        raw = RawClient(daemon.socket_path)
        raw.send_raw(struct.pack(">I", 100) + b"\xa1" * 10)
        raw.close()

        # The bystander's stream is intact throughout.
        h.update(b"after")
        import hashlib

        assert h.finalize() == hashlib.sha256(b"before after").digest()
        # the hostile connections go away
        eventually(lambda: len(bystander.status()["clients"]) == 1, 30, "hostile clients gone")


def test_killed_client_resources_freed_and_other_stream_completes(daemon: DaemonProcess) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        import cryptostack_core as cs
        stack = cs.create_crypto_stack(cs.CryptoStackConfig().set_connection_endpoint(
            {daemon.endpoint!r}))
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        keys = [km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
                for _ in range(3)]
        hs = [ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
              for _ in range(4)]
        for h in hs:
            h.init()
        print("ready", flush=True)
        while True:
            for h in hs:
                h.update(b"x" * 70000)
            time.sleep(0.01)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with daemon.stack() as other:
            ctx = other.create_crypto_context()
            h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
            h.init()
            h.update(b"a" * 100000)
            clients = {c["pid"]: c for c in other.status()["clients"]}
            assert clients[child.pid]["contexts"] == 4 and clients[child.pid]["guards"] == 3
            child.kill()
            child.wait()
            eventually(
                lambda: child.pid not in {c["pid"] for c in other.status()["clients"]},
                30,
                "the killed client's resources freed",
            )
            h.update(b"b" * 100000)
            import hashlib

            assert h.finalize() == hashlib.sha256(b"a" * 100000 + b"b" * 100000).digest()
            me = {c["pid"]: c for c in other.status()["clients"]}[os.getpid()]
            assert me["contexts"] == 1
    finally:
        child.kill()
        child.wait()


def test_persist_survives_sigkill(daemon: DaemonProcess) -> None:
    plaintext = b"durable" * 5
    with daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        eph = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-CBC").set_key(eph).set_direction(D.ENCRYPT)
        )
        enc.init(IV)
        ct = enc.update(plaintext) + enc.finalize()
        km.persist_key(ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT), eph)
        daemon.kill()  # right after persist_key returned
    daemon.start()
    with daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
        dec = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-CBC").set_key(slot).set_direction(D.DECRYPT)
        )
        dec.init(IV)
        assert dec.update(ct) + dec.finalize() == plaintext
    # The key store holds no plaintext key material.
    raw = (daemon.directory / "keystore.sqlite3").read_bytes()
    wal = daemon.directory / "keystore.sqlite3-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert b"AES-256\0" not in raw  # the mock's serialisation is wrapped


def test_slow_provider_call_does_not_stall_other_clients(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    gate = Gate()
    config = mock_config()
    config["providers"].append({"name": "mock", "id": 9, "options": {"gates": {"generate_key": gate.path}}})
    config["providers"][1]["name"] = "mock"
    d = daemon_factory(config)
    done = threading.Event()

    def slow() -> None:
        with d.stack() as stack:
            km = stack.create_crypto_context().create_key_management_context()
            km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256").set_provider(9))
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert gate.wait_arrival(30)  # the slow call is now held inside provider 9
        with d.stack() as fast:
            h = fast.create_crypto_context().create_hash_context(
                cs.HashContextConfig().set_algorithm("SHA-256")
            )
            for _ in range(20):
                h.single_shot(b"quick")
            assert not done.is_set(), "the fast client waited for the slow one"
    finally:
        gate.close()
    thread.join(30)
    assert done.is_set()


def test_a_late_answer_to_a_timed_out_call_frees_what_it_made(
    mock_config: MockConfig,
    daemon_factory: Callable[..., DaemonProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression (a CI run of the kit's gate check): the client gives up at its deadline
    while the daemon's deadline, counted from the request's arrival, comes later. A
    key.generate the provider finished in between was answered with a key nobody held, and
    the key stayed in the daemon until the client disconnected. The client now frees what a
    late answer made with its next request. Here the daemon is told a far later deadline,
    so the window is as wide as the test needs."""
    gate = Gate()
    config = mock_config()
    config["providers"].append({"name": "mock", "id": 9, "options": {"gates": {"generate_key": gate.path}}})
    d = daemon_factory(config)
    try:
        with d.stack() as stack:
            transport = stack._channel.transport
            request = transport.protocol.request

            def later_for_the_daemon(op: str, args: Any, timeout: float | None) -> Any:
                return request(op, args, 60.0 if op == "key.generate" else timeout)

            monkeypatch.setattr(transport.protocol, "request", later_for_the_daemon)
            km = stack.create_crypto_context().create_key_management_context(
                cs.KeyManagementContextConfig().set_operation_timeout(0.3)
            )
            with pytest.raises(cs.CryptoError) as err:
                km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256").set_provider(9))
            assert err.value.code is E.OPERATION_TIMED_OUT
            assert gate.wait_arrival(30)
            gate.open()  # the provider finishes: the daemon answers with a key

            def mine() -> dict[str, Any]:
                clients = stack.status()["clients"]
                return next(c for c in clients if c["pid"] == os.getpid())

            # The late answer is read by a later call, whose successor frees the key.
            eventually(lambda: mine()["guards"] == 0, 30, "the late key to be freed")
            assert mine()["resources"] == 0
    finally:
        gate.close()


def test_a_late_answer_frees_what_it_made_on_the_asyncio_client(
    mock_config: MockConfig,
    daemon_factory: Callable[..., DaemonProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The asyncio twin of the test above: a key made by a request the task gave up on is
    released with the connection's next request."""
    gate = Gate()
    config = mock_config()
    config["providers"].append({"name": "mock", "id": 9, "options": {"gates": {"generate_key": gate.path}}})
    d = daemon_factory(config)

    async def flow() -> None:
        config = cs.CryptoStackConfig().set_connection_endpoint(d.endpoint)
        async with cs.create_async_crypto_stack(config) as stack, stack.create_crypto_context() as ctx:
            transport = stack._channel.transport
            request = transport.protocol.request

            def later_for_the_daemon(op: str, args: Any, timeout: float | None) -> Any:
                return request(op, args, 60.0 if op == "key.generate" else timeout)

            monkeypatch.setattr(transport.protocol, "request", later_for_the_daemon)
            km = ctx.create_key_management_context(cs.KeyManagementContextConfig().set_operation_timeout(0.3))
            with pytest.raises(cs.CryptoError) as err:
                await km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256").set_provider(9))
            assert err.value.code is E.OPERATION_TIMED_OUT
            assert await asyncio.to_thread(gate.wait_arrival, 30)
            gate.open()  # the provider finishes: the daemon answers with a key

            async def guards() -> int:
                clients = (await stack.status())["clients"]
                return int(next(c for c in clients if c["pid"] == os.getpid())["guards"])

            for _ in range(1500):  # the late answer is read by one call, freed with the next
                if await guards() == 0:
                    break
                await asyncio.sleep(0.02)
            assert await guards() == 0

    try:
        asyncio.run(flow())
    finally:
        gate.close()


def test_timeout_over_socket_puts_context_in_error_state_only(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    gate = Gate()  # hash.finalize is held until the end of the test
    config = mock_config()
    config["providers"][0]["options"] = {"gates": {"hash.finalize": gate.path}}
    d = daemon_factory(config)
    with d.stack(timeout=30) as stack:
        ctx = stack.create_crypto_context()
        slow = ctx.create_hash_context(
            cs.HashContextConfig().set_algorithm("SHA-256").set_operation_timeout(0.2)
        )
        other = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256").disable_timeout())
        with pytest.raises(cs.CryptoError) as err:
            slow.single_shot(b"x")  # held at finalize: can only end at the client's deadline
        assert err.value.code is E.OPERATION_TIMED_OUT
        gate.open()
        with pytest.raises(cs.CryptoError) as err:
            slow.single_shot(b"x")  # again
        assert err.value.code is E.CONTEXT_IN_ERROR_STATE
        # The same connection and the other context keep working.
        assert len(other.single_shot(b"y")) == 32
        slow.close()
        counts = {c["pid"]: c for c in stack.status()["clients"]}[os.getpid()]
        assert counts["contexts"] == 1


def test_eight_concurrent_clients(daemon: DaemonProcess) -> None:
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with daemon.stack() as stack:
                ctx = stack.create_crypto_context()
                slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
                for i in range(30):
                    msg = f"client {n} message {i}".encode()
                    enc = ctx.create_cipher_context(
                        cs.CipherContextConfig()
                        .set_algorithm("AES-256-CBC")
                        .set_key(slot)
                        .set_direction(D.ENCRYPT)
                    )
                    enc.init(IV)
                    ct = enc.update(msg) + enc.finalize()
                    enc.close()
                    dec = ctx.create_cipher_context(
                        cs.CipherContextConfig()
                        .set_algorithm("AES-256-CBC")
                        .set_key(slot)
                        .set_direction(D.DECRYPT)
                    )
                    dec.init(IV)
                    assert dec.update(ct) + dec.finalize() == msg
                    dec.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_per_client_context_limit(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(mock_config(max_contexts_per_client=3))
    with d.stack() as stack:
        ctx = stack.create_crypto_context()
        cfg = cs.HashContextConfig().set_algorithm("SHA-256")
        held = [ctx.create_hash_context(cfg) for _ in range(3)]
        with pytest.raises(cs.CryptoError) as err:
            ctx.create_hash_context(cfg)
        assert err.value.code is E.RESOURCE_EXHAUSTED
        held[0].close()
        ctx.create_hash_context(cfg)


def test_audit_log_records_identity_and_never_secrets(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    d = daemon_factory(mock_config(audit_log=str(audit)))
    with d.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        key = km.generate_key(
            cs.GenerateKeyParams()
            .set_algorithm("HMAC-SHA-256")
            .set_permissions(cs.KeyOperationPermission.MAC | cs.KeyOperationPermission.EXPORT)
        )
        secret = km.export_key(key)
        ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(key)).sign(b"m")
        with pytest.raises(cs.CryptoError):
            ctx.create_cipher_context(
                cs.CipherContextConfig().set_algorithm("AES-256-CBC").set_key(key).set_direction(D.ENCRYPT)
            )
    d.stop()
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    actions = [(e["action"], e["result"]) for e in events]
    assert ("key.generate", "ok") in actions and ("key.export", "ok") in actions
    assert ("key.use", "ok") in actions
    assert ("key.use", "KEY_OPERATION_NOT_PERMITTED") in actions
    assert all(e["client"]["pid"] == os.getpid() and e["client"]["uid"] == os.getuid() for e in events)
    text = audit.read_text()
    assert secret.hex() not in text and secret.hex().upper() not in text


def test_shared_memory_path_for_large_buffers(daemon: DaemonProcess) -> None:
    import array
    import fcntl
    import hashlib

    big = os.urandom(3 << 20)
    with daemon.stack() as stack:
        h = stack.create_crypto_context().create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        h.init()
        h.update(big)
        h.update(big[:1000])
        assert h.finalize() == hashlib.sha256(big + big[:1000]).digest()
        assert stack._channel.transport.shm_transfers == 1  # type: ignore[attr-defined]
    # Hostile use of the shared-memory operations (the descriptor rides with SCM_RIGHTS).
    raw = RawClient(daemon.socket_path)

    def with_fd(message: dict[str, Any], fd: int) -> dict[str, Any]:
        assert raw.request("shm.attach", {}, 90)["result"] == {"ready": True}
        body = cbor2.dumps(message)
        raw.sock.sendmsg(
            [struct.pack(">I", len(body)) + body],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())],
        )
        return raw.recv()

    ctx_id = raw.request("hash.create", {"algorithm": "SHA-256"}, 3)["result"]["ctx"]
    with open(daemon.config_path, "rb") as not_a_memfd:
        reply = with_fd({"id": 1, "op": "hash.init", "args": {"ctx": ctx_id}}, not_a_memfd.fileno())
    assert error_code(reply) == "INVALID_ARGUMENT" and reply["error"]["shm_refused"] is True
    fd = os.memfd_create("cryptostack-shm", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 8192)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    assert with_fd({"id": 2, "op": "hash.init", "args": {"ctx": ctx_id}}, fd)["ok"]
    reply = raw.request("hash.update", {"ctx": ctx_id, "data": {"shm": [4096, 8192]}}, 5)
    assert error_code(reply) == "INVALID_ARGUMENT"
    assert raw.request("hash.update", {"ctx": ctx_id, "data": {"shm": [0, 8192]}}, 6)["ok"]
    assert raw.request("hash.finalize", {"ctx": ctx_id}, 7)["result"] == hashlib.sha256(bytes(8192)).digest()
    # A descriptor on a frame not announced by shm.attach never reaches the daemon's frames.
    os.close(fd)
    raw.close()


def test_silent_and_non_reading_clients_are_contained(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(mock_config(hello_timeout=0.3))
    silent = RawClient(d.socket_path, hello=False)
    reply = silent.recv()  # nothing sent: the daemon gives up on us
    assert error_code(reply) == "PROTOCOL_ERROR" and "hello" in reply["error"]["message"]
    assert silent.closed()
    # A client that floods requests and never reads: the daemon stops reading it instead
    # of buffering answers without bound, and keeps serving others.
    flood = RawClient(d.socket_path)
    flood.sock.setblocking(False)
    body = cbor2.dumps({"id": 1, "op": "status", "args": {}})
    frame = struct.pack(">I", len(body)) + body
    sent = 0
    try:
        for _ in range(200000):
            flood.sock.send(frame * 64)
            sent += 64
    except BlockingIOError:
        pass
    assert sent < 200000 * 64  # the socket filled up: the daemon stopped reading
    with d.stack() as other:
        assert other.status()["providers"][0]["state"] == "ready"
    flood.close()
