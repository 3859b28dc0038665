"""The OpenSSL provider behind a real daemon, through the public API: persistent slots that
survive a restart (persist_key / load_stored_key), interop of exported keys with pyca, KEM
and agreement secrets staying in the daemon, and HMAC truncation."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem, x25519

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

P = cs.KeyOperationPermission
CONFIG = {
    "providers": [{"name": "openssl", "id": 2, "options": {}}],
    "key_slots": [
        {
            "name": "AesSlot",
            "algorithm": "AES-256",
            "provider": 2,
            "permissions": ["encrypt", "decrypt"],
            "provision": "generate",
        },
        {
            "name": "DsaSlot",
            "algorithm": "ML-DSA-65",
            "provider": 2,
            "permissions": ["sign", "verify"],
            "provision": "generate",
        },
        {
            "name": "EmptySlot",
            "algorithm": "X25519",
            "provider": 2,
            "permissions": ["agree", "derive"],
        },
    ],
}


def test_slots_survive_a_restart(tmp_path: Path) -> None:
    iv, message = os.urandom(12), b"persistent secret message"
    peer = x25519.X25519PrivateKey.generate()
    with DaemonProcess(tmp_path, CONFIG) as daemon:
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            aes = ctx.resolve_resource("AesSlot", cs.ResourceType.KEY_SLOT)
            enc = ctx.create_cipher_context(
                cs.CipherContextConfig()
                .set_algorithm("AES-256-GCM")
                .set_key(aes)
                .set_direction(cs.CipherDirection.ENCRYPT)
            )
            enc.init(iv)
            sealed = enc.update(message) + enc.finalize()
            assert enc.provider == 2
            dsa = ctx.resolve_resource("DsaSlot", cs.ResourceType.KEY_SLOT)
            km = ctx.create_key_management_context()
            public = km.export_public_key(dsa)
            signer = ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm("ML-DSA-65").set_key(dsa).set_context(b"app")
            )
            assert signer.get_signature_size() == 3309
            signature = signer.sign(b"signed before restart")
            # fill the empty slot from an ephemeral key (copy semantics)
            empty = ctx.resolve_resource("EmptySlot", cs.ResourceType.KEY_SLOT)
            eph = km.generate_key(
                cs.GenerateKeyParams()
                .set_algorithm("X25519")
                .set_permissions(P.AGREE | P.DERIVE)
                .set_provider(2)
            )
            km.persist_key(empty, eph)
            x_public = km.export_public_key(eph, cs.KeyFormat.RAW)
        daemon.stop()
        daemon.start()
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            aes = ctx.resolve_resource("AesSlot", cs.ResourceType.KEY_SLOT)
            dec = ctx.create_cipher_context(
                cs.CipherContextConfig()
                .set_algorithm("AES-256-GCM")
                .set_key(aes)
                .set_direction(cs.CipherDirection.DECRYPT)
            )
            dec.init(iv)
            assert dec.update(sealed) == b"" and dec.finalize() == message
            dsa = ctx.resolve_resource("DsaSlot", cs.ResourceType.KEY_SLOT)
            km = ctx.create_key_management_context()
            assert km.export_public_key(dsa) == public
            verifier = ctx.create_verify_context(
                cs.VerifyContextConfig().set_algorithm("ML-DSA-65").set_key(dsa).set_context(b"app")
            )
            assert verifier.verify(b"signed before restart", signature)
            assert not verifier.verify(b"something else", signature)
            empty = ctx.resolve_resource("EmptySlot", cs.ResourceType.KEY_SLOT)
            assert km.export_public_key(empty, cs.KeyFormat.RAW) == x_public
            agreement = ctx.create_key_agreement_context(
                cs.KeyAgreementContextConfig()
                .set_algorithm("X25519")
                .set_key(empty)
                .set_derived_key_permissions(P.DERIVE | P.EXPORT)
            )
            shared = km.export_key(agreement.agree(peer.public_key().public_bytes_raw()))
            assert shared == peer.exchange(x25519.X25519PublicKey.from_public_bytes(x_public))
    loaded = ser.load_der_public_key(public)
    assert isinstance(loaded, mldsa.MLDSA65PublicKey)
    loaded.verify(signature, b"signed before restart", b"app")  # pyca agrees


def test_kem_and_mac_through_the_api(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path, {"providers": CONFIG["providers"]}) as daemon:
        with daemon.stack() as stack, stack.create_crypto_context() as ctx:
            km = ctx.create_key_management_context()
            seed = os.urandom(64)
            pair = km.import_key(
                cs.ImportKeyParams()
                .set_algorithm("ML-KEM-768")
                .set_material(seed, cs.KeyFormat.SEED)
                .set_provider(2)
            )
            kem = ctx.create_kem_context(
                cs.KemContextConfig()
                .set_algorithm("ML-KEM-768")
                .set_key(pair)
                .set_derived_key_permissions(P.DERIVE | P.EXPORT)
            )
            ciphertext, ours = kem.encapsulate()
            reference = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
            assert km.export_key(ours) == reference.decapsulate(ciphertext)
            secret, theirs = reference.public_key().encapsulate()
            assert km.export_key(kem.decapsulate(theirs)) == secret
            # HMAC: the full tag, and a truncated one only when the verifier asks for it
            raw = os.urandom(32)
            key = km.import_key(
                cs.ImportKeyParams()
                .set_algorithm("HMAC-SHA-256")
                .set_material(raw, cs.KeyFormat.RAW)
                .set_provider(2)
            )
            tag = ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(key)
            ).sign(b"data")
            assert tag == hmac.new(raw, b"data", hashlib.sha256).digest()
            full = ctx.create_verify_context(
                cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(key)
            )
            assert full.verify(b"data", tag) and not full.verify(b"data", tag[:16])
            truncated = ctx.create_verify_context(
                cs.VerifyContextConfig()
                .set_algorithm("HMAC-SHA-256")
                .set_key(key)
                .set_tag_length(16)
            )
            assert truncated.verify(b"data", tag[:16]) and not truncated.verify(b"data", tag)
