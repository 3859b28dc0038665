"""Signing, verification and key encapsulation through liboqs-python.

Each call builds its own liboqs object (``OQS_SIG_new``/``OQS_KEM_new``, a few
microseconds) and frees it afterwards, so nothing is shared between threads and no lock
is held: ctypes releases the GIL while liboqs computes, so a multi-second SLH-DSA signature
running in one daemon worker thread never blocks other contexts. liboqs calls cannot be
interrupted; when the daemon's deadline passes it answers OPERATION_TIMED_OUT and abandons
the thread, which finishes on its own and touches nothing shared.

The signature schemes are one-shot, so the message is buffered until ``finalize`` (the
daemon bounds how much a context may buffer). ML-DSA and SLH-DSA always go through
liboqs's context-string entry points (an empty context is the plain FIPS 204/205 "pure"
signature); Falcon has no context strings.
"""

from __future__ import annotations

from types import ModuleType

from cryptostack_core.sdk import (
    Buffer,
    CryptoError,
    ErrorCode,
    SignOperation,
    VerifyOperation,
    invalid_argument,
)

from .keys import OQSKey, SharedSecret
from .mechanisms import Mechanism

MAX_CONTEXT = 255


def check_context(mech: Mechanism, context: bytes) -> bytes:
    """The context string, refused where the scheme has none or it is too long."""
    context = bytes(context)
    if context and not mech.context:
        raise invalid_argument(f"{mech.algorithm} takes no context string")
    if len(context) > MAX_CONTEXT:
        raise invalid_argument(f"context strings are at most {MAX_CONTEXT} bytes")
    return context


class OQSSigner(SignOperation):
    """Buffers one message and signs it with liboqs at ``finalize``."""

    def __init__(self, oqs: ModuleType, key: OQSKey, context: bytes) -> None:
        self._oqs = oqs
        self._mech = key.mechanism
        self._secret = key.require_secret()
        self._context = check_context(self._mech, context)
        self._message = bytearray()

    def update(self, data: Buffer) -> None:
        """Append to the message (copied: ``data`` may be shared memory)."""
        self._message += data

    def finalize(self) -> bytes:
        """The signature (Falcon: variable length, at most the size liboqs reports)."""
        message = bytes(self._message)
        self._message = bytearray()
        try:
            with self._oqs.Signature(self._mech.liboqs, self._secret) as sig:
                if self._mech.context:
                    return bytes(sig.sign_with_ctx_str(message, self._context))
                return bytes(sig.sign(message))
        except RuntimeError as exc:
            raise CryptoError(
                ErrorCode.PROVIDER_ERROR, f"liboqs failed to sign with {self._mech.algorithm}: {exc}"
            ) from None


class OQSVerifier(VerifyOperation):
    """Buffers one message and checks a signature on it with liboqs."""

    def __init__(self, oqs: ModuleType, key: OQSKey, context: bytes) -> None:
        self._oqs = oqs
        self._mech = key.mechanism
        self._public = key.public
        self._context = check_context(self._mech, context)
        self._message = bytearray()

    def update(self, data: Buffer) -> None:
        """Append to the message (copied)."""
        self._message += data

    def finalize(self, signature: bytes) -> bool:
        """True only for a valid signature; wrong-length or malformed ones are False."""
        message = bytes(self._message)
        self._message = bytearray()
        signature = bytes(signature)
        # Falcon signatures vary in length, bounded by the size liboqs reports; the others
        # have exactly that size. Nothing longer is handed to liboqs.
        if not signature or len(signature) > self._mech.signature_size:
            return False
        try:
            with self._oqs.Signature(self._mech.liboqs) as sig:
                if self._mech.context:
                    return bool(sig.verify_with_ctx_str(message, signature, self._context, self._public))
                return bool(sig.verify(message, signature, self._public))
        except RuntimeError:
            return False


def encapsulate(oqs: ModuleType, key: OQSKey) -> tuple[bytes, SharedSecret]:
    """(ciphertext, shared secret) for the public key of ``key``."""
    mech = key.mechanism
    try:
        with oqs.KeyEncapsulation(mech.liboqs) as kem:
            ciphertext, secret = kem.encap_secret(key.public)
    except RuntimeError as exc:
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR, f"liboqs failed to encapsulate with {mech.algorithm}: {exc}"
        ) from None
    return bytes(ciphertext), SharedSecret(secret)


def decapsulate(oqs: ModuleType, key: OQSKey, ciphertext: bytes) -> SharedSecret:
    """The shared secret for ``ciphertext``; a ciphertext of the wrong length is
    INVALID_ARGUMENT. A well-formed but forged ciphertext yields ML-KEM's implicit-rejection
    secret, as FIPS 203 specifies."""
    mech = key.mechanism
    secret_key = key.require_secret()
    if len(ciphertext) != mech.ciphertext_size:
        raise invalid_argument(
            f"an {mech.algorithm} ciphertext is {mech.ciphertext_size} bytes, got {len(ciphertext)}"
        )
    try:
        with oqs.KeyEncapsulation(mech.liboqs, secret_key) as kem:
            secret = kem.decap_secret(bytes(ciphertext))
    except RuntimeError as exc:
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR, f"liboqs failed to decapsulate with {mech.algorithm}: {exc}"
        ) from None
    return SharedSecret(secret)
