"""Signature and MAC contexts."""

from __future__ import annotations

from typing import Any, Self

from cryptostack_core.client.arguments import bytes_arg, int_arg
from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    ContextConfig,
    ContextParent,
    KeySetting,
    ResourceLike,
    StreamContext,
    byte_view,
    wire_rid,
)
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


class SignContext(StreamContext):
    """Sign (or MAC) one message at a time."""

    _family = "sign"

    def __init__(self, parent: ContextParent, config: SignContextConfig) -> None:
        super().__init__(parent, config)
        if config.algorithm is None or config.key is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              f"{type(config).__name__} needs set_algorithm() and set_key()")
        args = {"algorithm": self._channel.canonical_algorithm(config.algorithm),
                "key": wire_rid(config.key, "key"),
                "context": config.context, "provider": config.provider}
        if isinstance(config, VerifyContextConfig):
            args["tag_length"] = config.tag_length
        info = self._call(f"{self._family}.create", args)
        self._handle = info["ctx"]
        self.algorithm: str = info["algorithm"]
        self.provider: int = info["provider"]
        self.components: list[dict[str, Any]] = list(info.get("components") or ())
        """Split hybrid keys: each half's role, provider and algorithm (the daemon joins
        them); empty otherwise."""
        self._signature_size: int | None = info.get("signature_size")

    def get_signature_size(self) -> int:
        """Maximum size of a signature (exact for fixed-size schemes) or MAC tag."""
        if self._signature_size is None:
            raise CryptoError(ErrorCode.INVALID_STATE, "unknown signature size")
        return self._signature_size

    def init(self) -> None:
        """Start a message."""
        self._start({})

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Absorb message data."""
        self._absorb(data)

    def sign_finalize(self) -> bytes:
        """The signature (DER for ECDSA) or MAC tag."""
        sig: bytes = self._finish({})
        return sig

    def sign(self, message: bytes | bytearray | memoryview) -> bytes:
        """init + update + sign_finalize in one round trip."""
        view = byte_view(message, "message")
        self.init()
        self.update(view)
        return self.sign_finalize()


class VerifyContext(SignContext):
    """Verify one message's signature or MAC at a time."""

    _family = "verify"

    def get_signature_size(self) -> int:
        """Not available on verify contexts."""
        raise CryptoError(ErrorCode.INVALID_STATE, "signature size is known by sign contexts")

    def sign_finalize(self) -> bytes:
        """Not available on verify contexts."""
        raise CryptoError(ErrorCode.INVALID_STATE, "a verify context cannot sign")

    def verify_finalize(self, signature: bytes | bytearray | memoryview) -> bool:
        """True if the signature (or tag) is valid for the message."""
        return bool(self._finish({"signature": bytes_arg(signature, "signature")}))

    def verify(self, message: bytes | bytearray | memoryview,
               signature: bytes | bytearray | memoryview) -> bool:
        """init + update + verify_finalize in one round trip; True if the signature (or
        tag) is valid. :meth:`verify_or_raise` raises instead of answering False."""
        view = byte_view(message, "message")
        signature = bytes_arg(signature, "signature")
        self.init()
        self.update(view)
        return self.verify_finalize(signature)

    def verify_finalize_or_raise(self, signature: bytes | bytearray | memoryview) -> None:
        """:meth:`verify_finalize` that returns nothing for a valid signature and raises
        ``CryptoError(AUTHENTICATION_FAILED)`` for an invalid one (pyca's and Tink's habit:
        a forgotten check of a returned bool cannot let a forgery through)."""
        if not self.verify_finalize(signature):
            raise _invalid_signature(self.algorithm)

    def verify_or_raise(self, message: bytes | bytearray | memoryview,
                        signature: bytes | bytearray | memoryview) -> None:
        """:meth:`verify` that returns nothing for a valid signature and raises
        ``CryptoError(AUTHENTICATION_FAILED)`` for an invalid one."""
        if not self.verify(message, signature):
            raise _invalid_signature(self.algorithm)


def _invalid_signature(algorithm: str) -> CryptoError:
    return CryptoError(ErrorCode.AUTHENTICATION_FAILED,
                       f"the {algorithm} signature (or tag) does not verify for this message "
                       "and key")
