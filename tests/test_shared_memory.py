"""The shared-memory path with a reusable region (issue 14): one region per connection,
sealed against resizing but still writable by the client; what a keyed operation reads from
it is copied into the daemon first; outputs may be written into it; a request reads the
region that was attached when it arrived."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import mmap
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.waiting import Gate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from secutil import RawClient  # noqa: E402

MockConfig = Callable[..., dict[str, Any]]
MiB = 1 << 20
WAIT = 60.0


class Region:
    """A client's reusable region: a memfd sealed against resizing, mapped read-write."""

    def __init__(self, size: int) -> None:
        self.fd = os.memfd_create("cryptostack-shm", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        self.map = mmap.mmap(self.fd, size)

    def write(self, offset: int, data: bytes) -> dict[str, list[int]]:
        self.map[offset : offset + len(data)] = data
        return {"shm": [offset, len(data)]}

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def attach(raw: RawClient, region: Region, message: dict[str, Any]) -> None:
    """``shm.attach``, then ``message`` carrying the region's descriptor (answer not read)."""
    ready = raw.request("shm.attach", {}, 900)
    assert ready["ok"] and ready["result"]["ready"], ready
    raw.send_with_fds(message, [region.fd])


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.close()


def signing_daemon(
    factory: Callable[..., DaemonProcess], mock_config: MockConfig, gate: Gate
) -> DaemonProcess:
    config = mock_config()
    config["providers"][0]["options"] = {"gates": {"sign.update": gate.path}}
    return factory(config)


def hmac_context(raw: RawClient) -> tuple[int, bytes]:
    """A sign context on a fresh exportable HMAC key, and the key's bytes."""
    key = raw.request(
        "key.generate",
        {
            "algorithm": "HMAC-SHA-256",
            "permissions": int(cs.KeyOperationPermission.MAC | cs.KeyOperationPermission.EXPORT),
        },
        10,
    )["result"]["id"]
    secret = raw.request("key.export", {"key": key}, 11)["result"]
    ctx = raw.request("sign.create", {"algorithm": "HMAC-SHA-256", "key": key}, 12)
    return ctx["result"]["ctx"], secret


def test_the_client_reuses_one_writable_region(daemon: DaemonProcess) -> None:
    data = [os.urandom(MiB + i) for i in range(4)]
    with daemon.stack() as stack:
        h = stack.create_crypto_context().create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        transport = stack._channel.transport
        for piece in data:
            assert h.single_shot(piece) == hashlib.sha256(piece).digest()
        region = transport.shm.region
        assert region is not None and transport.shm_transfers == 4
        seals = fcntl.fcntl(region.fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
        assert not seals & fcntl.F_SEAL_WRITE  # reused call after call
        for piece in data:
            h.init()
            h.update(piece)
            assert h.finalize() == hashlib.sha256(piece).digest()
        assert transport.shm.region is region  # no new memfd per call
        key = (
            stack.create_crypto_context()
            .create_key_management_context()
            .generate_key(
                cs.GenerateKeyParams()
                .set_algorithm("AES-256")
                .set_permissions(cs.KeyOperationPermission.ENCRYPT | cs.KeyOperationPermission.EXPORT)
            )
        )
        secret = stack.create_crypto_context().create_key_management_context().export_key(key)
        enc = stack.create_crypto_context().create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm("AES-256-GCM")
            .set_key(key)
            .set_direction(cs.CipherDirection.ENCRYPT)
        )
        # The ciphertext comes back through the region.
        assert enc.encrypt(bytes(12), data[0], b"aad") == AESGCM(secret).encrypt(bytes(12), data[0], b"aad")
        assert transport.shm.region is region


def test_keyed_operations_never_see_the_region_change(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig, gate: Gate
) -> None:
    """The client rewrites its region while the provider is working on the bytes it named:
    the provider signs what the region held when the request ran (the daemon copied it)."""
    d = signing_daemon(daemon_factory, mock_config, gate)
    region = Region(4 * MiB)
    try:
        with RawClient(d.socket_path, timeout=WAIT) as raw:
            ctx, secret = hmac_context(raw)
            original = os.urandom(MiB)
            reference = region.write(0, original)
            attach(raw, region, {"id": 20, "op": "sign.single_shot", "args": {"ctx": ctx, "data": reference}})
            assert gate.wait_arrival(WAIT)  # the provider is about to read the message
            region.write(0, bytes(MiB))  # the client changes it meanwhile
            gate.open()
            reply = raw.recv()
            assert reply["ok"], reply
            assert reply["result"] == hmac.new(secret, original, "sha256").digest()
            # The region stays attached: the next request names it without a descriptor.
            again = raw.request("sign.single_shot", {"ctx": ctx, "data": reference}, 21)
            assert again["result"] == hmac.new(secret, bytes(MiB), "sha256").digest()
    finally:
        region.close()


def test_a_request_reads_the_region_attached_when_it_arrived(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig, gate: Gate
) -> None:
    d = signing_daemon(daemon_factory, mock_config, gate)
    first, second = Region(MiB), Region(MiB)
    try:
        with RawClient(d.socket_path, timeout=WAIT) as raw:
            ctx, secret = hmac_context(raw)
            other, other_secret = hmac_context(raw)
            attach(
                raw,
                first,
                {
                    "id": 20,
                    "op": "sign.single_shot",
                    "args": {"ctx": ctx, "data": first.write(0, b"A" * 1000)},
                },
            )
            assert gate.wait_arrival(WAIT)  # the first request is held in the provider
            # A new region replaces the first for later requests only.
            attach(
                raw,
                second,
                {
                    "id": 21,
                    "op": "sign.single_shot",
                    "args": {"ctx": other, "data": second.write(0, b"B" * 1000)},
                },
            )
            assert gate.wait_arrival(WAIT)
            gate.open()
            answers = {a["id"]: a for a in (raw.recv(), raw.recv())}
            assert answers[20]["result"] == hmac.new(secret, b"A" * 1000, "sha256").digest()
            assert answers[21]["result"] == hmac.new(other_secret, b"B" * 1000, "sha256").digest()
    finally:
        first.close()
        second.close()


def test_outputs_in_the_region(daemon: DaemonProcess) -> None:
    region = Region(4 * MiB)
    try:
        with RawClient(daemon.socket_path, timeout=WAIT) as raw:
            key = raw.request(
                "key.generate",
                {
                    "algorithm": "AES-256",
                    "permissions": int(cs.KeyOperationPermission.ENCRYPT | cs.KeyOperationPermission.EXPORT),
                },
                1,
            )
            key = key["result"]["id"]
            secret = raw.request("key.export", {"key": key}, 2)["result"]
            ctx = raw.request(
                "cipher.create", {"algorithm": "AES-256-GCM", "key": key, "direction": "ENCRYPT"}, 3
            )["result"]["ctx"]
            plaintext = os.urandom(MiB)
            expected = AESGCM(secret).encrypt(bytes(12), plaintext, None)
            attach(
                raw,
                region,
                {
                    "id": 4,
                    "op": "cipher.single_shot",
                    "args": {
                        "ctx": ctx,
                        "iv": bytes(12),
                        "data": region.write(0, plaintext),
                        "out": {"shm": [2 * MiB, MiB + 16]},
                    },
                },
            )
            reply = raw.recv()
            assert reply["ok"] and reply["result"] == {"shm": [2 * MiB, MiB + 16]}, reply
            assert region.map[2 * MiB : 3 * MiB + 16] == expected
            # Too little room: the answer comes inline instead.
            small = raw.request(
                "cipher.single_shot",
                {"ctx": ctx, "iv": bytes(12), "data": {"shm": [0, MiB]}, "out": {"shm": [2 * MiB, 100]}},
                5,
            )
            assert small["result"] == expected
            bad = raw.request(
                "cipher.single_shot",
                {"ctx": ctx, "iv": bytes(12), "data": {"shm": [0, MiB]}, "out": {"shm": [3 * MiB, 2 * MiB]}},
                6,
            )
            assert bad["ok"] is False and bad["error"]["code"] == "INVALID_ARGUMENT"
    finally:
        region.close()


def test_encryption_does_not_give_back_what_another_context_holds(daemon: DaemonProcess) -> None:
    """Regression: an AEAD encryption counted its message against max_buffered_message and,
    at the end, 'released' budget it had never reserved, wiping out what a decryption of the
    same client held."""
    with RawClient(daemon.socket_path, timeout=WAIT) as raw:
        slot = raw.request("resource.resolve", {"name": "PreDeployedSlot", "type": "KEY_SLOT"}, 1)["result"]
        dec = raw.request(
            "cipher.create", {"algorithm": "AES-256-GCM", "key": slot, "direction": "DECRYPT"}, 2
        )["result"]["ctx"]
        enc = raw.request(
            "cipher.create", {"algorithm": "AES-256-GCM", "key": slot, "direction": "ENCRYPT"}, 3
        )["result"]["ctx"]
        assert raw.request("cipher.init", {"ctx": dec, "iv": bytes(12)}, 4)["ok"]
        assert raw.request("cipher.update", {"ctx": dec, "data": bytes(MiB)}, 5)["ok"]

        def held() -> int:
            return int(raw.request("status", {}, 6)["result"]["memory"]["buffered messages"])

        assert held() == MiB
        assert raw.request("cipher.init", {"ctx": enc, "iv": bytes(12)}, 20)["ok"]
        assert raw.request("cipher.update", {"ctx": enc, "data": bytes(100_000)}, 21)["ok"]
        assert raw.request("cipher.finalize", {"ctx": enc}, 22)["ok"]
        assert held() == MiB  # still charged: the decryption still holds its message
        for n in range(3):
            reply = raw.request(
                "cipher.single_shot", {"ctx": enc, "iv": bytes(12), "data": bytes(100_000)}, 7 + n
            )
            assert reply["ok"], reply
        assert held() == MiB
