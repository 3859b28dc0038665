"""A structured fuzzer for the daemon's wire protocol (issue 10).

Three sources of frames, shared by the bounded Hypothesis run in ``make test``
(``test_fuzz.py``) and the long run of ``make fuzz`` (``fuzz_daemon.py``):

- the request grammar of docs/protocol.md: every operation with its argument names, each
  argument drawn from well-formed values (algorithm names, resource ids, small byte strings)
  and hostile ones (wrong types, huge and negative integers, nested maps, long strings);
- frames recorded from a real client session (:func:`record_session`), mutated byte-wise
  (bit flips, truncation, insertion, duplication, header and length-field changes);
- raw CBOR items outside the accepted subset (tags, indefinite lengths, deep nesting).

A frame's length header is kept consistent with its body unless the mutation is meant to
break the stream; :class:`Frame` says which, so the driver knows whether to expect an answer
or a closed connection.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

HEADER = struct.Struct(">I")

ALGORITHMS = [
    "AES-256-GCM-HKDF-1MB",
    "AES-128-GCM-HKDF-4KB",
    "SHA-256",
    "SHA-384",
    "SHA-512",
    "SHA3-256",
    "AES-128",
    "AES-256",
    "AES-256-CBC",
    "AES-128-CBC",
    "AES-256-GCM",
    "HMAC-SHA-256",
    "HMAC-SHA-512",
    "ECDSA-P256",
    "Ed25519",
    "HKDF-SHA-256",
    "GENERIC-SECRET",
    "ML-KEM-768",
    "X25519",
    "RANDOM",
    "sha256",
    "aes",
    "",
    "NOPE",
]
RESOURCE_TYPES = [
    "KEY_SLOT",
    "CERT_SLOT",
    "VERIFICATION_TRUST_STORE",
    "KEY",
    "CERTIFICATE",
    "CRL",
    "key",
    "",
    "X",
]
SLOT_NAMES = ["PreDeployedSlot", "MyNewSlot", "SigningKey", "EmptySlot", "Nope", ""]
FORMATS = ["RAW", "SEED", "SPKI_DER", "PKCS8_DER", "PEM", "DER", "JWK"]

# Argument names per operation (docs/protocol.md), and what kind of value each takes.
_RID, _INT, _ALG, _BYTES, _TEXT, _BOOL, _PERM, _DIR, _FMT, _LIST, _OPNAME = range(11)
SCHEMA: dict[str, dict[str, int]] = {
    "ping": {},
    "status": {},
    "explain": {"algorithm": _ALG, "operation": _TEXT, "key": _RID, "provider": _INT},
    "resource.resolve": {"name": _TEXT, "type": _TEXT},
    "resource.release": {"id": _RID, "quiet": _BOOL},
    "resource.describe": {"id": _RID},
    "context.close": {"ctx": _INT},
    "shm.attach": {"fd": _INT, "size": _INT},
    "random.generate": {"length": _INT, "provider": _INT},
    "key.generate": {"algorithm": _ALG, "permissions": _PERM, "provider": _INT},
    "key.import": {
        "algorithm": _ALG,
        "material": _BYTES,
        "format": _FMT,
        "permissions": _PERM,
        "provider": _INT,
    },
    "key.load": {"slot": _RID, "version": _INT},
    "key.slot_info": {"slot": _RID},
    "key.persist": {"slot": _RID, "key": _RID},
    "key.clear_slot": {"slot": _RID},
    "key.retire_version": {"slot": _RID, "version": _INT},
    "key.set_minimum_version": {"slot": _RID, "version": _INT},
    "aead.seal": {"key": _RID, "data": _BYTES, "aad": _BYTES},
    "aead.open": {"key": _RID, "data": _BYTES, "aad": _BYTES},
    "key.export": {"key": _RID, "format": _FMT},
    "key.export_public": {"key": _RID, "format": _FMT},
    "key.derive": {
        "algorithm": _ALG,
        "key": _RID,
        "salt": _BYTES,
        "info": _BYTES,
        "length": _INT,
        "output_algorithm": _ALG,
        "permissions": _PERM,
    },
    "hash.create": {"algorithm": _ALG, "provider": _INT},
    "cipher.create": {
        "algorithm": _ALG,
        "key": _RID,
        "direction": _DIR,
        "tag_length": _INT,
        "provider": _INT,
    },
    "sign.create": {"algorithm": _ALG, "key": _RID, "context": _BYTES, "provider": _INT},
    "verify.create": {"algorithm": _ALG, "key": _RID, "context": _BYTES, "tag_length": _INT},
    "kem.create": {"algorithm": _ALG, "key": _RID, "derived_permissions": _PERM},
    "agree.create": {"algorithm": _ALG, "key": _RID, "derived_permissions": _PERM},
    "kem.encapsulate": {"ctx": _INT},
    "kem.decapsulate": {"ctx": _INT, "ciphertext": _BYTES},
    "agree.agree": {"ctx": _INT, "peer": _BYTES},
    "cert.import": {"data": _BYTES},
    "crl.import": {"data": _BYTES},
    "truststore.create": {"anchors": _LIST, "crls": _LIST},
    "cert.public_key": {"cert": _RID, "provider": _INT},
    "cert.export": {"cert": _RID, "format": _FMT},
    "cert.persist": {"slot": _RID, "cert": _RID},
    "truststore.persist": {"store": _RID, "anchors": _LIST, "crls": _LIST},
    "cert.verify": {
        "certificate": _RID,
        "trust_store": _RID,
        "intermediates": _LIST,
        "crls": _LIST,
        "time": _INT,
        "policy": _TEXT,
    },
}
SCHEMA.update(
    {
        "streaming_aead.create": {"algorithm": _ALG, "key": _RID, "direction": _DIR, "provider": _INT},
        "streaming_aead.init": {"ctx": _INT, "aad": _BYTES},
        "streaming_aead.update": {"ctx": _INT, "data": _BYTES},
        "streaming_aead.finalize": {"ctx": _INT},
        "streaming_aead.reset": {"ctx": _INT},
        "context.close": {"ctx": _INT, "quiet": _BOOL},
    }
)
for _family in ("hash", "cipher", "sign", "verify"):
    for _verb in ("init", "update", "finalize", "reset", "single_shot", "update_aad"):
        SCHEMA[f"{_family}.{_verb}"] = {"ctx": _INT, "data": _BYTES, "iv": _BYTES, "signature": _BYTES}
OPS = sorted(SCHEMA)
INTERESTING_INTS = [
    0,
    1,
    2,
    3,
    7,
    12,
    16,
    32,
    64,
    255,
    256,
    4096,
    65536,
    1 << 20,
    (1 << 20) + 1,
    -1,
    -(1 << 31),
    (1 << 31) - 1,
    1 << 32,
    (1 << 63) - 1,
    (1 << 64) - 1,
    -(1 << 63),
]


@dataclass(frozen=True)
class Frame:
    """Bytes to send, and whether they keep the stream in step (one answer expected)."""

    data: bytes
    in_step: bool = True


def frame_of(body: bytes) -> Frame:
    """A well-delimited frame around ``body``."""
    return Frame(HEADER.pack(len(body)) + body)


# --- the fast generator (make fuzz) --------------------------------------------------------------
class Generator:
    """Frames from the grammar, the corpus and raw CBOR, drawn from a seeded ``random``."""

    def __init__(self, seed: int, corpus: list[bytes] | None = None, max_bytes: int = 1 << 16) -> None:
        self.rng = random.Random(seed)
        self.corpus = corpus or []
        self.max_bytes = max_bytes
        self.next_id = 1

    def frame(self) -> Frame:
        """One frame; about 55% grammar, 30% mutated corpus, 15% raw CBOR."""
        roll = self.rng.random()
        if roll < 0.55 or not self.corpus:
            return frame_of(cbor2.dumps(self.request()))
        if roll < 0.85:
            return self.mutated(self.rng.choice(self.corpus))
        return frame_of(self.raw_cbor())

    # the grammar
    def request(self) -> dict[str, Any]:
        rng = self.rng
        self.next_id += 1
        op = rng.choice(OPS) if rng.random() < 0.95 else rng.choice(["batch", "x.y", "", "batch"])
        message: dict[str, Any] = {
            "id": self.next_id if rng.random() < 0.97 else self.junk(2),
            "op": op if rng.random() < 0.98 else self.junk(2),
        }
        message["args"] = self.batch_args() if op == "batch" else self.args(op)
        if rng.random() < 0.2:
            message["timeout_ms"] = rng.choice([1, 5, 1000, 30000, 0, -1, 1 << 40, 1.5, None])
        return message

    def batch_args(self) -> dict[str, Any]:
        rng = self.rng
        calls: list[Any] = []
        for _ in range(rng.choice([0, 1, 2, 3, 5, 17, 64])):
            op = rng.choice(OPS)
            calls.append({"op": op if rng.random() < 0.95 else self.junk(2), "args": self.args(op)})
        return {"calls": calls}

    def args(self, op: str) -> Any:
        rng = self.rng
        if rng.random() < 0.03:
            return self.junk(3)
        schema = SCHEMA.get(op, {})
        args: dict[str, Any] = {}
        for name, kind in schema.items():
            if rng.random() < 0.7:
                args[name] = self.value(kind)
        if rng.random() < 0.05:
            args[self.text()] = self.junk(2)
        return args

    def value(self, kind: int) -> Any:
        rng = self.rng
        if rng.random() < 0.08:
            return self.junk(2)
        if kind == _RID:
            return {
                "type": rng.choice(RESOURCE_TYPES),
                "handle": self.small_int(),
                **({"name": rng.choice(SLOT_NAMES)} if rng.random() < 0.2 else {}),
            }
        if kind == _INT:
            return self.small_int()
        if kind == _ALG:
            return rng.choice(ALGORITHMS)
        if kind == _BYTES:
            return self.bytes_()
        if kind == _TEXT:
            return rng.choice([*SLOT_NAMES, "encrypt", "sign", "random", "NONE", "CRL_ONLY", self.text()])
        if kind == _BOOL:
            return rng.random() < 0.5
        if kind == _PERM:
            return rng.choice([0, 1, 3, 2048, 4095, 1 << 20, -1])
        if kind == _DIR:
            return rng.choice(["ENCRYPT", "DECRYPT", "encrypt", "X"])
        if kind == _FMT:
            return rng.choice(FORMATS)
        if kind == _LIST:
            return [self.value(_RID) for _ in range(rng.choice([0, 1, 2, 5]))]
        return None

    def small_int(self) -> int:
        rng = self.rng
        return rng.randint(0, 12) if rng.random() < 0.7 else rng.choice(INTERESTING_INTS)

    def bytes_(self) -> bytes:
        rng = self.rng
        size = rng.choice([0, 1, 15, 16, 17, 32, 64, 100, 1000, 4096, 70000])
        return rng.randbytes(min(size, self.max_bytes))

    def text(self) -> str:
        rng = self.rng
        return "".join(rng.choice("abcXYZ._-é€\U0001f600 0") for _ in range(rng.randint(0, 12)))

    def junk(self, depth: int) -> Any:
        """Any CBOR value the protocol does not expect."""
        rng = self.rng
        choice = rng.randrange(10 if depth > 0 else 7)
        if choice == 0:
            return None
        if choice == 1:
            return rng.random() < 0.5
        if choice == 2:
            return rng.choice(INTERESTING_INTS)
        if choice == 3:
            return rng.uniform(-1e300, 1e300)
        if choice == 4:
            return self.bytes_()
        if choice == 5:
            return self.text()
        if choice == 6:
            return rng.choice([[], {}, ""])
        if choice == 7:
            return [self.junk(depth - 1) for _ in range(rng.randint(0, 4))]
        if choice == 8:
            return {self.text(): self.junk(depth - 1) for _ in range(rng.randint(0, 4))}
        return {rng.randint(-5, 5): self.junk(depth - 1) for _ in range(rng.randint(0, 3))}

    # byte-wise mutation of recorded frames (the body; sometimes the header too)
    def mutated(self, body: bytes) -> Frame:
        rng = self.rng
        data = bytearray(body)
        for _ in range(rng.choice([1, 1, 2, 3, 8])):
            kind = rng.randrange(7)
            at = rng.randrange(len(data) + 1)
            if kind == 0 and data:  # flip a bit
                data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
            elif kind == 1 and data:  # set a byte to an interesting value
                data[min(at, len(data) - 1)] = rng.choice(
                    [0x00, 0x17, 0x18, 0x1B, 0x1F, 0x5F, 0x7F, 0x9F, 0xBF, 0xC2, 0xD8, 0xF7, 0xFF]
                )
            elif kind == 2:  # truncate
                del data[at:]
            elif kind == 3:  # insert random bytes
                data[at:at] = rng.randbytes(rng.randint(1, 8))
            elif kind == 4 and data:  # duplicate a slice
                end = rng.randrange(at, len(data) + 1)
                data[at:at] = data[at:end]
            elif kind == 5:  # splice another recorded frame
                other = rng.choice(self.corpus)
                data[at:] = other[rng.randrange(len(other) + 1) :]
            elif kind == 6 and data:  # drop a byte
                del data[min(at, len(data) - 1)]
        body = bytes(data[: self.max_bytes])
        if rng.random() < 0.02:  # a header that lies: the stream is out of step afterwards
            return Frame(
                HEADER.pack(rng.choice([len(body) + rng.randint(1, 9), max(0, len(body) - 1), 1 << 31]))
                + body,
                in_step=False,
            )
        return frame_of(body)

    # raw CBOR outside the subset
    def raw_cbor(self) -> bytes:
        rng = self.rng
        head = cbor2.dumps({"id": self.next_id, "op": "ping"})[:-1]  # a map missing "args"
        tails: list[Callable[[], bytes]] = [
            lambda: b"\x64args" + b"\x81" * rng.randint(10, 60) + b"\x00",  # deep
            lambda: b"\x64args" + b"\xc2\x58\x40" + rng.randbytes(64),  # bignum
            lambda: b"\x64args" + b"\xbf\x61a\x01\xff",  # indefinite
            lambda: b"\x64args" + b"\xa1\x1b" + rng.randbytes(8) + b"\x00",  # big key
            lambda: b"\x64args" + b"\x9a\x00\x01\x00\x00" + b"\xa0" * 50,  # short array
            lambda: b"\x64args" + b"\xb9\x01\x01" + b"\x00\x00" * 257,  # 257 keys
            lambda: b"\x64args" + b"\xf7",  # undefined
            lambda: b"\x64args" + b"\xfc",  # reserved
            lambda: rng.randbytes(rng.randint(0, 40)),
        ]
        return head + rng.choice(tails)()


# --- recorded frames ---------------------------------------------------------------------------------
def record_session(endpoint: str) -> list[bytes]:
    """The request bodies a real client sends through a representative session."""
    import cryptostack_core as cs
    from cryptostack_core.client.protocol import ClientProtocol

    recorded: list[bytes] = []
    original = ClientProtocol.frame

    def recording(self: ClientProtocol, message: Mapping[str, Any]) -> bytes:
        if "hello" not in message:
            recorded.append(cbor2.dumps(message))
        return original(self, message)

    ClientProtocol.frame = recording  # type: ignore[method-assign]
    try:
        config = cs.CryptoStackConfig().set_connection_endpoint(endpoint)
        with cs.create_crypto_stack(config) as stack, stack.create_crypto_context() as ctx:
            P = cs.KeyOperationPermission
            h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256"))
            h.init()
            h.update(b"abc" * 50)
            h.finalize()
            h.single_shot(b"x")
            slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
            for direction in (cs.CipherDirection.ENCRYPT, cs.CipherDirection.DECRYPT):
                c = ctx.create_cipher_context(
                    cs.CipherContextConfig()
                    .set_algorithm("AES-256-GCM")
                    .set_key(slot)
                    .set_direction(direction)
                )
                c.init(bytes(12))
                c.update_aad(b"aad")
                try:
                    c.update(b"m" * 40)
                    c.finalize()
                except cs.CryptoError:
                    pass
            km = ctx.create_key_management_context()
            key = km.generate_key(
                cs.GenerateKeyParams()
                .set_algorithm("HMAC-SHA-256")
                .set_permissions(P.SIGN | P.VERIFY | P.MAC | P.EXPORT)
            )
            km.export_key(key)
            signer = ctx.create_sign_context(
                cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(key)
            )
            tag = signer.sign(b"message")
            verifier = ctx.create_verify_context(
                cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(key)
            )
            verifier.verify(b"message", tag)
            base = km.generate_key(
                cs.GenerateKeyParams().set_algorithm("GENERIC-SECRET").set_permissions(P.DERIVE)
            )
            km.derive_key(
                cs.DeriveKeyParams()
                .set_key(base)
                .set_info(b"i")
                .set_output("AES-256")
                .set_permissions(P.ENCRYPT)
            )
            km.persist_key(
                ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT),
                km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256")),
            )
            km.get_key_slot_info(slot)
            km.generate_random(48)
            ed = km.generate_key(cs.GenerateKeyParams().set_algorithm("Ed25519"))
            km.export_public_key(ed)
            stack.status()
            stack.explain("AES-256-GCM", "encrypt", key=slot)
    finally:
        ClientProtocol.frame = original  # type: ignore[method-assign]
    return recorded


# --- Hypothesis strategies (make test) -----------------------------------------------------------
def strategies(corpus: list[bytes]) -> Any:
    """A Hypothesis strategy of :class:`Frame` over the grammar, the corpus and raw CBOR."""
    from hypothesis import strategies as st

    ints = st.one_of(
        st.integers(0, 12), st.sampled_from(INTERESTING_INTS), st.integers(-(1 << 64) + 1, (1 << 64) - 1)
    )
    text = st.text(max_size=16)
    blobs = st.one_of(st.binary(max_size=64), st.integers(0, 70000).map(bytes))
    junk = st.recursive(
        st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=True), blobs, text),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(text, st.integers(-9, 9)), inner, max_size=4),
        ),
        max_leaves=12,
    )
    rid = st.fixed_dictionaries(
        {"type": st.sampled_from(RESOURCE_TYPES), "handle": ints},
        optional={"name": st.sampled_from(SLOT_NAMES)},
    )
    kinds: dict[int, Any] = {
        _RID: rid,
        _INT: ints,
        _ALG: st.sampled_from(ALGORITHMS),
        _BYTES: blobs,
        _TEXT: st.one_of(st.sampled_from([*SLOT_NAMES, "encrypt", "random", "NONE"]), text),
        _BOOL: st.booleans(),
        _PERM: st.sampled_from([0, 1, 3, 2048, 4095, 1 << 20, -1]),
        _DIR: st.sampled_from(["ENCRYPT", "DECRYPT", "x"]),
        _FMT: st.sampled_from(FORMATS),
        _LIST: st.lists(rid, max_size=4),
    }

    def mostly(valid: Any) -> Any:  # one draw in ten is junk
        return st.integers(0, 9).flatmap(lambda n: junk if n == 0 else valid)

    def args_for(op: str) -> Any:
        schema = SCHEMA.get(op, {})
        fields = {name: mostly(kinds[kind]) for name, kind in schema.items()}
        return mostly(st.fixed_dictionaries({}, optional=fields))

    def request(op: str) -> Any:
        args = (
            st.builds(
                lambda calls: {"calls": calls},
                st.lists(
                    st.sampled_from(OPS).flatmap(
                        lambda o: st.fixed_dictionaries({"op": mostly(st.just(o)), "args": args_for(o)})
                    ),
                    max_size=8,
                ),
            )
            if op == "batch"
            else args_for(op)
        )
        return st.fixed_dictionaries(
            {"id": mostly(st.integers(1, 1 << 31)), "op": mostly(st.just(op)), "args": args},
            optional={"timeout_ms": mostly(st.integers(1, 60000))},
        )

    grammar = (
        st.sampled_from([*OPS, "batch"]).flatmap(request).map(lambda message: frame_of(cbor2.dumps(message)))
    )

    @st.composite
    def mutated(draw: Any) -> Frame:
        data = bytearray(draw(st.sampled_from(corpus)))
        for _ in range(draw(st.integers(1, 6))):
            at = draw(st.integers(0, len(data)))
            kind = draw(st.integers(0, 3))
            if kind == 0 and data:
                data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
            elif kind == 1:
                del data[at:]
            elif kind == 2:
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif data:
                del data[min(at, len(data) - 1)]
        return frame_of(bytes(data))

    raw = st.integers(0, 1 << 30).map(lambda seed: frame_of(Generator(seed).raw_cbor()))
    clean = (
        st.sampled_from(OPS)
        .flatmap(
            lambda op: st.fixed_dictionaries(
                {
                    "id": st.integers(1, 1 << 31),
                    "op": st.just(op),
                    "args": st.fixed_dictionaries(
                        {}, optional={name: kinds[kind] for name, kind in SCHEMA[op].items()}
                    ),
                }
            )
        )
        .map(lambda message: frame_of(cbor2.dumps(message)))
    )
    # Well-formed requests and the grammar with junk as often as the other two sources.
    return st.one_of(clean, grammar, mutated(), raw) if corpus else st.one_of(clean, grammar, raw)
