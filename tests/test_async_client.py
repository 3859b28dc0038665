"""The asyncio client: the design's flows (as in test_flows.py) over a real daemon and
in-process, with the same names and semantics as the blocking client, awaited."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess

T = TypeVar("T")
IV = bytes(range(16))


@pytest.fixture(params=["inproc", "unix"])
def async_config(
    request: pytest.FixtureRequest, tmp_path: Path, mock_config: Callable[..., dict[str, Any]]
) -> Iterator[cs.CryptoStackConfig]:
    """A stack config for ``inproc://`` and for a real daemon's socket."""
    if request.param == "inproc":
        yield cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(mock_config())
        return
    with DaemonProcess(tmp_path / "d", mock_config()) as proc:
        yield cs.CryptoStackConfig().set_connection_endpoint(proc.endpoint)


def arun(config: cs.CryptoStackConfig, flow: Callable[[cs.AsyncCryptoContext], Awaitable[T]]) -> T:
    """Run ``flow`` in an asyncio stack's context (``async with`` on both)."""

    async def main() -> T:
        async with cs.create_async_crypto_stack(config) as stack, stack.create_crypto_context() as ctx:
            return await flow(ctx)

    return asyncio.run(main())


async def cipher(ctx: cs.AsyncCryptoContext, alg: str, key: object, direction: D) -> cs.AsyncCipherContext:
    return await ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm(alg).set_key(key).set_direction(direction)
    )


async def streamed(c: cs.AsyncCipherContext, data: bytes, iv: bytes = IV) -> bytes:
    await c.init(iv)
    return await c.update(data) + await c.finalize()


def test_slot_direct_path(async_config: cs.CryptoStackConfig) -> None:
    async def flow(ctx: cs.AsyncCryptoContext) -> None:
        slot = await ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        assert slot.type is cs.ResourceType.KEY_SLOT
        plaintext = b"pre-deployed key, slot-direct path" * 3
        enc = await cipher(ctx, "AES-256-CBC", slot, D.ENCRYPT)
        dec = await cipher(ctx, "AES-256-CBC", slot, D.DECRYPT)
        ct = await streamed(enc, plaintext)
        assert len(ct) % 16 == 0 and ct[: len(plaintext)] != plaintext
        assert await streamed(dec, ct) == plaintext
        # The one-shot calls give the same bytes as the streamed ones.
        assert await enc.encrypt(IV, plaintext) == ct
        assert await dec.decrypt(IV, ct) == plaintext

    arun(async_config, flow)


def test_guard_path_and_async_with(async_config: cs.CryptoStackConfig) -> None:
    async def flow(ctx: cs.AsyncCryptoContext) -> None:
        slot = await ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        km = ctx.create_key_management_context()
        async with await km.load_key(slot) as guard:
            assert isinstance(guard, cs.AsyncCryptoResourceGuard)
            assert guard.type is cs.ResourceType.KEY
            assert guard.persistence is cs.ResourcePersistence.PERSISTENT
            assert guard.permitted_operations == P.ENCRYPT | P.DECRYPT
            info = await km.get_key_slot_info(slot)
            assert (info.status, info.algorithm) == (cs.KeySlotStatus.OCCUPIED, "AES-256")
            async with await cipher(ctx, "AES-256-CBC", guard, D.ENCRYPT) as enc:
                ct = await streamed(enc, b"shared guard")
            dec = await cipher(ctx, "AES-256-CBC", slot, D.DECRYPT)
            assert await streamed(dec, ct) == b"shared guard"
        assert guard.released
        await guard.release()  # a second release is harmless
        with pytest.raises(cs.CryptoError) as err:
            await cipher(ctx, "AES-256-CBC", guard, D.ENCRYPT)
        assert err.value.code is E.RESOURCE_NOT_FOUND

    arun(async_config, flow)


def test_ephemeral_generate_use_persist(async_config: cs.CryptoStackConfig) -> None:
    async def flow(ctx: cs.AsyncCryptoContext) -> None:
        km = ctx.create_key_management_context()
        eph = await km.generate_key(
            cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
        )
        assert eph.persistence is cs.ResourcePersistence.EPHEMERAL
        enc = await cipher(ctx, "AES-256-GCM", eph, D.ENCRYPT)
        nonce = b"\x01" * 12
        sealed = await enc.encrypt(nonce, b"ephemeral secret", b"header")
        assert len(sealed) == len(b"ephemeral secret") + 16
        await enc.init(nonce)
        await enc.update_aad(b"header")
        assert await enc.update(b"ephemeral secret") + await enc.finalize() == sealed
        target = await ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
        info = await km.persist_key(target, eph)
        assert info.status is cs.KeySlotStatus.OCCUPIED and info.version == 1
        for key in (eph, target):
            dec = await cipher(ctx, "AES-256-GCM", key, D.DECRYPT)
            assert await dec.decrypt(nonce, sealed, b"header") == b"ephemeral secret"
        dec = await cipher(ctx, "AES-256-GCM", target, D.DECRYPT)
        for tampered, aad in ((sealed[:-1] + bytes([sealed[-1] ^ 1]), b"header"), (sealed, b"other header")):
            with pytest.raises(cs.CryptoError) as err:
                await dec.decrypt(nonce, tampered, aad)
            assert err.value.code is E.AUTHENTICATION_FAILED
        await dec.init(nonce)
        await dec.update_aad(b"header")
        assert await dec.update(sealed) == b""  # nothing released before the tag is checked
        assert await dec.finalize() == b"ephemeral secret"
        assert (await km.persist_key(target, eph)).version == 2

    arun(async_config, flow)


def test_hashing_streaming_single_shot_reset(async_config: cs.CryptoStackConfig) -> None:
    async def flow(ctx: cs.AsyncCryptoContext) -> None:
        h = await ctx.create_hash_context(cs.HashContextConfig().set_algorithm("sha256"))
        assert h.algorithm == "SHA-256"
        await h.init()
        await h.update(b"chunk one, ")
        await h.update(b"chunk two")
        assert await h.finalize() == hashlib.sha256(b"chunk one, chunk two").digest()
        assert await h.single_shot(b"input") == hashlib.sha256(b"input").digest()
        big = bytes(range(256)) * 4096  # 1 MiB: through shared memory over a daemon
        assert await h.single_shot(big) == hashlib.sha256(big).digest()
        await h.init()
        await h.update(b"partial data")
        await h.reset()  # abort mid-stream
        await h.init()
        await h.update(big)
        await h.update(b"tail")
        out = bytearray(40)
        assert await h.finalize_into(out) == 32
        assert bytes(out[:32]) == hashlib.sha256(big + b"tail").digest()

    arun(async_config, flow)


def test_wrong_call_order_is_invalid_state(async_config: cs.CryptoStackConfig) -> None:
    async def flow(ctx: cs.AsyncCryptoContext) -> None:
        h = await ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-512"))
        for bad in (lambda: h.update(b"x"), h.finalize):
            with pytest.raises(cs.CryptoError) as err:
                await bad()
            assert err.value.code is E.INVALID_STATE
        await h.init()
        with pytest.raises(cs.CryptoError) as err:
            await h.single_shot(b"x")  # a message is in progress
        assert err.value.code is E.INVALID_STATE
        await h.update(b"ok")
        assert await h.finalize() == hashlib.sha512(b"ok").digest()

    arun(async_config, flow)


def test_sign_verify_mac(async_config: cs.CryptoStackConfig) -> None:
    async def flow(ctx: cs.AsyncCryptoContext) -> None:
        km = ctx.create_key_management_context()
        auth = await km.generate_key(
            cs.GenerateKeyParams().set_algorithm("ECDSA-P256").set_permissions(P.AUTHENTICATION)
        )
        signer = await ctx.create_sign_context(
            cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(auth)
        )
        verifier = await ctx.create_verify_context(
            cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(auth)
        )
        sig = await signer.sign(b"authenticated")
        assert await verifier.verify(b"authenticated", sig)
        assert not await verifier.verify(b"tampered", sig)
        await signer.init()
        await signer.update(b"authen")
        await signer.update(b"ticated")
        assert await verifier.verify(b"authenticated", await signer.sign_finalize())
        exportable = await km.generate_key(
            cs.GenerateKeyParams().set_algorithm("HMAC-SHA-256").set_permissions(P.MAC | P.VERIFY | P.EXPORT)
        )
        secret = await km.export_key(exportable)
        mac = await ctx.create_sign_context(
            cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(exportable)
        )
        tag = await mac.mac(b"m")
        assert tag == hmac.new(secret, b"m", "sha256").digest()
        check = await ctx.create_verify_context(
            cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(exportable)
        )
        assert await check.verify(b"m", tag) and not await check.verify(b"n", tag)
        with pytest.raises(cs.CryptoError) as err:
            await signer.mac(b"m")  # ECDSA is not a MAC
        assert err.value.code is E.INVALID_STATE

    arun(async_config, flow)


def test_status_explain_and_certificates(async_config: cs.CryptoStackConfig) -> None:
    async def main() -> None:
        stack = await cs.create_async_crypto_stack(async_config)  # awaited, not async with
        try:
            assert isinstance(stack, cs.AsyncCryptoStack)
            await stack.ping()
            status = await stack.status()
            assert [p["name"] for p in status["providers"]] == ["mock"]
            explained = await stack.explain("AES-256-GCM", "encrypt")
            assert explained and explained[0]["provider"] == 1
            ctx = stack.create_crypto_context()
            cm = ctx.create_certificate_management_context()
            with pytest.raises(cs.CryptoError) as err:
                await cm.import_certificate(b"not a certificate")
            assert err.value.code is E.INVALID_ARGUMENT
            random = await ctx.create_key_management_context().generate_random(48)
            assert len(random) == 48
        finally:
            await stack.close()
        assert stack.closed
        with pytest.raises(cs.CryptoError) as err:
            await stack.ping()
        assert err.value.code is E.CONNECTION_FAILED

    asyncio.run(main())


def test_unknown_names_and_aliases(async_config: cs.CryptoStackConfig) -> None:
    async def flow(ctx: cs.AsyncCryptoContext) -> None:
        with pytest.raises(cs.CryptoError) as err:
            await ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256").set_provider(42))
        assert err.value.code in (E.NO_COMPATIBLE_PROVIDER, E.INVALID_ARGUMENT)
        with pytest.raises(cs.CryptoError) as err:
            await ctx.resolve_resource("NoSuchSlot", cs.ResourceType.KEY_SLOT)
        assert err.value.code is E.RESOURCE_NOT_FOUND

    arun(async_config, flow)


def test_key_versions_and_seal(async_config: cs.CryptoStackConfig) -> None:
    """The asyncio twins of key versions and seal/open: a message sealed before a rotation
    opens after it until its version is retired; an old version loads for decryption only."""

    async def flow(ctx: cs.AsyncCryptoContext) -> None:
        km = ctx.create_key_management_context()
        slot = await ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
        params = cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
        assert (await km.persist_key(slot, await km.generate_key(params))).version == 1
        sealer = ctx.create_seal_context(cs.SealContextConfig().set_key(slot))
        old = await sealer.seal(b"before", b"aad")
        info = await km.persist_key(slot, await km.generate_key(params))
        assert info.version == 2 and [v.version for v in info.versions] == [1, 2]
        assert await sealer.open(old, b"aad") == b"before"
        first = await km.load_key(slot, version=1)
        assert first.version == 1 and not first.permitted_operations & P.ENCRYPT
        await first.release()
        info = await km.set_minimum_version(slot, 2)
        assert info.min_version == 2
        with pytest.raises(cs.CryptoError) as err:
            await sealer.open(old, b"aad")
        assert err.value.code is E.KEY_VERSION_RETIRED
        await km.set_minimum_version(slot, 0)
        assert await sealer.open(old, b"aad") == b"before"
        info = await km.retire_key_version(slot, 1)
        assert [v.state for v in info.versions if v.version == 1] == [cs.KeyVersionState.RETIRED]
        with pytest.raises(cs.CryptoError) as err:
            await sealer.open(old, b"aad")
        assert err.value.code is E.KEY_VERSION_RETIRED
        await sealer.close()

    arun(async_config, flow)
