"""The design's flows on the mock provider, in-process and over a real daemon socket."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.testing.waiting import Gate

IV = bytes(range(16))


def cipher(ctx: cs.CryptoContext, alg: str, key: object, direction: D) -> cs.CipherContext:
    return ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm(alg).set_key(key).set_direction(direction)
    )


def run(c: cs.CipherContext, data: bytes, iv: bytes = IV) -> bytes:
    c.init(iv)
    return c.update(data) + c.finalize()


def test_slot_direct_path(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
    assert slot.type is cs.ResourceType.KEY_SLOT
    plaintext = b"pre-deployed key, slot-direct path" * 3
    ct = run(cipher(ctx, "AES-256-CBC", slot, D.ENCRYPT), plaintext)
    assert len(ct) % 16 == 0 and ct[: len(plaintext)] != plaintext
    assert run(cipher(ctx, "AES-256-CBC", slot, D.DECRYPT), ct) == plaintext


def test_guard_path_two_contexts_share_one_guard(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
    km = ctx.create_key_management_context(cs.KeyManagementContextConfig())
    with km.load_key(slot) as guard:
        assert guard.type is cs.ResourceType.KEY
        assert guard.persistence is cs.ResourcePersistence.PERSISTENT
        assert guard.permitted_operations == P.ENCRYPT | P.DECRYPT
        info = km.get_key_slot_info(slot)
        assert (info.status, info.algorithm, info.provider, info.compatible_providers) == (
            cs.KeySlotStatus.OCCUPIED,
            "AES-256",
            1,
            [1],
        )
        enc = cipher(ctx, "AES-256-CBC", guard, D.ENCRYPT)
        dec = cipher(ctx, "AES-256-CBC", guard, D.DECRYPT)
        ct = run(enc, b"shared guard")
        assert run(dec, ct) == b"shared guard"
        # The guard's key and the slot's key are the same key.
        assert run(cipher(ctx, "AES-256-CBC", slot, D.DECRYPT), ct) == b"shared guard"
    guard.release()  # a second release is harmless
    with pytest.raises(cs.CryptoError) as err:
        cipher(ctx, "AES-256-CBC", guard, D.ENCRYPT)
    assert err.value.code is E.RESOURCE_NOT_FOUND


def test_ephemeral_generate_use_persist(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    eph = km.generate_key(
        cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
    )
    assert eph.type is cs.ResourceType.KEY
    assert eph.persistence is cs.ResourcePersistence.EPHEMERAL
    assert eph.permitted_operations == P.ENCRYPT | P.DECRYPT
    enc = cipher(ctx, "AES-256-GCM", eph, D.ENCRYPT)
    nonce = b"\x01" * 12
    enc.init(nonce)
    enc.update_aad(b"header")
    sealed = enc.update(b"ephemeral secret") + enc.finalize()
    assert len(sealed) == len(b"ephemeral secret") + 16
    target = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
    assert km.get_key_slot_info(target).status is cs.KeySlotStatus.EMPTY
    info = km.persist_key(target, eph)
    assert info.status is cs.KeySlotStatus.OCCUPIED and info.version == 1
    # Copy semantics: the guard still works, and the slot holds the same key.
    for key in (eph, target):
        dec = cipher(ctx, "AES-256-GCM", key, D.DECRYPT)
        dec.init(nonce)
        dec.update_aad(b"header")
        assert dec.update(sealed) == b""  # nothing released before the tag is checked
        assert dec.finalize() == b"ephemeral secret"
    # A tampered message never yields plaintext.
    dec = cipher(ctx, "AES-256-GCM", target, D.DECRYPT)
    dec.init(nonce)
    dec.update_aad(b"header")
    dec.update(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(cs.CryptoError) as err:
        dec.finalize()
    assert err.value.code is E.AUTHENTICATION_FAILED
    assert km.persist_key(target, eph).version == 2


def test_hashing_streaming_single_shot_reset(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("sha256"))
    assert h.algorithm == "SHA-256"
    h.init()
    h.update(b"chunk one, ")
    h.update(b"chunk two")
    assert h.finalize() == hashlib.sha256(b"chunk one, chunk two").digest()
    assert h.single_shot(b"input") == hashlib.sha256(b"input").digest()
    h.reset()
    h.init()
    h.update(b"message two")
    assert h.finalize() == hashlib.sha256(b"message two").digest()
    h.init()
    h.update(b"partial data")
    h.reset()  # abort mid-stream
    h.init()
    h.update(b"correct data")
    out = bytearray(64)
    assert h.finalize_into(out) == 32
    assert bytes(out[:32]) == hashlib.sha256(b"correct data").digest()
    big = bytes(range(256)) * 1024  # goes out as its own update, not coalesced
    h.init()
    h.update(big)
    h.update(b"tail")
    assert h.finalize() == hashlib.sha256(big + b"tail").digest()


def test_wrong_call_order_is_invalid_state(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-512"))
    for bad in (lambda: h.update(b"x"), h.finalize):
        with pytest.raises(cs.CryptoError) as err:
            bad()
        assert err.value.code is E.INVALID_STATE
    h.init()
    with pytest.raises(cs.CryptoError) as err:
        h.init()
    assert err.value.code is E.INVALID_STATE
    h.update(b"ok")
    assert h.finalize() == hashlib.sha512(b"ok").digest()


def test_permissions(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    enc_key = km.generate_key(
        cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
    )
    cipher(ctx, "AES-256-CBC", enc_key, D.ENCRYPT).close()
    with pytest.raises(cs.CryptoError) as err:
        ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(enc_key))
    assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED
    enc_only = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT))
    with pytest.raises(cs.CryptoError) as err:
        cipher(ctx, "AES-256-CBC", enc_only, D.DECRYPT)
    assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED

    slot = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
    perms = ctx.get_key_slot_object(slot).get_permitted_operations()
    assert cs.has_permission(perms, P.SIGN) and not cs.has_permission(perms, P.ENCRYPT)

    auth = km.generate_key(
        cs.GenerateKeyParams().set_algorithm("ECDSA-P256").set_permissions(P.AUTHENTICATION)
    )
    assert auth.permitted_operations == P.SIGN | P.VERIFY | P.MAC | P.AGREE
    signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(auth))
    sig = signer.sign(b"authenticated")
    verifier = ctx.create_verify_context(cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(auth))
    assert verifier.verify(b"authenticated", sig)
    assert not verifier.verify(b"tampered", sig)
    with pytest.raises(cs.CryptoError) as err:
        cipher(ctx, "AES-256-CBC", auth, D.ENCRYPT)
    assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED
    # No EXPORT: the material stays in the daemon.
    with pytest.raises(cs.CryptoError) as err:
        km.export_key(enc_key)
    assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED
    exportable = km.generate_key(
        cs.GenerateKeyParams().set_algorithm("HMAC-SHA-256").set_permissions(P.MAC | P.EXPORT)
    )
    secret = km.export_key(exportable)
    mac = ctx.create_sign_context(
        cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(exportable)
    ).sign(b"m")
    assert mac == hmac.new(secret, b"m", "sha256").digest()


def test_mac_slot_and_truncated_tags(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    slot = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
    tag = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA256").set_key(slot)).sign(
        b"data"
    )
    full = ctx.create_verify_context(cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(slot))
    assert full.verify(b"data", tag)
    assert not full.verify(b"data", tag[:16])  # truncation is opt-in
    short = ctx.create_verify_context(
        cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(slot).set_tag_length(16)
    )
    assert short.verify(b"data", tag[:16])
    assert not short.verify(b"data", bytes(16))


def test_timeouts_default_override_disable(tmp_path: object) -> None:
    # A call that must time out is held at a gate (it can only end at its deadline, however
    # busy the machine); one that must succeed only takes 0.4 s, far within its deadline.
    update_gate, keygen_gate = Gate(), Gate()
    config = {
        "daemon": {"allow_test_providers": True},
        "providers": [
            {
                "name": "mock",
                "id": 1,
                "options": {
                    "delays": {"hash.update": 0.4, "generate_key": 0.4},
                    "gates": {"hash.update": update_gate.path, "generate_key": keygen_gate.path},
                },
            }
        ],
    }
    cfg = (
        cs.CryptoStackConfig()
        .set_connection_endpoint("inproc://")
        .set_daemon_config(config)
        .set_default_operation_timeout(timedelta(milliseconds=100))
    )
    try:
        with cs.create_crypto_stack(cfg) as stack:
            ctx = stack.create_crypto_context()
            # Stack default (100 ms) applies.
            h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
            h.init()
            with pytest.raises(cs.CryptoError) as err:
                h.update(b"x" * 70000)  # large enough to be sent at once; held at the gate
            assert err.value.code is E.OPERATION_TIMED_OUT
            # Error state until closed.
            with pytest.raises(cs.CryptoError) as err:
                h.single_shot(b"x")
            assert err.value.code is E.CONTEXT_IN_ERROR_STATE
            h.close()
            update_gate.open()
            # Per-context override: a generous deadline outlasts the 0.4 s update.
            slow_ok = ctx.create_hash_context(
                cs.HashContextConfig().set_algorithm("SHA-256").set_operation_timeout(timedelta(seconds=30))
            )
            assert slow_ok.single_shot(b"x") == hashlib.sha256(b"x").digest()
            km_tight = ctx.create_key_management_context(
                cs.KeyManagementContextConfig().set_operation_timeout(0.05)
            )
            with pytest.raises(cs.CryptoError) as err:
                km_tight.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
            assert err.value.code is E.OPERATION_TIMED_OUT
            keygen_gate.open()
            # disable_timeout for slow key generation.
            km = ctx.create_key_management_context(cs.KeyManagementContextConfig().disable_timeout())
            assert (
                km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256")).type is cs.ResourceType.KEY
            )
    finally:
        update_gate.close()
        keygen_gate.close()


def test_unknown_names_and_aliases(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    with pytest.raises(cs.CryptoError) as err:
        ctx.resolve_resource("NoSuchSlot", cs.ResourceType.KEY_SLOT)
    assert err.value.code is E.RESOURCE_NOT_FOUND
    empty = ctx.resolve_resource("EmptySlot", cs.ResourceType.KEY_SLOT)
    km = ctx.create_key_management_context()
    assert km.get_key_slot_info(empty).status is cs.KeySlotStatus.EMPTY
    with pytest.raises(cs.CryptoError) as err:
        km.load_key(empty)
    assert err.value.code is E.SLOT_EMPTY
    # A name this client does not know may be a provider's own algorithm: the daemon
    # decides, when the context is created.
    unknown = cs.HashContextConfig().set_algorithm("SHA-999")
    with pytest.raises(cs.CryptoError) as err:
        ctx.create_hash_context(unknown)
    assert err.value.code is E.UNSUPPORTED_ALGORITHM
    assert "SHA-999" in str(err.value)
    with pytest.raises(cs.CryptoError) as err:
        cs.HashContextConfig().set_algorithm("")
    assert err.value.code is E.UNSUPPORTED_ALGORITHM
    with pytest.raises(cs.CryptoError) as err:
        ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-224"))
    assert err.value.code is E.NO_COMPATIBLE_PROVIDER
    assert "SHA-224" in str(err.value)
