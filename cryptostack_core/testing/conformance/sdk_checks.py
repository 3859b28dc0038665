"""Checks of a provider called directly through the SDK, as the daemon calls it.

Each check drives :attr:`ProviderUnderTest.provider` and raises
:class:`~cryptostack_core.testing.conformance.faults.ConformanceError` naming every fault.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from cryptostack_core.sdk import (
    AlgorithmKind,
    Capability,
    CipherDirection,
    CryptoError,
    ErrorCode,
    KeyClass,
    KeyFormat,
    KeyOperationPermission,
    Operation,
    Provider,
    ProviderKey,
    ProviderState,
)
from cryptostack_core.testing.conformance import materials
from cryptostack_core.testing.conformance.faults import ConformanceError, Faults, expect_error
from cryptostack_core.testing.conformance.target import ProviderUnderTest
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmSpec

__all__ = [
    "VALID_OPERATIONS",
    "check_capability",
    "check_key_round_trip",
    "check_leaks",
    "check_lifecycle",
    "check_threads",
    "key_algorithm_for",
]

P = KeyOperationPermission
K = AlgorithmKind
O = Operation  # noqa: E741 - the enum, short for the tables below

VALID_OPERATIONS: dict[AlgorithmKind, frozenset[Operation]] = {
    K.HASH: frozenset({O.HASH}),
    K.CIPHER: frozenset({O.ENCRYPT, O.DECRYPT}),
    K.AEAD: frozenset({O.ENCRYPT, O.DECRYPT}),
    K.SIGNATURE: frozenset({O.SIGN, O.VERIFY}),
    K.MAC: frozenset({O.SIGN, O.VERIFY}),
    K.KEM: frozenset({O.ENCAPSULATE, O.DECAPSULATE}),
    K.KEY_AGREEMENT: frozenset({O.AGREE}),
    K.KDF: frozenset({O.DERIVE}),
    K.KEY: frozenset(),
    K.RANDOM: frozenset({O.RANDOM}),
}
"""Operations a claim may pair with each kind (key types also take GENERATE/IMPORT_KEY)."""

MESSAGE = b"cryptostack conformance kit: the quick brown fox jumps over the lazy dog" * 3


# --- keys ---------------------------------------------------------------------------------------


def _obtainable(put: ProviderUnderTest, algorithm: str) -> bool:
    return put.claims(algorithm, O.GENERATE_KEY) or (
        put.claims(algorithm, O.IMPORT_KEY) and materials.private_material(algorithm) is not None
    )


def key_algorithm_for(put: ProviderUnderTest, algorithm: str) -> str:
    """A key type ``algorithm`` takes that the kit can get from the provider (its own name
    first), or ConformanceError."""
    spec = REGISTRY.get(algorithm)
    candidates = sorted(spec.key_algorithms, key=lambda name: name != algorithm)
    for candidate in candidates:
        if _obtainable(put, candidate):
            return candidate
    raise ConformanceError(
        f"{algorithm} is claimed, but the provider neither generates nor imports a key it "
        f"takes ({', '.join(spec.key_algorithms)}), so the claim cannot be used"
    )


def full_permissions(algorithm: str) -> KeyOperationPermission:
    """The key type's default permissions plus EXPORT."""
    return REGISTRY.get(algorithm).default_permissions | P.EXPORT


class KeyTracker:
    """Keys made during a check: released at the end, watched for leaks."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.keys: list[ProviderKey] = []
        self.refs: list[weakref.ref[ProviderKey]] = []

    def add(self, key: ProviderKey) -> ProviderKey:
        self.keys.append(key)
        try:
            self.refs.append(weakref.ref(key))
        except TypeError:  # a key class with __slots__ and no __weakref__: cannot watch it
            pass
        return key

    def make(
        self, put: ProviderUnderTest, algorithm: str, permissions: KeyOperationPermission | None = None
    ) -> ProviderKey:
        """Generate (or import fresh material for) a key of ``algorithm``; for slow key
        types (and no particular permissions) the target's shared key, not released here."""
        if put.is_slow(algorithm) and permissions is None and put.claims(algorithm, O.GENERATE_KEY):
            return put.shared_key(algorithm)
        perms = full_permissions(algorithm) if permissions is None else permissions
        if put.claims(algorithm, O.GENERATE_KEY):
            return self.add(self.provider.generate_key(algorithm, perms))
        material = materials.private_material(algorithm)
        if put.claims(algorithm, O.IMPORT_KEY) and material is not None:
            return self.add(self.provider.import_key(algorithm, material[0], material[1], perms))
        raise ConformanceError(f"cannot get a {algorithm} key from the provider")

    def release_all(self) -> None:
        keys, self.keys = self.keys, []
        for key in keys:
            self.provider.release_key(key)


@contextmanager
def _tracked(put: ProviderUnderTest) -> Iterator[KeyTracker]:
    tracker = KeyTracker(put.provider)
    try:
        yield tracker
    finally:
        tracker.release_all()


def _public_for_import(provider: Provider, spec: AlgorithmSpec, key: ProviderKey) -> tuple[bytes, KeyFormat]:
    try:
        return provider.export_public_key(key, KeyFormat.SPKI_DER), KeyFormat.SPKI_DER
    except CryptoError:
        return provider.export_public_key(key, KeyFormat.RAW), KeyFormat.RAW


# --- operations as the daemon runs them -----------------------------------------------------


def _hash(provider: Provider, algorithm: str, chunks: list[bytes]) -> bytes:
    op = provider.create_hash(algorithm)
    for chunk in chunks:
        op.update(memoryview(chunk))
    return op.finalize()


def _cipher(
    provider: Provider,
    algorithm: str,
    key: ProviderKey,
    direction: CipherDirection,
    iv: bytes,
    data: bytes,
    aad: bytes = b"",
    tag_length: int = 16,
) -> tuple[bytes, bytes]:
    """(output of the updates, output of finalize)."""
    op = provider.create_cipher(algorithm, key, direction, iv, tag_length)
    if aad:
        op.update_aad(aad)
    half = len(data) // 2
    streamed = op.update(memoryview(data[:half])) + op.update(data[half:])
    return streamed, op.finalize()


def _sign(
    provider: Provider, algorithm: str, key: ProviderKey, message: bytes, context: bytes = b""
) -> bytes:
    op = provider.create_signer(algorithm, key, context)
    op.update(message[:7])
    op.update(memoryview(message[7:]))
    return op.finalize()


def _verify(
    provider: Provider,
    algorithm: str,
    key: ProviderKey,
    message: bytes,
    signature: bytes,
    context: bytes = b"",
) -> object:
    op = provider.create_verifier(algorithm, key, context)
    op.update(message)
    return op.finalize(signature)


def _iv(spec: AlgorithmSpec) -> bytes:
    return os.urandom(spec.iv_size or 16)


# --- lifecycle --------------------------------------------------------------------------------


def check_lifecycle(put: ProviderUnderTest) -> None:
    """Claims name registered algorithms with operations their kind allows; supports()
    agrees; state, describe and a second instance's start/close behave."""
    provider = put.provider
    with Faults(f"{put.name}: lifecycle and claims") as faults:
        claims = list(provider.capabilities())
        faults.check(len(claims) == len(set(claims)), "capabilities() lists a claim twice")
        faults.check(claims, "capabilities() claims nothing")
        for cap in claims:
            if not isinstance(cap, Capability):
                faults.add(f"capabilities() yields {type(cap).__name__}, not Capability")
                continue
            spec = REGISTRY.find(cap.algorithm)
            if spec is None or spec.name != cap.algorithm:
                faults.add(
                    f"claim {cap.algorithm}/{cap.operation.value}: not a canonical "
                    "registered name (declare new algorithms in Provider.algorithms())"
                )
                continue
            allowed = VALID_OPERATIONS[spec.kind] | (
                {O.GENERATE_KEY, O.IMPORT_KEY} if spec.is_key_algorithm else set()
            )
            faults.check(
                cap.operation in allowed,
                f"claim {cap.algorithm}/{cap.operation.value}: a {spec.kind.value} "
                f"algorithm does not take {cap.operation.value}",
            )
            faults.check(
                provider.supports(cap.algorithm, cap.operation) is True,
                f"supports({cap.algorithm}, {cap.operation.value}) is not True",
            )
        unclaimed = [name for name in REGISTRY.names() if not any(c.algorithm == name for c in claims)]
        for name in unclaimed[:20]:
            faults.check(
                not provider.supports(name, O.HASH) and not provider.supports(name, O.SIGN),
                f"supports() says yes for unclaimed {name}",
            )
        state = provider.state()
        faults.check(
            isinstance(state, tuple) and len(state) == 2 and state[0] is ProviderState.READY,
            f"state() right after start() is {state!r}, not (READY, reason)",
        )
        info = provider.describe()
        faults.check(
            isinstance(info, dict) and all(isinstance(k, str) for k in info),
            f"describe() must be a dict with string keys, got {info!r}",
        )
        with faults.step("describe() as JSON (cryptostack status --json prints it)"):
            json.dumps(info)
        with faults.step("a second instance starts and closes on its own backend"), ExitStack() as stack:
            second = put.start_provider(stack, label="second-instance")
            faults.check(
                frozenset(second.capabilities()) == frozenset(claims),
                "a second instance on the same options claims something else",
            )
        for cap in claims:
            inline = provider.run_inline(cap.operation, 64, cap.algorithm)
            faults.check(
                isinstance(inline, bool), f"run_inline({cap.operation.value}) returned {inline!r}, not a bool"
            )


# --- one claim ---------------------------------------------------------------------------------


def check_capability(put: ProviderUnderTest, cap: Capability) -> None:
    """The claim works through the SDK: right results, refusals with the documented codes."""
    spec = REGISTRY.get(cap.algorithm)
    subject = f"{put.name}: {cap.algorithm}/{cap.operation.value} through the SDK"
    with Faults(subject) as faults, _tracked(put) as keys:
        run = _CAPABILITY_CHECKS.get((spec.kind, cap.operation))
        if cap.operation in (O.GENERATE_KEY, O.IMPORT_KEY):
            run = _key_claim
        if run is None:
            faults.add(f"the kit has no check for {spec.kind.value}/{cap.operation.value}")
            return
        with faults.step(cap.operation.value):
            run(put, spec, cap.operation, keys, faults)


def _hash_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    whole = _hash(p, spec.name, [MESSAGE])
    faults.check(
        len(whole) == spec.digest_size,
        f"digest is {len(whole)} bytes, {spec.name} digests are {spec.digest_size}",
    )
    faults.check(
        _hash(p, spec.name, [MESSAGE[:5], b"", MESSAGE[5:]]) == whole,
        "the digest depends on how the message is split into updates",
    )
    faults.check(_hash(p, spec.name, [MESSAGE + b"!"]) != whole, "different messages give the same digest")
    faults.check(len(_hash(p, spec.name, [])) == spec.digest_size, "empty message fails")


def _cipher_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    key_algorithm = key_algorithm_for(put, spec.name)
    material = materials.private_material(key_algorithm) if put.claims(key_algorithm, O.IMPORT_KEY) else None
    key = (
        keys.add(p.import_key(key_algorithm, material[0], material[1], full_permissions(key_algorithm)))
        if material
        else keys.make(put, key_algorithm)
    )
    aead = spec.kind is K.AEAD
    iv, aad = _iv(spec), (b"header" if aead else b"")
    tag = spec.tag_size or 16
    streamed, tail = _cipher(p, spec.name, key, CipherDirection.ENCRYPT, iv, MESSAGE, aad, tag)
    sealed = streamed + tail
    expected_len = len(MESSAGE) + (tag if aead else 0)
    if spec.name.endswith("-CBC"):
        expected_len = (len(MESSAGE) // 16 + 1) * 16
    faults.check(
        len(sealed) == expected_len, f"encryption output is {len(sealed)} bytes, expected {expected_len}"
    )
    faults.check(MESSAGE[:16] not in sealed, "the ciphertext contains the plaintext")
    if material is not None and material[1] is KeyFormat.RAW:
        reference = materials.reference_cipher(spec.name, material[0], iv, MESSAGE)
        if reference is not None:
            faults.check(sealed == reference, "encryption differs from pyca/cryptography's")
    if put.claims(spec.name, O.DECRYPT) and put.claims(spec.name, O.ENCRYPT):
        streamed, tail = _cipher(p, spec.name, key, CipherDirection.DECRYPT, iv, sealed, aad, tag)
        faults.check(streamed + tail == MESSAGE, "decryption does not give the plaintext back")
        if aead:
            faults.check(streamed == b"", "AEAD decryption released plaintext before the tag was verified")
            tampered = bytearray(sealed)
            tampered[3] ^= 1
            faults.check(
                not expect_error(
                    lambda: _cipher(
                        p, spec.name, key, CipherDirection.DECRYPT, iv, bytes(tampered), aad, tag
                    ),
                    ErrorCode.AUTHENTICATION_FAILED,
                    "tampered",
                ),
                "a tampered AEAD message is not refused with AUTHENTICATION_FAILED",
            )
    bad_iv = b"" if aead else iv[:-1]
    problem = expect_error(
        lambda: p.create_cipher(spec.name, key, CipherDirection.ENCRYPT, bad_iv, tag),
        ErrorCode.INVALID_ARGUMENT,
        f"an IV of {len(bad_iv)} bytes",
    )
    faults.check(not problem, problem)


def _signature_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    key = keys.make(put, key_algorithm_for(put, spec.name))
    signer_claimed = put.claims(spec.name, O.SIGN)
    if not signer_claimed:
        faults.check(
            isinstance(_verify(p, spec.name, key, MESSAGE, b"\x00" * 8), bool),
            "verify of garbage did not return a bool",
        )
        return
    signature = _sign(p, spec.name, key, MESSAGE)
    if op is O.SIGN:
        size = p.signature_size(spec.name, key)
        faults.check(
            0 < len(signature) <= size,
            f"signature of {len(signature)} bytes; signature_size() says at most {size}",
        )
        spki: bytes | None = None
        try:
            spki = p.export_public_key(key, KeyFormat.SPKI_DER)
        except CryptoError:
            pass
        if spki is not None:
            independent = materials.verify_independently(spec.name, spki, MESSAGE, signature)
            faults.check(
                independent is not False, "pyca/cryptography does not accept the provider's signature"
            )
        return
    if put.claims(spec.name, O.VERIFY):
        faults.check(
            _verify(p, spec.name, key, MESSAGE, signature) is True,
            "the provider does not verify its own signature",
        )
        faults.check(
            _verify(p, spec.name, key, MESSAGE + b"!", signature) is False,
            "a signature verifies for a different message",
        )
        try:
            result = _verify(p, spec.name, key, MESSAGE, b"\x01" * 5)
            faults.check(result is False, f"verify() of a malformed signature returned {result!r}, not False")
        except Exception as exc:
            faults.add(f"verify() of a malformed signature raised {type(exc).__name__}; it must return False")
        if spec.supports_context_string and not put.is_slow(spec.name):
            with_context = _sign(p, spec.name, key, MESSAGE, b"kit-context")
            faults.check(
                _verify(p, spec.name, key, MESSAGE, with_context, b"kit-context") is True,
                "a signature with a context string does not verify",
            )
            faults.check(
                _verify(p, spec.name, key, MESSAGE, with_context) is False, "the context string is ignored"
            )


def _mac_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    key = keys.make(put, key_algorithm_for(put, spec.name))
    tag = _sign(p, spec.name, key, MESSAGE)
    faults.check(tag == _sign(p, spec.name, key, MESSAGE), "the MAC is not deterministic")
    faults.check(tag != _sign(p, spec.name, key, MESSAGE + b"!"), "different messages give the same MAC")
    size = p.signature_size(spec.name, key)
    faults.check(
        len(tag) == size and (not spec.signature_size or size == spec.signature_size),
        f"MAC of {len(tag)} bytes; signature_size() says {size}, the spec {spec.signature_size}",
    )
    other = keys.make(put, key.algorithm)
    faults.check(_sign(p, spec.name, other, MESSAGE) != tag, "two keys give the same MAC")


def _kem_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    pair = keys.make(put, key_algorithm_for(put, spec.name))
    public = pair
    if put.claims(pair.algorithm, O.IMPORT_KEY):
        material, fmt = _public_for_import(p, spec, pair)
        public = keys.add(p.import_key(pair.algorithm, material, fmt, P.ENCAPSULATE))
        faults.check(not public.has_private, "an imported public key says has_private")
    secret_perms = P.DERIVE | P.EXPORT
    if not put.claims(spec.name, O.ENCAPSULATE) or not put.claims(spec.name, O.DECAPSULATE):
        faults.add(
            "ENCAPSULATE and DECAPSULATE are claimed one without the other; the kit cannot check either"
        )
        return
    ciphertext, shared = p.encapsulate(spec.name, public, secret_perms)
    keys.add(shared)
    faults.check(
        not spec.ciphertext_size or len(ciphertext) == spec.ciphertext_size,
        f"ciphertext is {len(ciphertext)} bytes, {spec.name}'s are {spec.ciphertext_size}",
    )
    received = keys.add(p.decapsulate(spec.name, pair, ciphertext, secret_perms))
    a, b = p.export_key(shared, KeyFormat.RAW), p.export_key(received, KeyFormat.RAW)
    faults.check(
        a == b and len(a) == (spec.shared_secret_size or len(a)),
        "encapsulated and decapsulated secrets differ",
    )
    faults.check(
        shared.algorithm == "GENERIC-SECRET",
        f"a shared secret is a GENERIC-SECRET key, not {shared.algorithm}",
    )
    problem = expect_error(
        lambda: p.decapsulate(spec.name, pair, ciphertext[:-1], secret_perms),
        ErrorCode.INVALID_ARGUMENT,
        "a ciphertext one byte short",
    )
    faults.check(not problem, problem)


def _agree_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    key_algorithm = key_algorithm_for(put, spec.name)
    a, b = keys.make(put, key_algorithm), keys.make(put, key_algorithm)
    perms = P.DERIVE | P.EXPORT
    fmt = KeyFormat.RAW if spec.name == "X25519" else KeyFormat.SPKI_DER
    ab = keys.add(p.agree(spec.name, a, p.export_public_key(b, fmt), perms))
    ba = keys.add(p.agree(spec.name, b, p.export_public_key(a, fmt), perms))
    faults.check(
        p.export_key(ab, KeyFormat.RAW) == p.export_key(ba, KeyFormat.RAW),
        "the two sides of the agreement get different secrets",
    )
    problem = expect_error(
        lambda: p.agree(spec.name, a, b"\x04" + b"\x01" * 12, perms),
        ErrorCode.INVALID_ARGUMENT,
        "a malformed peer key",
    )
    faults.check(not problem, problem)


def _derive_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    ikm_algorithm = key_algorithm_for(put, spec.name)
    ikm = keys.make(put, ikm_algorithm, P.DERIVE | full_permissions(ikm_algorithm))

    def derive(info: bytes, length: int = 42) -> bytes:
        key = keys.add(
            p.derive(
                spec.name,
                ikm,
                length=length,
                salt=b"salt",
                info=info,
                output_algorithm="GENERIC-SECRET",
                permissions=P.DERIVE | P.EXPORT,
            )
        )
        faults.check(
            key.algorithm == "GENERIC-SECRET",
            f"derive() made a {key.algorithm} key, not the GENERIC-SECRET asked for",
        )
        return p.export_key(key, KeyFormat.RAW)

    first = derive(b"info")
    faults.check(len(first) == 42, f"asked for 42 bytes, got {len(first)}")
    faults.check(derive(b"info") == first, "derivation is not deterministic")
    faults.check(derive(b"other") != first, "the info string is ignored")


def _random_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    a, b = p.random_bytes(32), p.random_bytes(32)
    faults.check(len(a) == 32 and len(p.random_bytes(1)) == 1, "random_bytes(n) does not return n bytes")
    faults.check(a != b, "two random_bytes(32) calls returned the same bytes")
    faults.check(len(set(p.random_bytes(256))) > 64, "random bytes look constant")


def _key_claim(
    put: ProviderUnderTest, spec: AlgorithmSpec, op: Operation, keys: KeyTracker, faults: Faults
) -> None:
    p = put.provider
    if not spec.is_key_algorithm:
        faults.add(f"{op.value} claimed for {spec.name}, which is not a key type")
        return
    perms = full_permissions(spec.name)
    if op is O.GENERATE_KEY:
        key = (
            put.shared_key(spec.name)
            if put.is_slow(spec.name)
            else keys.add(p.generate_key(spec.name, perms))
        )
    else:
        imported = _import_any(put, spec, keys, perms)
        if isinstance(imported, str):
            faults.add(imported)
            return
        key = imported
        malformed = b"\x30\x03\x02\x01\x00" if spec.key_class is KeyClass.ASYMMETRIC else b""
        fmt = KeyFormat.SPKI_DER if spec.key_class is KeyClass.ASYMMETRIC else KeyFormat.RAW
        problem = expect_error(
            lambda: p.import_key(spec.name, malformed, fmt, perms),
            ErrorCode.INVALID_ARGUMENT,
            f"malformed {fmt.value} material",
        )
        faults.check(not problem, problem)
        if spec.key_size and spec.key_class is KeyClass.SYMMETRIC and spec.name.startswith("AES"):
            problem = expect_error(
                lambda: p.import_key(spec.name, os.urandom(spec.key_size - 1), KeyFormat.RAW, perms),
                ErrorCode.INVALID_ARGUMENT,
                "a key one byte short",
            )
            faults.check(not problem, problem)
    faults.check(key.algorithm == spec.name, f"the key says it is {key.algorithm}")
    if op is O.GENERATE_KEY:
        faults.check(key.has_private, "a generated key says it has no private part")
    if spec.key_class is KeyClass.ASYMMETRIC:
        with faults.step("export_public_key"):
            public, _fmt = _public_for_import(p, spec, key)
            faults.check(public, "empty public key")
    elif key.extractable and op is O.GENERATE_KEY:
        with faults.step("export_key(RAW) of an extractable secret"):
            raw = p.export_key(key, KeyFormat.RAW)
            faults.check(
                not spec.key_size or len(raw) == spec.key_size,
                f"a {spec.name} key exported {len(raw)} bytes, not {spec.key_size}",
            )


def _import_any(
    put: ProviderUnderTest, spec: AlgorithmSpec, keys: KeyTracker, perms: KeyOperationPermission
) -> ProviderKey | str:
    """Import private material the kit made, else a public key (made by pyca, else by the
    provider): a key, or the fault when nothing imports."""
    p = put.provider
    tried: list[str] = []
    material = materials.private_material(spec.name)
    if material is not None:
        try:
            key = keys.add(p.import_key(spec.name, material[0], material[1], perms))
        except CryptoError as exc:
            if exc.code not in (ErrorCode.INVALID_ARGUMENT, ErrorCode.UNSUPPORTED_ALGORITHM):
                raise
            tried.append(f"{material[1].value} private key: {exc.code.value} {exc.message}")
        else:
            if material[1] is KeyFormat.RAW and key.extractable:
                if p.export_key(key, KeyFormat.RAW) != material[0]:
                    return "an imported secret exports as different bytes"
            return key
    if spec.key_class is not KeyClass.ASYMMETRIC:
        return "import_key refused fresh material: " + "; ".join(tried)
    public = materials.public_material(spec.name)
    fmt = KeyFormat.SPKI_DER
    if public is None and put.claims(spec.name, O.GENERATE_KEY):
        public, fmt = _public_for_import(p, spec, keys.make(put, spec.name))
    if public is None:
        return (
            f"the kit cannot make {spec.name} material and the provider does not "
            "generate it: import cannot be checked"
        )
    key = keys.add(p.import_key(spec.name, public, fmt, perms & (P.VERIFY | P.ENCAPSULATE | P.AGREE)))
    if key.has_private:
        return "an imported public key says has_private"
    return key


_CAPABILITY_CHECKS: dict[tuple[AlgorithmKind, Operation], Callable[..., None]] = {
    (K.HASH, O.HASH): _hash_claim,
    (K.CIPHER, O.ENCRYPT): _cipher_claim,
    (K.CIPHER, O.DECRYPT): _cipher_claim,
    (K.AEAD, O.ENCRYPT): _cipher_claim,
    (K.AEAD, O.DECRYPT): _cipher_claim,
    (K.SIGNATURE, O.SIGN): _signature_claim,
    (K.SIGNATURE, O.VERIFY): _signature_claim,
    (K.MAC, O.SIGN): _mac_claim,
    (K.MAC, O.VERIFY): _mac_claim,
    (K.KEM, O.ENCAPSULATE): _kem_claim,
    (K.KEM, O.DECAPSULATE): _kem_claim,
    (K.KEY_AGREEMENT, O.AGREE): _agree_claim,
    (K.KDF, O.DERIVE): _derive_claim,
    (K.RANDOM, O.RANDOM): _random_claim,
}


# --- keys: export, import, persist, load ----------------------------------------------------------


def fingerprint(put: ProviderUnderTest, key: ProviderKey) -> bytes | None:
    """What identifies a key's behaviour: its public key, or a MAC / ciphertext / derived
    secret of a fixed input (None when no claimed operation uses it)."""
    p = put.provider
    spec = REGISTRY.get(key.algorithm)
    if spec.key_class is KeyClass.ASYMMETRIC:
        return (
            p.export_public_key(key, KeyFormat.SPKI_DER)
            if _has_spki(p, key)
            else p.export_public_key(key, KeyFormat.RAW)
        )
    for cap in sorted(
        put.capabilities, key=lambda c: (c.algorithm != key.algorithm, c.algorithm, c.operation.value)
    ):
        user = REGISTRY.get(cap.algorithm)
        if key.algorithm not in user.key_algorithms:
            continue
        if user.kind is K.MAC and cap.operation is O.SIGN:
            return _sign(p, user.name, key, MESSAGE)
        if user.kind in (K.CIPHER, K.AEAD) and cap.operation is O.ENCRYPT:
            iv = bytes(range(user.iv_size or 16))
            out = _cipher(
                p, user.name, key, CipherDirection.ENCRYPT, iv, MESSAGE, tag_length=user.tag_size or 16
            )
            return out[0] + out[1]
        if user.kind is K.KDF and cap.operation is O.DERIVE:
            derived = p.derive(
                user.name,
                key,
                length=32,
                salt=b"s",
                info=b"i",
                output_algorithm="GENERIC-SECRET",
                permissions=P.EXPORT,
            )
            try:
                return p.export_key(derived, KeyFormat.RAW)
            finally:
                p.release_key(derived)
    return None


def _has_spki(p: Provider, key: ProviderKey) -> bool:
    try:
        p.export_public_key(key, KeyFormat.SPKI_DER)
    except CryptoError:
        return False
    return True


def check_key_round_trip(put: ProviderUnderTest, algorithm: str) -> None:
    """A key survives persist -> load_stored_key (same behaviour), and export -> import
    when it is extractable; delete_stored_key and release_key work."""
    p = put.provider
    with Faults(f"{put.name}: {algorithm} keys through the SDK") as faults, _tracked(put) as keys:
        original = keys.make(put, algorithm)
        expected = fingerprint(put, original)
        stored = None
        with faults.step("persist_key"):
            stored = p.persist_key(original, slot_name_for(algorithm))
            faults.check(isinstance(stored.blob, bytes) and stored.blob, "persist_key returned an empty blob")
        if stored is not None:
            with faults.step("load_stored_key"):
                loaded = keys.add(p.load_stored_key(stored, algorithm, full_permissions(algorithm)))
                faults.check(loaded.algorithm == algorithm, f"the loaded key says it is {loaded.algorithm}")
                if expected is not None:
                    faults.check(
                        fingerprint(put, loaded) == expected,
                        "the loaded key behaves differently from the persisted one",
                    )
                faults.check(
                    fingerprint(put, original) == expected,
                    "the original key changed when it was persisted (copy semantics)",
                )
            with faults.step("delete_stored_key"):
                p.delete_stored_key(stored)
        spec = REGISTRY.get(algorithm)
        if original.extractable and put.claims(algorithm, O.IMPORT_KEY):
            formats = (KeyFormat.RAW,) if spec.key_class is KeyClass.SYMMETRIC else materials.PRIVATE_FORMATS
            exported = _export_first(p, original, formats)
            faults.check(
                exported is not None,
                f"an extractable key exports in none of {', '.join(f.value for f in formats)}",
            )
            if exported is not None:
                material, fmt = exported
                with faults.step(f"import_key of what export_key({fmt.value}) gave"):
                    again = keys.add(p.import_key(algorithm, material, fmt, full_permissions(algorithm)))
                    if expected is not None:
                        faults.check(
                            fingerprint(put, again) == expected, "the re-imported key behaves differently"
                        )


def _export_first(
    p: Provider,
    key: ProviderKey,
    formats: tuple[KeyFormat, ...],
) -> tuple[bytes, KeyFormat] | None:
    """The key's material in the first of ``formats`` the provider writes."""
    for fmt in formats:
        try:
            return p.export_key(key, fmt), fmt
        except CryptoError as exc:
            if exc.code not in (ErrorCode.INVALID_ARGUMENT, ErrorCode.UNSUPPORTED_ALGORITHM):
                raise
    return None


def slot_name_for(algorithm: str) -> str:
    """The slot name the SDK round trip passes to persist_key."""
    return f"kit-sdk-{algorithm}"


# --- threads and leaks -----------------------------------------------------------------------


def workload(put: ProviderUnderTest) -> list[Callable[[KeyTracker], bytes]]:
    """Cheap deterministic calls over the provider's claims, each giving comparable bytes."""
    p = put.provider
    calls: list[Callable[[KeyTracker], bytes]] = []
    by_kind: dict[AlgorithmKind, list[str]] = {}
    for cap in sorted(put.capabilities, key=lambda c: c.algorithm):
        if not put.is_slow(cap.algorithm):
            by_kind.setdefault(REGISTRY.get(cap.algorithm).kind, []).append(cap.algorithm)
    for name in list(dict.fromkeys(by_kind.get(K.HASH, [])))[:2]:

        def digest(_keys: KeyTracker, name: str = name) -> bytes:
            return _hash(p, name, [MESSAGE])

        calls.append(digest)
    for name in list(dict.fromkeys(by_kind.get(K.MAC, [])))[:1]:
        key_algorithm = key_algorithm_for(put, name)
        material = materials.private_material(key_algorithm)
        if put.claims(key_algorithm, O.IMPORT_KEY) and material is not None:

            def mac(
                k: KeyTracker, name: str = name, ka: str = key_algorithm, m: bytes = material[0]
            ) -> bytes:
                key = k.add(p.import_key(ka, m, KeyFormat.RAW, full_permissions(ka)))
                return _sign(p, name, key, MESSAGE)

            calls.append(mac)
    for name in list(dict.fromkeys(by_kind.get(K.CIPHER, []) + by_kind.get(K.AEAD, [])))[:1]:
        spec = REGISTRY.get(name)
        key_algorithm = key_algorithm_for(put, name)
        material = materials.private_material(key_algorithm)
        if put.claims(key_algorithm, O.IMPORT_KEY) and material is not None:

            def cipher(
                k: KeyTracker, spec: AlgorithmSpec = spec, ka: str = key_algorithm, m: bytes = material[0]
            ) -> bytes:
                key = k.add(p.import_key(ka, m, KeyFormat.RAW, full_permissions(ka)))
                out = _cipher(
                    p,
                    spec.name,
                    key,
                    CipherDirection.ENCRYPT,
                    bytes(spec.iv_size or 16),
                    MESSAGE,
                    tag_length=spec.tag_size or 16,
                )
                return out[0] + out[1]

            calls.append(cipher)
    for name in list(dict.fromkeys(by_kind.get(K.SIGNATURE, [])))[:1]:
        if put.claims(name, O.SIGN) and put.claims(name, O.VERIFY):

            def sign(k: KeyTracker, name: str = name) -> bytes:
                key = k.make(put, key_algorithm_for(put, name))
                ok = _verify(p, name, key, MESSAGE, _sign(p, name, key, MESSAGE))
                return b"verified" if ok is True else b"NOT VERIFIED"

            calls.append(sign)
    if not calls and put.claims("RANDOM", O.RANDOM):
        calls.append(lambda _k: bytes([len(p.random_bytes(16))]))
    return calls


def check_threads(put: ProviderUnderTest) -> None:
    """Several threads calling the provider at once get the same results as one does."""
    calls = workload(put)
    with Faults(f"{put.name}: concurrent calls through the SDK") as faults, _tracked(put) as keys:
        if not calls:
            faults.add("no claim the kit can run from several threads")
            return
        expected = [call(keys) for call in calls]
        errors: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            own = KeyTracker(put.provider)
            try:
                for _round in range(5):
                    for index, call in enumerate(calls):
                        if call(own) != expected[index]:
                            with lock:
                                errors.append(f"call {index} gave another result under concurrency")
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                own.release_all()

        threads = [threading.Thread(target=worker) for _ in range(put.profile.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
            faults.check(not thread.is_alive(), "a thread still runs after 300 s (deadlock?)")
        for error in sorted(set(errors)):
            faults.add(error)


def _open_objects(provider: Provider) -> Any:
    return provider.describe().get("open_objects")


def check_leaks(put: ProviderUnderTest) -> None:
    """After release_key and the end of every operation the provider holds no reference to
    the keys it made (and its ``open_objects`` count, if it reports one, is back where it
    was)."""
    p = put.provider
    calls = workload(put)
    with Faults(f"{put.name}: resources after release") as faults:
        before = _open_objects(p)
        tracker = KeyTracker(p)
        for algorithm in put.key_algorithms():
            if not put.is_slow(algorithm):
                with faults.step(f"make a {algorithm} key"):
                    tracker.make(put, algorithm)
        for call in calls:
            call(tracker)
        watched = list(tracker.refs)
        tracker.release_all()
        tracker.keys.clear()
        del tracker
        gc.collect()
        alive = [ref() for ref in watched if ref() is not None]
        faults.check(
            not alive,
            f"{len(alive)} of {len(watched)} released keys are still "
            f"referenced by the provider (a leak): "
            f"{sorted({type(k).__name__ for k in alive})}",
        )
        after = _open_objects(p)
        faults.check(
            before == after, f"open_objects was {before!r} before and {after!r} after every key was released"
        )
