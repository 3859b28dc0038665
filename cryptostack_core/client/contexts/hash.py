"""Hash contexts."""

from __future__ import annotations

from cryptostack_core.client.arguments import wrong_type
from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    ContextConfig,
    ContextParent,
    StreamContext,
    byte_view,
)
from cryptostack_core.wire.errors import CryptoError, ErrorCode


class HashContextConfig(AlgorithmSetting, ContextConfig):
    """Settings for :meth:`CryptoContext.create_hash_context`: the algorithm (``"SHA-256"`` ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.algorithm: str | None = None


class HashContext(StreamContext):
    """A reusable message digest: ``init``/``update``/``finalize``, ``single_shot``, ``reset``.

    ``init``, ``reset`` and updates smaller than 64 KiB travel with the next call that needs
    an answer, so a small message costs one round trip.
    """

    _family = "hash"

    def __init__(self, parent: ContextParent, config: HashContextConfig) -> None:
        super().__init__(parent, config)
        if config.algorithm is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "HashContextConfig needs set_algorithm()")
        info = self._call("hash.create", {"algorithm":
                                          self._channel.canonical_algorithm(config.algorithm),
                                          "provider": config.provider})
        self._handle = info["ctx"]
        self.algorithm: str = info["algorithm"]
        self.provider: int = info["provider"]

    def init(self) -> None:
        """Start a message."""
        self._start({})

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Absorb data."""
        self._absorb(data)

    def finalize(self) -> bytes:
        """The digest of the message."""
        digest: bytes = self._finish({})
        return digest

    def finalize_into(self, out: bytearray | memoryview) -> int:
        """Write the digest into ``out``; returns its length."""
        if not isinstance(out, (bytearray, memoryview)) or (isinstance(out, memoryview)
                                                             and out.readonly):
            raise wrong_type("out", "a writable buffer (bytearray or memoryview)", out)
        digest = self.finalize()
        if len(out) < len(digest):
            raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                              f"output buffer of {len(out)} bytes is smaller than the "
                              f"{len(digest)}-byte digest")
        out[: len(digest)] = digest
        return len(digest)

    def single_shot(self, data: bytes | bytearray | memoryview) -> bytes:
        """Digest of ``data`` in one call (no init needed; large data goes in pieces)."""
        view = byte_view(data)
        self._check()
        if self._state == "active":
            raise CryptoError(ErrorCode.INVALID_STATE,
                              "single_shot() while a message is in progress; reset() first")
        if len(view) > self._channel.max_chunk:
            self.init()
            self.update(view)
            return self.finalize()
        digest: bytes = self._call("hash.single_shot", {"ctx": self._handle, "data": bytes(view)})
        self._state = "done"
        return digest
