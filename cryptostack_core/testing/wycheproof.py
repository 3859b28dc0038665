"""Shared Wycheproof runner: every case of every applicable vector file, through the public API.

A provider's test connects a stack (usually to a real daemon), then::

    from cryptostack_core.testing import wycheproof as wp

    policy = wp.Policy(acceptable={"Twist": True, "ZeroSharedSecret": False},
                       gcm_iv_lengths=(8, 128))
    results = wp.run_vectors(stack, provider_id=2, claimed=claimed_algorithms,
                             policy=policy)
    print(wp.format_table(results))
    assert all(not r.unexpected for r in results)

Each case is run exactly as ``testing/vectors/README.md`` maps it: the key is imported with
``ImportKeyParams.set_provider(provider_id)`` (once per distinct key, so per-group keys are
imported once per group), the matching context is created pinned to the same provider and
reused across cases, and the operation runs with the client's batched calls (init, update
and finalize travel together).

Outcomes: ``valid`` cases must succeed and match; ``invalid`` cases must be rejected -- a
verification returning False, or a ``CryptoError`` with ``INVALID_ARGUMENT`` or
``AUTHENTICATION_FAILED`` at any step (import, context creation, operation). Any other error
code is unexpected even for an invalid case, since it points at a provider fault.
``acceptable`` cases go the way :class:`Policy` declares for their flags, and a policy may
also declare parameters the provider refuses outright (short GCM IVs): valid cases using them
must then fail with ``INVALID_ARGUMENT``. Cases the API cannot express completely (ML-DSA
signing from an external mu, ML-KEM encapsulation with fixed randomness) are checked as far
as the API allows and counted as *partly checked*.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization as _ser
from cryptography.hazmat.primitives.asymmetric import ec as _ec

import cryptostack_core as cs

__all__ = [
    "FILES",
    "FileResult",
    "Policy",
    "Unexpected",
    "VectorFile",
    "applicable_files",
    "format_table",
    "run_file",
    "run_vectors",
    "vectors_directory",
]

P = cs.KeyOperationPermission
ENV_VARIABLE = "CRYPTOSTACK_VECTORS"
PACKAGED_VECTORS = Path(__file__).resolve().parent / "vectors" / "wycheproof"
_REJECTION_CODES = frozenset({cs.ErrorCode.INVALID_ARGUMENT, cs.ErrorCode.AUTHENTICATION_FAILED})


# --- where the vectors are -----------------------------------------------------------------


def vectors_directory() -> Path:
    """The ``wycheproof`` directory: ``$CRYPTOSTACK_VECTORS`` (the directory itself or its
    parent) when set, else the copy shipped in this package (``testing/vectors/wycheproof``)."""
    env = os.environ.get(ENV_VARIABLE)
    if env:
        base = Path(env)
        for candidate in (base / "wycheproof", base):
            if any(candidate.glob("*_test.json")):
                return candidate
        raise FileNotFoundError(f"{ENV_VARIABLE}={env} holds no Wycheproof *_test.json files")
    return PACKAGED_VECTORS


def spki_public_bits(spki: bytes) -> bytes:
    """The subjectPublicKey of a DER SubjectPublicKeyInfo (for any algorithm, OID unread)."""

    def element(data: bytes, at: int) -> tuple[int, int, int]:  # (tag, start, end)
        tag, length = data[at], data[at + 1]
        at += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[at : at + count], "big")
            at += count
        if at + length > len(data):
            raise ValueError("truncated DER")
        return tag, at, at + length

    tag, start, _end = element(spki, 0)
    if tag != 0x30:
        raise ValueError("not a SubjectPublicKeyInfo")
    _, _, algorithm_end = element(spki, start)
    tag, bits_start, bits_end = element(spki, algorithm_end)
    if tag != 0x03 or spki[bits_start] != 0:
        raise ValueError("no subjectPublicKey BIT STRING")
    return spki[bits_start + 1 : bits_end]


# --- policy and results --------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What a provider decides where Wycheproof leaves the choice open, or refuses outright.

    ``acceptable`` maps a Wycheproof flag to whether the provider accepts the ``acceptable``
    cases carrying it; when a case has several declared flags, a rejection wins. An
    acceptable case with no declared flag is reported as unexpected, so every provider has to
    state which way it goes.

    ``gcm_iv_lengths`` is the inclusive range of AES-GCM IV lengths (bytes) the provider
    accepts; ``valid`` cases outside it must fail with ``INVALID_ARGUMENT``. None accepts
    every IV length Wycheproof calls valid. ``mac_key_lengths`` (HMAC keys) and
    ``secret_lengths`` (GENERIC-SECRET keys: HKDF input and output) are the same for key
    lengths; they apply to the known-answer sets of
    :mod:`cryptostack_core.testing.known_answers` too.
    """

    acceptable: Mapping[str, bool] = field(default_factory=dict)
    gcm_iv_lengths: tuple[int, int] | None = None
    mac_key_lengths: tuple[int, int] | None = None
    secret_lengths: tuple[int, int] | None = None
    not_applicable: Mapping[str, str] = field(default_factory=dict)
    """Files that do not apply although an algorithm matches, with the reason (a key format
    the provider does not offer, e.g. ML-DSA seeds): reported, not run, and never counted
    as the algorithm's coverage."""

    @staticmethod
    def _outside(what: str, length: int, bounds: tuple[int, int] | None) -> str:
        if bounds is not None and not bounds[0] <= length <= bounds[1]:
            return f"{what} of {length} bytes outside the policy's {bounds[0]}..{bounds[1]}"
        return ""

    def mac_key_refusal(self, length: int) -> str:
        """Why an HMAC key of ``length`` bytes is refused ("" when it is not)."""
        return self._outside("HMAC key", length, self.mac_key_lengths)

    def secret_refusal(self, *lengths: int) -> str:
        """Why GENERIC-SECRET keys of these lengths are refused ("" when they are not)."""
        for length in lengths:
            why = self._outside("GENERIC-SECRET key", length, self.secret_lengths)
            if why:
                return why
        return ""

    def refusal(self, file: str, group: Mapping[str, Any], case: Mapping[str, Any]) -> str:
        """Why the provider refuses this case's parameters by policy ("" when it does not)."""
        if self.gcm_iv_lengths is not None and file == "aes_gcm_test.json":
            length = len(case["iv"]) // 2
            if length:
                why = self._outside("GCM IV", length, self.gcm_iv_lengths)
                if why:
                    return why
        if file.startswith("hmac_"):
            return self.mac_key_refusal(len(case["key"]) // 2)
        if file.startswith("hkdf_") and case["result"] == "valid":
            return self.secret_refusal(len(case["ikm"]) // 2, int(case["size"]))
        return ""


@dataclass(frozen=True)
class Unexpected:
    """One case that did not go as expected."""

    tc_id: int
    reason: str


@dataclass
class FileResult:
    """Outcome of one vector file on one provider."""

    file: str
    cases: int = 0
    as_expected: int = 0
    unexpected: list[Unexpected] = field(default_factory=list)
    policy_rejected: int = 0
    acceptable_accepted: int = 0
    acceptable_rejected: int = 0
    partly_checked: int = 0
    skipped: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``aes_gcm_test.json: 316 cases, 316 as expected (27 rejected by policy)``."""
        extra = []
        if self.policy_rejected:
            extra.append(f"{self.policy_rejected} rejected by policy")
        if self.acceptable_accepted or self.acceptable_rejected:
            extra.append(
                f"acceptable: {self.acceptable_accepted} accepted, {self.acceptable_rejected} rejected"
            )
        if self.partly_checked:
            extra.append(f"{self.partly_checked} partly checked")
        if self.skipped:
            extra.append(f"{self.skipped} skipped")
        line = f"{self.file}: {self.cases} cases, {self.as_expected} as expected"
        if self.unexpected:
            line += f", {len(self.unexpected)} UNEXPECTED"
        return line + (f" ({'; '.join(extra)})" if extra else "")


# --- what a case did ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    accepted: bool
    detail: str = ""  # error or mismatch description
    mismatch: bool = False  # ran through but produced the wrong result
    code: cs.ErrorCode | None = None
    partial: str = ""  # what could not be checked through the API


def _ok(partial: str = "") -> _Outcome:
    return _Outcome(True, partial=partial)


def _mismatch(what: str) -> _Outcome:
    return _Outcome(True, what, mismatch=True)


def _refused(what: str) -> _Outcome:
    return _Outcome(False, what)


def _error(exc: cs.CryptoError) -> _Outcome:
    return _Outcome(False, f"{exc.code.value}: {exc.message}", code=exc.code)


def _hex(case: Mapping[str, Any], name: str) -> bytes:
    value = case.get(name)
    return bytes.fromhex(value) if value else b""


class _KeyEntry:
    """An imported key (or its import error) and the contexts created with it."""

    def __init__(self, guard: cs.CryptoResourceGuard | cs.CryptoError) -> None:
        self.guard = guard
        self.contexts: dict[tuple[Any, ...], Any] = {}

    def close(self) -> None:
        for context in self.contexts.values():
            if not isinstance(context, cs.CryptoError):
                context.close()
        if isinstance(self.guard, cs.CryptoResourceGuard):
            self.guard.release()


class _Runner:
    """Keys and contexts of one file run, pinned to one provider.

    Keys are imported once per distinct material and kept, with the contexts made for them,
    in a small LRU: the daemon limits how many contexts a client may hold open, and vector
    files use hundreds of keys.
    """

    max_keys = 16

    def __init__(self, stack: cs.CryptoStack, provider_id: int) -> None:
        self.provider_id = provider_id
        self.ctx = stack.create_crypto_context()
        self.km = self.ctx.create_key_management_context(cs.KeyManagementContextConfig())
        self._keys: OrderedDict[tuple[Any, ...], _KeyEntry] = OrderedDict()
        self._by_rid: dict[cs.CryptoResourceId, _KeyEntry] = {}

    def close(self) -> None:
        for entry in self._keys.values():
            entry.close()
        self._keys.clear()
        self.km.close()
        self.ctx.close()

    def key(
        self,
        algorithm: str,
        material: bytes,
        fmt: cs.KeyFormat,
        permissions: cs.KeyOperationPermission,
        cache: bool = True,
    ) -> cs.CryptoResourceGuard:
        """Import (or reuse) a key; raises the import's CryptoError (also remembered)."""
        ident = (algorithm, material, fmt, int(permissions))
        entry = self._keys.get(ident)
        if entry is None:
            guard: cs.CryptoResourceGuard | cs.CryptoError
            params = cs.ImportKeyParams().set_algorithm(algorithm).set_material(material, fmt)
            # (separate statements: the inherited setters are typed as returning the base class)
            params.set_permissions(permissions)
            params.set_provider(self.provider_id)
            try:
                guard = self.km.import_key(params)
            except cs.CryptoError as exc:
                guard = exc
            if not cache:
                if isinstance(guard, cs.CryptoError):
                    raise guard
                return guard
            entry = _KeyEntry(guard)
            self._keys[ident] = entry
            if isinstance(guard, cs.CryptoResourceGuard):
                self._by_rid[guard.resource_id] = entry
            while len(self._keys) > self.max_keys:
                _, old = self._keys.popitem(last=False)
                if isinstance(old.guard, cs.CryptoResourceGuard):
                    self._by_rid.pop(old.guard.resource_id, None)
                old.close()
        else:
            self._keys.move_to_end(ident)
        if isinstance(entry.guard, cs.CryptoError):
            raise entry.guard
        return entry.guard

    def context(self, key: cs.CryptoResourceGuard, ident: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """Create (or reuse) a context for a cached key; raises (and remembers) the
        creation's CryptoError."""
        entry = self._by_rid.get(key.resource_id)
        if entry is None:  # an uncached key: the caller closes nothing, so do not cache
            return make()
        found = entry.contexts.get(ident)
        if found is None:
            try:
                found = make()
            except cs.CryptoError as exc:
                found = exc
            entry.contexts[ident] = found
        if isinstance(found, cs.CryptoError):
            raise found
        return found

    def cipher(
        self,
        algorithm: str,
        key: cs.CryptoResourceGuard,
        direction: cs.CipherDirection,
        tag_length: int | None,
    ) -> cs.CipherContext:
        def make() -> cs.CipherContext:
            config = (
                cs.CipherContextConfig()
                .set_algorithm(algorithm)
                .set_key(key)
                .set_direction(direction)
                .set_provider(self.provider_id)
            )
            if tag_length is not None:
                config.set_tag_length(tag_length)
            return self.ctx.create_cipher_context(config)

        context: cs.CipherContext = self.context(key, ("cipher", algorithm, direction, tag_length), make)
        return context

    def signer(self, algorithm: str, key: cs.CryptoResourceGuard, context: bytes = b"") -> cs.SignContext:
        def make() -> cs.SignContext:
            config = (
                cs.SignContextConfig().set_algorithm(algorithm).set_key(key).set_provider(self.provider_id)
            )
            if context:
                config.set_context(context)
            return self.ctx.create_sign_context(config)

        signer: cs.SignContext = self.context(key, ("sign", algorithm, context), make)
        return signer

    def verifier(
        self, algorithm: str, key: cs.CryptoResourceGuard, context: bytes = b"", tag_length: int | None = None
    ) -> cs.VerifyContext:
        def make() -> cs.VerifyContext:
            config = cs.VerifyContextConfig()
            config.set_algorithm(algorithm)
            config.set_key(key)
            config.set_provider(self.provider_id)
            if context:
                config.set_context(context)
            if tag_length is not None:
                config.set_tag_length(tag_length)
            return self.ctx.create_verify_context(config)

        verifier: cs.VerifyContext = self.context(key, ("verify", algorithm, context, tag_length), make)
        return verifier

    def secret(self, guard: cs.CryptoResourceGuard) -> bytes:
        """Export a shared-secret key and release it."""
        try:
            return self.km.export_key(guard, cs.KeyFormat.RAW)
        finally:
            guard.release()

    def raw_public(self, key: cs.CryptoResourceGuard) -> bytes:
        """Raw public key: exported RAW where the provider offers it, else the
        subjectPublicKey bits of the SubjectPublicKeyInfo every provider exports."""
        try:
            return self.km.export_public_key(key, cs.KeyFormat.RAW)
        except cs.CryptoError as exc:
            if exc.code not in _REJECTION_CODES | {cs.ErrorCode.UNSUPPORTED_ALGORITHM}:
                raise
        return spki_public_bits(self.km.export_public_key(key))


Handler = Callable[[_Runner, Mapping[str, Any], Mapping[str, Any]], _Outcome]
GroupAlgorithm = Callable[[Mapping[str, Any]], str]


# --- per-schema handlers -----------------------------------------------------------------


def _aead(algorithm_of: GroupAlgorithm, key_algorithm_of: GroupAlgorithm) -> Handler:
    def run(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
        algorithm = algorithm_of(group)
        key = r.key(key_algorithm_of(group), _hex(case, "key"), cs.KeyFormat.RAW, P.ENCRYPT | P.DECRYPT)
        tag_length = group["tagSize"] // 8
        iv, aad, msg = _hex(case, "iv"), _hex(case, "aad"), _hex(case, "msg")
        sealed = _hex(case, "ct") + _hex(case, "tag")
        length = None if tag_length == 16 else tag_length
        if case["result"] != "invalid":
            enc = r.cipher(algorithm, key, cs.CipherDirection.ENCRYPT, length)
            enc.init(iv)
            if aad:
                enc.update_aad(aad)
            out = enc.update(msg)
            out += enc.finalize()
            if out != sealed:
                return _mismatch("encryption differs from ct||tag")
        dec = r.cipher(algorithm, key, cs.CipherDirection.DECRYPT, length)
        dec.init(iv)
        if aad:
            dec.update_aad(aad)
        streamed = dec.update(sealed)
        plain = dec.finalize()
        if streamed:
            return _mismatch("decryption released plaintext before the tag was verified")
        if plain != msg:
            return _mismatch("decryption differs from msg")
        return _ok()

    return run


def _cbc(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
    """PKCS#7 AES-CBC. For an invalid case the decryption must fail in finalize; blocks
    before the last may already have been streamed out by update (as with any streaming
    CBC), but the padded last block never is."""
    algorithm = f"AES-{group['keySize']}-CBC"
    key = r.key(f"AES-{group['keySize']}", _hex(case, "key"), cs.KeyFormat.RAW, P.ENCRYPT | P.DECRYPT)
    iv, msg, ct = _hex(case, "iv"), _hex(case, "msg"), _hex(case, "ct")
    if case["result"] == "valid":
        enc = r.cipher(algorithm, key, cs.CipherDirection.ENCRYPT, None)
        enc.init(iv)
        out = enc.update(msg)
        out += enc.finalize()
        if out != ct:
            return _mismatch("encryption differs from ct")
    dec = r.cipher(algorithm, key, cs.CipherDirection.DECRYPT, None)
    dec.init(iv)
    streamed = dec.update(ct)
    if len(streamed) > max(0, len(ct) - 16):
        return _mismatch("decryption released the last (padded) block from update")
    plain = streamed + dec.finalize()
    if plain != msg:
        return _mismatch("decryption differs from msg")
    return _ok()


def _mac(algorithm: str) -> Handler:
    def run(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
        key = r.key(algorithm, _hex(case, "key"), cs.KeyFormat.RAW, P.SIGN | P.VERIFY | P.MAC)
        msg, tag = _hex(case, "msg"), _hex(case, "tag")
        tag_length = group["tagSize"] // 8
        full = r.signer(algorithm, key).sign(msg)
        truncated = tag_length if tag_length < len(full) else None
        verified = r.verifier(algorithm, key, tag_length=truncated).verify(msg, tag)
        computed_matches = full[:tag_length] == tag
        if computed_matches != verified:
            return _mismatch(
                f"MAC prefix {'matches' if computed_matches else 'differs'} but verify returned {verified}"
            )
        return _ok() if verified else _refused("MAC differs; verify returned False")

    return run


def _verify_with_group_key(
    algorithm: str, key_algorithm: str, key_of: Callable[[Mapping[str, Any]], tuple[bytes, cs.KeyFormat]]
) -> Handler:
    def run(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
        material, fmt = key_of(group)
        key = r.key(key_algorithm, material, fmt, P.VERIFY)
        context = _hex(case, "ctx")
        ok = r.verifier(algorithm, key, context).verify(_hex(case, "msg"), _hex(case, "sig"))
        return _ok() if ok else _refused("verify returned False")

    return run


def _xdh(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
    key = r.key("X25519", _hex(case, "private"), cs.KeyFormat.RAW, P.AGREE | P.DERIVE)
    return _agree(r, "X25519", key, _hex(case, "public"), _hex(case, "shared"))


def _ecdh(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
    scalar = int(case["private"], 16)
    # The vector gives the private key as an integer; PKCS#8 is the portable import format.
    pkcs8 = _ec.derive_private_key(scalar, _ec.SECP256R1()).private_bytes(
        _ser.Encoding.DER, _ser.PrivateFormat.PKCS8, _ser.NoEncryption()
    )
    key = r.key("ECDH-P256", pkcs8, cs.KeyFormat.PKCS8_DER, P.AGREE | P.DERIVE)
    return _agree(r, "ECDH-P256", key, _hex(case, "public"), _hex(case, "shared"))


def _agree(r: _Runner, algorithm: str, key: cs.CryptoResourceGuard, peer: bytes, shared: bytes) -> _Outcome:
    def make() -> cs.KeyAgreementContext:
        config = cs.KeyAgreementContextConfig().set_algorithm(algorithm)
        config.set_key(key)
        config.set_derived_key_permissions(P.DERIVE | P.EXPORT)
        config.set_provider(r.provider_id)
        return r.ctx.create_key_agreement_context(config)

    agreement = r.context(key, ("agree", algorithm), make)
    secret = r.secret(agreement.agree(peer))
    return _ok() if secret == shared else _mismatch("shared secret differs")


def _mlkem(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
    algorithm = group["parameterSet"]
    key = r.key(algorithm, _hex(case, "seed"), cs.KeyFormat.SEED, P.ENCAPSULATE | P.DECAPSULATE, cache=False)
    try:
        ek = _hex(case, "ek")
        if ek and r.raw_public(key) != ek:
            return _mismatch("encapsulation key derived from the seed differs from ek")
        config = (
            cs.KemContextConfig()
            .set_algorithm(algorithm)
            .set_key(key)
            .set_derived_key_permissions(P.DERIVE | P.EXPORT)
            .set_provider(r.provider_id)
        )
        with r.ctx.create_kem_context(config) as kem:
            secret = r.secret(kem.decapsulate(_hex(case, "c")))
        return _ok() if secret == _hex(case, "K") else _mismatch("decapsulated K differs")
    finally:
        key.release()


def _mlkem_encaps(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
    algorithm = group["parameterSet"]
    key = r.key(algorithm, _hex(case, "ek"), cs.KeyFormat.RAW, P.ENCAPSULATE, cache=False)
    try:
        config = (
            cs.KemContextConfig()
            .set_algorithm(algorithm)
            .set_key(key)
            .set_derived_key_permissions(P.DERIVE | P.EXPORT)
            .set_provider(r.provider_id)
        )
        with r.ctx.create_kem_context(config) as kem:
            ciphertext, guard = kem.encapsulate()
        secret = r.secret(guard)
        if len(ciphertext) != len(_hex(case, "c")) or len(secret) != len(_hex(case, "K")):
            return _mismatch("ciphertext or shared secret has the wrong length")
        return _ok(
            partial="c and K need the encapsulation randomness m, which the API does "
            "not take: checked import, encapsulation and lengths"
        )
    finally:
        key.release()


def _hkdf(algorithm: str) -> Handler:
    """HKDF through ``derive_key``: the IKM is imported as a GENERIC-SECRET (DERIVE, and
    EXPORT: a derived key can carry EXPORT only when its parent does), the output key
    (GENERIC-SECRET with EXPORT) is exported and compared with ``okm``. An
    output longer than 255 hash lengths must be refused with INVALID_ARGUMENT."""

    def run(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
        ikm = _hex(case, "ikm")
        key = r.key("GENERIC-SECRET", ikm, cs.KeyFormat.RAW, P.DERIVE | P.EXPORT)
        params = (
            cs.DeriveKeyParams()
            .set_algorithm(algorithm)
            .set_key(key)
            .set_salt(_hex(case, "salt"))
            .set_info(_hex(case, "info"))
            .set_output("GENERIC-SECRET", case["size"])
            .set_permissions(P.EXPORT)
        )
        guard = r.km.derive_key(params)
        okm = r.secret(guard)
        return _ok() if okm == _hex(case, "okm") else _mismatch("derived key differs from okm")

    return run


def _mldsa_sign(r: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]) -> _Outcome:
    key = r.key("ML-DSA-65", _hex(group, "privateSeed"), cs.KeyFormat.SEED, P.SIGN | P.VERIFY)
    public = group.get("publicKey")
    if public and r.raw_public(key) != bytes.fromhex(public):
        return _mismatch("public key derived from the seed differs")
    if "msg" not in case:
        return _ok(
            partial="mu-only (Sign_internal) case: the API signs messages, so only the "
            "seed -> public key derivation was checked"
        )
    msg, context = _hex(case, "msg"), _hex(case, "ctx")
    expected = _hex(case, "sig")
    if expected and not r.verifier("ML-DSA-65", key, context).verify(msg, expected):
        return _mismatch("the vector's signature does not verify under the derived key")
    signature = r.signer("ML-DSA-65", key, context).sign(msg)
    if not r.verifier("ML-DSA-65", key, context).verify(msg, signature):
        return _mismatch("the provider's own signature does not verify")
    # Signing is hedged (randomised) through the API, so equality with `sig` is not expected.
    return _ok()


def _ed25519_key(group: Mapping[str, Any]) -> tuple[bytes, cs.KeyFormat]:
    return bytes.fromhex(group["publicKey"]["pk"]), cs.KeyFormat.RAW


def _spki_key(group: Mapping[str, Any]) -> tuple[bytes, cs.KeyFormat]:
    return bytes.fromhex(group["publicKeyDer"]), cs.KeyFormat.SPKI_DER


def _raw_public_key(group: Mapping[str, Any]) -> tuple[bytes, cs.KeyFormat]:
    return bytes.fromhex(group["publicKey"]), cs.KeyFormat.RAW


@dataclass(frozen=True)
class VectorFile:
    """How one vector file maps to the API: the algorithms it tests and its case handler."""

    name: str
    algorithms: tuple[str, ...]
    handler: Handler
    algorithm_of: GroupAlgorithm


def _const(name: str) -> GroupAlgorithm:
    return lambda _group: name


def _gcm_name(group: Mapping[str, Any]) -> str:
    return f"AES-{group['keySize']}-GCM"


def _aes_key(group: Mapping[str, Any]) -> str:
    return f"AES-{group['keySize']}"


_FILE_LIST = [
    VectorFile(
        "aes_gcm_test.json",
        ("AES-128-GCM", "AES-192-GCM", "AES-256-GCM"),
        _aead(_gcm_name, _aes_key),
        _gcm_name,
    ),
    VectorFile(
        "chacha20_poly1305_test.json",
        ("ChaCha20-Poly1305",),
        _aead(_const("ChaCha20-Poly1305"), _const("ChaCha20-Poly1305")),
        _const("ChaCha20-Poly1305"),
    ),
    VectorFile(
        "aes_cbc_pkcs5_test.json",
        ("AES-128-CBC", "AES-192-CBC", "AES-256-CBC"),
        _cbc,
        lambda g: f"AES-{g['keySize']}-CBC",
    ),
    VectorFile("hmac_sha256_test.json", ("HMAC-SHA-256",), _mac("HMAC-SHA-256"), _const("HMAC-SHA-256")),
    VectorFile("hmac_sha384_test.json", ("HMAC-SHA-384",), _mac("HMAC-SHA-384"), _const("HMAC-SHA-384")),
    VectorFile("hmac_sha512_test.json", ("HMAC-SHA-512",), _mac("HMAC-SHA-512"), _const("HMAC-SHA-512")),
    VectorFile("hkdf_sha256_test.json", ("HKDF-SHA-256",), _hkdf("HKDF-SHA-256"), _const("HKDF-SHA-256")),
    VectorFile("hkdf_sha384_test.json", ("HKDF-SHA-384",), _hkdf("HKDF-SHA-384"), _const("HKDF-SHA-384")),
    VectorFile("hkdf_sha512_test.json", ("HKDF-SHA-512",), _hkdf("HKDF-SHA-512"), _const("HKDF-SHA-512")),
    VectorFile(
        "ecdsa_secp256r1_sha256_test.json",
        ("ECDSA-P256",),
        _verify_with_group_key("ECDSA-P256", "ECDSA-P256", _spki_key),
        _const("ECDSA-P256"),
    ),
    VectorFile(
        "ecdsa_secp384r1_sha384_test.json",
        ("ECDSA-P384",),
        _verify_with_group_key("ECDSA-P384", "ECDSA-P384", _spki_key),
        _const("ECDSA-P384"),
    ),
    VectorFile(
        "ed25519_test.json",
        ("Ed25519",),
        _verify_with_group_key("Ed25519", "Ed25519", _ed25519_key),
        _const("Ed25519"),
    ),
    VectorFile(
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        ("RSA-PSS-SHA256",),
        _verify_with_group_key("RSA-PSS-SHA256", "RSA-2048", _spki_key),
        _const("RSA-PSS-SHA256"),
    ),
    VectorFile("x25519_test.json", ("X25519",), _xdh, _const("X25519")),
    VectorFile("ecdh_secp256r1_test.json", ("ECDH-P256",), _ecdh, _const("ECDH-P256")),
    VectorFile("mlkem_512_test.json", ("ML-KEM-512",), _mlkem, _const("ML-KEM-512")),
    VectorFile("mlkem_768_test.json", ("ML-KEM-768",), _mlkem, _const("ML-KEM-768")),
    VectorFile("mlkem_1024_test.json", ("ML-KEM-1024",), _mlkem, _const("ML-KEM-1024")),
    VectorFile("mlkem_768_encaps_test.json", ("ML-KEM-768",), _mlkem_encaps, _const("ML-KEM-768")),
    VectorFile(
        "mldsa_44_verify_test.json",
        ("ML-DSA-44",),
        _verify_with_group_key("ML-DSA-44", "ML-DSA-44", _raw_public_key),
        _const("ML-DSA-44"),
    ),
    VectorFile(
        "mldsa_65_verify_test.json",
        ("ML-DSA-65",),
        _verify_with_group_key("ML-DSA-65", "ML-DSA-65", _raw_public_key),
        _const("ML-DSA-65"),
    ),
    VectorFile(
        "mldsa_87_verify_test.json",
        ("ML-DSA-87",),
        _verify_with_group_key("ML-DSA-87", "ML-DSA-87", _raw_public_key),
        _const("ML-DSA-87"),
    ),
    VectorFile("mldsa_65_sign_seed_test.json", ("ML-DSA-65",), _mldsa_sign, _const("ML-DSA-65")),
]
FILES: dict[str, VectorFile] = {f.name: f for f in _FILE_LIST}
"""Every vector file the runner knows, by file name."""


def applicable_files(claimed_algorithms: Iterable[str]) -> list[str]:
    """Names of the files testing at least one of ``claimed_algorithms`` (canonical names)."""
    claimed = set(claimed_algorithms)
    return [f.name for f in _FILE_LIST if claimed.intersection(f.algorithms)]


# --- running ------------------------------------------------------------------------------


def _expectation(
    policy: Policy, file: str, group: Mapping[str, Any], case: Mapping[str, Any]
) -> tuple[str, str]:
    """("accept" | "reject" | "policy" | "undeclared", detail)."""
    refusal = policy.refusal(file, group, case)
    if refusal:
        return "policy", refusal
    result = case["result"]
    if result == "valid":
        return "accept", ""
    if result == "invalid":
        return "reject", ""
    flags = case.get("flags") or []
    decisions = [policy.acceptable[f] for f in flags if f in policy.acceptable]
    if not decisions:
        return (
            "undeclared",
            f"acceptable case with flags {flags}: the policy does not say whether the provider accepts it",
        )
    return ("accept" if all(decisions) else "reject"), ""


def _attempt(
    handler: Handler, runner: _Runner, group: Mapping[str, Any], case: Mapping[str, Any]
) -> _Outcome:
    try:
        return handler(runner, group, case)
    except cs.CryptoError as exc:
        return _error(exc)
    except Exception as exc:  # a harness or client bug: report it and keep going
        return _Outcome(False, f"raised {type(exc).__name__}: {exc}", code=cs.ErrorCode.INTERNAL_ERROR)


def _judge(expected: str, outcome: _Outcome) -> str:
    """Empty when the outcome is what ``expected`` asks for, else the reason it is not."""
    if outcome.code is not None and outcome.code not in _REJECTION_CODES:
        return f"failed with an error that is not a rejection: {outcome.detail}"
    if outcome.mismatch:
        return outcome.detail
    if expected == "accept":
        return "" if outcome.accepted else f"rejected: {outcome.detail}"
    if expected == "reject":
        return "accepted" if outcome.accepted else ""
    if expected == "policy":
        if outcome.accepted:
            return "accepted although the policy refuses it"
        return (
            ""
            if outcome.code is cs.ErrorCode.INVALID_ARGUMENT
            else f"refused, but not with INVALID_ARGUMENT: {outcome.detail}"
        )
    return "undeclared acceptable case"


def run_file(
    stack: cs.CryptoStack,
    provider_id: int,
    path: Path,
    policy: Policy | None = None,
    claimed: Iterable[str] | None = None,
) -> FileResult:
    """Run every case of one vector file through ``stack`` on provider ``provider_id``.

    Groups whose algorithm is not in ``claimed`` (when given) are skipped and counted.
    """
    policy = policy or Policy()
    spec = FILES[path.name]
    claimed_set = set(claimed) if claimed is not None else set(spec.algorithms)
    data = json.loads(path.read_text(encoding="utf-8"))
    result = FileResult(path.name)
    started = time.perf_counter()
    runner = _Runner(stack, provider_id)
    unclaimed: set[str] = set()
    partial_notes: set[str] = set()
    try:
        for group in data["testGroups"]:
            algorithm = spec.algorithm_of(group)
            for case in group["tests"]:
                result.cases += 1
                if algorithm not in claimed_set:
                    result.skipped += 1
                    unclaimed.add(algorithm)
                    continue
                expected, detail = _expectation(policy, path.name, group, case)
                if expected == "undeclared":
                    result.unexpected.append(Unexpected(case["tcId"], detail))
                    continue
                outcome = _attempt(spec.handler, runner, group, case)
                problem = _judge(expected, outcome)
                if problem:
                    result.unexpected.append(Unexpected(case["tcId"], problem))
                    continue
                result.as_expected += 1
                if expected == "policy":
                    result.policy_rejected += 1
                elif case["result"] == "acceptable":
                    if outcome.accepted:
                        result.acceptable_accepted += 1
                    else:
                        result.acceptable_rejected += 1
                if outcome.partial:
                    result.partly_checked += 1
                    partial_notes.add(outcome.partial)
    finally:
        runner.close()
    result.seconds = time.perf_counter() - started
    if unclaimed:
        result.notes.append(f"skipped groups of unclaimed {', '.join(sorted(unclaimed))}")
    result.notes.extend(sorted(partial_notes))
    return result


def run_vectors(
    stack: cs.CryptoStack,
    provider_id: int,
    claimed: Iterable[str],
    policy: Policy | None = None,
    directory: Path | None = None,
) -> list[FileResult]:
    """Run every file applicable to ``claimed`` (see :func:`applicable_files`)."""
    claimed = set(claimed)
    base = directory or vectors_directory()
    policy = policy or Policy()
    results = []
    for name in applicable_files(claimed):
        reason = policy.not_applicable.get(name)
        if reason is None:
            results.append(run_file(stack, provider_id, base / name, policy, claimed))
        else:
            results.append(FileResult(name, notes=[f"not applicable: {reason}"]))
    return results


def format_table(results: Iterable[FileResult]) -> str:
    """A fixed-width table of the results, then any unexpected cases and notes."""
    rows = list(results)
    width = max([38, *(len(r.file) for r in rows)])
    header = (
        f"{'file':{width}} {'cases':>5} {'as exp.':>7} {'unexp.':>6} {'policy':>6} "
        f"{'acc.+/-':>9} {'partly':>6} {'skip':>4} {'secs':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        acceptable = (
            f"{r.acceptable_accepted}/{r.acceptable_rejected}"
            if r.acceptable_accepted or r.acceptable_rejected
            else "-"
        )
        lines.append(
            f"{r.file:{width}} {r.cases:5} {r.as_expected:7} {len(r.unexpected):6} "
            f"{r.policy_rejected:6} {acceptable:>9} {r.partly_checked:6} "
            f"{r.skipped:4} {r.seconds:6.2f}"
        )
    total = sum(r.cases for r in rows)
    lines.append(
        f"{'total':{width}} {total:5} {sum(r.as_expected for r in rows):7} "
        f"{sum(len(r.unexpected) for r in rows):6} "
        f"{sum(r.policy_rejected for r in rows):6} {'':>9} "
        f"{sum(r.partly_checked for r in rows):6} {sum(r.skipped for r in rows):4} "
        f"{sum(r.seconds for r in rows):6.2f}"
    )
    for r in rows:
        for u in r.unexpected[:10]:
            lines.append(f"  {r.file} tcId {u.tc_id}: {u.reason}")
        if len(r.unexpected) > 10:
            lines.append(f"  {r.file}: ... {len(r.unexpected) - 10} more")
        for note in r.notes:
            lines.append(f"  {r.file}: {note}")
    return "\n".join(lines)
