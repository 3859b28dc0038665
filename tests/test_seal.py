"""Seal and open (issue 14, item 4): AEAD on a key slot where the daemon picks the nonce and
the output names the key version, so messages open across a rotation; every altered byte
is AUTHENTICATION_FAILED; a retired version is named. Checked against pyca's AES-GCM with
the format of docs/protocol.md."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import cryptostack_core as cs

P = cs.KeyOperationPermission
E = cs.ErrorCode


def _import(km: cs.KeyManagementContext, material: bytes) -> cs.CryptoResourceGuard:
    return km.import_key(
        cs.ImportKeyParams()
        .set_algorithm("AES-256")
        .set_material(material, cs.KeyFormat.RAW)
        .set_permissions(P.ENCRYPT | P.DECRYPT)
    )


def _setup(
    stack: cs.CryptoStack,
) -> tuple[cs.CryptoContext, cs.KeyManagementContext, cs.CryptoResourceId, cs.SealContext]:
    ctx = stack.create_crypto_context()
    km = ctx.create_key_management_context()
    slot = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
    return ctx, km, slot, ctx.create_seal_context(cs.SealContextConfig().set_key(slot))


def test_sealed_format_matches_the_documentation(any_stack: cs.CryptoStack) -> None:
    _ctx, km, slot, sealer = _setup(any_stack)
    material = os.urandom(32)
    km.persist_key(slot, _import(km, material))
    sealed = sealer.seal(b"hello", b"context")
    assert len(sealed) == 34 + 5
    form, algorithm, version, nonce = struct.unpack(">BBI12s", sealed[:18])
    assert (form, algorithm, version) == (1, 3, 1)  # AES-256-GCM, version 1
    # An independent implementation opens it: header || aad is the associated data.
    assert AESGCM(material).decrypt(nonce, sealed[18:], sealed[:18] + b"context") == b"hello"
    assert sealer.open(sealed, b"context") == b"hello"
    assert sealer.seal(b"hello", b"context")[6:18] != nonce  # a fresh nonce every time
    assert sealer.open(sealer.seal(b""), b"") == b""


def test_seal_and_open_across_a_rotation(any_stack: cs.CryptoStack) -> None:
    _ctx, km, slot, sealer = _setup(any_stack)
    km.persist_key(slot, _import(km, os.urandom(32)))
    old = sealer.seal(b"before the rotation")
    km.persist_key(slot, _import(km, os.urandom(32)))
    new = sealer.seal(b"after the rotation")
    assert struct.unpack(">I", old[2:6])[0] == 1 and struct.unpack(">I", new[2:6])[0] == 2
    assert sealer.open(old) == b"before the rotation"
    assert sealer.open(new) == b"after the rotation"
    # Another context on another connection finds versions by itself too.
    other = any_stack.create_crypto_context().create_seal_context(cs.SealContextConfig().set_key(slot))
    assert other.open(old) == b"before the rotation"


def test_anything_altered_fails_authentication(any_stack: cs.CryptoStack) -> None:
    _ctx, km, slot, sealer = _setup(any_stack)
    km.persist_key(slot, _import(km, os.urandom(32)))
    km.persist_key(slot, _import(km, os.urandom(32)))
    sealed = sealer.seal(b"a message of some length", b"aad")
    cases = {
        f"byte {i} flipped": sealed[:i] + bytes([sealed[i] ^ 1]) + sealed[i + 1 :]
        for i in (0, 1, 5, 6, 17, 18, len(sealed) - 17, len(sealed) - 1)
    }
    cases["version 2 -> 1 (exists)"] = sealed[:2] + struct.pack(">I", 1) + sealed[6:]
    cases["version never made"] = sealed[:2] + struct.pack(">I", 77) + sealed[6:]
    cases["version 0"] = sealed[:2] + struct.pack(">I", 0) + sealed[6:]
    cases["algorithm ChaCha20"] = sealed[:1] + bytes([4]) + sealed[2:]
    cases["truncated tag"] = sealed[:-1]
    cases["header only"] = sealed[:18]
    cases["empty"] = b""
    for name, forged in cases.items():
        with pytest.raises(cs.CryptoError) as err:
            sealer.open(forged, b"aad")
        assert err.value.code is E.AUTHENTICATION_FAILED, (name, err.value)
    with pytest.raises(cs.CryptoError) as err:
        sealer.open(sealed, b"other aad")
    assert err.value.code is E.AUTHENTICATION_FAILED


def test_a_retired_version_is_named(any_stack: cs.CryptoStack) -> None:
    _ctx, km, slot, sealer = _setup(any_stack)
    km.persist_key(slot, _import(km, os.urandom(32)))
    old = sealer.seal(b"v1")
    km.persist_key(slot, _import(km, os.urandom(32)))
    km.set_minimum_version(slot, 2)
    with pytest.raises(cs.CryptoError) as err:
        sealer.open(old)
    assert err.value.code is E.KEY_VERSION_RETIRED and "version 1" in err.value.message
    km.set_minimum_version(slot, 0)
    assert sealer.open(old) == b"v1"
    km.retire_key_version(slot, 1)
    with pytest.raises(cs.CryptoError) as err:
        sealer.open(old)
    assert err.value.code is E.KEY_VERSION_RETIRED
    assert "version 1" in err.value.message and "retired" in err.value.message


def test_seal_refuses_what_it_cannot_do_safely(any_stack: cs.CryptoStack) -> None:
    ctx, km, _slot, sealer = _setup(any_stack)
    with pytest.raises(cs.CryptoError) as err:
        sealer.seal(b"x")  # empty slot
    assert err.value.code is E.SLOT_EMPTY
    key = _import(km, os.urandom(32))
    with pytest.raises(cs.CryptoError) as err:  # a guard: the version would be unknown
        ctx.create_seal_context(cs.SealContextConfig().set_key(key))
    assert err.value.code is E.INVALID_ARGUMENT
    mac = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
    with pytest.raises(cs.CryptoError) as err:
        ctx.create_seal_context(cs.SealContextConfig().set_key(mac)).seal(b"x")
    assert err.value.code is E.INVALID_ARGUMENT and "HMAC-SHA-256" in err.value.message
    with pytest.raises(cs.CryptoError) as err:
        sealer.seal("text")  # type: ignore[arg-type]
    assert err.value.code is E.INVALID_ARGUMENT
