"""Key handling: stored blobs, many keys on a three-slot TPM, pre-deployed and foreign keys."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptostack_tpm2.keys import decode_stored, encode_stored
from cryptostack_tpm2.provider import TPM2Provider
from cryptostack_tpm2.templates import primary_template
from cryptostack_tpm2.testing import Swtpm, direct_esapi

from cryptostack_core.sdk import CipherDirection, CryptoError, ErrorCode, KeyFormat, ProviderKey, StoredKey
from cryptostack_core.sdk import KeyOperationPermission as P

PERSISTENT_KEY = 0x81000100
PERSISTENT_SRK = 0x81000001


def _sign(tpm: TPM2Provider, algorithm: str, key: ProviderKey, message: bytes) -> bytes:
    signer = tpm.create_signer(algorithm, key, b"")
    signer.update(message)
    return signer.finalize()


def _public(tpm: TPM2Provider, key: ProviderKey) -> ec.EllipticCurvePublicKey:
    public = serialization.load_der_public_key(tpm.export_public_key(key))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return public


def test_persist_returns_tpm_blobs_not_secrets(tpm: TPM2Provider) -> None:
    key = tpm.generate_key("ECDSA-P256", P.SIGN | P.VERIFY)
    stored = tpm.persist_key(key, "Slot")
    assert isinstance(stored, StoredKey) and stored.secret is False
    again = tpm.load_stored_key(stored, "ECDSA-P256", P.SIGN | P.VERIFY)
    assert tpm.export_public_key(again) == tpm.export_public_key(key)
    _public(tpm, key).verify(_sign(tpm, "ECDSA-P256", again, b"m"), b"m", ec.ECDSA(hashes.SHA256()))
    _sign(tpm, "ECDSA-P256", key, b"copy semantics: the original still works")
    with pytest.raises(CryptoError) as err:
        tpm.load_stored_key(stored, "ECDSA-P384", P.SIGN)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        tpm.load_stored_key(StoredKey(b"not cbor at all", False), "ECDSA-P256", P.SIGN)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_many_keys_interleaved_from_many_threads(tpm: TPM2Provider) -> None:
    """14 keys of four kinds, six threads, random order: far more objects than the TPM's
    three slots, loaded just in time, swapped out and reloaded."""
    ecdsa = [tpm.generate_key("ECDSA-P256", P.SIGN | P.VERIFY) for _ in range(8)]
    p384 = [tpm.generate_key("ECDSA-P384", P.SIGN | P.VERIFY) for _ in range(2)]
    secrets = [os.urandom(32) for _ in range(2)]
    macs = [tpm.import_key("HMAC-SHA-256", s, KeyFormat.RAW, P.MAC | P.SIGN) for s in secrets]
    aes_secret = os.urandom(32)
    aes = [tpm.import_key("AES-256", aes_secret, KeyFormat.RAW, P.ENCRYPT | P.DECRYPT) for _ in range(2)]
    publics = {id(k): _public(tpm, k) for k in ecdsa + p384}
    before = tpm.host.call("ping")
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(25):
                kind = rng.randrange(4)
                message = os.urandom(rng.randrange(1, 3000))
                if kind == 0:
                    key = rng.choice(ecdsa)
                    publics[id(key)].verify(
                        _sign(tpm, "ECDSA-P256", key, message), message, ec.ECDSA(hashes.SHA256())
                    )
                elif kind == 1:
                    key = rng.choice(p384)
                    publics[id(key)].verify(
                        _sign(tpm, "ECDSA-P384", key, message), message, ec.ECDSA(hashes.SHA384())
                    )
                elif kind == 2:
                    i = rng.randrange(2)
                    import hmac

                    assert (
                        _sign(tpm, "HMAC-SHA-256", macs[i], message)
                        == hmac.new(secrets[i], message, "sha256").digest()
                    )
                else:
                    iv = os.urandom(16)
                    enc = tpm.create_cipher("AES-256-CTR", rng.choice(aes), CipherDirection.ENCRYPT, iv, 16)
                    ct = enc.update(message) + enc.finalize()
                    dec = tpm.create_cipher("AES-256-CTR", rng.choice(aes), CipherDirection.DECRYPT, iv, 16)
                    assert dec.update(ct) + dec.finalize() == message
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    after = tpm.host.call("ping")
    assert after["evictions"] > before["evictions"]  # the cache really was under pressure
    assert after["transient_in_tpm"] <= after["capacity"] == 3
    for key in ecdsa + p384 + macs + aes:
        tpm.release_key(key)
    tpm.random_bytes(1)  # carries the queued flushes
    assert tpm.host.call("ping")["transient_in_tpm"] <= 1  # only the primary may stay


def test_stored_key_of_another_tpm_is_refused(
    tmp_path: object, fresh_swtpm: Swtpm, tpm: TPM2Provider, make_provider: Callable[..., TPM2Provider]
) -> None:
    other = make_provider(fresh_swtpm)
    stored = other.persist_key(other.generate_key("ECDSA-P256", P.SIGN), "Slot")
    with pytest.raises(CryptoError) as err:
        tpm.load_stored_key(stored, "ECDSA-P256", P.SIGN)
    assert err.value.code is ErrorCode.ACCESS_DENIED and "another TPM" in err.value.message
    # Even with the parent check fooled, the TPM itself refuses the blob (integrity check).
    forged = decode_stored(stored, "ECDSA-P256")
    forged.parent_name = tpm.info.primary_name
    key = tpm.load_stored_key(encode_stored(forged), "ECDSA-P256", P.SIGN)
    with pytest.raises(CryptoError) as err:
        _sign(tpm, "ECDSA-P256", key, b"m")
    assert err.value.code is ErrorCode.ACCESS_DENIED and "another TPM" in err.value.message


def _deploy_keys(sim: Swtpm) -> bytes:
    """What a provisioning step does before the daemon exists: a persistent storage key and
    a restricted ECDSA signing key at persistent handles. Returns the key's SPKI."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
    from tpm2_pytss.types import TPM2B_PUBLIC

    A = TPMA_OBJECT
    with direct_esapi(sim) as ectx:
        primary, *_ = ectx.create_primary(None, primary_template("ecc"), ESYS_TR.OWNER)
        ectx.evict_control(ESYS_TR.OWNER, primary, PERSISTENT_SRK)
        template = TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256",
            objectAttributes=A.USERWITHAUTH
            | A.NODA
            | A.FIXEDTPM
            | A.FIXEDPARENT
            | A.SENSITIVEDATAORIGIN
            | A.RESTRICTED
            | A.SIGN_ENCRYPT,
        )
        assert template.publicArea.parameters.eccDetail.scheme.scheme == TPM2_ALG.ECDSA
        template.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
        private, public, *_ = ectx.create(primary, None, template)
        loaded = ectx.load(primary, private, public)
        ectx.evict_control(ESYS_TR.OWNER, loaded, PERSISTENT_KEY)
        ectx.flush_context(loaded)
        ectx.flush_context(primary)
        return bytes(public.to_der())


def test_pre_deployed_restricted_key_and_persistent_primary(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider]
) -> None:
    spki = _deploy_keys(fresh_swtpm)
    tpm = make_provider(fresh_swtpm, primary_handle=hex(PERSISTENT_SRK))
    key = tpm.import_key(
        "ECDSA-P256", f"tpm2-persistent:0x{PERSISTENT_KEY:08x}".encode(), KeyFormat.RAW, P.SIGN | P.VERIFY
    )
    assert key.has_private and tpm.export_public_key(key) == spki
    public = serialization.load_der_public_key(spki)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    # A restricted key signs only TPM-computed digests: the provider hashes in the TPM
    # (with a ticket), short and long messages alike.
    for message in (b"short", os.urandom(70_000)):
        public.verify(_sign(tpm, "ECDSA-P256", key, message), message, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(CryptoError) as err:
        _sign(tpm, "ECDSA-P256", key, b"\xffTCG forged attestation")
    assert err.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED
    # The stored form is a reference; keys under the persistent primary work as usual.
    stored = tpm.persist_key(key, "DeviceKey")
    again = tpm.load_stored_key(stored, "ECDSA-P256", P.SIGN)
    public.verify(_sign(tpm, "ECDSA-P256", again, b"m"), b"m", ec.ECDSA(hashes.SHA256()))
    tpm.delete_stored_key(stored)  # not ours to evict: the key stays
    public.verify(_sign(tpm, "ECDSA-P256", again, b"m"), b"m", ec.ECDSA(hashes.SHA256()))
    ephemeral = tpm.generate_key("ECDSA-P384", P.SIGN)
    _public(tpm, ephemeral).verify(_sign(tpm, "ECDSA-P384", ephemeral, b"x"), b"x", ec.ECDSA(hashes.SHA384()))
    with pytest.raises(CryptoError) as err:  # wrong algorithm for that handle
        tpm.import_key(
            "ECDSA-P384", f"tpm2-persistent:0x{PERSISTENT_KEY:08x}".encode(), KeyFormat.RAW, P.SIGN
        )
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        tpm.import_key("ECDSA-P256", b"tpm2-persistent:0x81000fff", KeyFormat.RAW, P.SIGN)
    assert err.value.code is ErrorCode.RESOURCE_NOT_FOUND


def test_tss2_key_files_from_other_tools_load(
    fresh_swtpm: Swtpm, make_provider: Callable[..., TPM2Provider]
) -> None:
    from tpm2_pytss.tsskey import TSSPrivKey

    with direct_esapi(fresh_swtpm) as ectx:
        tss = TSSPrivKey.create_ecc(ectx)  # as tpm2-openssl / tpm2-tss-engine make them
    pem = tss.to_pem()
    tpm = make_provider(fresh_swtpm)
    key = tpm.import_key("ECDSA-P256", pem, KeyFormat.PEM, P.SIGN | P.VERIFY)
    public = serialization.load_der_public_key(bytes(tss.public.to_der()))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(_sign(tpm, "ECDSA-P256", key, b"tss2"), b"tss2", ec.ECDSA(hashes.SHA256()))


def test_owner_auth_from_file(
    fresh_swtpm: Swtpm, tmp_path: object, make_provider: Callable[..., TPM2Provider]
) -> None:
    from pathlib import Path

    from tpm2_pytss.constants import ESYS_TR

    with direct_esapi(fresh_swtpm) as ectx:
        ectx.hierarchy_change_auth(ESYS_TR.OWNER, b"owner-secret")
    with pytest.raises(CryptoError) as err:
        make_provider(fresh_swtpm)
    assert err.value.code is ErrorCode.ACCESS_DENIED and "auth" in err.value.message
    auth = Path(str(tmp_path)) / "owner.auth"
    auth.write_bytes(b"owner-secret\n")
    tpm = make_provider(fresh_swtpm, owner_auth_file=str(auth))
    assert tpm.generate_key("ECDSA-P256", P.SIGN).has_private
