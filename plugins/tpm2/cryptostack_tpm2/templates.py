"""TPM object templates: the public areas of the primary key, of keys and of sealed data.

Permissions map to object attributes so the TPM itself enforces them as well as the daemon:

* asymmetric and HMAC keys get ``sign`` only when the key may SIGN, VERIFY or MAC (the
  provider offers no decryption or key agreement with them, so ``decrypt`` stays clear);
* AES keys get ``sign`` (TPM speak for "encrypt" on a symmetric key) for ENCRYPT and
  ``decrypt`` for DECRYPT, so an encrypt-only key cannot decrypt even through the TPM.

Every object has ``noDA`` (no dictionary-attack accounting: the objects have no password,
and an unclean swtpm shutdown then never counts toward lockout), ``userWithAuth`` with an
empty auth value, and ``fixedTPM``/``fixedParent`` unless it was imported by duplication.
Asymmetric keys use the NULL scheme: the scheme and hash are chosen per TPM2_Sign call.
"""

from __future__ import annotations

from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPMS_ECC_PARMS,
    TPMS_RSA_PARMS,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SYM_DEF_OBJECT,
    TPMU_PUBLIC_PARMS,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.sdk import KeyOperationPermission as P

from .capabilities import CURVES, HASHES, HMACS, RSA_KEYS

A = TPMA_OBJECT
_COMMON = A.USERWITHAUTH | A.NODA
_BOUND = A.FIXEDTPM | A.FIXEDPARENT
_STORAGE = _COMMON | _BOUND | A.SENSITIVEDATAORIGIN | A.RESTRICTED | A.DECRYPT

_SIGN_PERMS = P.SIGN | P.VERIFY | P.MAC


def _aes128cfb() -> TPMT_SYM_DEF_OBJECT:
    return TPMT_SYM_DEF_OBJECT(
        algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128), mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB)
    )


def primary_template(spec: str) -> TPM2B_PUBLIC:
    """Public area of the storage primary key.

    ``ecc`` (default) and ``rsa`` are the TCG storage-root-key templates (ECC P-256 or
    RSA-2048, AES-128-CFB, empty unique field) used by tpm2-tss-engine, tpm2-openssl and
    tpm2-pytss for keys whose parent is the owner hierarchy, so TSS2 key files from those
    tools load under it. Anything else is a tpm2-tools algorithm specifier
    (``ecc384:aes256cfb``) with storage-key attributes.
    """
    if spec == "ecc":
        return TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC(
                type=TPM2_ALG.ECC,
                nameAlg=TPM2_ALG.SHA256,
                objectAttributes=_STORAGE,
                authPolicy=b"",
                parameters=TPMU_PUBLIC_PARMS(
                    eccDetail=TPMS_ECC_PARMS(
                        symmetric=_aes128cfb(),
                        scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
                        curveID=CURVES["ECDSA-P256"][0],
                        kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
                    )
                ),
            )
        )
    if spec == "rsa":
        return TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC(
                type=TPM2_ALG.RSA,
                nameAlg=TPM2_ALG.SHA256,
                objectAttributes=_STORAGE,
                authPolicy=b"",
                parameters=TPMU_PUBLIC_PARMS(
                    rsaDetail=TPMS_RSA_PARMS(
                        symmetric=_aes128cfb(),
                        scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.NULL),
                        keyBits=2048,
                        exponent=0,
                    )
                ),
            )
        )
    try:
        return TPM2B_PUBLIC.parse(spec, objectAttributes=_STORAGE)
    except (ValueError, TypeError) as exc:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"tpm2: bad primary_template {spec!r}: {exc}") from None


def _attributes(algorithm: str, permissions: P, *, tpm_generated: bool, duplicable: bool) -> int:
    attrs = int(_COMMON)
    if not duplicable:
        attrs |= int(_BOUND)
    if tpm_generated:
        attrs |= int(A.SENSITIVEDATAORIGIN)
    if algorithm.startswith("AES-"):
        if permissions & (P.ENCRYPT | P.WRAP):
            attrs |= int(A.SIGN_ENCRYPT)
        if permissions & (P.DECRYPT | P.UNWRAP):
            attrs |= int(A.DECRYPT)
        if not attrs & int(A.SIGN_ENCRYPT | A.DECRYPT):
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"a TPM {algorithm} key needs ENCRYPT or DECRYPT permission"
            )
    else:
        if not permissions & _SIGN_PERMS:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"a TPM {algorithm} key needs SIGN, VERIFY or MAC permission"
            )
        attrs |= int(A.SIGN_ENCRYPT)
    return attrs


def key_template(
    algorithm: str, permissions: P, *, tpm_generated: bool = True, duplicable: bool = False
) -> TPM2B_PUBLIC:
    """Public area for a new key of canonical key algorithm ``algorithm``.

    ``tpm_generated=False`` when the caller supplies the secret (AES/HMAC import through
    TPM2_Create); ``duplicable=True`` for keys brought in with TPM2_Import, which the TPM
    only accepts without ``fixedTPM``/``fixedParent``.
    """
    attrs = _attributes(algorithm, permissions, tpm_generated=tpm_generated, duplicable=duplicable)
    public = TPMT_PUBLIC(nameAlg=TPM2_ALG.SHA256, objectAttributes=attrs, authPolicy=b"")
    if algorithm in CURVES:
        public.type = TPM2_ALG.ECC
        public.parameters.eccDetail = TPMS_ECC_PARMS(
            symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
            scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
            curveID=CURVES[algorithm][0],
            kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
        )
    elif algorithm in RSA_KEYS:
        public.type = TPM2_ALG.RSA
        public.parameters.rsaDetail = TPMS_RSA_PARMS(
            symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
            scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.NULL),
            keyBits=RSA_KEYS[algorithm],
            exponent=0,
        )
    elif algorithm.startswith("AES-"):
        public.type = TPM2_ALG.SYMCIPHER
        sym = public.parameters.symDetail.sym
        sym.algorithm = TPM2_ALG.AES
        sym.keyBits.aes = int(algorithm[4:])
        sym.mode.aes = TPM2_ALG.NULL  # the mode is chosen per EncryptDecrypt2 call
    elif algorithm in HMACS:
        public.type = TPM2_ALG.KEYEDHASH
        scheme = public.parameters.keyedHashDetail.scheme
        scheme.scheme = TPM2_ALG.HMAC
        scheme.details.hmac.hashAlg = HASHES[HMACS[algorithm]]
    else:
        raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"tpm2 has no {algorithm} keys")
    return TPM2B_PUBLIC(publicArea=public)


def sealed_data_template() -> TPM2B_PUBLIC:
    """Public area of a sealed data object: a keyed-hash object that can neither sign nor
    decrypt, only be unsealed by its parent's TPM."""
    public = TPMT_PUBLIC(
        type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256, objectAttributes=_COMMON | _BOUND, authPolicy=b""
    )
    public.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
    return TPM2B_PUBLIC(publicArea=public)


def _full_length(value: bytes, size: int) -> bytes:
    """A big-endian ECC value at the curve's full size: tpm2-pytss drops leading zero bytes,
    and the TPM refuses shorter coordinates (TPM_RC_KEY; Wycheproof's "small x/y" keys)."""
    return bytes(value).rjust(size, b"\0")


def external_public(spki_der: bytes, algorithm: str) -> TPM2B_PUBLIC:
    """Public area for TPM2_LoadExternal of a verify-only public key (SPKI DER)."""
    return public_from_key(spki_der, algorithm, A.SIGN_ENCRYPT | A.USERWITHAUTH)


def public_from_key(encoded: bytes, algorithm: str, attributes: int) -> TPM2B_PUBLIC:
    """Public area of a PEM/DER key (public or private) with ``attributes``."""
    try:
        pub = TPM2B_PUBLIC.from_pem(encoded, objectAttributes=attributes)
    except (ValueError, TypeError) as exc:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"malformed {algorithm} public key: {exc}") from None
    check_public_matches(pub, algorithm)
    if algorithm in CURVES:
        size = CURVES[algorithm][2]
        ecc = pub.publicArea.unique.ecc
        ecc.x = _full_length(bytes(ecc.x), size)
        ecc.y = _full_length(bytes(ecc.y), size)
    return pub


def sensitive_from_key(pem: bytes, algorithm: str) -> TPM2B_SENSITIVE:
    """Sensitive area (private part) of a PEM private key, ECC scalar at full length."""
    sensitive = TPM2B_SENSITIVE.from_pem(pem)
    if algorithm in CURVES:
        area = sensitive.sensitiveArea
        area.sensitive.ecc = _full_length(bytes(area.sensitive.ecc), CURVES[algorithm][2])
    return sensitive


def check_public_matches(public: TPM2B_PUBLIC, algorithm: str) -> None:
    """Raise INVALID_ARGUMENT when a TPM public area is not a key of ``algorithm``."""
    area = public.publicArea
    if algorithm in CURVES:
        ok = area.type == TPM2_ALG.ECC and area.parameters.eccDetail.curveID == CURVES[algorithm][0]
    elif algorithm in RSA_KEYS:
        ok = area.type == TPM2_ALG.RSA and area.parameters.rsaDetail.keyBits == RSA_KEYS[algorithm]
    elif algorithm.startswith("AES-"):
        sym = area.parameters.symDetail.sym
        ok = (
            area.type == TPM2_ALG.SYMCIPHER
            and sym.algorithm == TPM2_ALG.AES
            and sym.keyBits.aes == int(algorithm[4:])
        )
    elif algorithm in HMACS:
        scheme = area.parameters.keyedHashDetail.scheme
        ok = (
            area.type == TPM2_ALG.KEYEDHASH
            and scheme.scheme == TPM2_ALG.HMAC
            and scheme.details.hmac.hashAlg == HASHES[HMACS[algorithm]]
        )
    else:
        ok = False
    if not ok:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"the TPM key is not a {algorithm} key")


def is_restricted(public: TPM2B_PUBLIC) -> bool:
    """True for restricted keys, which sign only digests the TPM itself hashed (ticket)."""
    return bool(int(public.publicArea.objectAttributes) & int(A.RESTRICTED))


def signing_scheme(public: TPM2B_PUBLIC) -> int:
    """The scheme fixed in a key's public area (TPM2_ALG.NULL when chosen per call)."""
    area = public.publicArea
    if area.type == TPM2_ALG.ECC:
        return int(area.parameters.eccDetail.scheme.scheme)
    if area.type == TPM2_ALG.RSA:
        return int(area.parameters.rsaDetail.scheme.scheme)
    return int(TPM2_ALG.NULL)
