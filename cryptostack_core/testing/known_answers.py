"""Known-answer tests for the algorithms Wycheproof has no file for, run through the public API.

The data are files nobody in this project wrote, shipped unchanged under
``testing/vectors/`` with their licences (``vectors/README.md`` names each source):

* NIST CAVP and RFC vectors as copied by pyca's ``cryptography-vectors`` 50.0.2: SHA-2 and
  SHA-3 (FIPS 180-4 / FIPS 202 ``ShortMsg``), AES-CFB128 (SP 800-38A ``MMT``), AES-CTR
  (RFC 3686), HMAC (RFC 4231), HKDF-SHA-256 (RFC 5869);
* liboqs' copies of the Falcon submission's KATs and of NIST ACVP's SLH-DSA key generation
  vectors (FIPS 205).

A :class:`KnownAnswerSet` is a named source of cases for some algorithms; :data:`SETS` holds
the built-in ones and a provider's conformance profile may add its own (same classes, its
own data with its own source). :func:`run_set` runs every case of a set whose algorithm the
provider claims, pinned to that provider, and returns the same
:class:`~cryptostack_core.testing.wycheproof.FileResult` the Wycheproof runner does.

How each case kind maps to the API:

=================  ==========================================================================
HashCase           ``single_shot(message) == digest``
MacCase            key imported RAW; ``sign(message)`` starts with ``tag``; ``verify`` agrees
CipherCase         key imported RAW; encrypt(iv, plaintext) == ciphertext and back
KdfCase            IKM imported as GENERIC-SECRET; ``derive_key`` -> exported key == ``okm``
VerifyCase         public key imported; ``verify(message, signature) == valid``
KeyPairCase        private and public key imported; a signature the provider makes with the
                   private key verifies under the separately imported public key (whose root
                   the standard's own implementation computed), a changed message does not
=================  ==========================================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import cryptostack_core as cs
from cryptostack_core.testing.wycheproof import FileResult, Policy, Unexpected

__all__ = [
    "SETS",
    "CipherCase",
    "HashCase",
    "KdfCase",
    "KeyPairCase",
    "KnownAnswerSet",
    "MacCase",
    "VerifyCase",
    "parse_key_value_file",
    "run_set",
    "sets_for",
    "vectors_root",
]

P = cs.KeyOperationPermission
VECTORS = Path(__file__).resolve().parent / "vectors"


def vectors_root() -> Path:
    """The ``testing/vectors`` directory shipped with the package."""
    return VECTORS


# --- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HashCase:
    algorithm: str
    message: bytes
    digest: bytes
    label: str = ""


@dataclass(frozen=True)
class MacCase:
    algorithm: str
    key: bytes
    message: bytes
    tag: bytes
    label: str = ""


@dataclass(frozen=True)
class CipherCase:
    algorithm: str
    key: bytes
    iv: bytes
    plaintext: bytes
    ciphertext: bytes
    label: str = ""


@dataclass(frozen=True)
class KdfCase:
    algorithm: str
    ikm: bytes
    salt: bytes
    info: bytes
    okm: bytes
    label: str = ""


@dataclass(frozen=True)
class VerifyCase:
    algorithm: str
    public_key: bytes
    key_format: cs.KeyFormat
    message: bytes
    signature: bytes
    valid: bool = True
    context: bytes = b""
    label: str = ""


@dataclass(frozen=True)
class KeyPairCase:
    algorithm: str
    private_key: bytes
    public_key: bytes
    key_format: cs.KeyFormat = cs.KeyFormat.RAW
    message: bytes = b"cryptostack known-answer check"
    label: str = ""


Case = Union[HashCase, MacCase, CipherCase, KdfCase, VerifyCase, KeyPairCase]


@dataclass(frozen=True)
class KnownAnswerSet:
    """Cases for some algorithms from one source (usually one file)."""

    name: str
    """How reports name the set (the file's path under ``testing/vectors``, or the provider's)."""
    algorithms: tuple[str, ...]
    source: str
    """Where the data come from (document, file, version)."""
    load: Callable[[], Iterable[Case]] = field(compare=False)

    def cases(self) -> Iterator[Case]:
        """Every case of the set."""
        yield from self.load()


# --- the NIST "KEY = VALUE" text format (CAVP .rsp, pyca's .txt, liboqs .kat) ---------------


def parse_key_value_file(
    path: Path,
    end_key: str | None = None,
) -> Iterator[tuple[str, dict[str, str]]]:
    """Records of ``KEY = VALUE`` lines, each with the most recent ``[SECTION]`` header (""
    before any); ``#`` comments are skipped. A record ends at a blank line, or, when
    ``end_key`` is given, after the line with that key (for files with blank lines inside
    records)."""
    section = ""
    record: dict[str, str] = {}
    for raw in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            if record:
                yield section, record
                record = {}
            section = line[1:-1].strip()
            continue
        if not line:
            if record and end_key is None:
                yield section, record
                record = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            record[key.strip()] = value.strip()
            if key.strip() == end_key:
                yield section, record
                record = {}
    if record:
        yield section, record


def _bytes(value: str) -> bytes:
    return bytes.fromhex(value) if value else b""


def _file(*parts: str) -> Path:
    return VECTORS.joinpath(*parts)


def _hash_cases(algorithm: str, path: Path) -> Callable[[], Iterator[Case]]:
    def load() -> Iterator[Case]:
        for _section, rec in parse_key_value_file(path):
            if "MD" not in rec:
                continue
            bits = int(rec["Len"])
            yield HashCase(algorithm, _bytes(rec["Msg"])[: bits // 8], _bytes(rec["MD"]), f"Len = {bits}")

    return load


def _cipher_cases(algorithm: str, path: Path) -> Callable[[], Iterator[Case]]:
    def load() -> Iterator[Case]:
        for section, rec in parse_key_value_file(path):
            if "KEY" not in rec:
                continue
            yield CipherCase(
                algorithm,
                _bytes(rec["KEY"]),
                _bytes(rec["IV"]),
                _bytes(rec["PLAINTEXT"]),
                _bytes(rec["CIPHERTEXT"]),
                f"{section} COUNT = {rec.get('COUNT', '?')}",
            )

    return load


def _hmac_cases(algorithm: str, path: Path) -> Callable[[], Iterator[Case]]:
    def load() -> Iterator[Case]:
        for number, (_section, rec) in enumerate(parse_key_value_file(path), 1):
            if "MD" in rec:
                yield MacCase(
                    algorithm,
                    _bytes(rec["Key"]),
                    _bytes(rec["Msg"]),
                    _bytes(rec["MD"]),
                    f"test case {number}",
                )

    return load


def _hkdf_cases(algorithm: str, path: Path) -> Callable[[], Iterator[Case]]:
    def load() -> Iterator[Case]:
        for _section, rec in parse_key_value_file(path, end_key="OKM"):
            if "OKM" in rec:
                okm = _bytes(rec["OKM"])
                assert len(okm) == int(rec["L"])
                yield KdfCase(
                    algorithm,
                    _bytes(rec["IKM"]),
                    _bytes(rec.get("salt", "")),
                    _bytes(rec.get("info", "")),
                    okm,
                    f"COUNT = {rec.get('COUNT')}",
                )

    return load


def _falcon_cases(algorithm: str, logn: int, path: Path) -> Callable[[], Iterator[Case]]:
    """The submission's ``sm`` is ``len(2) || nonce(40) || msg || 0x20+logn || body``; the
    signature as liboqs and the API take it is ``0x30+logn || nonce || body``."""

    def load() -> Iterator[Case]:
        for _section, rec in parse_key_value_file(path):
            if "sm" not in rec:
                continue
            sm, msg = _bytes(rec["sm"]), _bytes(rec["msg"])
            length = int.from_bytes(sm[:2], "big")
            nonce, body = sm[2:42], sm[42 + len(msg) :]
            if sm[42 : 42 + len(msg)] != msg or len(body) != length or body[0] != 0x20 + logn:
                raise ValueError(f"{path.name}: unexpected signed-message layout")
            signature = bytes([0x30 + logn]) + nonce + body[1:]
            label = f"count = {rec.get('count')}"
            pk = _bytes(rec["pk"])
            yield VerifyCase(algorithm, pk, cs.KeyFormat.RAW, msg, signature, True, b"", label)
            yield VerifyCase(
                algorithm,
                pk,
                cs.KeyFormat.RAW,
                msg + b"\x00",
                signature,
                False,
                b"",
                label + " (message changed)",
            )

    return load


def _slh_dsa_cases(path: Path, per_parameter_set: int = 1) -> Callable[[], Iterator[Case]]:
    def load() -> Iterator[Case]:
        data = json.loads(path.read_text(encoding="utf-8"))
        for group in data["testGroups"]:
            for test in group["tests"][:per_parameter_set]:
                yield KeyPairCase(
                    group["parameterSet"],
                    _bytes(test["sk"]),
                    _bytes(test["pk"]),
                    cs.KeyFormat.RAW,
                    label=f"tcId {test['tcId']}",
                )

    return load


def _builtin_sets() -> list[KnownAnswerSet]:
    pyca = "cryptography-vectors 50.0.2 (pyca), copying "
    sets: list[KnownAnswerSet] = []
    for name, file in [
        ("SHA-224", "SHA224"),
        ("SHA-256", "SHA256"),
        ("SHA-384", "SHA384"),
        ("SHA-512", "SHA512"),
    ]:
        rel = f"cryptography-vectors/hashes/SHA2/{file}ShortMsg.rsp"
        sets.append(
            KnownAnswerSet(
                rel, (name,), pyca + "NIST CAVP SHAVS (FIPS 180-4)", _hash_cases(name, _file(*rel.split("/")))
            )
        )
    for bits in (224, 256, 384, 512):
        rel = f"cryptography-vectors/hashes/SHA3/SHA3_{bits}ShortMsg.rsp"
        sets.append(
            KnownAnswerSet(
                rel,
                (f"SHA3-{bits}",),
                pyca + "NIST CAVP SHA3VS (FIPS 202)",
                _hash_cases(f"SHA3-{bits}", _file(*rel.split("/"))),
            )
        )
    for bits in (128, 192, 256):
        rel = f"cryptography-vectors/ciphers/AES/CFB/CFB128MMT{bits}.rsp"
        sets.append(
            KnownAnswerSet(
                rel,
                (f"AES-{bits}-CFB",),
                pyca + "NIST CAVP AESAVS (SP 800-38A CFB128)",
                _cipher_cases(f"AES-{bits}-CFB", _file(*rel.split("/"))),
            )
        )
        rel = f"cryptography-vectors/ciphers/AES/CTR/aes-{bits}-ctr.txt"
        sets.append(
            KnownAnswerSet(
                rel,
                (f"AES-{bits}-CTR",),
                pyca + "RFC 3686",
                _cipher_cases(f"AES-{bits}-CTR", _file(*rel.split("/"))),
            )
        )
    for bits in (256, 384, 512):
        rel = f"cryptography-vectors/HMAC/rfc-4231-sha{bits}.txt"
        sets.append(
            KnownAnswerSet(
                rel,
                (f"HMAC-SHA-{bits}",),
                pyca + "RFC 4231",
                _hmac_cases(f"HMAC-SHA-{bits}", _file(*rel.split("/"))),
            )
        )
    rel = "cryptography-vectors/KDF/rfc-5869-HKDF-SHA256.txt"
    sets.append(
        KnownAnswerSet(
            rel, ("HKDF-SHA-256",), pyca + "RFC 5869", _hkdf_cases("HKDF-SHA-256", _file(*rel.split("/")))
        )
    )
    for level, logn in ((512, 9), (1024, 10)):
        rel = f"liboqs/tests/KATs/sig/Falcon-{level}.kat"
        sets.append(
            KnownAnswerSet(
                rel,
                (f"Falcon-{level}",),
                "liboqs (commit b2de7e6b), the Falcon submission's KAT",
                _falcon_cases(f"Falcon-{level}", logn, _file(*rel.split("/"))),
            )
        )
    rel = "liboqs/tests/ACVP_Vectors/SLH-DSA-keyGen-FIPS205/internalProjection.json"
    slh = tuple(
        f"SLH-DSA-{h}-{v}"
        for h in ("SHA2", "SHAKE")
        for v in ("128s", "128f", "192s", "192f", "256s", "256f")
    )
    sets.append(
        KnownAnswerSet(
            rel,
            slh,
            "liboqs (commit 754e1ed0), copying NIST ACVP-Server "
            "1.1.0.40 SLH-DSA-keyGen-FIPS205 (first case of each "
            "parameter set)",
            _slh_dsa_cases(_file(*rel.split("/"))),
        )
    )
    return sets


SETS: tuple[KnownAnswerSet, ...] = tuple(_builtin_sets())
"""The built-in known-answer sets."""


def sets_for(claimed: Iterable[str], extra: Iterable[KnownAnswerSet] = ()) -> list[KnownAnswerSet]:
    """The sets (built-in, then ``extra``) with at least one of ``claimed``'s algorithms."""
    wanted = set(claimed)
    return [s for s in (*SETS, *extra) if wanted.intersection(s.algorithms)]


# --- running ---------------------------------------------------------------------------------


class _Runner:
    """Keys and contexts of one set's run, pinned to one provider (contexts are reused)."""

    def __init__(self, stack: cs.CryptoStack, provider_id: int) -> None:
        self.pid = provider_id
        self.ctx = stack.create_crypto_context()
        self.km = self.ctx.create_key_management_context()
        self._hashers: dict[str, cs.HashContext] = {}

    def close(self) -> None:
        self.ctx.close()

    def key(
        self, algorithm: str, material: bytes, fmt: cs.KeyFormat, permissions: cs.KeyOperationPermission
    ) -> cs.CryptoResourceGuard:
        params = cs.ImportKeyParams().set_algorithm(algorithm).set_material(material, fmt)
        params.set_permissions(permissions)
        params.set_provider(self.pid)
        return self.km.import_key(params)

    def run(self, case: Case) -> str:
        """ "" when the case went as expected, else what went wrong."""
        if isinstance(case, HashCase):
            hasher = self._hashers.get(case.algorithm)
            if hasher is None:
                hasher = self._hashers[case.algorithm] = self.ctx.create_hash_context(
                    cs.HashContextConfig().set_algorithm(case.algorithm).set_provider(self.pid)
                )
            return "" if hasher.single_shot(case.message) == case.digest else "digest differs"
        if isinstance(case, MacCase):
            with self.key(case.algorithm, case.key, cs.KeyFormat.RAW, P.SIGN | P.VERIFY | P.MAC) as key:
                with self.ctx.create_sign_context(
                    cs.SignContextConfig().set_algorithm(case.algorithm).set_key(key).set_provider(self.pid)
                ) as signer:
                    tag = signer.sign(case.message)
                if tag[: len(case.tag)] != case.tag:
                    return "MAC differs"
                config = cs.VerifyContextConfig().set_algorithm(case.algorithm).set_key(key)
                config.set_provider(self.pid)
                if len(case.tag) < len(tag):
                    config.set_tag_length(len(case.tag))
                with self.ctx.create_verify_context(config) as verifier:
                    if not verifier.verify(case.message, case.tag):
                        return "the known tag does not verify"
                return ""
        if isinstance(case, CipherCase):
            key_algorithm = cs.canonical_name(case.algorithm.rsplit("-", 1)[0])
            with self.key(key_algorithm, case.key, cs.KeyFormat.RAW, P.ENCRYPT | P.DECRYPT) as key:
                out = []
                for direction, data in (
                    (cs.CipherDirection.ENCRYPT, case.plaintext),
                    (cs.CipherDirection.DECRYPT, case.ciphertext),
                ):
                    cipher = self.ctx.create_cipher_context(
                        cs.CipherContextConfig()
                        .set_algorithm(case.algorithm)
                        .set_key(key)
                        .set_direction(direction)
                        .set_provider(self.pid)
                    )
                    cipher.init(case.iv)
                    result = cipher.update(data)
                    result += cipher.finalize()
                    cipher.close()
                    out.append(result)
            if out[0] != case.ciphertext:
                return "encryption differs"
            return "" if out[1] == case.plaintext else "decryption differs"
        if isinstance(case, KdfCase):
            # EXPORT on the parent too: a derived key carries EXPORT only if its parent does.
            with self.key("GENERIC-SECRET", case.ikm, cs.KeyFormat.RAW, P.DERIVE | P.EXPORT) as ikm:
                derived = self.km.derive_key(
                    cs.DeriveKeyParams()
                    .set_algorithm(case.algorithm)
                    .set_key(ikm)
                    .set_salt(case.salt)
                    .set_info(case.info)
                    .set_output("GENERIC-SECRET", len(case.okm))
                    .set_permissions(P.EXPORT)
                )
                with derived:
                    okm = self.km.export_key(derived, cs.KeyFormat.RAW)
            return "" if okm == case.okm else "derived key differs"
        if isinstance(case, VerifyCase):
            with self.key(case.algorithm, case.public_key, case.key_format, P.VERIFY) as key:
                config = cs.VerifyContextConfig().set_algorithm(case.algorithm).set_key(key)
                config.set_provider(self.pid)
                if case.context:
                    config.set_context(case.context)
                with self.ctx.create_verify_context(config) as verifier:
                    ok = verifier.verify(case.message, case.signature)
            if ok != case.valid:
                return f"verify returned {ok} for a {'valid' if case.valid else 'invalid'} signature"
            return ""
        assert isinstance(case, KeyPairCase)
        with (
            self.key(case.algorithm, case.private_key, case.key_format, P.SIGN | P.VERIFY) as sk,
            self.key(case.algorithm, case.public_key, case.key_format, P.VERIFY) as pk,
        ):
            with self.ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm(case.algorithm).set_key(sk).set_provider(self.pid)
            ) as signer:
                signature = signer.sign(case.message)
            verify = cs.VerifyContextConfig().set_algorithm(case.algorithm).set_key(pk)
            verify.set_provider(self.pid)
            with self.ctx.create_verify_context(verify) as verifier:
                if not verifier.verify(case.message, signature):
                    return "the signature does not verify under the known public key"
                if verifier.verify(case.message + b"\x00", signature):
                    return "a changed message verifies"
        return ""


def _refusal(policy: Policy, case: Case) -> str:
    if isinstance(case, MacCase) and cs.canonical_name(case.algorithm).startswith("HMAC-"):
        return policy.mac_key_refusal(len(case.key))
    if isinstance(case, KdfCase):
        return policy.secret_refusal(len(case.ikm), len(case.okm))
    return ""


def run_set(
    stack: cs.CryptoStack,
    provider_id: int,
    kat: KnownAnswerSet,
    claimed: Iterable[str],
    policy: Policy | None = None,
) -> FileResult:
    """Every case of ``kat`` whose algorithm ``claimed`` holds, on provider ``provider_id``.

    A case whose parameters ``policy`` says the provider refuses must fail with
    INVALID_ARGUMENT (counted as rejected by policy)."""
    policy = policy or Policy()
    wanted = set(claimed)
    result = FileResult(kat.name)
    started = time.perf_counter()
    runner = _Runner(stack, provider_id)
    try:
        for number, case in enumerate(kat.cases(), 1):
            result.cases += 1
            if case.algorithm not in wanted:
                result.skipped += 1
                continue
            refusal = _refusal(policy, case)
            try:
                problem = runner.run(case)
                if refusal:
                    problem = f"accepted although the policy refuses it ({refusal})"
            except cs.CryptoError as exc:
                if refusal and exc.code is cs.ErrorCode.INVALID_ARGUMENT:
                    result.policy_rejected += 1
                    problem = ""
                else:
                    problem = f"{exc.code.value}: {exc.message}"
            except Exception as exc:  # a harness or client bug: report it, keep going
                problem = f"raised {type(exc).__name__}: {exc}"
            if problem:
                label = f"{case.algorithm} {case.label}".strip()
                result.unexpected.append(Unexpected(number, f"{label}: {problem}"))
            else:
                result.as_expected += 1
    finally:
        runner.close()
    result.seconds = time.perf_counter() - started
    result.notes.append(f"source: {kat.source}")
    return result
