"""Checks of a provider over a real daemon, through the public client API, every context
pinned to the provider under test (``set_provider``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any, TypeVar

import cryptostack_core as cs
from cryptostack_core.sdk import AlgorithmKind, Capability, KeyClass, Operation
from cryptostack_core.testing.conformance import materials
from cryptostack_core.testing.conformance.faults import ConformanceError, Faults, expect_error
from cryptostack_core.testing.conformance.sdk_checks import MESSAGE, full_permissions
from cryptostack_core.testing.conformance.target import ProviderUnderTest, slot_name
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.waiting import eventually
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmSpec

__all__ = [
    "check_accounting",
    "check_call_order",
    "check_capability",
    "check_concurrency",
    "check_key_slots",
    "check_permissions",
    "check_persistence_across_restart",
    "check_unclaimed",
]

P = cs.KeyOperationPermission
E = cs.ErrorCode
K = AlgorithmKind
O = Operation  # noqa: E741 - the enum, short for the tables below

_C = TypeVar("_C")

_PERMISSION_FOR = {
    O.ENCRYPT: P.ENCRYPT,
    O.DECRYPT: P.DECRYPT,
    O.SIGN: P.SIGN,
    O.DECAPSULATE: P.DECAPSULATE,
    O.AGREE: P.AGREE,
    O.DERIVE: P.DERIVE,
}


class Client:
    """One connection with the helpers the checks share; everything pinned to the provider."""

    def __init__(self, put: ProviderUnderTest, stack: cs.CryptoStack) -> None:
        self.put = put
        self.pid = put.provider_id
        self.stack = stack
        self.ctx = stack.create_crypto_context()
        self.km = self.ctx.create_key_management_context()
        self.guards: list[cs.CryptoResourceGuard] = []
        self.contexts: list[Any] = []

    # keys
    def obtainable(self, algorithm: str) -> bool:
        return self.put.claims(algorithm, O.GENERATE_KEY) or (
            self.put.claims(algorithm, O.IMPORT_KEY) and materials.private_material(algorithm) is not None
        )

    def key_algorithm_for(self, algorithm: str) -> str:
        spec = REGISTRY.get(algorithm)
        for candidate in sorted(spec.key_algorithms, key=lambda n: n != algorithm):
            if self.obtainable(candidate):
                return candidate
        raise ConformanceError(f"no key type of {algorithm} can be had from the provider")

    def key(
        self,
        algorithm: str,
        permissions: cs.KeyOperationPermission | None = None,
    ) -> cs.CryptoResourceGuard:
        perms = full_permissions(algorithm) if permissions is None else permissions
        if (
            self.put.is_slow(algorithm)
            and self.put.claims(algorithm, O.IMPORT_KEY)
            and self.put.claims(algorithm, O.GENERATE_KEY)
        ):
            # Import the SDK instance's key instead of generating another slow one.
            shared = self.put.shared_material(algorithm)
            if shared is not None:
                return self.import_key(algorithm, shared[0], shared[1], perms)
        if self.put.claims(algorithm, O.GENERATE_KEY):
            params = cs.GenerateKeyParams().set_algorithm(algorithm).set_permissions(perms)
            params.set_provider(self.pid)
            return self.keep(self.km.generate_key(params))
        material = materials.private_material(algorithm)
        if material is None:
            raise ConformanceError(f"cannot get a {algorithm} key through the daemon")
        return self.import_key(algorithm, material[0], material[1], perms)

    def import_key(
        self, algorithm: str, material: bytes, fmt: cs.KeyFormat, permissions: cs.KeyOperationPermission
    ) -> cs.CryptoResourceGuard:
        params = cs.ImportKeyParams().set_algorithm(algorithm).set_material(material, fmt)
        params.set_permissions(permissions)
        params.set_provider(self.pid)
        return self.keep(self.km.import_key(params))

    def keep(self, guard: cs.CryptoResourceGuard) -> cs.CryptoResourceGuard:
        self.guards.append(guard)
        return guard

    def release_keys(self) -> None:
        """Release every key guard this client made."""
        guards, self.guards = self.guards, []
        for guard in guards:
            guard.release()

    # contexts (kept until the client closes, so none is dropped unclosed)
    def _keep_context(self, context: _C) -> _C:
        self.contexts.append(context)
        return context

    def hasher(self, algorithm: str) -> cs.HashContext:
        return self._keep_context(
            self.ctx.create_hash_context(
                cs.HashContextConfig().set_algorithm(algorithm).set_provider(self.pid)
            )
        )

    def cipher(self, algorithm: str, key: Any, direction: cs.CipherDirection) -> cs.CipherContext:
        return self._keep_context(
            self.ctx.create_cipher_context(
                cs.CipherContextConfig()
                .set_algorithm(algorithm)
                .set_key(key)
                .set_direction(direction)
                .set_provider(self.pid)
            )
        )

    def encrypt(
        self,
        spec: AlgorithmSpec,
        key: Any,
        iv: bytes,
        data: bytes,
        aad: bytes = b"",
        direction: cs.CipherDirection = cs.CipherDirection.ENCRYPT,
    ) -> bytes:
        with self.cipher(spec.name, key, direction) as cipher:
            cipher.init(iv)
            if aad:
                cipher.update_aad(aad)
            out = cipher.update(data[: len(data) // 2])
            out += cipher.update(data[len(data) // 2 :])
            return bytes(out + cipher.finalize())

    def signer(self, algorithm: str, key: Any, context: bytes = b"") -> cs.SignContext:
        config = cs.SignContextConfig().set_algorithm(algorithm).set_key(key).set_provider(self.pid)
        if context:
            config.set_context(context)
        return self._keep_context(self.ctx.create_sign_context(config))

    def verifier(self, algorithm: str, key: Any, context: bytes = b"") -> cs.VerifyContext:
        config = cs.VerifyContextConfig().set_algorithm(algorithm).set_key(key)
        config.set_provider(self.pid)
        if context:
            config.set_context(context)
        return self._keep_context(self.ctx.create_verify_context(config))

    def secret(self, guard: cs.CryptoResourceGuard) -> bytes:
        with guard:
            return self.km.export_key(guard, cs.KeyFormat.RAW)

    def public(self, key: Any) -> bytes:
        return self.public_with_format(key)[0]

    def public_with_format(self, key: Any) -> tuple[bytes, cs.KeyFormat]:
        """The public key as SPKI DER, or RAW for algorithms without a standard OID."""
        try:
            return self.km.export_public_key(key), cs.KeyFormat.SPKI_DER
        except cs.CryptoError as exc:
            if exc.code not in (E.INVALID_ARGUMENT, E.UNSUPPORTED_ALGORITHM):
                raise
        return self.km.export_public_key(key, cs.KeyFormat.RAW), cs.KeyFormat.RAW

    def close(self) -> None:
        self.release_keys()
        self.ctx.close()
        self.contexts.clear()


@contextmanager
def connected(
    put: ProviderUnderTest, daemon: DaemonProcess | None = None, timeout: float | None = None
) -> Iterator[Client]:
    """A :class:`Client` on a fresh connection (closed on exit)."""
    stack = put.stack(daemon) if timeout is None else put.stack(daemon, timeout)
    with stack:
        client = Client(put, stack)
        try:
            yield client
        finally:
            client.close()


# --- one claim over the daemon ---------------------------------------------------------------


def check_capability(put: ProviderUnderTest, cap: Capability) -> None:
    """The claim works through the daemon, pinned to the provider."""
    spec = REGISTRY.get(cap.algorithm)
    subject = f"{put.name}: {cap.algorithm}/{cap.operation.value} over the daemon"
    with Faults(subject) as faults, connected(put) as client:
        with faults.step(cap.operation.value):
            if cap.operation in (O.GENERATE_KEY, O.IMPORT_KEY):
                _key_claim(client, spec, cap.operation, faults)
            elif spec.kind is K.HASH:
                _hash_claim(client, spec, faults)
            elif spec.kind in (K.CIPHER, K.AEAD):
                _cipher_claim(client, spec, faults)
            elif spec.kind is K.SIGNATURE:
                _signature_claim(client, spec, cap.operation, faults)
            elif spec.kind is K.MAC:
                _mac_claim(client, spec, faults)
            elif spec.kind is K.KEM:
                _kem_claim(client, spec, faults)
            elif spec.kind is K.KEY_AGREEMENT:
                _agree_claim(client, spec, faults)
            elif spec.kind is K.KDF:
                _derive_claim(client, spec, faults)
            elif spec.kind is K.RANDOM:
                _random_claim(client, faults)
            else:
                faults.add(f"the kit has no check for {spec.kind.value}")


def _hash_claim(c: Client, spec: AlgorithmSpec, faults: Faults) -> None:
    with c.hasher(spec.name) as hasher:
        faults.check(
            hasher.provider == c.pid and hasher.algorithm == spec.name,
            f"context runs {hasher.algorithm} on provider {hasher.provider}",
        )
        digest = hasher.single_shot(MESSAGE)
        faults.check(len(digest) == spec.digest_size, f"digest of {len(digest)} bytes")
        hasher.init()
        hasher.update(MESSAGE[:3])
        hasher.update(MESSAGE[3:])
        faults.check(hasher.finalize() == digest, "streamed and single-shot digests differ")
        big = os.urandom(300_000)  # crosses the shared-memory threshold
        faults.check(
            hasher.single_shot(big) == c.hasher(spec.name).single_shot(big),
            "a large message hashes differently on two contexts",
        )


def _cipher_claim(c: Client, spec: AlgorithmSpec, faults: Faults) -> None:
    key_algorithm = c.key_algorithm_for(spec.name)
    material = (
        materials.private_material(key_algorithm) if c.put.claims(key_algorithm, O.IMPORT_KEY) else None
    )
    key = (
        c.import_key(key_algorithm, material[0], material[1], full_permissions(key_algorithm))
        if material
        else c.key(key_algorithm)
    )
    aead = spec.kind is K.AEAD
    iv = os.urandom(spec.iv_size or 16)
    aad = b"header" if aead else b""
    sealed = c.encrypt(spec, key, iv, MESSAGE, aad)
    if material is not None and material[1] is cs.KeyFormat.RAW:
        reference = materials.reference_cipher(spec.name, material[0], iv, MESSAGE)
        if reference is not None:
            faults.check(sealed == reference, "encryption differs from pyca/cryptography's")
    if c.put.claims(spec.name, O.DECRYPT) and c.put.claims(spec.name, O.ENCRYPT):
        plain = c.encrypt(spec, key, iv, sealed, aad, cs.CipherDirection.DECRYPT)
        faults.check(plain == MESSAGE, "decryption does not give the plaintext back")
        if aead:
            tampered = bytearray(sealed)
            tampered[-1] ^= 1
            problem = expect_error(
                lambda: c.encrypt(spec, key, iv, bytes(tampered), aad, cs.CipherDirection.DECRYPT),
                E.AUTHENTICATION_FAILED,
                "a tampered tag",
            )
            faults.check(not problem, problem)
    problem = expect_error(
        lambda: c.encrypt(spec, key, b"" if aead else iv[:-1], MESSAGE),
        E.INVALID_ARGUMENT,
        "an IV of the wrong length",
    )
    faults.check(not problem, problem)
    wrong = next(
        (
            k
            for k in ("HMAC-SHA-256", "ECDSA-P256", "GENERIC-SECRET")
            if k not in spec.key_algorithms and c.obtainable(k)
        ),
        None,
    )
    if wrong is not None:
        problem = expect_error(
            lambda: c.cipher(spec.name, c.key(wrong), cs.CipherDirection.ENCRYPT),
            (E.INVALID_ARGUMENT, E.KEY_OPERATION_NOT_PERMITTED, E.NO_COMPATIBLE_PROVIDER),
            f"a {wrong} key",
        )
        faults.check(not problem, problem)


def _signature_claim(c: Client, spec: AlgorithmSpec, op: Operation, faults: Faults) -> None:
    """SIGN: size, independent verification, signing refused with a public key. VERIFY:
    own signatures verify, changed messages and malformed signatures give False. One
    signature per algorithm serves both (signing is slow for some algorithms)."""
    key_algorithm = c.key_algorithm_for(spec.name)
    key = c.key(key_algorithm)
    if not c.put.claims(spec.name, O.SIGN):
        faults.check(
            c.verifier(spec.name, key).verify(MESSAGE, b"\x00" * 8) is False, "a garbage signature verifies"
        )
        return
    signer = c.signer(spec.name, key)
    signature = signer.sign(MESSAGE)
    public, public_format = c.public_with_format(key)
    if op is O.SIGN:
        faults.check(
            0 < len(signature) <= signer.get_signature_size(),
            f"a {len(signature)}-byte signature; get_signature_size() says {signer.get_signature_size()}",
        )
        independent = materials.verify_independently(spec.name, public, MESSAGE, signature)
        faults.check(independent is not False, "pyca/cryptography does not accept the signature")
        if c.put.claims(key_algorithm, O.IMPORT_KEY):
            public_key = c.import_key(key_algorithm, public, public_format, P.VERIFY)
            problem = expect_error(
                lambda: c.signer(spec.name, public_key),
                (E.KEY_OPERATION_NOT_PERMITTED, E.INVALID_ARGUMENT),
                "signing with a public key",
            )
            faults.check(not problem, problem)
        return
    verifier = c.verifier(spec.name, key)
    faults.check(verifier.verify(MESSAGE, signature) is True, "own signature does not verify")
    faults.check(
        verifier.verify(MESSAGE + b"!", signature) is False, "a signature verifies for another message"
    )
    faults.check(verifier.verify(MESSAGE, b"\x01" * 3) is False, "a malformed signature is not simply False")
    if c.put.claims(key_algorithm, O.IMPORT_KEY):
        public_key = c.import_key(key_algorithm, public, public_format, P.VERIFY)
        faults.check(
            c.verifier(spec.name, public_key).verify(MESSAGE, signature) is True,
            "the signature does not verify with the imported public key",
        )
    if spec.supports_context_string and not c.put.is_slow(spec.name):
        signed = c.signer(spec.name, key, b"kit-context").sign(MESSAGE)
        faults.check(
            c.verifier(spec.name, key, b"kit-context").verify(MESSAGE, signed) is True,
            "a signature with a context string does not verify",
        )
        faults.check(verifier.verify(MESSAGE, signed) is False, "the context string is ignored")


def _mac_claim(c: Client, spec: AlgorithmSpec, faults: Faults) -> None:
    key = c.key(c.key_algorithm_for(spec.name))
    tag = c.signer(spec.name, key).sign(MESSAGE)
    faults.check(len(tag) == (spec.signature_size or len(tag)), f"a {len(tag)}-byte MAC")
    if c.put.claims(spec.name, O.VERIFY):
        verifier = c.verifier(spec.name, key)
        faults.check(verifier.verify(MESSAGE, tag) is True, "the MAC does not verify")
        wrong = bytes([tag[0] ^ 1]) + tag[1:]
        faults.check(verifier.verify(MESSAGE, wrong) is False, "a wrong MAC verifies")
        faults.check(
            verifier.verify(MESSAGE, tag[:-1]) is False, "a truncated MAC verifies without a tag length"
        )


def _kem_claim(c: Client, spec: AlgorithmSpec, faults: Faults) -> None:
    pair = c.key(c.key_algorithm_for(spec.name))
    config = cs.KemContextConfig().set_algorithm(spec.name).set_key(pair)
    config.set_derived_key_permissions(P.DERIVE | P.EXPORT).set_provider(c.pid)
    with c.ctx.create_kem_context(config) as kem:
        ciphertext, shared = kem.encapsulate()
        received = kem.decapsulate(ciphertext)
        faults.check(c.secret(shared) == c.secret(received), "the two secrets differ")
        problem = expect_error(
            lambda: kem.decapsulate(ciphertext[:-1]), E.INVALID_ARGUMENT, "a short ciphertext"
        )
        faults.check(not problem, problem)


def _agree_claim(c: Client, spec: AlgorithmSpec, faults: Faults) -> None:
    key_algorithm = c.key_algorithm_for(spec.name)
    a, b = c.key(key_algorithm), c.key(key_algorithm)

    def agree(own: Any, peer: bytes) -> cs.CryptoResourceGuard:
        config = cs.KeyAgreementContextConfig().set_algorithm(spec.name).set_key(own)
        config.set_derived_key_permissions(P.DERIVE | P.EXPORT).set_provider(c.pid)
        with c.ctx.create_key_agreement_context(config) as agreement:
            secret: cs.CryptoResourceGuard = agreement.agree(peer)
            return secret

    faults.check(
        c.secret(agree(a, c.public(b))) == c.secret(agree(b, c.public(a))),
        "the two sides get different secrets",
    )
    problem = expect_error(
        lambda: agree(a, b"\x30\x03\x02\x01\x00"), E.INVALID_ARGUMENT, "a malformed peer key"
    )
    faults.check(not problem, problem)


def _derive_claim(c: Client, spec: AlgorithmSpec, faults: Faults) -> None:
    ikm_algorithm = c.key_algorithm_for(spec.name)
    ikm = c.key(ikm_algorithm, P.DERIVE | full_permissions(ikm_algorithm))

    def derive(info: bytes) -> bytes:
        return c.secret(
            c.km.derive_key(
                cs.DeriveKeyParams()
                .set_algorithm(spec.name)
                .set_key(ikm)
                .set_salt(b"salt")
                .set_info(info)
                .set_output("GENERIC-SECRET", 42)
                .set_permissions(P.EXPORT)
            )
        )

    first = derive(b"info")
    faults.check(len(first) == 42 and derive(b"info") == first, "derivation is not stable")
    faults.check(derive(b"other") != first, "the info string is ignored")


def _random_claim(c: Client, faults: Faults) -> None:
    first, second = c.km.generate_random(32, provider=c.pid), c.km.generate_random(32, c.pid)
    faults.check(
        len(first) == 32 and first != second,
        "generate_random(32) twice did not give two different 32-byte strings",
    )


def _key_claim(c: Client, spec: AlgorithmSpec, op: Operation, faults: Faults) -> None:
    perms = full_permissions(spec.name)
    if op is O.GENERATE_KEY:
        params = cs.GenerateKeyParams().set_algorithm(spec.name).set_permissions(perms)
        params.set_provider(c.pid)
        key = c.keep(c.km.generate_key(params))
        faults.check(key.algorithm == spec.name, f"a generated key says it is {key.algorithm}")
        default = c.keep(
            c.km.generate_key(cs.GenerateKeyParams().set_algorithm(spec.name).set_provider(c.pid))
        )
        faults.check(
            not default.permitted_operations & P.EXPORT, "a key generated without permissions may be exported"
        )
    else:
        key = None
        material = materials.private_material(spec.name)
        refused = ""
        if material is not None:
            try:
                key = c.import_key(spec.name, material[0], material[1], perms)
            except cs.CryptoError as exc:
                if exc.code not in (E.INVALID_ARGUMENT, E.UNSUPPORTED_ALGORITHM):
                    raise
                refused = f"{material[1].value}: {exc.code.value} {exc.message}"
            else:
                if material[1] is cs.KeyFormat.RAW and spec.key_class is KeyClass.SYMMETRIC:
                    try:
                        exported = c.km.export_key(key, cs.KeyFormat.RAW)
                    except cs.CryptoError as exc:  # a backend that keeps its keys may refuse
                        if exc.code is not E.KEY_OPERATION_NOT_PERMITTED:
                            raise
                    else:
                        faults.check(exported == material[0], "an imported secret exports differently")
        if key is None:
            public = materials.public_material(spec.name)
            public_format = cs.KeyFormat.SPKI_DER
            if public is None and c.put.claims(spec.name, O.GENERATE_KEY):
                public, public_format = c.public_with_format(c.key(spec.name))
            if public is None or spec.key_class is not KeyClass.ASYMMETRIC:
                faults.add(f"nothing imports: {refused or 'no material'}")
                return
            public_perms = P.ENCAPSULATE if spec.kind is K.KEM else P.VERIFY
            key = c.import_key(spec.name, public, public_format, public_perms)
        fmt = cs.KeyFormat.SPKI_DER if spec.key_class is KeyClass.ASYMMETRIC else cs.KeyFormat.RAW
        problem = expect_error(
            lambda: c.import_key(spec.name, b"\x30\x01" if fmt is cs.KeyFormat.SPKI_DER else b"", fmt, perms),
            E.INVALID_ARGUMENT,
            "malformed material",
        )
        faults.check(not problem, problem)
    if spec.key_class is KeyClass.ASYMMETRIC:
        faults.check(c.public(key), "no public key")


# --- what the provider does not claim -----------------------------------------------------------


def check_unclaimed(put: ProviderUnderTest) -> None:
    """Unclaimed algorithms are refused with NO_COMPATIBLE_PROVIDER when the provider is
    pinned; unknown names with UNSUPPORTED_ALGORITHM."""
    claims = put.capabilities
    with Faults(f"{put.name}: refusals of what it does not claim") as faults, connected(put) as c:
        # names the daemon knows (this process may know more: other providers' algorithms)
        served = {entry["name"] for entry in c.stack.algorithms()}
        specs = [spec for spec in REGISTRY.specs() if spec.name in served]
        hashes = [s.name for s in specs if s.kind is K.HASH and Capability(s.name, O.HASH) not in claims]
        for name in hashes[:3]:
            problem = expect_error(
                partial(c.hasher, name), E.NO_COMPATIBLE_PROVIDER, f"a {name} hash context (unclaimed)"
            )
            faults.check(not problem, problem)
        keys = [
            s.name for s in specs if s.is_key_algorithm and Capability(s.name, O.GENERATE_KEY) not in claims
        ]
        for name in keys[:3]:
            params = cs.GenerateKeyParams().set_algorithm(name).set_provider(c.pid)
            problem = expect_error(
                partial(c.km.generate_key, params),
                E.NO_COMPATIBLE_PROVIDER,
                f"generating a {name} key (unclaimed)",
            )
            faults.check(not problem, problem)
        for key_algorithm in put.key_algorithms():
            if put.is_slow(key_algorithm) or not c.obtainable(key_algorithm):
                continue
            unclaimed = [
                s
                for s in specs
                if key_algorithm in s.key_algorithms
                and s.kind in (K.CIPHER, K.AEAD, K.SIGNATURE, K.MAC)
                and not any(cap.algorithm == s.name for cap in claims)
            ]
            if not unclaimed:
                continue
            spec = unclaimed[0]
            key = c.key(key_algorithm)
            make: Callable[[], object] = (
                partial(c.cipher, spec.name, key, cs.CipherDirection.ENCRYPT)
                if spec.kind in (K.CIPHER, K.AEAD)
                else partial(c.signer, spec.name, key)
            )
            problem = expect_error(
                make,
                E.NO_COMPATIBLE_PROVIDER,
                f"a {spec.name} context with a {key_algorithm} key (unclaimed)",
            )
            faults.check(not problem, problem)
        problem = expect_error(
            lambda: c.hasher("NO-SUCH-ALGORITHM-42"), E.UNSUPPORTED_ALGORITHM, "an unknown algorithm name"
        )
        faults.check(not problem, problem)


# --- call order and reset ------------------------------------------------------------------------


def _first(put: ProviderUnderTest, kinds: tuple[AlgorithmKind, ...], op: Operation) -> str | None:
    for cap in sorted(put.capabilities, key=lambda c: c.algorithm):
        if (
            cap.operation is op
            and REGISTRY.get(cap.algorithm).kind in kinds
            and not put.is_slow(cap.algorithm)
        ):
            return cap.algorithm
    return None


def check_call_order(put: ProviderUnderTest) -> None:
    """Calls out of order are INVALID_STATE; reset() abandons a message and the context
    computes the next one correctly."""
    with Faults(f"{put.name}: call order and reset") as faults, connected(put) as c:
        ran = False
        hash_algorithm = _first(put, (K.HASH,), O.HASH)
        if hash_algorithm:
            ran = True
            with faults.step(f"{hash_algorithm} context"):
                h = c.hasher(hash_algorithm)
                expected = h.single_shot(MESSAGE)
                for what, call in (
                    ("update() before init()", lambda: h.update(b"x")),
                    ("finalize() before init()", h.finalize),
                ):
                    problem = expect_error(call, E.INVALID_STATE, what)
                    faults.check(not problem, problem)
                h.init()
                h.update(b"discarded by reset")
                h.reset()
                h.init()
                h.update(MESSAGE)
                faults.check(h.finalize() == expected, "the digest after reset() is wrong")
                problem = expect_error(lambda: h.update(b"x"), E.INVALID_STATE, "update() after finalize()")
                faults.check(not problem, problem)
        cipher_algorithm = _first(put, (K.AEAD, K.CIPHER), O.ENCRYPT)
        if cipher_algorithm:
            ran = True
            spec = REGISTRY.get(cipher_algorithm)
            with faults.step(f"{cipher_algorithm} context"):
                key = c.key(c.key_algorithm_for(cipher_algorithm))
                iv = bytes(spec.iv_size or 16)
                expected = c.encrypt(spec, key, iv, MESSAGE)
                with c.cipher(spec.name, key, cs.CipherDirection.ENCRYPT) as cipher:
                    problem = expect_error(
                        lambda: cipher.update(b"x"), E.INVALID_STATE, "update() before init()"
                    )
                    faults.check(not problem, problem)
                    cipher.init(iv)
                    cipher.update(b"discarded by reset")
                    cipher.reset()
                    cipher.init(iv)
                    if spec.kind is K.AEAD:
                        cipher.update(MESSAGE[:10])
                        problem = expect_error(
                            lambda: cipher.update_aad(b"late"), E.INVALID_STATE, "update_aad() after update()"
                        )
                        faults.check(not problem, problem)
                        cipher.reset()
                        cipher.init(iv)
                    out = cipher.update(MESSAGE)
                    out += cipher.finalize()
                    faults.check(out == expected, "the ciphertext after reset() is wrong")
        sign_algorithm = _first(put, (K.SIGNATURE, K.MAC), O.SIGN)
        if sign_algorithm and put.claims(sign_algorithm, O.VERIFY):
            ran = True
            with faults.step(f"{sign_algorithm} context"):
                key = c.key(c.key_algorithm_for(sign_algorithm))
                signer = c.signer(sign_algorithm, key)
                problem = expect_error(signer.sign_finalize, E.INVALID_STATE, "sign_finalize() before init()")
                faults.check(not problem, problem)
                signer.init()
                signer.update(b"discarded by reset")
                signer.reset()
                signer.init()
                signer.update(MESSAGE)
                signature = signer.sign_finalize()
                faults.check(
                    c.verifier(sign_algorithm, key).verify(MESSAGE, signature) is True,
                    "the signature after reset() does not verify",
                )
        faults.check(ran, "the provider claims no hash, cipher or signature to check call order with")


# --- permissions -----------------------------------------------------------------------------------


def check_permissions(put: ProviderUnderTest) -> None:
    """A key without the permission an operation needs is refused at context creation with
    KEY_OPERATION_NOT_PERMITTED; material without EXPORT stays in the daemon."""
    with Faults(f"{put.name}: key permissions") as faults, connected(put) as c:
        tried = 0
        for key_algorithm in put.key_algorithms():
            if put.is_slow(key_algorithm) or not c.obtainable(key_algorithm):
                continue
            users = [
                cap
                for cap in sorted(put.capabilities, key=lambda x: x.algorithm)
                if key_algorithm in REGISTRY.get(cap.algorithm).key_algorithms
                and cap.operation in _PERMISSION_FOR
            ]
            if not users:
                continue
            cap = users[0]
            needed = _PERMISSION_FOR[cap.operation]
            spec = REGISTRY.get(cap.algorithm)
            lacking = full_permissions(key_algorithm) & ~needed & ~P.EXPORT
            if spec.kind is K.MAC:
                lacking &= ~(P.MAC | P.SIGN)
            if not lacking:
                lacking = P.DERIVE if needed is not P.DERIVE else P.ENCRYPT
            tried += 1
            with faults.step(f"{key_algorithm} key without {needed.name}"):
                key = c.key(key_algorithm, lacking)
                problem = expect_error(
                    partial(_open, c, cap, spec, key),
                    E.KEY_OPERATION_NOT_PERMITTED,
                    f"{cap.algorithm}/{cap.operation.value} with a key lacking {needed.name}",
                )
                faults.check(not problem, problem)
                if REGISTRY.get(key_algorithm).key_class is KeyClass.SYMMETRIC or put.claims(
                    key_algorithm, O.GENERATE_KEY
                ):
                    problem = expect_error(
                        partial(c.km.export_key, key),
                        E.KEY_OPERATION_NOT_PERMITTED,
                        f"exporting a {key_algorithm} key without EXPORT",
                    )
                    faults.check(not problem, problem)
        faults.check(tried, "no key type with an operation to check permissions on")


def _open(c: Client, cap: Capability, spec: AlgorithmSpec, key: Any) -> object:
    if cap.operation in (O.ENCRYPT, O.DECRYPT):
        direction = cs.CipherDirection.ENCRYPT if cap.operation is O.ENCRYPT else cs.CipherDirection.DECRYPT
        return c.cipher(spec.name, key, direction)
    if cap.operation is O.SIGN:
        return c.signer(spec.name, key)
    if cap.operation is O.DECAPSULATE:
        config = cs.KemContextConfig().set_algorithm(spec.name).set_key(key)
        config.set_provider(c.pid)
        return c.ctx.create_kem_context(config).decapsulate(b"\x00" * (spec.ciphertext_size or 32))
    if cap.operation is O.AGREE:
        config = cs.KeyAgreementContextConfig().set_algorithm(spec.name).set_key(key)
        config.set_provider(c.pid)
        return c.ctx.create_key_agreement_context(config)
    return c.km.derive_key(
        cs.DeriveKeyParams().set_algorithm(spec.name).set_key(key).set_output("GENERIC-SECRET", 32)
    )


# --- key slots, export and import ----------------------------------------------------------------


def client_fingerprint(c: Client, key: Any, algorithm: str) -> bytes | None:
    """Public key, or a MAC / ciphertext / derived secret of a fixed input, or None."""
    spec = REGISTRY.get(algorithm)
    if spec.key_class is KeyClass.ASYMMETRIC:
        return c.public(key)
    for cap in sorted(
        c.put.capabilities, key=lambda x: (x.algorithm != algorithm, x.algorithm, x.operation.value)
    ):
        user = REGISTRY.get(cap.algorithm)
        if algorithm not in user.key_algorithms:
            continue
        if user.kind is K.MAC and cap.operation is O.SIGN:
            return c.signer(user.name, key).sign(MESSAGE)
        if user.kind in (K.CIPHER, K.AEAD) and cap.operation is O.ENCRYPT:
            return c.encrypt(user, key, bytes(range(user.iv_size or 16)), MESSAGE)
        if user.kind is K.KDF and cap.operation is O.DERIVE:
            return c.secret(
                c.km.derive_key(
                    cs.DeriveKeyParams()
                    .set_algorithm(user.name)
                    .set_key(key)
                    .set_salt(b"s")
                    .set_info(b"i")
                    .set_output("GENERIC-SECRET", 32)
                    .set_permissions(P.EXPORT)
                )
            )
    return None


def _persistable(put: ProviderUnderTest, c: Client) -> list[str]:
    return [a for a in put.key_algorithms() if c.obtainable(a) and not put.is_slow(a)]


def check_key_slots(put: ProviderUnderTest, algorithm: str) -> None:
    """A key of ``algorithm`` persists into a slot and loads back behaving the same (also
    used through the slot directly); the slot clears; exported material imports back to an
    equivalent key."""
    spec = REGISTRY.get(algorithm)
    with (
        Faults(f"{put.name}: {algorithm} keys in slots, exported and imported, over the daemon") as faults,
        connected(put) as c,
    ):
        if not c.obtainable(algorithm):
            faults.check(
                put.claims(algorithm, O.IMPORT_KEY),
                f"{algorithm} is neither generated nor importable from kit material",
            )
            return
        key = c.key(algorithm)
        expected = client_fingerprint(c, key, algorithm)
        with faults.step("persist_key, load_key, clear_key_slot"):
            slot = c.ctx.resolve_resource(slot_name(algorithm), cs.ResourceType.KEY_SLOT)
            info = c.km.persist_key(slot, key)
            faults.check(
                info.status is cs.KeySlotStatus.OCCUPIED and info.provider == c.pid,
                f"after persist_key the slot says {info}",
            )
            loaded = c.km.load_key(slot)
            faults.check(
                loaded.persistence is cs.ResourcePersistence.PERSISTENT, "a loaded key is not PERSISTENT"
            )
            faults.check(
                client_fingerprint(c, loaded, algorithm) == expected,
                "the key loaded from the slot behaves differently",
            )
            faults.check(
                client_fingerprint(c, slot, algorithm) == expected,
                "the slot used directly behaves differently",
            )
            loaded.release()
            c.km.clear_key_slot(slot)
            faults.check(
                c.km.get_key_slot_info(slot).status is cs.KeySlotStatus.EMPTY,
                "the slot is not empty after clear_key_slot",
            )
        if not put.claims(algorithm, O.IMPORT_KEY):
            return
        with faults.step("export, then import"):
            formats = (
                (cs.KeyFormat.RAW,) if spec.key_class is KeyClass.SYMMETRIC else materials.PRIVATE_FORMATS
            )
            exported = None
            for fmt in formats:
                try:
                    exported = c.km.export_key(key, fmt), fmt
                    break
                except cs.CryptoError as exc:
                    if exc.code is E.KEY_OPERATION_NOT_PERMITTED:
                        break  # the backend keeps its keys (non-extractable): allowed
                    if exc.code not in (E.INVALID_ARGUMENT, E.UNSUPPORTED_ALGORITHM):
                        raise
            if exported is not None:
                again = c.import_key(algorithm, exported[0], exported[1], full_permissions(algorithm))
                faults.check(
                    client_fingerprint(c, again, algorithm) == expected,
                    "the re-imported key behaves differently",
                )


def check_persistence_across_restart(put: ProviderUnderTest) -> None:
    """Keys in slots survive a daemon restart (same key store, same backend)."""
    with (
        Faults(f"{put.name}: slots across a daemon restart") as faults,
        put.new_daemon(label="restart") as daemon,
    ):
        expected: dict[str, bytes | None] = {}
        with connected(put, daemon) as c:
            for algorithm in _persistable(put, c):
                with faults.step(f"persist a {algorithm} key"):
                    slot = c.ctx.resolve_resource(slot_name(algorithm), cs.ResourceType.KEY_SLOT)
                    key = c.key(algorithm)
                    expected[algorithm] = client_fingerprint(c, key, algorithm)
                    c.km.persist_key(slot, key)
        daemon.stop()
        daemon.start()
        with connected(put, daemon) as c:
            for algorithm, fingerprint in expected.items():
                with faults.step(f"load the {algorithm} key after the restart"):
                    slot = c.ctx.resolve_resource(slot_name(algorithm), cs.ResourceType.KEY_SLOT)
                    key = c.keep(c.km.load_key(slot))
                    faults.check(
                        client_fingerprint(c, key, algorithm) == fingerprint,
                        f"the {algorithm} key behaves differently after the restart",
                    )
                    c.km.clear_key_slot(slot)


# --- concurrency and accounting ------------------------------------------------------------------


def client_workload(put: ProviderUnderTest, c: Client) -> list[Callable[[], bytes]]:
    """Cheap deterministic calls over the claims, as closures on one client."""
    calls: list[Callable[[], bytes]] = []
    hash_algorithm = _first(put, (K.HASH,), O.HASH)
    if hash_algorithm:
        hasher = c.hasher(hash_algorithm)
        calls.append(lambda: hasher.single_shot(MESSAGE))
    mac = _first(put, (K.MAC,), O.SIGN)
    if mac:
        key = c.key(c.key_algorithm_for(mac))
        calls.append(lambda: c.signer(mac, key).sign(MESSAGE))
    cipher = _first(put, (K.CIPHER, K.AEAD), O.ENCRYPT)
    if cipher:
        spec = REGISTRY.get(cipher)
        ckey = c.key(c.key_algorithm_for(cipher))
        calls.append(lambda: c.encrypt(spec, ckey, bytes(spec.iv_size or 16), MESSAGE))
    signature = _first(put, (K.SIGNATURE,), O.SIGN)
    if signature and put.claims(signature, O.VERIFY):
        skey = c.key(c.key_algorithm_for(signature))

        def sign_and_verify() -> bytes:
            sig = c.signer(signature, skey).sign(MESSAGE)
            return b"ok" if c.verifier(signature, skey).verify(MESSAGE, sig) else b"NOT OK"

        calls.append(sign_and_verify)
    return calls


def _own_sessions(stack: cs.CryptoStack) -> dict[int, cs.ClientSummary]:
    """This process's sessions in the daemon's status, by session id."""
    return {client["session"]: client for client in stack.status()["clients"] if client["pid"] == os.getpid()}


def _gone(observer: cs.CryptoStack, sessions: set[int]) -> bool:
    return not sessions & set(_own_sessions(observer))


def check_concurrency(put: ProviderUnderTest) -> None:
    """Several clients with several threads each use the provider at once and get the same
    results as one alone; when they disconnect, the daemon holds nothing of theirs."""
    with (
        Faults(f"{put.name}: concurrent clients and threads") as faults,
        connected(put) as observer,
        ExitStack() as stack,
    ):
        before = set(_own_sessions(observer.stack))
        clients = [stack.enter_context(connected(put)) for _ in range(put.profile.clients)]
        plans = [client_workload(put, c) for c in clients]
        if not plans[0]:
            faults.add("no claim the kit can run concurrently")
            return
        expected = [[call() for call in plan] for plan in plans]
        errors: list[str] = []
        lock = threading.Lock()

        def run(index: int) -> None:
            try:
                for _round in range(4):
                    for number, call in enumerate(plans[index]):
                        if call() != expected[index][number]:
                            with lock:
                                errors.append(f"call {number} differed under concurrency")
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")

        threads = [
            threading.Thread(target=run, args=(i,))
            for i in range(len(clients))
            for _ in range(put.profile.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
            faults.check(not thread.is_alive(), "a client thread still runs after 300 s")
        for error in sorted(set(errors)):
            faults.add(error)
        ours = set(_own_sessions(observer.stack)) - before
        faults.check(
            len(ours) == len(clients), f"status shows {len(ours)} sessions for our {len(clients)} connections"
        )
        stack.close()
        with faults.step("the sessions end when the clients disconnect"):
            eventually(
                lambda: _gone(observer.stack, ours), 30, "the disconnected clients' sessions to leave status"
            )


def check_accounting(put: ProviderUnderTest) -> None:
    """After every context is closed and every key released, status shows nothing left for
    the client; after it disconnects, its session is gone."""
    with Faults(f"{put.name}: resource accounting") as faults, connected(put) as observer:
        before = set(_own_sessions(observer.stack))
        with connected(put) as c:
            plan = client_workload(put, c)
            for call in plan:
                call()
            for algorithm in _persistable(put, c)[:4]:
                c.key(algorithm)
            c.release_keys()
            c.ctx.close()
            mine = {k: v for k, v in _own_sessions(observer.stack).items() if k not in before}
            faults.check(len(mine) == 1, f"status lists {len(mine)} new sessions for one client")
            for entry in mine.values():
                counts = {k: entry.get(k) for k in ("contexts", "resources", "guards")}
                faults.check(
                    all(v == 0 for v in counts.values()),
                    f"after closing and releasing everything status shows {counts}",
                )
        with faults.step("the session ends when the client disconnects"):
            eventually(
                lambda: _gone(observer.stack, set(mine)),
                30,
                "the disconnected client's session to leave status",
            )
