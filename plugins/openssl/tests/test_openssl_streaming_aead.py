"""Streaming AEAD on the software provider: the per-stream key derived by openssl's HKDF,
segments sealed by its AES-GCM; Tink opens what it seals and the other way round."""

from __future__ import annotations

import io
import os

import pytest

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import KeyOperationPermission as P

pytestmark = pytest.mark.needs_plugins

CONFIG = {
    "providers": [{"name": "openssl", "id": 2}],
    "key_slots": [
        {
            "name": "Backups",
            "algorithm": "AES-256",
            "provider": 2,
            "permissions": ["encrypt", "decrypt"],
            "provision": "generate",
        }
    ],
}


def _tink(raw: bytes, segment: int) -> object:
    from tink import cleartext_keyset_handle, streaming_aead
    from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

    streaming_aead.register()
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0,
        key_value=raw,
        params=aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
            ciphertext_segment_size=segment,
            derived_key_size=len(raw),
            hkdf_hash_type=common_pb2.SHA256,
        ),
    )
    keyset = tink_pb2.Keyset(
        primary_key_id=9,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
                    value=key.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=9,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    return cleartext_keyset_handle.from_keyset(keyset).primitive(streaming_aead.StreamingAead)


def _context(
    ctx: cs.CryptoContext, algorithm: str, key: object, direction: D
) -> cs.StreamingAeadContext:
    return ctx.create_streaming_aead_context(
        cs.StreamingAeadContextConfig()
        .set_algorithm(algorithm)
        .set_key(key)
        .set_direction(direction)
    )


@pytest.mark.parametrize("algorithm", ["AES-128-GCM-HKDF-4KB", "AES-256-GCM-HKDF-1MB"])
def test_openssl_streams_interoperate_with_tink(algorithm: str) -> None:
    pytest.importorskip("tink")
    bits = int(algorithm.split("-")[1])
    segment = 4096 if algorithm.endswith("4KB") else 1 << 20
    with cs.create_crypto_stack(cs.CryptoStackConfig().set_daemon_config(CONFIG)) as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        key = km.generate_key(
            cs.GenerateKeyParams()
            .set_algorithm(f"AES-{bits}")
            .set_permissions(P.ENCRYPT | P.DECRYPT | P.EXPORT)
        )
        tink = _tink(km.export_key(key), segment)
        enc, dec = (
            _context(ctx, algorithm, key, D.ENCRYPT),
            _context(ctx, algorithm, key, D.DECRYPT),
        )
        assert enc.provider == 2
        for size in (0, 17, 2 * segment + 1):
            plaintext = os.urandom(size)
            enc.init(b"tar")
            sealed = enc.update(plaintext) + enc.finalize()
            with tink.new_decrypting_stream(io.BytesIO(sealed), b"tar") as stream:  # type: ignore[attr-defined]
                assert stream.read() == plaintext

            class Kept(io.BytesIO):
                def close(self) -> None:
                    self.kept = self.getvalue()
                    super().close()

            sink = Kept()
            with tink.new_encrypting_stream(sink, b"tar") as stream:  # type: ignore[attr-defined]
                stream.write(plaintext)
            dec.init(b"tar")
            assert dec.update(sink.kept) + dec.finalize() == plaintext


def test_a_slot_key_seals_a_stream_it_never_leaves(tmp_path: object) -> None:
    with cs.create_crypto_stack(cs.CryptoStackConfig().set_daemon_config(CONFIG)) as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("Backups", cs.ResourceType.KEY_SLOT)
        data = os.urandom(3 * (1 << 20) + 11)
        sealed = io.BytesIO()
        _context(ctx, "AES-256-GCM-HKDF-1MB", slot, D.ENCRYPT).process_stream(
            io.BytesIO(data), sealed, b"nightly"
        )
        opened = io.BytesIO()
        _context(ctx, "AES-256-GCM-HKDF-1MB", slot, D.DECRYPT).process_stream(
            io.BytesIO(sealed.getvalue()), opened, b"nightly"
        )
        assert opened.getvalue() == data
        tampered = bytearray(sealed.getvalue())
        tampered[-5] ^= 0x80
        with pytest.raises(cs.CryptoError) as err:
            _context(ctx, "AES-256-GCM-HKDF-1MB", slot, D.DECRYPT).process_stream(
                io.BytesIO(bytes(tampered)), io.BytesIO(), b"nightly"
            )
        assert err.value.code is cs.ErrorCode.AUTHENTICATION_FAILED
