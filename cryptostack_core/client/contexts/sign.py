"""Signature and MAC contexts (blocking and asyncio)."""

from __future__ import annotations

from typing import Any, Self

from cryptostack_core.client.arguments import bytes_arg, int_arg
from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    AsyncStreamContext,
    BytesLike,
    ContextConfig,
    ContextParent,
    KeySetting,
    ResourceLike,
    StreamContext,
    StreamCore,
    byte_view,
    wire_rid,
)
from cryptostack_core.client.plans import Plan
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmKind
from cryptostack_core.wire.errors import CryptoError, ErrorCode


class SignContextConfig(AlgorithmSetting, KeySetting, ContextConfig):
    """Settings for :meth:`CryptoContext.create_sign_context`: algorithm (``"ML-DSA-65"``,
    ``"HMAC-SHA-256"`` ...), key, context string."""

    def __init__(self) -> None:
        super().__init__()
        self.algorithm: str | None = None
        self.key: ResourceLike | None = None
        self.context: bytes = b""

    def set_context(self, context: bytes) -> Self:
        """ML-DSA / SLH-DSA context string (default empty)."""
        self.context = bytes_arg(context, "context")
        return self


class VerifyContextConfig(SignContextConfig):
    """Settings for :meth:`CryptoContext.create_verify_context`."""

    def __init__(self) -> None:
        super().__init__()
        self.tag_length: int | None = None

    def set_tag_length(self, length: int) -> Self:
        """Accept MAC tags truncated to ``length`` bytes (MACs only; default: full length)."""
        self.tag_length = int_arg(length, "length")
        return self


class SignCore(StreamCore):
    """The plans of sign and verify contexts (blocking and asyncio)."""

    _family = "sign"
    algorithm: str
    provider: int
    _signature_size: int | None = None

    def _p_create(self, config: SignContextConfig) -> Plan[None]:
        if config.algorithm is None or config.key is None:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"{type(config).__name__} needs set_algorithm() and set_key()"
            )
        algorithm = yield from self._channel._p_canonical(config.algorithm)
        args = {
            "algorithm": algorithm,
            "key": wire_rid(config.key, "key"),
            "context": config.context,
            "provider": config.provider,
        }
        if isinstance(config, VerifyContextConfig):
            args["tag_length"] = config.tag_length
        info = yield from self._call(f"{self._family}.create", args)
        self._handle = info["ctx"]
        self.algorithm = info["algorithm"]
        self.provider = info["provider"]
        self.components: list[dict[str, Any]] = list(info.get("components") or ())
        """Split hybrid keys: each half's role, provider and algorithm (the daemon joins
        them); empty otherwise."""
        self._signature_size = info.get("signature_size")

    def _is_mac(self) -> bool:
        spec = REGISTRY.find(self.algorithm)
        return spec is not None and spec.kind is AlgorithmKind.MAC

    def _p_sign(self, message: BytesLike, what: str = "sign") -> Plan[bytes]:
        view = byte_view(message, "message")
        whole = self._p_whole(
            "sign.single_shot", what, {"data": message if type(message) is bytes else view}, len(view)
        )
        if whole is not None:
            signature: bytes = yield from whole
            return signature
        self._start({})
        yield from self._p_absorb(view)
        signature = yield from self._p_finish({})
        return signature

    def _p_mac(self, message: BytesLike) -> Plan[bytes]:
        byte_view(message, "message")
        if not self._is_mac():
            raise CryptoError(
                ErrorCode.INVALID_STATE,
                f"mac() needs a MAC algorithm (HMAC-SHA-256 ...), not {self.algorithm}; use sign()",
            )
        return (yield from self._p_sign(message, "mac"))

    def _p_verify_finalize(self, signature: BytesLike, strict: bool = False) -> Plan[bool]:
        ok = yield from self._p_finish({"signature": bytes_arg(signature, "signature")})
        if strict and not ok:
            raise _invalid_signature(self.algorithm)
        return bool(ok)

    def _p_verify(self, message: BytesLike, signature: BytesLike, strict: bool = False) -> Plan[bool]:
        """``strict``: raise AUTHENTICATION_FAILED instead of answering False."""
        view = byte_view(message, "message")
        sig = bytes_arg(signature, "signature")
        args: dict[str, Any] = {"data": message if type(message) is bytes else view, "signature": sig}
        whole = self._p_whole("verify.single_shot", "verify", args, len(view) + len(sig))
        if whole is not None:
            ok = yield from whole
        else:
            self._start({})
            yield from self._p_absorb(view)
            ok = yield from self._p_verify_finalize(sig)
        if strict and not ok:
            raise _invalid_signature(self.algorithm)
        return bool(ok)


class SignContext(SignCore, StreamContext):
    """Sign (or MAC) one message at a time; ``sign(message)`` in one round trip."""

    def __init__(self, parent: ContextParent, config: SignContextConfig) -> None:
        super().__init__(parent, config)
        self._run(self._p_create(config))

    def get_signature_size(self) -> int:
        """Maximum size of a signature (exact for fixed-size schemes) or MAC tag."""
        if self._signature_size is None:
            raise CryptoError(ErrorCode.INVALID_STATE, "unknown signature size")
        return self._signature_size

    def init(self) -> None:
        """Start a message."""
        self._start({})

    def update(self, data: BytesLike) -> None:
        """Absorb message data."""
        self._run(self._p_absorb(data))

    def sign_finalize(self) -> bytes:
        """The signature (DER for ECDSA) or MAC tag."""
        sig: bytes = self._run(self._p_finish({}))
        return sig

    def sign(self, message: BytesLike) -> bytes:
        """The signature (or MAC tag) of a whole message, in one round trip."""
        return self._run(self._p_sign(message))

    def mac(self, message: BytesLike) -> bytes:
        """The MAC tag of a whole message, in one round trip (MAC algorithms only)."""
        return self._run(self._p_mac(message))


class VerifyContext(SignContext):
    """Verify one message's signature or MAC at a time; ``verify(message, signature)`` in
    one round trip."""

    _family = "verify"

    def get_signature_size(self) -> int:
        """Not available on verify contexts."""
        raise CryptoError(ErrorCode.INVALID_STATE, "signature size is known by sign contexts")

    def sign_finalize(self) -> bytes:
        """Not available on verify contexts."""
        raise CryptoError(ErrorCode.INVALID_STATE, "a verify context cannot sign")

    def sign(self, message: BytesLike) -> bytes:
        """Not available on verify contexts."""
        byte_view(message, "message")
        raise CryptoError(ErrorCode.INVALID_STATE, "a verify context cannot sign")

    def mac(self, message: BytesLike) -> bytes:
        """Not available on verify contexts (use :meth:`verify` with the tag)."""
        byte_view(message, "message")
        raise CryptoError(
            ErrorCode.INVALID_STATE, "a verify context cannot compute a MAC; verify(message, tag) checks one"
        )

    def verify_finalize(self, signature: BytesLike) -> bool:
        """True if the signature (or tag) is valid for the message."""
        return self._run(self._p_verify_finalize(signature))

    def verify(self, message: BytesLike, signature: BytesLike) -> bool:
        """True if ``signature`` (or MAC tag) is valid for the whole ``message``; one round
        trip. :meth:`verify_or_raise` raises instead of answering False."""
        return self._run(self._p_verify(message, signature))

    def verify_finalize_or_raise(self, signature: BytesLike) -> None:
        """:meth:`verify_finalize` that returns nothing for a valid signature and raises
        ``CryptoError(AUTHENTICATION_FAILED)`` for an invalid one (pyca's and Tink's habit:
        a forgotten check of a returned bool cannot let a forgery through)."""
        self._run(self._p_verify_finalize(signature, strict=True))

    def verify_or_raise(self, message: BytesLike, signature: BytesLike) -> None:
        """:meth:`verify` that returns nothing for a valid signature and raises
        ``CryptoError(AUTHENTICATION_FAILED)`` for an invalid one."""
        self._run(self._p_verify(message, signature, strict=True))


class AsyncSignContext(SignCore, AsyncStreamContext):
    """:class:`SignContext` for asyncio stacks (the same calls, awaited)."""

    def get_signature_size(self) -> int:
        """Maximum size of a signature (exact for fixed-size schemes) or MAC tag."""
        if self._signature_size is None:
            raise CryptoError(ErrorCode.INVALID_STATE, "unknown signature size")
        return self._signature_size

    async def init(self) -> None:
        """Start a message (sent with the next call)."""
        self._start({})

    async def update(self, data: BytesLike) -> None:
        """Absorb message data."""
        await self._run(self._p_absorb(data))

    async def sign_finalize(self) -> bytes:
        """The signature (DER for ECDSA) or MAC tag."""
        sig: bytes = await self._run(self._p_finish({}))
        return sig

    async def sign(self, message: BytesLike) -> bytes:
        """The signature (or MAC tag) of a whole message, in one round trip."""
        return await self._run(self._p_sign(message))

    async def mac(self, message: BytesLike) -> bytes:
        """The MAC tag of a whole message, in one round trip (MAC algorithms only)."""
        return await self._run(self._p_mac(message))


class AsyncVerifyContext(SignCore, AsyncStreamContext):
    """:class:`VerifyContext` for asyncio stacks (the same calls, awaited)."""

    _family = "verify"

    async def init(self) -> None:
        """Start a message (sent with the next call)."""
        self._start({})

    async def update(self, data: BytesLike) -> None:
        """Absorb message data."""
        await self._run(self._p_absorb(data))

    async def verify_finalize(self, signature: BytesLike) -> bool:
        """True if the signature (or tag) is valid for the message."""
        return await self._run(self._p_verify_finalize(signature))

    async def verify(self, message: BytesLike, signature: BytesLike) -> bool:
        """True if ``signature`` is valid for the whole ``message``; one round trip."""
        return await self._run(self._p_verify(message, signature))

    async def verify_finalize_or_raise(self, signature: BytesLike) -> None:
        """:meth:`verify_finalize`, raising ``CryptoError(AUTHENTICATION_FAILED)`` for an
        invalid signature instead of answering False."""
        await self._run(self._p_verify_finalize(signature, strict=True))

    async def verify_or_raise(self, message: BytesLike, signature: BytesLike) -> None:
        """:meth:`verify`, raising ``CryptoError(AUTHENTICATION_FAILED)`` for an invalid
        signature instead of answering False."""
        await self._run(self._p_verify(message, signature, strict=True))


def _invalid_signature(algorithm: str) -> CryptoError:
    return CryptoError(
        ErrorCode.AUTHENTICATION_FAILED,
        f"the {algorithm} signature (or tag) does not verify for this message and key",
    )
