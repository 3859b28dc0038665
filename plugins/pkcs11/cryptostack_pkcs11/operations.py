"""Operation objects of the PKCS#11 provider: one message each, run in the token.

Latency: a message shorter than ``stream_buffer`` stays in the provider until ``finalize``
and then costs exactly one round trip to the worker (``C_xxxInit`` + ``C_xxx`` there).
Longer messages start a multi-part operation in a token session and stream into it in
chunks of at least ``stream_buffer`` bytes, so a cipher's ``update`` returns output only
once a chunk went through the token (everything is returned by ``finalize`` at the latest).

AEAD decryption keeps the whole ciphertext until ``finalize`` (no plaintext before the tag
has verified; the daemon bounds the size). Pure EdDSA keeps the whole message (the token
signs it in one call). ECDSA and RSA-PSS hash in the provider and sign the digest in the
token (see :mod:`cryptostack_pkcs11.mechanisms`).

Async first: every step that talks to the token worker is a coroutine (``*_async``) that
the daemon awaits on its event loop, where the worker host runs (no thread in between);
the synchronous methods do the local part (buffering, hashing) in the caller's thread and
run the worker part with :meth:`~cryptostack_core.sdk.workers.WorkerHost.run`.

After a worker restart: operations whose state is all in the provider (every short
message, every host-hashed signature) simply run in the new worker; an operation that had
started streaming into a token session has lost that state and raises ``PROVIDER_ERROR``
("the token worker restarted"); the daemon reports it for that context only.
"""

from __future__ import annotations

import hashlib
import hmac
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from cryptostack_core.sdk import (
    Buffer,
    CipherOperation,
    CryptoError,
    ErrorCode,
    HashOperation,
    SignOperation,
    VerifyOperation,
    ecdsa,
    invalid_argument,
)
from cryptostack_core.sdk.workers import StaleGeneration

from .cryptoki import MechanismSpec
from .keys import TokenKey
from .mechanisms import SignPlan
from .options import Options

T = TypeVar("T")
KeyArgs = Callable[[int | None, int | None], tuple[Any, ...]]
"""Builds a request's arguments from a key's (primary, public) handles in the live worker."""


class TokenAccess(Protocol):
    """What operation objects need from the provider (:class:`~.provider.PKCS11Provider`)."""

    opts: Options

    def run(self, coro: Coroutine[Any, Any, T]) -> T: ...

    async def call_in_async(
        self,
        op: str,
        *args: Any,
        generation: int | None = None,
        what: str = "",
        overrides: dict[str, ErrorCode] | None = None,
    ) -> tuple[Any, int]: ...

    async def key_call_in_async(
        self,
        op: str,
        key: TokenKey,
        args: KeyArgs,
        *,
        what: str,
        overrides: dict[str, ErrorCode] | None = None,
    ) -> tuple[Any, int]: ...

    def abort_later(self, generation: int, op_id: int) -> None: ...


_GCM_DECRYPT_ERRORS = {
    # SoftHSM2 reports a tag mismatch as CKR_GENERAL_ERROR; PKCS#11 says ENCRYPTED_DATA_INVALID
    name: ErrorCode.AUTHENTICATION_FAILED
    for name in (
        "CKR_ENCRYPTED_DATA_INVALID",
        "CKR_ENCRYPTED_DATA_LEN_RANGE",
        "CKR_GENERAL_ERROR",
        "CKR_FUNCTION_FAILED",
    )
}
_CBC_DECRYPT_ERRORS = {
    # bad padding (SoftHSM2: CKR_GENERAL_ERROR) or a length that is not whole blocks
    name: ErrorCode.INVALID_ARGUMENT
    for name in ("CKR_ENCRYPTED_DATA_INVALID", "CKR_ENCRYPTED_DATA_LEN_RANGE", "CKR_GENERAL_ERROR")
}


def _lost(what: str) -> CryptoError:
    return CryptoError(
        ErrorCode.PROVIDER_ERROR,
        f"{what}: the token worker restarted and this operation's state in "
        "the token was lost; start the message again",
    )


class _Stream:
    """Bytes of one multi-part operation: held here up to the ``stream_buffer`` limit,
    then streamed into a token session (``begin``/``update``/``finish`` requests)."""

    def __init__(
        self,
        provider: TokenAccess,
        kind: str,
        spec: MechanismSpec,
        key: TokenKey | None,
        handle: Callable[[int | None, int | None], int],
        what: str,
        overrides: dict[str, ErrorCode] | None = None,
    ) -> None:
        self.provider = provider
        self.kind = kind
        self.spec = spec
        self.key = key
        self.handle = handle  # picks the object (primary or public) the operation uses
        self.what = what
        self.overrides = overrides
        self.limit = provider.opts.stream_buffer
        self.pending: list[bytes] = []
        self.pending_len = 0
        self.op_id: int | None = None
        self.generation: int | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def hold(self, data: Buffer) -> bool:
        """Keep more input; True when a chunk is due for the token (:meth:`flush_async`)."""
        if not data:
            return False
        self.pending.append(bytes(data))
        self.pending_len += len(data)
        return self.pending_len >= self.limit

    def add(self, data: Buffer) -> bytes:
        """Take more input (from a thread); returns token output when a chunk was streamed."""
        return self.provider.run(self.flush_async()) if self.hold(data) else b""

    async def add_async(self, data: Buffer) -> bytes:
        """:meth:`add` on the host's loop."""
        return await self.flush_async() if self.hold(data) else b""

    def take(self) -> bytes:
        """Everything held so far (and forget it)."""
        chunk = b"".join(self.pending)
        self.pending, self.pending_len = [], 0
        return chunk

    @property
    def started(self) -> bool:
        """Whether a token session holds part of this message."""
        return self.op_id is not None

    async def flush_async(self) -> bytes:
        """Stream what is held into the token session (beginning it if needed)."""
        chunk = self.take()
        out_size = len(chunk) + 64
        provider = self.provider
        if self.op_id is None:

            def args(primary: int | None, public: int | None) -> tuple[Any, ...]:
                return (self.kind, self.spec, self.handle(primary, public), chunk, out_size)

            if self.key is None:
                result, generation = await provider.call_in_async(
                    "begin", *args(None, None), what=self.what, overrides=self.overrides
                )
            else:
                result, generation = await provider.key_call_in_async(
                    "begin", self.key, args, what=self.what, overrides=self.overrides
                )
            self.op_id, self.generation = int(result[0]), generation
            self._finalizer = weakref.finalize(self, provider.abort_later, generation, self.op_id)
            return bytes(result[1])
        try:
            output, _generation = await provider.call_in_async(
                "update",
                self.op_id,
                chunk,
                out_size,
                generation=self.generation,
                what=self.what,
                overrides=self.overrides,
            )
            return bytes(output)
        except StaleGeneration:
            raise _lost(self.what) from None
        except CryptoError:
            self._ended()  # the token ended the operation on failure
            raise

    async def finish_async(self, out_size: int, signature: bytes | None = None) -> Any:
        """Send the rest and end the started operation (``C_xxxFinal``)."""
        chunk = self.take()
        self._ended()
        try:
            result, _generation = await self.provider.call_in_async(
                "finish",
                self.op_id,
                chunk,
                out_size + len(chunk),
                signature,
                generation=self.generation,
                what=self.what,
                overrides=self.overrides,
            )
            return result
        except StaleGeneration:
            raise _lost(self.what) from None

    def _ended(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None


# --- hash ---------------------------------------------------------------------------------


class TokenHash(HashOperation):
    """A digest computed by the token (``C_Digest``)."""

    def __init__(self, provider: TokenAccess, algorithm: str, mechanism: int) -> None:
        self._provider = provider
        self._spec = MechanismSpec(mechanism)
        self._stream = _Stream(provider, "Digest", self._spec, None, lambda p, q: 0, f"{algorithm} digest")

    def update(self, data: Buffer) -> None:
        """Absorb more data."""
        self._stream.add(data)

    async def update_async(self, data: Buffer) -> None:
        """Absorb more data (on the host's loop)."""
        await self._stream.add_async(data)

    def finalize(self) -> bytes:
        """The digest."""
        return self._provider.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """The digest (on the host's loop)."""
        if self._stream.started:
            return bytes(await self._stream.finish_async(64))
        digest, _generation = await self._provider.call_in_async(
            "digest", self._spec, self._stream.take(), what=self._stream.what
        )
        return bytes(digest)


# --- ciphers ------------------------------------------------------------------------------


class TokenCipher(CipherOperation):
    """AES-CBC (PKCS#7 padding), AES-CTR or AES-GCM in the token."""

    def __init__(
        self,
        provider: TokenAccess,
        algorithm: str,
        mode: str,
        mechanism: int,
        key: TokenKey,
        encrypt: bool,
        iv: bytes,
        tag_length: int,
    ) -> None:
        self._provider = provider
        self._algorithm = algorithm
        self._mode = mode
        self._mechanism = mechanism
        self._key = key
        self._encrypt = encrypt
        self._iv = iv
        self._tag_length = tag_length
        self._aad: list[bytes] = []
        self._data_seen = False
        self._held: list[bytes] = []  # AEAD decryption: the whole ciphertext
        self._stream: _Stream | None = None
        kind = "Encrypt" if encrypt else "Decrypt"
        self._kind = kind
        self._what = f"{algorithm} {kind.lower()}ion"
        if encrypt:
            self._overrides: dict[str, ErrorCode] | None = None
        else:
            self._overrides = _GCM_DECRYPT_ERRORS if mode == "GCM" else _CBC_DECRYPT_ERRORS

    def _spec(self) -> MechanismSpec:
        if self._mode == "CBC":
            return MechanismSpec(self._mechanism, "bytes", (self._iv,))
        if self._mode == "CTR":
            return MechanismSpec(self._mechanism, "ctr", (128, self._iv))
        return MechanismSpec(self._mechanism, "gcm", (self._iv, b"".join(self._aad), self._tag_length * 8))

    def update_aad(self, data: Buffer) -> None:
        """Associated data (AES-GCM), all of it before the first :meth:`update`."""
        if self._mode != "GCM":
            raise CryptoError(ErrorCode.INVALID_STATE, "associated data needs an AEAD algorithm")
        if self._data_seen:
            raise CryptoError(ErrorCode.INVALID_STATE, "associated data must come before the first update")
        self._aad.append(bytes(data))

    def _streamed(self, data: Buffer) -> _Stream | None:
        """Take ``data``: None when it is held for ``finalize`` (AEAD decryption), else the
        stream it goes to."""
        self._data_seen = True
        if self._mode == "GCM" and not self._encrypt:
            if data:
                self._held.append(bytes(data))
            return None
        if self._stream is None:
            self._stream = _Stream(
                self._provider,
                self._kind,
                self._spec(),
                self._key,
                lambda primary, public: int(primary or 0),
                self._what,
                self._overrides,
            )
        return self._stream

    def update(self, data: Buffer) -> bytes:
        """More input; returns the output the token produced so far, if any."""
        stream = self._streamed(data)
        return stream.add(data) if stream is not None else b""

    async def update_async(self, data: Buffer) -> bytes:
        """:meth:`update` on the host's loop."""
        stream = self._streamed(data)
        return await stream.add_async(data) if stream is not None else b""

    def finalize(self) -> bytes:
        """The rest of the output (and the tag when encrypting with AES-GCM)."""
        return self._provider.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the host's loop."""
        self._data_seen = True
        if self._mode == "GCM" and not self._encrypt:
            data = b"".join(self._held)
            self._held = []
            if len(data) < self._tag_length:
                raise invalid_argument(f"AES-GCM input is shorter than its {self._tag_length}-byte tag")
            return await self._single(data)
        stream = self._stream
        if stream is None or not stream.started:
            return await self._single(stream.take() if stream is not None else b"")
        return bytes(await stream.finish_async(64))

    async def _single(self, data: bytes) -> bytes:
        spec = self._spec()
        output, _generation = await self._provider.key_call_in_async(
            "crypt",
            self._key,
            lambda primary, public: (self._kind, spec, primary, data, len(data) + 64),
            what=self._what,
            overrides=self._overrides,
        )
        return bytes(output)


# --- signatures and MACs ------------------------------------------------------------------


def _mechanism_spec(plan: SignPlan) -> MechanismSpec:
    if plan.pss is not None:
        return MechanismSpec(plan.mechanism, "pss", plan.pss)
    return MechanismSpec(plan.mechanism)


def _private(primary: int | None, public: int | None) -> int:
    return int(primary or 0)


def _public(primary: int | None, public: int | None) -> int:
    # HMAC keys have only the secret object; pairs and public keys verify with the public one
    return int(public if public is not None else primary or 0)


class HostHashSigner(SignOperation):
    """ECDSA / RSA-PSS: the provider hashes, the token signs the digest."""

    def __init__(self, provider: TokenAccess, plan: SignPlan, key: TokenKey, out_size: int) -> None:
        self._provider = provider
        self._plan = plan
        self._key = key
        self._out_size = out_size
        self._hash = hashlib.new(plan.hash_name)

    def update(self, data: Buffer) -> None:
        """Hash more of the message."""
        self._hash.update(data)

    def finalize(self) -> bytes:
        """The signature (DER for ECDSA)."""
        return self._provider.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the host's loop."""
        digest = self._hash.digest()
        spec = _mechanism_spec(self._plan)
        raw, _generation = await self._provider.key_call_in_async(
            "sign",
            self._key,
            lambda primary, public: (spec, _private(primary, public), digest, self._out_size),
            what=f"{self._plan.algorithm} signing",
        )
        raw = bytes(raw)
        return ecdsa.raw_to_der(raw) if self._plan.der_ecdsa else raw


class HostHashVerifier(VerifyOperation):
    """ECDSA / RSA-PSS verification of a provider-computed digest by the token."""

    def __init__(self, provider: TokenAccess, plan: SignPlan, key: TokenKey) -> None:
        self._provider = provider
        self._plan = plan
        self._key = key
        self._hash = hashlib.new(plan.hash_name)

    def update(self, data: Buffer) -> None:
        """Hash more of the message."""
        self._hash.update(data)

    def finalize(self, signature: bytes) -> bool:
        """True if ``signature`` is valid."""
        return self._provider.run(self.finalize_async(signature))

    async def finalize_async(self, signature: bytes) -> bool:
        """:meth:`finalize` on the host's loop."""
        signature = bytes(signature)
        if self._plan.der_ecdsa:
            raw = ecdsa.der_to_raw(signature, self._key.algorithm)
            if raw is None:
                return False
            signature = raw
        if not signature:
            return False
        digest = self._hash.digest()
        spec = _mechanism_spec(self._plan)
        valid, _generation = await self._provider.key_call_in_async(
            "verify",
            self._key,
            lambda primary, public: (spec, _public(primary, public), digest, signature),
            what=f"{self._plan.algorithm} verification",
        )
        return bool(valid)


class WholeMessageSigner(SignOperation):
    """Pure EdDSA: the token signs the whole message in one call."""

    def __init__(self, provider: TokenAccess, plan: SignPlan, key: TokenKey, out_size: int) -> None:
        self._provider = provider
        self._plan = plan
        self._key = key
        self._out_size = out_size
        self._parts: list[bytes] = []

    def update(self, data: Buffer) -> None:
        """Hold more of the message."""
        self._parts.append(bytes(data))

    def finalize(self) -> bytes:
        """The signature."""
        return self._provider.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the host's loop."""
        message = b"".join(self._parts)
        spec = _mechanism_spec(self._plan)
        signature, _generation = await self._provider.key_call_in_async(
            "sign",
            self._key,
            lambda primary, public: (spec, _private(primary, public), message, self._out_size),
            what=f"{self._plan.algorithm} signing",
        )
        return bytes(signature)


class WholeMessageVerifier(VerifyOperation):
    """Pure EdDSA verification in one call."""

    def __init__(self, provider: TokenAccess, plan: SignPlan, key: TokenKey) -> None:
        self._provider = provider
        self._plan = plan
        self._key = key
        self._parts: list[bytes] = []

    def update(self, data: Buffer) -> None:
        """Hold more of the message."""
        self._parts.append(bytes(data))

    def finalize(self, signature: bytes) -> bool:
        """True if ``signature`` is valid."""
        return self._provider.run(self.finalize_async(signature))

    async def finalize_async(self, signature: bytes) -> bool:
        """:meth:`finalize` on the host's loop."""
        signature = bytes(signature)
        if not signature:
            return False
        message = b"".join(self._parts)
        spec = _mechanism_spec(self._plan)
        valid, _generation = await self._provider.key_call_in_async(
            "verify",
            self._key,
            lambda primary, public: (spec, _public(primary, public), message, signature),
            what=f"{self._plan.algorithm} verification",
        )
        return bool(valid)


class StreamSigner(SignOperation):
    """HMAC (and hash-and-sign RSA-PSS): the token hashes and signs."""

    def __init__(self, provider: TokenAccess, plan: SignPlan, key: TokenKey, out_size: int) -> None:
        self._provider = provider
        self._key = key
        self._spec = _mechanism_spec(plan)
        self._out_size = out_size
        self._what = f"{plan.algorithm} signing"
        self._stream = _Stream(provider, "Sign", self._spec, key, _private, self._what)

    def update(self, data: Buffer) -> None:
        """More of the message."""
        self._stream.add(data)

    async def update_async(self, data: Buffer) -> None:
        """:meth:`update` on the host's loop."""
        await self._stream.add_async(data)

    def finalize(self) -> bytes:
        """The signature or MAC tag."""
        return self._provider.run(self.finalize_async())

    async def finalize_async(self) -> bytes:
        """:meth:`finalize` on the host's loop."""
        if self._stream.started:
            return bytes(await self._stream.finish_async(self._out_size))
        data = self._stream.take()
        tag, _generation = await self._provider.key_call_in_async(
            "sign",
            self._key,
            lambda primary, public: (self._spec, _private(primary, public), data, self._out_size),
            what=self._what,
        )
        return bytes(tag)


class MacVerifier(VerifyOperation):
    """HMAC verification: the token computes the tag and it is compared here in constant
    time; a tag truncated to ``min_mac_length`` bytes or more is checked against the prefix.
    (The daemon verifies MACs the same way, through a signer.)"""

    def __init__(self, provider: TokenAccess, plan: SignPlan, key: TokenKey, mac_size: int) -> None:
        self._provider = provider
        self._min_length = provider.opts.min_mac_length
        self._signer = StreamSigner(provider, plan, key, mac_size)

    def update(self, data: Buffer) -> None:
        """More of the message."""
        self._signer.update(data)

    async def update_async(self, data: Buffer) -> None:
        """:meth:`update` on the host's loop."""
        await self._signer.update_async(data)

    def finalize(self, signature: bytes) -> bool:
        """True if ``signature`` is the tag or a long enough prefix of it."""
        return self._provider.run(self.finalize_async(signature))

    async def finalize_async(self, signature: bytes) -> bool:
        """:meth:`finalize` on the host's loop."""
        tag = bytes(signature)
        full = await self._signer.finalize_async()
        if len(tag) == len(full):
            return hmac.compare_digest(full, tag)
        if self._min_length <= len(tag) < len(full):
            return hmac.compare_digest(full[: len(tag)], tag)
        return False


class _StreamVerify(VerifyOperation):
    """``C_VerifyInit``/``Update``/``Final`` (or one ``C_Verify``) in the token."""

    def __init__(
        self,
        provider: TokenAccess,
        plan: SignPlan,
        key: TokenKey,
        handle: Callable[[int | None, int | None], int],
        what: str,
    ) -> None:
        self._provider = provider
        self._key = key
        self._handle = handle
        self._spec = _mechanism_spec(plan)
        self._what = what
        self._stream = _Stream(provider, "Verify", self._spec, key, handle, what)

    def update(self, data: Buffer) -> None:
        """More of the message."""
        self._stream.add(data)

    async def update_async(self, data: Buffer) -> None:
        """:meth:`update` on the host's loop."""
        await self._stream.add_async(data)

    def finalize(self, signature: bytes) -> bool:
        """True if ``signature`` verifies."""
        return self._provider.run(self.finalize_async(signature))

    async def finalize_async(self, signature: bytes) -> bool:
        """:meth:`finalize` on the host's loop."""
        signature = bytes(signature)
        if not signature:
            if self._stream.started:
                await self._stream.finish_async(0, b"")
            return False
        if self._stream.started:
            return bool(await self._stream.finish_async(0, signature))
        data = self._stream.take()
        valid, _generation = await self._provider.key_call_in_async(
            "verify",
            self._key,
            lambda primary, public: (self._spec, self._handle(primary, public), data, signature),
            what=self._what,
        )
        return bool(valid)


class StreamVerifier(_StreamVerify):
    """Hash-and-sign RSA-PSS verification in the token (with the public object)."""

    def __init__(self, provider: TokenAccess, plan: SignPlan, key: TokenKey) -> None:
        super().__init__(provider, plan, key, _public, f"{plan.algorithm} verification")
