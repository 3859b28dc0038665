"""From the token's mechanism list to canonical algorithms, and from algorithms to mechanisms.

Nothing here assumes SoftHSM: an algorithm is offered only when the mechanisms it needs are
in ``C_GetMechanismList`` and, where the token reports key sizes in ``C_GetMechanismInfo``
(EC curves and RSA moduli in bits, AES keys in bytes), when the size is in range. Mechanism
*flags* are not used: several modules (SoftHSM2 among them) report garbage flags.

Signatures are planned per algorithm (:class:`SignPlan`):

* ``host-hash``: the provider hashes the message (hashlib) and the token signs the digest
  with a raw mechanism (``CKM_ECDSA``, ``CKM_RSA_PKCS_PSS``). Tokens rarely offer
  hash-and-sign ECDSA (SoftHSM2 does not), and a digest in the provider survives a worker
  restart.
* ``token-stream``: the token hashes and signs (``CKM_SHA256_RSA_PKCS_PSS`` when the raw PSS
  mechanism is missing, the HMAC mechanisms).
* ``whole-message``: pure EdDSA needs the whole message in one ``C_Sign``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pkcs11.mechanisms import KeyType, Mechanism

from cryptostack_core.sdk import Capability, Operation

M = Mechanism

HASHES: dict[str, int] = {
    "SHA-224": M.SHA224,
    "SHA-256": M.SHA256,
    "SHA-384": M.SHA384,
    "SHA-512": M.SHA512,
}
CIPHER_MODES: dict[str, int] = {"CBC": M.AES_CBC_PAD, "GCM": M.AES_GCM, "CTR": M.AES_CTR}
HMACS: dict[str, int] = {
    "HMAC-SHA-256": M.SHA256_HMAC,
    "HMAC-SHA-384": M.SHA384_HMAC,
    "HMAC-SHA-512": M.SHA512_HMAC,
}
EC_CURVES: dict[str, tuple[bytes, int, str]] = {
    # key algorithm: (CKA_EC_PARAMS = DER OID of the named curve, field bits, hash)
    "ECDSA-P256": (bytes.fromhex("06082A8648CE3D030107"), 256, "SHA-256"),
    "ECDSA-P384": (bytes.fromhex("06052B81040022"), 384, "SHA-384"),
}
ED25519_PARAMS = bytes.fromhex("06032B6570")  # id-Ed25519 (RFC 8410)
RSA_SIZES: dict[str, int] = {"RSA-2048": 2048, "RSA-3072": 3072, "RSA-4096": 4096}
PSS_HASH: dict[str, tuple[int, int, int, int]] = {
    # algorithm: (hash mechanism, MGF, salt length, hash-and-sign mechanism)
    "RSA-PSS-SHA256": (M.SHA256, 0x2, 32, M.SHA256_RSA_PKCS_PSS),  # CKG_MGF1_SHA256 = 2
}
CKF_RNG = 0x1


@dataclass(frozen=True)
class SignPlan:
    """How one signature or MAC algorithm runs on this token."""

    algorithm: str
    mode: str  # "host-hash", "token-stream" or "whole-message"
    mechanism: int
    hash_name: str = ""  # hashlib name for host-hash
    pss: tuple[int, int, int] | None = None  # (hash mechanism, MGF, salt length)
    key_type: int = 0
    der_ecdsa: bool = False  # convert raw r||s to and from DER


class TokenProfile:
    """What one token offers, computed from its mechanism list."""

    def __init__(
        self,
        mechanisms: Mapping[int, tuple[int, int, int]],
        *,
        token_flags: int,
        wrappable: Iterable[int] = (),
        exclude: Iterable[int] = (),
    ) -> None:
        excluded = set(exclude)
        self.mechanisms = {m: info for m, info in mechanisms.items() if m not in excluded}
        self.has_rng = bool(token_flags & CKF_RNG)
        self.wrappable = frozenset(wrappable) if M.AES_KEY_WRAP_PAD in self.mechanisms else frozenset()

    def export_method(self, key_type: int) -> str | None:
        """How an extractable key of ``key_type`` leaves the token: ``wrap`` (the key stays
        sensitive; wrapped under the transport key), ``value`` (the key is created
        non-sensitive and its CKA_VALUE read: key types the token cannot wrap), or None."""
        if key_type in self.wrappable:
            return "wrap"
        if key_type in (KeyType.AES, KeyType.GENERIC_SECRET, KeyType.EC, KeyType.EC_EDWARDS):
            return "value"
        return None

    def has(self, mechanism: int) -> bool:
        """Whether the token lists ``mechanism`` (and it is not excluded)."""
        return int(mechanism) in self.mechanisms

    def _size_ok(self, mechanism: int, size: int) -> bool:
        low, high, _flags = self.mechanisms.get(int(mechanism), (0, 0, 0))
        if low == 0 and high == 0:
            return True  # the token does not say
        return low <= size <= high

    # --- per algorithm family --------------------------------------------------------
    def hash_mechanism(self, algorithm: str) -> int | None:
        """Digest mechanism for a hash algorithm, if available."""
        mech = HASHES.get(algorithm)
        return mech if mech is not None and self.has(mech) else None

    def cipher(self, algorithm: str) -> tuple[int, str, int] | None:
        """(mechanism, mode, key bytes) for ``AES-<bits>-<mode>``, if available."""
        parts = algorithm.split("-")
        if len(parts) != 3 or parts[0] != "AES" or parts[2] not in CIPHER_MODES:
            return None
        if parts[1] not in ("128", "192", "256"):
            return None
        key_bytes = int(parts[1]) // 8
        mech = CIPHER_MODES[parts[2]]
        if not self.has(mech) or not self._size_ok(mech, key_bytes):
            return None
        return mech, parts[2], key_bytes

    def sign_plan(self, algorithm: str) -> SignPlan | None:
        """How ``algorithm`` signs and verifies here, if it does."""
        if algorithm in HMACS:
            mech = HMACS[algorithm]
            if self.has(mech):
                return SignPlan(algorithm, "token-stream", mech, key_type=KeyType.GENERIC_SECRET)
            return None
        if algorithm in EC_CURVES:
            _params, bits, hash_name = EC_CURVES[algorithm]
            if self.has(M.ECDSA) and self._size_ok(M.ECDSA, bits):
                return SignPlan(
                    algorithm,
                    "host-hash",
                    M.ECDSA,
                    hash_name=hash_name.replace("-", "").lower(),
                    key_type=KeyType.EC,
                    der_ecdsa=True,
                )
            return None
        if algorithm == "Ed25519":
            if self.has(M.EDDSA) and self._size_ok(M.EDDSA, 256):
                return SignPlan(algorithm, "whole-message", M.EDDSA, key_type=KeyType.EC_EDWARDS)
            return None
        if algorithm in PSS_HASH:
            hash_mech, mgf, salt, combined = PSS_HASH[algorithm]
            if self.has(M.RSA_PKCS_PSS):
                return SignPlan(
                    algorithm,
                    "host-hash",
                    M.RSA_PKCS_PSS,
                    hash_name=algorithm.rsplit("-", 1)[1].lower(),
                    pss=(hash_mech, mgf, salt),
                    key_type=KeyType.RSA,
                )
            if self.has(combined):
                return SignPlan(
                    algorithm, "token-stream", combined, pss=(hash_mech, mgf, salt), key_type=KeyType.RSA
                )
        return None

    def can_generate(self, key_algorithm: str) -> bool:
        """Whether keys of ``key_algorithm`` can be generated inside the token."""
        if key_algorithm.startswith("AES-"):
            return self.has(M.AES_KEY_GEN) and self._size_ok(M.AES_KEY_GEN, int(key_algorithm[4:]) // 8)
        if key_algorithm in HMACS or key_algorithm == "GENERIC-SECRET":
            return self.has(M.GENERIC_SECRET_KEY_GEN)
        if key_algorithm in EC_CURVES:
            return self.has(M.EC_KEY_PAIR_GEN) and self._size_ok(
                M.EC_KEY_PAIR_GEN, EC_CURVES[key_algorithm][1]
            )
        if key_algorithm == "Ed25519":
            return self.has(M.EC_EDWARDS_KEY_PAIR_GEN)
        if key_algorithm in RSA_SIZES:
            return self.has(M.RSA_PKCS_KEY_PAIR_GEN) and self._size_ok(
                M.RSA_PKCS_KEY_PAIR_GEN, RSA_SIZES[key_algorithm]
            )
        return False

    def key_usable(self, key_algorithm: str) -> bool:
        """Whether some operation here uses keys of ``key_algorithm`` (so importing one
        makes sense)."""
        if key_algorithm.startswith("AES-"):
            return any(self.cipher(f"{key_algorithm}-{mode}") for mode in CIPHER_MODES)
        if key_algorithm == "GENERIC-SECRET":
            return any(self.sign_plan(name) for name in HMACS)
        if key_algorithm in RSA_SIZES:
            return any(self.sign_plan(name) for name in PSS_HASH) and self._size_ok(
                M.RSA_PKCS_PSS if self.has(M.RSA_PKCS_PSS) else M.SHA256_RSA_PKCS_PSS,
                RSA_SIZES[key_algorithm],
            )
        return self.sign_plan(key_algorithm) is not None

    # --- everything ------------------------------------------------------------------
    def capabilities(self) -> frozenset[Capability]:
        """Every (algorithm, operation) the token supports, in canonical names."""
        caps: set[Capability] = set()
        op = Operation
        for name in HASHES:
            if self.hash_mechanism(name):
                caps.add(Capability(name, op.HASH))
        for bits in (128, 192, 256):
            for mode in CIPHER_MODES:
                name = f"AES-{bits}-{mode}"
                if self.cipher(name):
                    caps.update({Capability(name, op.ENCRYPT), Capability(name, op.DECRYPT)})
        for name in (*HMACS, *EC_CURVES, "Ed25519", *PSS_HASH):
            if self.sign_plan(name):
                caps.update({Capability(name, op.SIGN), Capability(name, op.VERIFY)})
        key_algorithms = [
            "AES-128",
            "AES-192",
            "AES-256",
            *HMACS,
            "GENERIC-SECRET",
            *EC_CURVES,
            "Ed25519",
            *RSA_SIZES,
        ]
        for name in key_algorithms:
            if not self.key_usable(name):
                continue
            caps.add(Capability(name, op.IMPORT_KEY))
            if self.can_generate(name):
                caps.add(Capability(name, op.GENERATE_KEY))
        if self.has_rng:
            caps.add(Capability("RANDOM", op.RANDOM))
        return frozenset(caps)


def mechanism_names(mechanisms: Iterable[int]) -> list[str]:
    """``CKM_*`` names of mechanism numbers (hex for vendor ones), sorted by number."""
    names = []
    for value in sorted(mechanisms):
        try:
            names.append(f"CKM_{Mechanism(value).name.lstrip('_')}")
        except ValueError:
            names.append(f"0x{value:08X}")
    return names


def parse_mechanism(name: str | int) -> int:
    """A mechanism from ``CKM_AES_GCM``, ``AES_GCM`` or a number (config option values)."""
    if isinstance(name, int):
        return name
    text = str(name).strip()
    if text.lower().startswith("0x"):
        return int(text, 16)
    key = text.upper().removeprefix("CKM_")
    try:
        return int(Mechanism[key])
    except KeyError:
        raise ValueError(f"unknown PKCS#11 mechanism {name!r}") from None
