"""What the TPM can do, discovered at start, mapped to canonical algorithm names.

The worker process asks the TPM (``TPM2_GetCapability`` for algorithms, ECC curves, commands
and properties; ``TPM2_TestParms`` for RSA modulus and AES key sizes, which the capability
lists do not cover) and returns a :class:`TpmFacts`. :func:`derive_capabilities` turns those
facts into the provider's (algorithm, operation) pairs, so nothing is claimed that this
particular TPM lacks (swtpm 0.7, for instance, has no AES-192, RSA-4096 or SHA-3).

The tables here are the one place where canonical names meet TPM algorithm identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tpm2_pytss.constants import TPM2_ALG, TPM2_CAP, TPM2_CC, TPM2_ECC, TPM2_PT, TPM2_PT_HR

from cryptostack_core.sdk import Capability, Operation

HASHES: dict[str, int] = {
    "SHA-256": TPM2_ALG.SHA256,
    "SHA-384": TPM2_ALG.SHA384,
    "SHA-512": TPM2_ALG.SHA512,
    "SHA3-256": TPM2_ALG.SHA3_256,
    "SHA3-384": TPM2_ALG.SHA3_384,
    "SHA3-512": TPM2_ALG.SHA3_512,
}
"""Canonical hash name -> TPM_ALG_ID (SHA-224 has no TPM algorithm identifier)."""

HMACS: dict[str, str] = {"HMAC-SHA-256": "SHA-256", "HMAC-SHA-384": "SHA-384", "HMAC-SHA-512": "SHA-512"}
"""HMAC algorithm -> its hash."""

CURVES: dict[str, tuple[int, str, int]] = {
    "ECDSA-P256": (TPM2_ECC.NIST_P256, "SHA-256", 32),
    "ECDSA-P384": (TPM2_ECC.NIST_P384, "SHA-384", 48),
}
"""ECDSA algorithm -> (TPM curve id, hash, field size in bytes)."""

RSA_KEYS: dict[str, int] = {"RSA-2048": 2048, "RSA-3072": 3072, "RSA-4096": 4096}
"""RSA key algorithm -> modulus bits."""

RSA_PSS: dict[str, str] = {"RSA-PSS-SHA256": "SHA-256"}
"""RSA-PSS algorithm -> its hash (the salt is as long as the digest)."""

AES_MODES: dict[str, int] = {"CFB": TPM2_ALG.CFB, "CBC": TPM2_ALG.CBC, "CTR": TPM2_ALG.CTR}
"""Cipher mode suffix of a canonical name -> TPM mode. CBC gets PKCS#7 padding in the provider."""

AES_KEY_BITS = (128, 192, 256)

RSA_KEY_BITS_PROBED = (1024, 2048, 3072, 4096)

# TPM_PT_FIRMWARE_VERSION_1/2 (PT_FIXED + 11, + 12); tpm2-pytss 3.0 has no names for them.
_PT_FIRMWARE_VERSION_1 = 0x10B
_PT_FIRMWARE_VERSION_2 = 0x10C


@dataclass(frozen=True)
class TpmFacts:
    """Raw facts read from one TPM (plain data: it crosses the worker pipe)."""

    algorithms: frozenset[int]
    curves: frozenset[int]
    commands: frozenset[int]
    rsa_key_bits: tuple[int, ...]
    aes_key_bits: tuple[int, ...]
    transient_slots: int
    """TPM_PT_HR_TRANSIENT_MIN: transient objects that are guaranteed to fit (swtpm: 3)."""
    input_buffer: int
    """TPM_PT_INPUT_BUFFER: largest data buffer of one command (hash/cipher chunks)."""
    max_digest: int
    """TPM_PT_MAX_DIGEST: also the most bytes one GetRandom returns."""
    manufacturer: str
    firmware: str
    spec_revision: int

    def has_alg(self, *algs: int) -> bool:
        """True when every TPM algorithm in ``algs`` is implemented."""
        return all(int(a) in self.algorithms for a in algs)

    def has_cmd(self, *commands: int) -> bool:
        """True when every command code in ``commands`` is implemented."""
        return all(int(c) in self.commands for c in commands)

    def describe(self) -> dict[str, Any]:
        """Human-oriented summary for ``status``."""
        return {
            "manufacturer": self.manufacturer,
            "firmware": self.firmware,
            "spec_revision": self.spec_revision,
            "transient_slots": self.transient_slots,
            "input_buffer": self.input_buffer,
            "rsa_key_bits": list(self.rsa_key_bits),
            "aes_key_bits": list(self.aes_key_bits),
            "curves": sorted(str(TPM2_ECC(c)) for c in self.curves),
        }


def hash_supported(facts: TpmFacts, name: str) -> bool:
    """Whether the TPM implements hash ``name`` (canonical)."""
    alg = HASHES.get(name)
    return alg is not None and facts.has_alg(alg)


def derive_capabilities(facts: TpmFacts) -> frozenset[Capability]:
    """Every (algorithm, operation) pair this TPM supports through the provider."""
    caps: set[Capability] = set()

    def add(algorithm: str, *operations: Operation) -> None:
        caps.update(Capability(algorithm, op) for op in operations)

    keys_ok = facts.has_cmd(TPM2_CC.Create, TPM2_CC.Load, TPM2_CC.CreatePrimary, TPM2_CC.FlushContext)
    import_ok = facts.has_cmd(TPM2_CC.Import)
    if facts.has_cmd(TPM2_CC.GetRandom):
        add("RANDOM", Operation.RANDOM)
    if facts.has_cmd(
        TPM2_CC.Hash, TPM2_CC.HashSequenceStart, TPM2_CC.SequenceUpdate, TPM2_CC.SequenceComplete
    ):
        for name in HASHES:
            if hash_supported(facts, name):
                add(name, Operation.HASH)
    hmac_ok = (
        keys_ok
        and facts.has_alg(TPM2_ALG.HMAC, TPM2_ALG.KEYEDHASH)
        and facts.has_cmd(TPM2_CC.HMAC, TPM2_CC.HMAC_Start, TPM2_CC.SequenceUpdate, TPM2_CC.SequenceComplete)
    )
    if hmac_ok:
        for name, hash_name in HMACS.items():
            if hash_supported(facts, hash_name):
                add(name, Operation.SIGN, Operation.VERIFY, Operation.GENERATE_KEY, Operation.IMPORT_KEY)
        # No GENERIC-SECRET: a keyed-hash key with "sign" must fix its HMAC hash (the TPM
        # refuses the NULL scheme), so a hash-agnostic secret cannot be a TPM key.
    sign_ok = keys_ok and facts.has_cmd(TPM2_CC.Sign, TPM2_CC.VerifySignature, TPM2_CC.LoadExternal)
    if sign_ok and facts.has_alg(TPM2_ALG.ECC, TPM2_ALG.ECDSA):
        for name, (curve, hash_name, _size) in CURVES.items():
            if int(curve) in facts.curves and hash_supported(facts, hash_name):
                add(name, Operation.SIGN, Operation.VERIFY, Operation.GENERATE_KEY)
                if import_ok:
                    add(name, Operation.IMPORT_KEY)
    if sign_ok and facts.has_alg(TPM2_ALG.RSA, TPM2_ALG.RSAPSS):
        sizes = [name for name, bits in RSA_KEYS.items() if bits in facts.rsa_key_bits]
        for name in sizes:
            add(name, Operation.GENERATE_KEY)
            if import_ok:
                add(name, Operation.IMPORT_KEY)
        for name, hash_name in RSA_PSS.items():
            if sizes and hash_supported(facts, hash_name):
                add(name, Operation.SIGN, Operation.VERIFY)
    cipher_cmd = facts.has_cmd(TPM2_CC.EncryptDecrypt2) or facts.has_cmd(TPM2_CC.EncryptDecrypt)
    if keys_ok and cipher_cmd and facts.has_alg(TPM2_ALG.AES, TPM2_ALG.SYMCIPHER):
        for bits in facts.aes_key_bits:
            add(f"AES-{bits}", Operation.GENERATE_KEY, Operation.IMPORT_KEY)
            for mode, tpm_mode in AES_MODES.items():
                if facts.has_alg(tpm_mode):
                    add(f"AES-{bits}-{mode}", Operation.ENCRYPT, Operation.DECRYPT)
    return frozenset(caps)


def _paged(ectx: Any, cap: int, first: int, pick: Any) -> list[int]:
    """All entries of one capability, following the ``moreData`` flag."""
    values: list[int] = []
    start = first
    while True:
        more, data = ectx.get_capability(cap, start, 256)
        page = pick(data.data)
        values.extend(page)
        if not more or not page:
            return values
        start = page[-1] + 1


def _property(ectx: Any, prop: int, default: int) -> int:
    _more, data = ectx.get_capability(TPM2_CAP.TPM_PROPERTIES, prop, 1)
    props = data.data.tpmProperties
    if props.count and props.tpmProperty[0].property == prop:
        return int(props.tpmProperty[0].value)
    return default


def _vendor_string(ectx: Any, prop: int) -> str:
    value = _property(ectx, prop, 0)
    return value.to_bytes(4, "big").rstrip(b"\0").decode("ascii", "replace")


def _test_parms(ectx: Any, parms: Any) -> bool:
    from tpm2_pytss import TSS2_Exception

    try:
        ectx.test_parms(parms)
    except TSS2_Exception:
        return False
    return True


def discover(ectx: Any) -> TpmFacts:
    """Read a TpmFacts from the TPM behind ``ectx`` (an ESAPI context; worker side)."""
    from tpm2_pytss.types import (
        TPMS_RSA_PARMS,
        TPMT_PUBLIC_PARMS,
        TPMT_RSA_SCHEME,
        TPMT_SYM_DEF_OBJECT,
        TPMU_PUBLIC_PARMS,
    )

    algorithms = _paged(
        ectx,
        TPM2_CAP.ALGS,
        0,
        lambda d: [int(d.algorithms.algProperties[i].alg) for i in range(d.algorithms.count)],
    )
    curves = _paged(
        ectx,
        TPM2_CAP.ECC_CURVES,
        0,
        lambda d: [int(d.eccCurves.eccCurves[i]) for i in range(d.eccCurves.count)],
    )
    commands = _paged(
        ectx,
        TPM2_CAP.COMMANDS,
        int(TPM2_CC.FIRST),
        lambda d: [int(d.command.commandAttributes[i]) & 0xFFFF for i in range(d.command.count)],
    )
    rsa_bits = tuple(
        bits
        for bits in RSA_KEY_BITS_PROBED
        if _test_parms(
            ectx,
            TPMT_PUBLIC_PARMS(
                type=TPM2_ALG.RSA,
                parameters=TPMU_PUBLIC_PARMS(
                    rsaDetail=TPMS_RSA_PARMS(
                        symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
                        scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.NULL),
                        keyBits=bits,
                    )
                ),
            ),
        )
    )
    aes_bits = []
    for bits in AES_KEY_BITS:
        parms = TPMT_PUBLIC_PARMS(type=TPM2_ALG.SYMCIPHER)
        sym = parms.parameters.symDetail.sym
        sym.algorithm = TPM2_ALG.AES
        sym.keyBits.aes = bits
        sym.mode.aes = TPM2_ALG.CFB
        if _test_parms(ectx, parms):
            aes_bits.append(bits)
    fw1 = _property(ectx, _PT_FIRMWARE_VERSION_1, 0)
    fw2 = _property(ectx, _PT_FIRMWARE_VERSION_2, 0)
    return TpmFacts(
        algorithms=frozenset(algorithms),
        curves=frozenset(curves),
        commands=frozenset(commands),
        rsa_key_bits=rsa_bits,
        aes_key_bits=tuple(aes_bits),
        transient_slots=_property(ectx, TPM2_PT_HR.TRANSIENT_MIN, 3),
        input_buffer=_property(ectx, TPM2_PT.INPUT_BUFFER, 1024),
        max_digest=_property(ectx, TPM2_PT.MAX_DIGEST, 32),
        manufacturer=_vendor_string(ectx, TPM2_PT.MANUFACTURER),
        firmware=f"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}",
        spec_revision=_property(ectx, TPM2_PT.REVISION, 0),
    )
