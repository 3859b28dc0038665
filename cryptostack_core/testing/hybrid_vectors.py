"""Published known answers of the hybrid algorithms, run through the public API.

The data lives in ``vectors/hybrid/`` next to this module (its README names every source,
version and licence). A provider's test connects a stack and runs::

    from cryptostack_core.testing import hybrid_vectors as hv

    report = hv.run(stack, provider_id=2)
    assert not report.failures, report.failures
    assert report.counts["X-Wing"] == len(hv.xwing_vectors())

What is checked, per algorithm:

* **X-Wing** (draft-connolly-cfrg-xwing-kem-10, 3 vectors): the encapsulation key derived
  from the seed, decapsulation of the published ciphertext to the published secret, an
  encapsulation to the published key that decapsulates to the same secret; and the draft's
  X.509 example (PKCS#8 private key in, SPKI public key out, byte for byte). Encapsulation
  takes no caller randomness through the API, so the published ``eseed`` -> ``ct`` mapping
  itself is not reproducible here.
* **Composite ML-DSA** (draft-ietf-lamps-pq-composite-sigs-19, one vector per algorithm):
  ``s`` and ``sWithContext`` verify under the raw public key and not under the other context;
  the self-signed ``x5c`` certificate's signature verifies under the SPKI taken from it;
  ``sk`` (RAW) and ``sk_pkcs8`` import and export back byte for byte with the same public key
  (RAW and SPKI); a fresh signature verifies under the vector's public key; for the EdDSA
  pairings, whose traditional half is deterministic, that half equals the published one.
* **X25519MLKEM768** (draft-ietf-tls-ecdhe-mlkem-04): no published known answers exist, so
  they are composed from component known answers -- Wycheproof ML-KEM-768 (seed, ek, c, K)
  and X25519 (RFC 7748 section 6.1 and Wycheproof) -- with the draft's concatenation: key
  ``seed || x25519_private``, public key ``ek || X25519(private, 9)``, ciphertext
  ``c || peer_public``, secret ``K || shared``; wrong-length ML-KEM ciphertexts and all-zero
  X25519 secrets must be INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import x25519

import cryptostack_core as cs
from cryptostack_core.sdk.hybrid import COMPOSITE_SIGNATURES

__all__ = [
    "VECTORS",
    "CompositeVector",
    "Report",
    "X25519MLKEM768Vector",
    "XWingVector",
    "composite_vectors",
    "run",
    "x25519mlkem768_vectors",
    "xwing_vectors",
]

VECTORS = Path(__file__).resolve().parent / "vectors" / "hybrid"
"""The hybrid test data directory (see its README)."""

P = cs.KeyOperationPermission
F = cs.KeyFormat


# --- the data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class XWingVector:
    """One X-Wing known answer: seed (= decapsulation key), encapsulation key, ciphertext,
    shared secret, and the encapsulation seed the draft's derandomised encapsulation used."""

    sk: bytes
    pk: bytes
    eseed: bytes
    ct: bytes
    ss: bytes


@cache
def xwing_vectors() -> tuple[XWingVector, ...]:
    """The draft's three X-Wing vectors."""
    raw = json.loads((VECTORS / "xwing-test-vectors.json").read_text())
    return tuple(XWingVector(*(bytes.fromhex(v[k]) for k in ("sk", "pk", "eseed", "ct", "ss"))) for v in raw)


@dataclass(frozen=True)
class CompositeVector:
    """One composite ML-DSA vector of the draft (base64 fields decoded)."""

    algorithm: str
    identifier: str
    pk: bytes
    x5c: bytes
    sk: bytes
    sk_pkcs8: bytes
    s: bytes
    s_with_context: bytes


@cache
def composite_vectors() -> tuple[bytes, bytes, tuple[CompositeVector, ...]]:
    """(message, context, one vector per composite algorithm)."""
    raw = json.loads((VECTORS / "composite-sigs-testvectors.json").read_text())
    by_identifier = {spec.identifier: spec.name for spec in COMPOSITE_SIGNATURES.values()}
    vectors = []
    for case in raw["tests"]:
        b = {k: base64.b64decode(v) for k, v in case.items() if k != "tcId"}
        vectors.append(
            CompositeVector(
                by_identifier[case["tcId"]],
                case["tcId"],
                b["pk"],
                b["x5c"],
                b["sk"],
                b["sk_pkcs8"],
                b["s"],
                b["sWithContext"],
            )
        )
    return base64.b64decode(raw["m"]), base64.b64decode(raw["ctx"]), tuple(vectors)


@dataclass(frozen=True)
class X25519MLKEM768Vector:
    """A known answer composed from an ML-KEM-768 and an X25519 known answer.

    ``shared_secret`` is None when decapsulation must fail with INVALID_ARGUMENT
    (``reason`` says why)."""

    name: str
    private_key: bytes
    public_key: bytes
    ciphertext: bytes
    shared_secret: bytes | None
    reason: str = ""


# RFC 7748 section 6.1: Alice's and Bob's key pairs and their shared secret K.
_RFC7748 = {
    "alice": (
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
    ),
    "bob": (
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
    ),
}
_RFC7748_K = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


@dataclass(frozen=True)
class _X25519Case:
    name: str
    private: bytes
    public: bytes  # our own public key, X25519(private, 9)
    peer: bytes
    shared: bytes | None  # None: all-zero, refused


def _x25519_cases() -> list[_X25519Case]:
    (a_priv, a_pub), (b_priv, b_pub) = _RFC7748["alice"], _RFC7748["bob"]
    cases = [
        _X25519Case(
            "RFC 7748 6.1 Alice",
            bytes.fromhex(a_priv),
            bytes.fromhex(a_pub),
            bytes.fromhex(b_pub),
            bytes.fromhex(_RFC7748_K),
        ),
        _X25519Case(
            "RFC 7748 6.1 Bob",
            bytes.fromhex(b_priv),
            bytes.fromhex(b_pub),
            bytes.fromhex(a_pub),
            bytes.fromhex(_RFC7748_K),
        ),
    ]
    raw = json.loads((VECTORS / "wycheproof-x25519-subset.json").read_text())
    for group in raw["testGroups"]:
        for case in group["tests"]:
            private = bytes.fromhex(case["private"])
            public = x25519.X25519PrivateKey.from_private_bytes(private).public_key()
            refused = "ZeroSharedSecret" in case["flags"]
            cases.append(
                _X25519Case(
                    f"Wycheproof x25519 tcId {case['tcId']}",
                    private,
                    public.public_bytes_raw(),
                    bytes.fromhex(case["public"]),
                    None if refused else bytes.fromhex(case["shared"]),
                )
            )
    return cases


def _mlkem_cases() -> list[dict[str, Any]]:
    raw = json.loads((VECTORS / "wycheproof-mlkem_768-subset.json").read_text())
    return [case for group in raw["testGroups"] for case in group["tests"]]


@cache
def x25519mlkem768_vectors() -> tuple[X25519MLKEM768Vector, ...]:
    """Every ML-KEM case with RFC 7748's Alice and Bob, and every X25519 case with the first
    valid ML-KEM case."""
    mlkem_cases, x_cases = _mlkem_cases(), _x25519_cases()
    first_valid = next(c for c in mlkem_cases if c["result"] == "valid")
    pairs = [(m, x) for m in mlkem_cases for x in x_cases[:2]]
    pairs += [(first_valid, x) for x in x_cases[2:]]
    vectors = []
    for m, x in pairs:
        seed, ek, c = (bytes.fromhex(m[k]) for k in ("seed", "ek", "c"))
        reason = ""
        if m["result"] != "valid":
            reason = f"ML-KEM: {m.get('comment', 'invalid')}"
        elif x.shared is None:
            reason = "X25519: all-zero shared secret"
        secret = None if reason else bytes.fromhex(m["K"]) + x.shared  # type: ignore[operator]
        vectors.append(
            X25519MLKEM768Vector(
                f"Wycheproof ML-KEM-768 tcId {m['tcId']} + {x.name}",
                seed + x.private,
                ek + x.public,
                c + x.peer,
                secret,
                reason,
            )
        )
    return tuple(vectors)


# --- running them ----------------------------------------------------------------------------


@dataclass
class Report:
    """Vectors run per algorithm, checks made, and every failure (empty when all passed)."""

    counts: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        """Count one check; record ``what`` when it failed."""
        self.checks += 1
        if not ok:
            self.failures.append(what)


class _Api:
    """Keys and contexts through the public API, pinned to one provider -- or, with
    ``components``, every key split across the providers named per role (contexts then
    pin nothing: the daemon runs each half where it lives)."""

    def __init__(
        self, stack: cs.CryptoStack, provider_id: int | None, components: dict[str, int] | None = None
    ) -> None:
        self.provider_id = provider_id
        self.components = components
        self.ctx = stack.create_crypto_context()
        self.km = self.ctx.create_key_management_context(cs.KeyManagementContextConfig())

    def close(self) -> None:
        self.km.close()
        self.ctx.close()

    def key(
        self, algorithm: str, material: bytes, fmt: cs.KeyFormat, permissions: cs.KeyOperationPermission
    ) -> cs.CryptoResourceGuard:
        params = cs.ImportKeyParams().set_algorithm(algorithm).set_material(material, fmt)
        params.set_permissions(permissions)
        if self.components is not None:
            params.set_component_providers(**self.components)
        elif self.provider_id is not None:
            params.set_provider(self.provider_id)
        key = self.km.import_key(params)
        if (
            self.components is not None
            and {c["role"]: c["provider"] for c in key.components} != self.components
        ):
            key.release()
            raise AssertionError(f"{algorithm} was not split as asked: {key.components}")
        return key

    def kem(self, algorithm: str, key: cs.CryptoResourceGuard) -> cs.KemContext:
        config = (
            cs.KemContextConfig()
            .set_algorithm(algorithm)
            .set_key(key)
            .set_derived_key_permissions(P.DERIVE | P.EXPORT)
        )
        if self.provider_id is not None:
            config.set_provider(self.provider_id)
        return self.ctx.create_kem_context(config)

    def secret(self, guard: cs.CryptoResourceGuard) -> bytes:
        try:
            return self.km.export_key(guard, F.RAW)
        finally:
            guard.release()

    def verify(
        self,
        algorithm: str,
        key: cs.CryptoResourceGuard,
        message: bytes,
        signature: bytes,
        context: bytes = b"",
    ) -> bool:
        config = cs.VerifyContextConfig()
        config.set_algorithm(algorithm)
        config.set_key(key)
        if self.provider_id is not None:
            config.set_provider(self.provider_id)
        config.set_context(context)
        with self.ctx.create_verify_context(config) as verifier:
            return bool(verifier.verify(message, signature))

    def sign(
        self, algorithm: str, key: cs.CryptoResourceGuard, message: bytes, context: bytes = b""
    ) -> bytes:
        config = cs.SignContextConfig().set_algorithm(algorithm).set_key(key).set_context(context)
        if self.provider_id is not None:
            config.set_provider(self.provider_id)
        with self.ctx.create_sign_context(config) as signer:
            return bytes(signer.sign(message))


def run(
    stack: cs.CryptoStack,
    provider_id: int | None,
    algorithms: Callable[[str], bool] = lambda _: True,
    *,
    components: dict[str, int] | None = None,
) -> Report:
    """Run every hybrid vector (of the algorithms ``algorithms`` selects) on ``provider_id``
    -- or, with ``components`` (``{"pq": id, "classical": id}``), with every key split
    across those providers (select only algorithms whose halves they can hold; X-Wing is
    never split)."""
    report = Report()
    api = _Api(stack, provider_id, components)
    try:
        if algorithms("X-Wing"):
            _run_xwing(api, report)
        if algorithms("X25519MLKEM768"):
            _run_x25519mlkem768(api, report)
        message, context, vectors = composite_vectors()
        for vector in vectors:
            if algorithms(vector.algorithm):
                _run_composite(api, report, vector, message, context)
    finally:
        api.close()
    return report


def _run_xwing(api: _Api, report: Report) -> None:
    for i, v in enumerate(xwing_vectors()):
        what = f"X-Wing vector {i}"
        with (
            api.key("X-Wing", v.sk, F.SEED, P.DECAPSULATE) as pair,
            api.key("X-Wing", v.pk, F.RAW, P.ENCAPSULATE) as public,
        ):
            report.check(
                api.km.export_public_key(pair, F.RAW) == v.pk, f"{what}: encapsulation key from the seed"
            )
            with api.kem("X-Wing", pair) as kem:
                report.check(api.secret(kem.decapsulate(v.ct)) == v.ss, f"{what}: decapsulated secret")
                with api.kem("X-Wing", public) as sender:
                    ct, guard = sender.encapsulate()
                    sent = api.secret(guard)
                report.check(
                    len(ct) == 1120 and api.secret(kem.decapsulate(ct)) == sent,
                    f"{what}: encapsulation round trip",
                )
        report.counts["X-Wing"] = report.counts.get("X-Wing", 0) + 1
    private_pem = (VECTORS / "xwing-example.priv.pem").read_bytes()
    public_pem = (VECTORS / "xwing-example.pub.pem").read_bytes()
    with api.key("X-Wing", private_pem, F.PEM, P.DECAPSULATE | P.EXPORT) as pair:
        report.check(
            api.km.export_public_key(pair, F.PEM) == public_pem,
            "X-Wing X.509 example: SPKI of the PKCS#8 key",
        )
        report.check(api.km.export_key(pair, F.PEM) == private_pem, "X-Wing X.509 example: PKCS#8 export")
        report.check(
            api.km.export_key(pair, F.SEED) == bytes(range(32)),
            "X-Wing X.509 example: the private key is 00..1f",
        )


def _run_x25519mlkem768(api: _Api, report: Report) -> None:
    name = "X25519MLKEM768"
    for v in x25519mlkem768_vectors():
        with api.key(name, v.private_key, F.SEED, P.DECAPSULATE) as pair:
            report.check(
                api.km.export_public_key(pair, F.RAW) == v.public_key,
                f"{v.name}: client share from the private key",
            )
            with api.kem(name, pair) as kem:
                try:
                    secret: bytes | None = api.secret(kem.decapsulate(v.ciphertext))
                    failure = ""
                except cs.CryptoError as exc:
                    secret, failure = None, exc.code.value
            if v.shared_secret is None:
                report.check(
                    failure == cs.ErrorCode.INVALID_ARGUMENT.value,
                    f"{v.name}: expected INVALID_ARGUMENT ({v.reason}), got {failure or 'a secret'}",
                )
            else:
                report.check(secret == v.shared_secret, f"{v.name}: shared secret ({failure or 'differs'})")
        report.counts[name] = report.counts.get(name, 0) + 1


def _spki_of_certificate(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a DER certificate (the seventh field of its TBS)."""
    tbs = x509.load_der_x509_certificate(der).tbs_certificate_bytes
    fields, pos = [], 0
    body = _der_value(tbs, 0)[0]
    while pos < len(body):
        _, end, start = _der_value(body, pos)
        fields.append(body[start:end])
        pos = end
    explicit_version = fields[0][0] == 0xA0
    return fields[6 if explicit_version else 5]


def _der_value(data: bytes, pos: int) -> tuple[bytes, int, int]:
    """(value, end of the element, start of the element) of the DER element at ``pos``."""
    start = pos
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return data[pos : pos + length], pos + length, start


def _run_composite(api: _Api, report: Report, v: CompositeVector, message: bytes, context: bytes) -> None:
    name = v.algorithm
    spec = COMPOSITE_SIGNATURES[name]
    certificate = x509.load_der_x509_certificate(v.x5c)
    spki = _spki_of_certificate(v.x5c)
    with (
        api.key(name, v.pk, F.RAW, P.VERIFY) as public,
        api.key(name, spki, F.SPKI_DER, P.VERIFY) as from_certificate,
        api.key(name, v.sk, F.RAW, P.SIGN | P.VERIFY | P.EXPORT) as raw_pair,
        api.key(name, v.sk_pkcs8, F.PKCS8_DER, P.SIGN | P.VERIFY | P.EXPORT) as pair,
    ):
        report.check(api.verify(name, public, message, v.s), f"{name}: s verifies")
        report.check(
            api.verify(name, public, message, v.s_with_context, context),
            f"{name}: sWithContext verifies with ctx",
        )
        report.check(
            not api.verify(name, public, message, v.s, context),
            f"{name}: s must not verify under another context",
        )
        report.check(
            api.verify(name, from_certificate, certificate.tbs_certificate_bytes, certificate.signature),
            f"{name}: the self-signed x5c certificate's signature verifies",
        )
        report.check(api.km.export_key(raw_pair, F.RAW) == v.sk, f"{name}: RAW sk round trip")
        report.check(api.km.export_key(pair, F.PKCS8_DER) == v.sk_pkcs8, f"{name}: PKCS#8 round trip")
        report.check(api.km.export_key(raw_pair, F.PKCS8_DER) == v.sk_pkcs8, f"{name}: PKCS#8 of the RAW sk")
        report.check(api.km.export_public_key(pair, F.RAW) == v.pk, f"{name}: public key of sk")
        report.check(
            api.km.export_public_key(pair, F.SPKI_DER) == spki, f"{name}: SPKI of sk equals the certificate's"
        )
        fresh = api.sign(name, pair, message, context)
        report.check(
            len(fresh) <= spec.max_signature_size and api.verify(name, public, message, fresh, context),
            f"{name}: a fresh signature verifies under the vector's pk",
        )
        if spec.traditional.scheme == "EdDSA":
            ours = api.sign(name, raw_pair, message)
            cut = spec.mldsa_signature_size
            report.check(
                ours[cut:] == v.s[cut:], f"{name}: deterministic EdDSA half equals the published one"
            )
    report.counts[name] = report.counts.get(name, 0) + 1
