"""Walk through every flow of the design against a real daemon (what `make run` shows).

Starts ``cryptostack daemon --config examples/daemon.toml``, connects over its unix
socket, runs the eight flows and prints what happened, then stops the daemon.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_der_public_key

import cryptostack_core as cs
from cryptostack_core import CipherDirection as D
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.server.config import DaemonConfig

FLOWS: list[tuple[str, Callable[[cs.CryptoStack], None]]] = []


def flow(title: str) -> Callable[[Callable[[cs.CryptoStack], None]], Callable[[cs.CryptoStack], None]]:
    def register(fn: Callable[[cs.CryptoStack], None]) -> Callable[[cs.CryptoStack], None]:
        FLOWS.append((title, fn))
        return fn

    return register


def say(text: str) -> None:
    print(f"    {text}")


def cipher(ctx: cs.CryptoContext, alg: str, key: object, direction: D) -> cs.CipherContext:
    return ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm(alg).set_key(key).set_direction(direction)
    )


@flow("1. Pre-deployed key, slot-direct path (AES-256-CBC)")
def slot_direct(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        iv = os.urandom(16)
        enc = cipher(ctx, "AES-256-CBC", slot, D.ENCRYPT)
        enc.init(iv)
        ct = enc.update(b"attack at dawn") + enc.finalize()
        say(f"resolved {slot!r}; encrypted 14 bytes -> {len(ct)} bytes {ct.hex()[:32]}...")
        dec = cipher(ctx, "AES-256-CBC", slot, D.DECRYPT)
        dec.init(iv)
        say(f"decrypted: {dec.update(ct) + dec.finalize()!r}")


@flow("2. Pre-deployed key, guard path (one guard, two contexts)")
def guard_path(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        km = ctx.create_key_management_context(cs.KeyManagementContextConfig())
        with km.load_key(slot) as guard:
            info = km.get_key_slot_info(slot)
            say(
                f"slot info: {info.status.value}, {info.algorithm!r}, provider={info.provider}, "
                f"compatible={info.compatible_providers}"
            )
            enc, dec = (cipher(ctx, "AES-256-CBC", guard, d) for d in (D.ENCRYPT, D.DECRYPT))
            iv = os.urandom(16)
            enc.init(iv)
            ct = enc.update(b"two contexts, one key") + enc.finalize()
            dec.init(iv)
            say(f"guard {guard!r}: round trip -> {dec.update(ct) + dec.finalize()!r}")
        say("guard released at the end of the with-block")


@flow("3. Ephemeral key: generate, AES-256-GCM, persist (copy semantics)")
def ephemeral(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        eph = km.generate_key(
            cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
        )
        say(
            f"generated {eph!r}: type={eph.type.value}, persistence={eph.persistence.value}, "
            f"permitted={eph.permitted_operations!r}"
        )
        nonce = os.urandom(12)
        enc = cipher(ctx, "AES-256-GCM", eph, D.ENCRYPT)
        enc.init(nonce)
        enc.update_aad(b"header")
        sealed = enc.update(b"ephemeral data") + enc.finalize()
        target = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
        info = km.persist_key(target, eph)
        say(f"persisted into MyNewSlot (version {info.version}); the guard still works")
        dec = cipher(ctx, "AES-256-GCM", target, D.DECRYPT)
        dec.init(nonce)
        dec.update_aad(b"header")
        dec.update(sealed)
        say(f"a new context on the slot decrypts: {dec.finalize()!r}")


@flow("4. Hashing: streaming, single-shot, reset reuse, abort mid-stream")
def hashing(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
        h.init()
        h.update(b"chunk1")
        h.update(b"chunk2")
        d1 = h.finalize()
        say(f"streaming  SHA-256(chunk1chunk2) = {d1.hex()}")
        assert d1 == hashlib.sha256(b"chunk1chunk2").digest()
        say(f"single-shot SHA-256(input)       = {h.single_shot(b'input').hex()}")
        h.reset()
        h.init()
        h.update(b"partial")
        h.reset()
        h.init()
        h.update(b"correct data")
        d3 = h.finalize()
        say(
            f"after abort SHA-256(correct data) = {d3.hex()} (matches hashlib: "
            f"{d3 == hashlib.sha256(b'correct data').digest()})"
        )


@flow("5. Signing with ML-DSA-65, verified by an independent library")
def mldsa(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        key = km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-DSA-65"))
        signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ML-DSA-65").set_key(key))
        say(f"signature size: {signer.get_signature_size()} bytes (FIPS 204)")
        signer.init()
        signer.update(b"firmware image v1.2.3")
        sig = signer.sign_finalize()
        public = load_der_public_key(km.export_public_key(key))
        public.verify(sig, b"firmware image v1.2.3")  # type: ignore[call-arg, union-attr]
        say(f"signed {len(sig)} bytes on provider {signer.provider}; pyca verified it directly")


@flow("6. Certificate verification (CRL_ONLY) and the certificate's public key")
def certificates(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        cert = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
        anchor = ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
        verifier = ctx.create_certificate_verification_context(cs.CertificateVerificationContextConfig())
        verifier.set_certificate(cert)
        verifier.set_verification_trust_store(anchor)
        verifier.set_revocation_check_policy(cs.RevocationCheckPolicy.CRL_ONLY)
        result = verifier.verify()
        say(f"verify -> {result.value}: {verifier.explain()}")
        if result is cs.CertVerifyResult.VALID:
            cm = ctx.create_certificate_management_context()
            pub, alg = cm.load_certificate_public_key(cert)
            say(f"public key {pub!r} algorithm {alg}, permitted {pub.permitted_operations!r}")
            pub.release()


@flow("7. Key operation permissions")
def permissions(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        enc_key = km.generate_key(
            cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
        )
        cipher(ctx, "AES-256-CBC", enc_key, D.ENCRYPT).close()
        say("AES-256 ENCRYPT|DECRYPT key: cipher context OK")
        try:
            ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(enc_key))
        except cs.CryptoError as exc:
            say(f"HMAC sign context refused: {exc.code.value}")
        slot = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
        perms = ctx.get_key_slot_object(slot).get_permitted_operations()
        say(f"SigningKey permits {perms!r}; has SIGN: {cs.has_permission(perms, P.SIGN)}")
        auth = km.generate_key(
            cs.GenerateKeyParams().set_algorithm("ECDSA-P256").set_permissions(P.AUTHENTICATION)
        )
        sig = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(auth)).sign(
            b"hello"
        )
        say(f"AUTHENTICATION key signs ({len(sig)}-byte DER signature) ...")
        try:
            cipher(ctx, "AES-256-CBC", auth, D.ENCRYPT)
        except cs.CryptoError as exc:
            say(f"... but cannot encrypt: {exc.code.value}")


@flow("8. Operation timeouts")
def timeouts(stack: cs.CryptoStack) -> None:
    with stack.create_crypto_context() as ctx:
        h = ctx.create_hash_context(
            cs.HashContextConfig().set_algorithm("SHA-256").set_operation_timeout(timedelta(milliseconds=200))
        )
        h.init()
        h.update(b"chunk1")
        say(f"200 ms per-call deadline: digest {h.finalize().hex()[:16]}...")
        tight = ctx.create_key_management_context(
            cs.KeyManagementContextConfig().set_operation_timeout(timedelta(milliseconds=2))
        )
        try:
            tight.generate_key(cs.GenerateKeyParams().set_algorithm("RSA-4096"))
        except cs.CryptoError as exc:
            say(f"RSA-4096 keygen with a 2 ms deadline: {exc.code.value}")
        try:
            tight.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
        except cs.CryptoError as exc:
            say(f"that context now says: {exc.code.value}")
        km = ctx.create_key_management_context(cs.KeyManagementContextConfig().disable_timeout())
        t = time.perf_counter()
        km.generate_key(cs.GenerateKeyParams().set_algorithm("ML-KEM-768"))
        km.generate_key(cs.GenerateKeyParams().set_algorithm("RSA-4096"))
        say(
            f"disable_timeout(): ML-KEM-768 and RSA-4096 generated in "
            f"{(time.perf_counter() - t) * 1000:.0f} ms without a deadline"
        )


@flow("9. The HSM: a key generated inside the token, and provider selection")
def hsm(stack: cs.CryptoStack) -> None:
    providers = {p["id"]: p for p in stack.status()["providers"]}
    if providers.get(5, {}).get("state") != "ready":
        say(f"pkcs11 provider unavailable: {providers.get(5, {}).get('reason')}")
        return
    with stack.create_crypto_context() as ctx:
        slot = ctx.resolve_resource("HsmKey", cs.ResourceType.KEY_SLOT)
        nonce = os.urandom(12)
        enc = cipher(ctx, "AES-256-GCM", slot, D.ENCRYPT)
        enc.init(nonce)
        sealed = enc.update(b"sealed by the token") + enc.finalize()
        say(f"AES-256-GCM with HsmKey ran on provider {enc.provider} (the token)")
        dec = cipher(ctx, "AES-256-GCM", slot, D.DECRYPT)
        dec.init(nonce)
        dec.update(sealed)
        say(f"decrypted on the token: {dec.finalize()!r}")
        for cand in stack.explain("AES-256-GCM", "encrypt", key=slot):
            say(
                f"  explain: {'->' if cand['taken'] else '  '} {cand['provider']} "
                f"{cand['name']}: {cand['reason']}"
            )


def demo_token(var: Path) -> dict[str, str]:
    """A SoftHSM2 token for the demo under var/ (created once); env for the daemon."""
    conf = var / "softhsm2.conf"
    tokens = var / "softhsm-tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf), "CRYPTOSTACK_PKCS11_PIN": "demo-pin-1234"}
    if not any(tokens.iterdir()):
        try:
            subprocess.run(
                [
                    "softhsm2-util",
                    "--init-token",
                    "--free",
                    "--label",
                    "cryptostack-demo",
                    "--pin",
                    env["CRYPTOSTACK_PKCS11_PIN"],
                    "--so-pin",
                    "demo-so-pin-5678",
                ],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"no SoftHSM2 demo token ({exc}); the pkcs11 provider will be unavailable")
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(Path(__file__).with_name("daemon.toml")))
    args = parser.parse_args()
    config = DaemonConfig.load(args.config)
    assert config.socket is not None
    endpoint = f"unix://{config.socket}"
    env = {**os.environ, **demo_token(config.socket.parent.parent)}
    print(f"starting: cryptostack daemon --config {args.config}")
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cryptostack_core",
            "daemon",
            "--config",
            args.config,
            "--log-level",
            "warning",
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not config.socket.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                print("the daemon did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
        subprocess.run(
            [sys.executable, "-m", "cryptostack_core", "status", "--endpoint", endpoint], check=True
        )
        stack_config = (
            cs.CryptoStackConfig()
            .set_connection_endpoint(endpoint)
            .set_default_operation_timeout(timedelta(milliseconds=500))
        )
        failures = 0
        with cs.create_crypto_stack(stack_config) as stack:
            for title, fn in FLOWS:
                print(f"\n{title}")
                try:
                    fn(stack)
                except Exception as exc:  # noqa: BLE001 - the demo reports and goes on
                    failures += 1
                    print(f"    FAILED: {type(exc).__name__}: {exc}")
            print("\nprovider selection for ML-DSA-65 signing (explain):")
            for cand in stack.explain("ML-DSA-65", "sign"):
                print(
                    f"    {'->' if cand['taken'] else '  '} {cand['provider']} "
                    f"{cand['name']}: {cand['reason']}"
                )
        print(f"\n{len(FLOWS) - failures} of {len(FLOWS)} flows completed")
        return 1 if failures else 0
    finally:
        daemon.terminate()
        daemon.wait(10)


if __name__ == "__main__":
    sys.exit(main())
