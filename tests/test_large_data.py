"""Large data just works (issue 11, finding 5): buffers of any size are split by the client
under one deadline, AEAD refuses up front what the daemon could not decrypt, and the
streaming AEAD (Tink's AES-GCM-HKDF format) handles data of any size in bounded memory.

The big runs read the daemon's peak resident set (VmHWM) to show its memory does not grow
with the data."""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess

MockConfig = Callable[..., dict[str, Any]]
MiB = 1 << 20
STREAMING = ["AES-128-GCM-HKDF-4KB", "AES-256-GCM-HKDF-4KB", "AES-128-GCM-HKDF-1MB", "AES-256-GCM-HKDF-1MB"]


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) / 1024


def reset_peak_rss(pid: int) -> None:
    """Restart VmHWM from the current resident set (Linux clear_refs value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def streaming(ctx: cs.CryptoContext, algorithm: str, key: Any, direction: D) -> cs.StreamingAeadContext:
    return ctx.create_streaming_aead_context(
        cs.StreamingAeadContextConfig().set_algorithm(algorithm).set_key(key).set_direction(direction)
    )


@pytest.fixture
def big_daemon(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig
) -> Iterator[DaemonProcess]:
    d = daemon_factory(mock_config())
    assert d.process is not None
    yield d


def test_256_mib_update_in_pieces_with_the_daemon_memory_bounded(big_daemon: DaemonProcess) -> None:
    assert big_daemon.process is not None
    pid = big_daemon.process.pid
    data = bytes(256 * MiB)  # zero pages: cheap to make, still 256 MiB through the API
    with big_daemon.stack(timeout=60) as stack:
        h = stack.create_crypto_context().create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        h.single_shot(b"warm up")
        reset_peak_rss(pid)
        before = peak_rss_mib(pid)
        started = time.monotonic()
        h.init()
        h.update(data)  # one call: the client splits it below the daemon's frame limit
        digest = h.finalize()
        elapsed = time.monotonic() - started
        growth = peak_rss_mib(pid) - before
    assert digest == hashlib.sha256(data).digest()
    print(f"256 MiB update: {elapsed:.2f} s, daemon peak RSS +{growth:.1f} MiB")
    assert growth < 96, f"the daemon grew by {growth:.0f} MiB for a 256 MiB update"


def test_a_large_update_honours_its_deadline_between_pieces(big_daemon: DaemonProcess) -> None:
    data = bytes(256 * MiB)
    with big_daemon.stack(timeout=10) as stack:
        ctx = stack.create_crypto_context()
        h = ctx.create_hash_context(
            cs.HashContextConfig().set_algorithm("SHA-256").set_operation_timeout(0.02)
        )
        h.init()
        started = time.monotonic()
        with pytest.raises(cs.CryptoError) as err:
            h.update(data)
        elapsed = time.monotonic() - started
        assert err.value.code is E.OPERATION_TIMED_OUT
        assert elapsed < 2.0, f"a 20 ms deadline took {elapsed:.2f} s to be honoured"
        assert h.in_error_state
        with pytest.raises(cs.CryptoError) as err:
            h.update(b"more")
        assert err.value.code is E.CONTEXT_IN_ERROR_STATE
        h.close()
        # The connection stays usable.
        other = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        assert other.single_shot(b"abc") == hashlib.sha256(b"abc").digest()


def test_pieces_fit_a_small_frame_limit(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig
) -> None:
    """With a 64 KiB frame limit, 3 MiB cipher and hash updates still go through."""
    d = daemon_factory(mock_config(max_frame_size=64 * 1024))
    key_bytes = os.urandom(32)
    plaintext = os.urandom(3 * MiB + 5)
    with d.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        key = km.import_key(
            cs.ImportKeyParams()
            .set_algorithm("AES-256")
            .set_material(key_bytes, cs.KeyFormat.RAW)
            .set_permissions(P.ENCRYPT | P.DECRYPT)
        )
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-CBC").set_key(key).set_direction(D.ENCRYPT)
        )
        enc.init(bytes(16))
        ciphertext = enc.update(plaintext) + enc.finalize()
        reference = Cipher(algorithms.AES(key_bytes), modes.CBC(bytes(16))).encryptor()
        padded = plaintext + bytes([16 - len(plaintext) % 16]) * (16 - len(plaintext) % 16)
        assert ciphertext == reference.update(padded) + reference.finalize()
        dec = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-CBC").set_key(key).set_direction(D.DECRYPT)
        )
        dec.init(bytes(16))
        assert dec.update(memoryview(ciphertext)) + dec.finalize() == plaintext
        h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        assert h.single_shot(bytearray(plaintext)) == hashlib.sha256(plaintext).digest()


def test_aead_encryption_refuses_up_front_what_decryption_could_not_take(
    daemon_factory: Callable[..., DaemonProcess], mock_config: MockConfig
) -> None:
    """The 80 MiB case of the issue, scaled down: the limit is one per-daemon setting."""
    d = daemon_factory(mock_config(max_buffered_message=MiB))
    with d.stack() as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(slot).set_direction(D.ENCRYPT)
        )
        enc.init(bytes(12))
        with pytest.raises(cs.CryptoError) as err:
            enc.update(bytes(MiB))  # + the tag would not fit: refused before anything is sent
        assert err.value.code is E.RESOURCE_EXHAUSTED
        assert "streaming AEAD" in err.value.message
        enc.init(bytes(12))
        sealed = enc.update(b"s" * (MiB - 16)) + enc.finalize()
        dec = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(slot).set_direction(D.DECRYPT)
        )
        dec.init(bytes(12))
        assert dec.update(sealed) + dec.finalize() == b"s" * (MiB - 16)


def test_streaming_aead_300_mib_round_trip_with_the_daemon_memory_bounded(big_daemon: DaemonProcess) -> None:
    assert big_daemon.process is not None
    pid = big_daemon.process.pid
    total = 300 * MiB
    block = os.urandom(8 * MiB)
    sent, received = hashlib.sha256(), hashlib.sha256()
    with big_daemon.stack(timeout=60) as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        enc = streaming(ctx, "AES-256-GCM-HKDF-1MB", slot, D.ENCRYPT)
        dec = streaming(ctx, "AES-256-GCM-HKDF-1MB", slot, D.DECRYPT)
        enc.init(b"a file")
        enc.update(b"warm up")
        enc.finalize()
        reset_peak_rss(pid)
        before = peak_rss_mib(pid)
        started = time.monotonic()
        enc.init(b"backup.tar")
        dec.init(b"backup.tar")
        ciphertext_size = 0
        for offset in range(0, total, len(block)):
            piece = block[: min(len(block), total - offset)]
            sent.update(piece)
            sealed = enc.update(piece)
            ciphertext_size += len(sealed)
            received.update(dec.update(sealed))
        sealed = enc.finalize()
        ciphertext_size += len(sealed)
        received.update(dec.update(sealed))
        received.update(dec.finalize())
        elapsed = time.monotonic() - started
        growth = peak_rss_mib(pid) - before
    assert received.digest() == sent.digest()
    segments = -(-(total + 40) // (MiB - 16))
    assert ciphertext_size == total + 40 + 16 * segments
    print(f"300 MiB streaming AEAD round trip: {elapsed:.2f} s, daemon peak RSS +{growth:.1f} MiB")
    assert growth < 160, f"the daemon grew by {growth:.0f} MiB for a 300 MiB stream"


@pytest.mark.parametrize("algorithm", STREAMING)
def test_streaming_aead_interoperates_with_tink(algorithm: str, inproc_stack: cs.CryptoStack) -> None:
    """Tink's own implementation opens our streams and we open Tink's (its key made from
    the same raw key), at segment-boundary lengths."""
    tink_streaming = pytest.importorskip("tink.streaming_aead")
    from tink import cleartext_keyset_handle
    from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

    tink_streaming.register()
    bits = int(algorithm.split("-")[1])
    segment = 4096 if algorithm.endswith("4KB") else MiB
    ctx = inproc_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    key = km.generate_key(
        cs.GenerateKeyParams().set_algorithm(f"AES-{bits}").set_permissions(P.ENCRYPT | P.DECRYPT | P.EXPORT)
    )
    raw = km.export_key(key)
    tink_key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0,
        key_value=raw,
        params=aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
            ciphertext_segment_size=segment, derived_key_size=len(raw), hkdf_hash_type=common_pb2.SHA256
        ),
    )
    keyset = tink_pb2.Keyset(
        primary_key_id=1,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
                    value=tink_key.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=1,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    tink = cleartext_keyset_handle.from_keyset(keyset).primitive(tink_streaming.StreamingAead)
    header = 1 + bits // 8 + 7
    enc = streaming(ctx, algorithm, key, D.ENCRYPT)
    dec = streaming(ctx, algorithm, key, D.DECRYPT)
    assert (enc.segment_size, enc.header_size) == (segment, header)
    first = segment - header - 16
    for size in (0, 1, first, first + 1, first + segment - 16, 2 * segment + 3):
        plaintext = os.urandom(size)
        aad = f"aad {size}".encode()
        enc.init(aad)
        ours = enc.update(plaintext) + enc.finalize()
        with tink.new_decrypting_stream(io.BytesIO(ours), aad) as stream:
            assert stream.read() == plaintext, size

        class Kept(io.BytesIO):
            def close(self) -> None:
                self.kept = self.getvalue()
                super().close()

        sink = Kept()
        with tink.new_encrypting_stream(sink, aad) as stream:
            stream.write(plaintext)
        dec.init(aad)
        assert dec.update(sink.kept) + dec.finalize() == plaintext, size


def _sealed(ctx: cs.CryptoContext, key: Any, plaintext: bytes, aad: bytes = b"ad") -> bytes:
    enc = streaming(ctx, "AES-256-GCM-HKDF-4KB", key, D.ENCRYPT)
    enc.init(aad)
    out = enc.update(plaintext) + enc.finalize()
    enc.close()
    return out


def _open(
    ctx: cs.CryptoContext, key: Any, stream: bytes, aad: bytes = b"ad", piece: int = 1000
) -> tuple[bytes, CryptoErrorOrNone]:
    dec = streaming(ctx, "AES-256-GCM-HKDF-4KB", key, D.DECRYPT)
    dec.init(aad)
    released = b""
    try:
        for offset in range(0, len(stream), piece):
            released += dec.update(stream[offset : offset + piece])
        released += dec.finalize()
    except cs.CryptoError as exc:
        return released, exc
    finally:
        dec.close()
    return released, None


CryptoErrorOrNone = cs.CryptoError | None


def test_streaming_aead_releases_only_authenticated_segments(inproc_stack: cs.CryptoStack) -> None:
    ctx = inproc_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    key = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
    plaintext = os.urandom(5 * 4096)  # 6 segments of 4 KiB (the first one shorter)
    stream = _sealed(ctx, key, plaintext)
    header, first, full = 40, 4096 - 40, 4096  # ciphertext sizes; plaintext is 16 less
    assert _open(ctx, key, stream) == (plaintext, None)
    segments = [stream[header : header + first]] + [
        stream[o : o + full] for o in range(header + first, len(stream), full)
    ]
    assert len(segments) == 6

    def failed(candidate: bytes, aad: bytes = b"ad") -> bytes:
        released, error = _open(ctx, key, candidate, aad)
        assert error is not None and error.code is E.AUTHENTICATION_FAILED, error
        assert plaintext.startswith(released)  # never unauthenticated plaintext
        return released

    flipped = bytearray(stream)
    flipped[header + first + 100] ^= 1  # inside segment 1
    assert failed(bytes(flipped)) == plaintext[: first - 16]  # only segment 0 was released
    assert failed(stream, aad=b"other") == b""
    header_bad = bytearray(stream)
    header_bad[0] = 24
    assert failed(bytes(header_bad)) == b""
    truncated = stream[: header + first + 2 * full]  # at a segment boundary
    assert failed(truncated) == plaintext[: first - 16 + full - 16]
    assert failed(stream[:20]) == b""  # inside the header
    assert failed(stream[:header] + segments[1] + segments[0] + b"".join(segments[2:])) == b""
    assert failed(stream + stream[-full:])  # extended after the last segment
    failed(stream[:-1])  # the last segment shortened
    # Another stream's header cannot splice in (its salt gives another key).
    other = _sealed(ctx, key, plaintext)
    assert failed(other[:header] + stream[header:]) == b""


def test_streaming_aead_process_stream_and_permissions(inproc_stack: cs.CryptoStack, tmp_path: Path) -> None:
    ctx = inproc_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    key = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
    source = tmp_path / "plain.bin"
    source.write_bytes(os.urandom(9 * MiB + 123))
    sealed, opened = tmp_path / "plain.bin.enc", tmp_path / "plain.bin.out"
    with source.open("rb") as src, sealed.open("wb") as dst:
        written = streaming(ctx, "AES-256-GCM-HKDF-1MB", key, D.ENCRYPT).process_stream(
            src, dst, b"plain.bin"
        )
    assert written == sealed.stat().st_size > source.stat().st_size
    with sealed.open("rb") as src, opened.open("wb") as dst:
        streaming(ctx, "AES-256-GCM-HKDF-1MB", key, D.DECRYPT).process_stream(src, dst, b"plain.bin")
    assert opened.read_bytes() == source.read_bytes()
    # The key's permissions hold: an encrypt-only key cannot open a stream.
    sealing = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT))
    with pytest.raises(cs.CryptoError) as err:
        streaming(ctx, "AES-256-GCM-HKDF-1MB", sealing, D.DECRYPT)
    assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED
    with pytest.raises(cs.CryptoError) as err:
        streaming(ctx, "AES-128-GCM-HKDF-4KB", key, D.ENCRYPT)  # an AES-256 key
    assert err.value.code is E.INVALID_ARGUMENT
    with pytest.raises(cs.CryptoError) as err:
        streaming(ctx, "AES-256-GCM", key, D.ENCRYPT)
    assert err.value.code is E.INVALID_ARGUMENT and "streaming" in err.value.message
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with streaming(ctx, "AES-256-GCM-HKDF-4KB", key, D.ENCRYPT) as enc:
            enc.init()
            assert len(enc.update(b"x") + enc.finalize()) == 40 + 1 + 16
