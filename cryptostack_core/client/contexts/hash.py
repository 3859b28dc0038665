"""Hash contexts (blocking and asyncio)."""

from __future__ import annotations

from cryptostack_core.client.arguments import wrong_type
from cryptostack_core.client.contexts.base import (
    AlgorithmSetting,
    AsyncStreamContext,
    BytesLike,
    ContextConfig,
    ContextParent,
    StreamContext,
    StreamCore,
    byte_view,
)
from cryptostack_core.client.plans import Plan
from cryptostack_core.wire.errors import CryptoError, ErrorCode


class HashContextConfig(AlgorithmSetting, ContextConfig):
    """Settings for :meth:`CryptoContext.create_hash_context`: the algorithm (``"SHA-256"`` ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.algorithm: str | None = None


class HashCore(StreamCore):
    """The hash context's plans, shared by :class:`HashContext` and :class:`AsyncHashContext`."""

    _family = "hash"
    algorithm: str
    provider: int

    def _p_create(self, config: HashContextConfig) -> Plan[None]:
        if config.algorithm is None:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "HashContextConfig needs set_algorithm()")
        algorithm = yield from self._channel._p_canonical(config.algorithm)
        info = yield from self._call("hash.create", {"algorithm": algorithm, "provider": config.provider})
        self._handle = info["ctx"]
        self.algorithm = info["algorithm"]
        self.provider = info["provider"]

    def _p_finalize_into(self, out: bytearray | memoryview) -> Plan[int]:
        if not isinstance(out, (bytearray, memoryview)) or (isinstance(out, memoryview) and out.readonly):
            raise wrong_type("out", "a writable buffer (bytearray or memoryview)", out)
        digest: bytes = yield from self._p_finish({})
        if len(out) < len(digest):
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT,
                f"output buffer of {len(out)} bytes is smaller than the {len(digest)}-byte digest",
            )
        out[: len(digest)] = digest
        return len(digest)

    def _p_single_shot(self, data: BytesLike) -> Plan[bytes]:
        view = byte_view(data)
        whole = self._p_whole(
            "hash.single_shot",
            "single_shot",
            {"data": bytes(view)} if len(view) < 65536 else {"data": view},
            len(view),
        )
        if whole is not None:
            digest: bytes = yield from whole
            return digest
        self._start({})
        yield from self._p_absorb(view)
        digest = yield from self._p_finish({})
        return digest


class HashContext(HashCore, StreamContext):
    """A reusable message digest: ``init``/``update``/``finalize``, ``single_shot``, ``reset``.

    ``init``, ``reset`` and updates smaller than 64 KiB travel with the next call that needs
    an answer, so a small message costs one round trip.
    """

    def __init__(self, parent: ContextParent, config: HashContextConfig) -> None:
        super().__init__(parent, config)
        self._run(self._p_create(config))

    def init(self) -> None:
        """Start a message."""
        self._start({})

    def update(self, data: BytesLike) -> None:
        """Absorb data."""
        self._run(self._p_absorb(data))

    def finalize(self) -> bytes:
        """The digest of the message."""
        digest: bytes = self._run(self._p_finish({}))
        return digest

    def finalize_into(self, out: bytearray | memoryview) -> int:
        """Write the digest into ``out``; returns its length."""
        return self._run(self._p_finalize_into(out))

    def single_shot(self, data: BytesLike) -> bytes:
        """Digest of ``data`` in one call (no init needed; large data goes in pieces)."""
        return self._run(self._p_single_shot(data))


class AsyncHashContext(HashCore, AsyncStreamContext):
    """:class:`HashContext` for asyncio stacks (the same calls, awaited)."""

    async def init(self) -> None:
        """Start a message (sent with the next call)."""
        self._start({})

    async def update(self, data: BytesLike) -> None:
        """Absorb data."""
        await self._run(self._p_absorb(data))

    async def finalize(self) -> bytes:
        """The digest of the message."""
        digest: bytes = await self._run(self._p_finish({}))
        return digest

    async def finalize_into(self, out: bytearray | memoryview) -> int:
        """Write the digest into ``out``; returns its length."""
        return await self._run(self._p_finalize_into(out))

    async def single_shot(self, data: BytesLike) -> bytes:
        """Digest of ``data`` in one call (no init needed; large data goes in pieces)."""
        return await self._run(self._p_single_shot(data))
