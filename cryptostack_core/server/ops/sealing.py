"""Seal and open: AEAD on a key slot that cannot be misused (docs/protocol.md, "Sealed
messages").

``aead.seal`` encrypts under the slot's primary version with a nonce the daemon draws; the
output says which version and nonce were used, so ``aead.open`` finds the version by itself
and messages sealed before a rotation still open after it. The caller never handles a
nonce or a version. Format (18-byte header, then the AEAD output)::

    offset  size  field
    0       1     format, 0x01
    1       1     algorithm: 1 AES-128-GCM, 2 AES-192-GCM, 3 AES-256-GCM, 4 ChaCha20-Poly1305
    2       4     key version, unsigned big-endian
    6       12    nonce (random)
    18      n     ciphertext
    18+n    16    tag

The whole header is associated data of the AEAD, followed by the caller's associated data:
changing any header byte, the ciphertext or the tag is ``AUTHENTICATION_FAILED``, and so is a
header that names a version the slot never had. A version that was retired, removed by a
clear or is below the slot's minimum is ``KEY_VERSION_RETIRED`` naming it: the message is
intact, its key is gone (or disabled). Nonces are 96 random bits: seal at most 2^32 messages
under one version (NIST SP 800-38D), i.e. rotate before that.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

from cryptostack_core.server.arguments import data_arg, invalid, rid_arg
from cryptostack_core.server.core import Call, ServiceCore
from cryptostack_core.server.session import KeyEntry
from cryptostack_core.wire.algorithms import REGISTRY, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.resources import CipherDirection, ResourceType

FORMAT = 0x01
HEADER = struct.Struct(">BBI12s")
TAG_SIZE = 16
NONCE_SIZE = 12
ALGORITHMS = {1: "AES-128-GCM", 2: "AES-192-GCM", 3: "AES-256-GCM", 4: "ChaCha20-Poly1305"}
_BY_KEY = {"AES-128": 1, "AES-192": 2, "AES-256": 3, "ChaCha20-Poly1305": 4}
OVERHEAD = HEADER.size + TAG_SIZE
"""Bytes a sealed message adds to its plaintext (34)."""


def _forged(name: str, why: str) -> CryptoError:
    return CryptoError(
        ErrorCode.AUTHENTICATION_FAILED, f"not a message sealed under key slot {name!r}: {why}"
    )


class SealOps:
    """``aead.seal`` and ``aead.open``."""

    def __init__(self, core: ServiceCore) -> None:
        self.core = core

    def operations(self) -> dict[str, Callable[[Call, Mapping[str, Any]], Any]]:
        """Wire operations served here."""
        return {"aead.seal": self.seal, "aead.open": self.open}

    def _slot(self, call: Call, args: Mapping[str, Any]) -> str:
        rid = rid_arg(args, "key")
        if rid.type is not ResourceType.KEY_SLOT:
            raise invalid(
                f"seal and open take a key slot (the daemon picks the version), not a {rid.type.value}"
            )
        name: str = call.session.get(rid).obj.name
        return name

    def _data(self, args: Mapping[str, Any], what: str) -> tuple[bytes, bytes]:
        data = data_arg(args, "data")
        limit = self.core.config.max_buffered_message
        if len(data) > limit + OVERHEAD:
            raise CryptoError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"{what} of {len(data)} bytes is larger than the daemon's "
                f"max_buffered_message ({limit}); use a streaming AEAD "
                "(AES-256-GCM-HKDF-1MB) for large data",
            )
        aad = bytes(data_arg(args, "aad")) if args.get("aad") is not None else b""
        return bytes(data), aad

    def _run(
        self,
        call: Call,
        entry: KeyEntry,
        algorithm: str,
        direction: CipherDirection,
        nonce: bytes,
        aad: bytes,
        data: bytes,
    ) -> bytes:
        core = self.core
        encrypt = direction is CipherDirection.ENCRYPT
        operation = Operation.ENCRYPT if encrypt else Operation.DECRYPT
        core.require_permission(
            call.session, entry, P.ENCRYPT if encrypt else P.DECRYPT, algorithm, operation=operation
        )
        loaded = core.providers.select(algorithm, operation, key=entry.placement)
        pkey = core.key_on(call.session, entry, loaded)
        detail = f"{'seal' if encrypt else 'open'} version={entry.version}"
        try:
            op = core.provider_instance(loaded).create_cipher(algorithm, pkey, direction, nonce, TAG_SIZE)
            op.update_aad(aad)
            out = op.update(data)
            out += op.finalize()
        except CryptoError as exc:
            core.audit(
                call.session,
                "key.use",
                entry.slot or "",
                exc.code.value,
                provider=loaded.id,
                algorithm=algorithm,
                operation=operation.value,
                detail=detail,
            )
            raise
        core.audit(
            call.session,
            "key.use",
            entry.slot or "",
            provider=loaded.id,
            algorithm=algorithm,
            operation=operation.value,
            detail=detail,
        )
        return bytes(out)

    def seal(self, call: Call, args: Mapping[str, Any]) -> bytes:
        """Encrypt ``data`` (with associated data ``aad``) under the slot's primary version."""
        name = self._slot(call, args)
        plaintext, aad = self._data(args, "the plaintext")
        entry = self.core.load_slot(call.session, name)
        try:
            algorithm_id = _BY_KEY.get(entry.algorithm)
            if algorithm_id is None:
                raise invalid(
                    f"key slot {name!r} holds a {entry.algorithm} key; sealing needs "
                    "an AES or ChaCha20-Poly1305 key"
                )
            nonce = os.urandom(NONCE_SIZE)
            assert entry.version is not None
            header = HEADER.pack(FORMAT, algorithm_id, entry.version, nonce)
            body = self._run(
                call, entry, ALGORITHMS[algorithm_id], CipherDirection.ENCRYPT, nonce, header + aad, plaintext
            )
            return header + body
        finally:
            entry.release()

    def open(self, call: Call, args: Mapping[str, Any]) -> bytes:
        """The plaintext of a sealed message, under the version its header names."""
        name = self._slot(call, args)
        sealed, aad = self._data(args, "the sealed message")
        if len(sealed) < OVERHEAD:
            raise _forged(
                name,
                f"{len(sealed)} bytes is shorter than a sealed message's header and tag ({OVERHEAD} bytes)",
            )
        form, algorithm_id, version, nonce = HEADER.unpack_from(sealed)
        if form != FORMAT:
            raise _forged(name, f"unknown format byte {form:#04x}")
        algorithm = ALGORITHMS.get(algorithm_id)
        if algorithm is None:
            raise _forged(name, f"unknown algorithm {algorithm_id}")
        if version == 0:
            raise _forged(name, "version 0")
        try:
            entry = self.core.load_slot(call.session, name, version)
        except CryptoError as exc:
            if exc.code is ErrorCode.RESOURCE_NOT_FOUND:
                raise _forged(
                    name,
                    f"it names version {version}, which the slot never had "
                    "(altered, or sealed under another slot)",
                ) from None
            if exc.code in (ErrorCode.KEY_VERSION_RETIRED, ErrorCode.SLOT_EMPTY):
                self.core.audit(
                    call.session,
                    "key.use",
                    name,
                    exc.code.value,
                    operation=Operation.DECRYPT.value,
                    detail=f"open version={version}",
                )
            raise
        try:
            if algorithm_id != _BY_KEY.get(entry.algorithm):
                raise _forged(name, f"it names {algorithm}, but version {version} is a {entry.algorithm} key")
            header = sealed[: HEADER.size]
            return self._run(
                call,
                entry,
                REGISTRY.get(algorithm).name,
                CipherDirection.DECRYPT,
                nonce,
                header + aad,
                sealed[HEADER.size :],
            )
        finally:
            entry.release()
