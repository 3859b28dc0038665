"""Unit tests of the core's building blocks: registry, framing, config, key store, selection."""

from __future__ import annotations

import gc
import os
import sqlite3
import struct
from pathlib import Path
from typing import Any

import cbor2
import pytest

import cryptostack_core as cs
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.sdk import StoredKey
from cryptostack_core.server.config import ConfigError, DaemonConfig
from cryptostack_core.server.keystore import FileKekSource, KeyStore
from cryptostack_core.wire.protocol import FrameDecoder, FrameTooLarge, encode


@pytest.mark.parametrize(
    "alias,canonical",
    [
        ("sha256", "SHA-256"),
        ("SHA-256", "SHA-256"),
        ("HMAC-SHA256", "HMAC-SHA-256"),
        ("hmac_sha_512", "HMAC-SHA-512"),
        ("MLDSA65", "ML-DSA-65"),
        ("ml-kem-768", "ML-KEM-768"),
        ("aes256gcm", "AES-256-GCM"),
        ("SLH_DSA_PURE_SHA2_128S", "SLH-DSA-SHA2-128s"),
        ("chacha20-poly1305", "ChaCha20-Poly1305"),
        ("ed25519", "Ed25519"),
        ("P-256", "ECDSA-P256"),
    ],
)
def test_registry_aliases(alias: str, canonical: str) -> None:
    assert cs.canonical_name(alias) == canonical


def test_registry_sizes_and_unknown() -> None:
    assert cs.REGISTRY.get("ML-DSA-65").signature_size == 3309
    assert cs.REGISTRY.get("ML-KEM-768").ciphertext_size == 1088
    with pytest.raises(cs.CryptoError) as err:
        cs.canonical_name("ROT13")
    assert err.value.code is E.UNSUPPORTED_ALGORITHM


def test_frame_decoder_splits_and_limits() -> None:
    frames = encode({"a": 1}) + encode({"b": b"x" * 1000})
    dec = FrameDecoder(max_frame=4096)
    got = []
    for i in range(0, len(frames), 7):  # byte-by-byte-ish arrival
        got += dec.feed(frames[i : i + 7])
    assert [cbor2.loads(b) for b in got] == [{"a": 1}, {"b": b"x" * 1000}]
    assert dec.pending == 0
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=10).feed(struct.pack(">I", 11))


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda c: c["providers"].append({"name": "mock", "id": 1}), "duplicate provider id 1"),
        (
            lambda c: c["key_slots"].append({"name": "X", "algorithm": "AES-999", "provider": 1}),
            "unknown key algorithm",
        ),
        (
            lambda c: c["key_slots"].append({"name": "X", "algorithm": "AES-256", "provider": 42}),
            "not a configured provider id",
        ),
        (
            lambda c: c["key_slots"].append(
                {
                    "name": "X",
                    "algorithm": "AES-256",
                    "provider": 1,
                    "provision": "generate",
                    "import": "k.bin",
                }
            ),
            "either 'provision' or 'import'",
        ),
        (lambda c: c.setdefault("daemon", {}).update(max_frame_size=10), "max_frame_size"),
        (lambda c: c.setdefault("daemon", {}).update(sockett="x"), "unknown setting(s) sockett"),
        (lambda c: c["key_slots"].append(c["key_slots"][0]), "duplicate name"),
    ],
)
def test_config_errors_name_the_entry(mutate: Any, needle: str) -> None:
    config: dict[str, Any] = {
        "providers": [{"name": "mock", "id": 1}],
        "key_slots": [{"name": "A", "algorithm": "AES-256", "provider": 1}],
    }
    mutate(config)
    with pytest.raises(ConfigError) as err:
        # (key slot algorithms are checked once the providers registered theirs)
        DaemonConfig.from_mapping(config, source="conf.toml").resolve_key_algorithms()
    assert "conf.toml" in str(err.value) and needle in str(err.value)


def test_config_relative_paths_and_preference(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "d.toml"
    path.parent.mkdir()
    path.write_text(
        '[daemon]\nsocket = "run/d.sock"\nprovider_preference = [3, 1]\n'
        '[[providers]]\nname = "mock"\nid = 1\n[[providers]]\nname = "mock"\nid = 3\n'
    )
    config = DaemonConfig.load(path)
    assert config.socket == tmp_path / "etc" / "run" / "d.sock"
    assert config.preference == (3, 1)


def test_keystore_wraps_binds_and_detects_tampering(tmp_path: Path) -> None:
    db = tmp_path / "ks.sqlite3"
    store = KeyStore.open(db)
    secret = os.urandom(32)
    version = store.store_key("Slot", "AES-256", 2, (2, 5), P.ENCRYPT, StoredKey(secret, True))
    assert version == 1
    record, stored = store.load_key("Slot")
    assert stored.blob == secret and record.compatible == (2, 5)
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("ks.sqlite3*"))
    assert secret not in on_disk
    kek = tmp_path / "ks.sqlite3.kek"
    assert (kek.stat().st_mode & 0o777) == 0o600
    # A row copied under another name is refused (its MAC binds the name; the manifest
    # does not list it), and so is the store as a whole.
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO key_slots SELECT 'Other', version, algorithm, provider, "
        "compatible, permissions, export_uids, secret, blob, created, updated, state, "
        "mac FROM key_slots"
    )
    conn.commit()
    conn.close()
    with pytest.raises(cs.CryptoError) as err:
        KeyStore.open(db)
    assert err.value.code is E.INTERNAL_ERROR and "'Other'" in err.value.message
    store = KeyStore.open_unverified(db)
    with pytest.raises(cs.CryptoError) as err:
        store.load_key("Other")
    assert err.value.code is E.INTERNAL_ERROR
    store.close()
    # A store without its KEK is refused; no new KEK appears.
    kek.unlink()
    with pytest.raises(cs.CryptoError) as err:
        KeyStore.open(db)
    assert "missing" in err.value.message and not kek.exists()


def test_kek_file_with_loose_permissions_is_refused(tmp_path: Path) -> None:
    kek = tmp_path / "k.kek"
    kek.write_bytes(os.urandom(32))
    os.chmod(kek, 0o644)
    with pytest.raises(cs.CryptoError) as err:
        FileKekSource().load_or_create(kek)
    assert err.value.code is E.ACCESS_DENIED


def _two_mock_stack(extractable: bool) -> cs.CryptoStack:
    config = {
        "daemon": {"allow_test_providers": True},
        "providers": [
            {
                "name": "mock",
                "id": 1,
                "options": {"algorithms": ["AES-256", "AES-256-CBC"], "extractable": extractable},
            },
            {"name": "mock", "id": 5},
        ],
        "key_slots": [
            {
                "name": "S",
                "algorithm": "AES-256",
                "provider": 1,
                "compatible_providers": [1, 5],
                "provision": "generate",
            }
        ],
    }
    return cs.create_crypto_stack(cs.CryptoStackConfig().set_daemon_config(config))


@pytest.mark.parametrize("extractable", [True, False])
def test_selection_compatible_providers_and_explain(extractable: bool) -> None:
    with _two_mock_stack(extractable) as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("S", cs.ResourceType.KEY_SLOT)
        # Provider 1 does AES-256-CBC itself.
        cands = stack.explain("AES-256-CBC", "encrypt", key=slot)
        assert [(c["provider"], c["taken"]) for c in cands] == [(1, True), (5, False)]
        # Provider 1 lacks AES-256-GCM: only a compatible provider could run it.
        cands = stack.explain("AES-256-GCM", "encrypt", key=slot)
        assert cands[0]["provider"] == 1 and not cands[0]["taken"]
        assert "does not support" in cands[0]["reason"]
        cfg = (
            cs.CipherContextConfig()
            .set_algorithm("AES-256-GCM")
            .set_key(slot)
            .set_direction(cs.CipherDirection.ENCRYPT)
        )
        if extractable:
            assert cands[1]["taken"] and "copied" in cands[1]["reason"]
            assert ctx.create_cipher_context(cfg).provider == 5
        else:
            assert not cands[1]["taken"] and "not extractable" in cands[1]["reason"]
            with pytest.raises(cs.CryptoError) as err:
                ctx.create_cipher_context(cfg)
            assert err.value.code is E.NO_COMPATIBLE_PROVIDER
            assert "not extractable" in err.value.message
        # Without a key: the preference order, or a pinned provider.
        assert [c["taken"] for c in stack.explain("SHA-256", "hash")] == [False, True]
        h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256").set_provider(5))
        assert h.provider == 5


def test_garbage_collected_guard_is_released(inproc_stack: cs.CryptoStack) -> None:
    ctx = inproc_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    guard = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
    rid = guard.resource_id
    del guard
    gc.collect()
    inproc_stack.ping()  # carries the queued release
    me = inproc_stack.status()["clients"][0]
    assert me["guards"] == 0
    with pytest.raises(cs.CryptoError) as err:
        ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm("AES-256-CBC")
            .set_key(rid)
            .set_direction(cs.CipherDirection.ENCRYPT)
        )
    assert err.value.code is E.RESOURCE_NOT_FOUND


def test_inproc_default_config_uses_an_installed_provider_never_the_mock() -> None:
    from cryptostack_core.server.discovery import available_provider_names

    if "openssl" not in available_provider_names():  # the core alone (make test-core-only)
        with pytest.raises(cs.CryptoError) as err:
            cs.create_crypto_stack()
        assert err.value.code is E.PROVIDER_UNAVAILABLE
        assert "no provider installed: pip install cryptostack-openssl" in err.value.message
        return
    with cs.create_crypto_stack() as stack:
        providers = stack.status()["providers"]
        assert [p["name"] for p in providers] == ["openssl"]
        assert all(p["state"] == "ready" for p in providers)
        h = stack.create_crypto_context().create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        assert len(h.single_shot(b"x")) == 32


def test_derivation_and_random(inproc_stack: cs.CryptoStack) -> None:
    ctx = inproc_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    base = km.generate_key(
        cs.GenerateKeyParams().set_algorithm("GENERIC-SECRET").set_permissions(P.DERIVE | P.EXPORT)
    )
    derived = km.derive_key(
        cs.DeriveKeyParams()
        .set_key(base)
        .set_info(b"ctx")
        .set_output("AES-256")
        .set_permissions(P.ENCRYPT | P.EXPORT)
    )
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    expected = HKDF(hashes.SHA256(), 32, None, b"ctx").derive(km.export_key(base))
    assert km.export_key(derived) == expected
    assert len(km.generate_random(100)) == 100
    with pytest.raises(cs.CryptoError) as err:
        km.generate_random(0)
    assert err.value.code is E.INVALID_ARGUMENT
