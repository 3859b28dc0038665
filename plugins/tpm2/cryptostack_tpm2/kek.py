"""The key store's key-encryption key, sealed to the TPM.

On first start a random 32-byte KEK is made (operating-system randomness XOR TPM
randomness, so neither source alone decides it), sealed into a TPM data object under the
storage primary key (TPM2_Create of a keyed-hash object that can neither sign nor decrypt),
and the sealed object's public/private blobs are written to the KEK file. Later starts load
the object and TPM2_Unseal it. The private blob is encrypted by the TPM's storage hierarchy,
so a copied key store plus KEK file is useless without this TPM; a TPM whose storage
hierarchy was cleared (or another TPM) cannot unseal it and start fails with a clear error.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import cbor2

from cryptostack_core.sdk import CryptoError, ErrorCode, KekSource
from cryptostack_core.sdk.workers import WorkerHost

KEK_SIZE = 32
_FORMAT = "cryptostack-tpm2-sealed-kek"
_VERSION = 1


class TpmSealedKek(KekSource):
    """A :class:`KekSource` whose file holds a TPM-sealed KEK."""

    def __init__(self, proxy: WorkerHost, primary_name: bytes) -> None:
        self._proxy = proxy
        self._primary_name = primary_name

    def load_or_create(self, path: Path) -> bytes:
        """Unseal the KEK stored at ``path``, or create, seal and store a new one."""
        path = Path(path)
        if path.exists():
            return self._unseal(path)
        return self._create(path)

    def _create(self, path: Path) -> bytes:
        tpm_random = self._proxy.call("random", KEK_SIZE)
        kek = bytes(a ^ b for a, b in zip(secrets.token_bytes(KEK_SIZE), tpm_random))
        public, private = self._proxy.call("seal", kek)
        record = cbor2.dumps(
            {
                "format": _FORMAT,
                "v": _VERSION,
                "public": public,
                "private": private,
                "primary": self._primary_name,
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(record)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return kek

    def _unseal(self, path: Path) -> bytes:
        try:
            record = cbor2.loads(path.read_bytes())
            if not isinstance(record, dict) or record.get("format") != _FORMAT:
                raise ValueError("not a TPM-sealed KEK file")
            if record.get("v") != _VERSION:
                raise ValueError(f"unknown version {record.get('v')!r}")
            public, private = bytes(record["public"]), bytes(record["private"])
            primary = bytes(record["primary"])
        except (OSError, ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as exc:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"cannot read the sealed KEK file {path}: {exc}"
            ) from None
        if primary != self._primary_name:
            raise CryptoError(
                ErrorCode.ACCESS_DENIED,
                f"the KEK in {path} was sealed by another TPM, or under another primary key, "
                "or before this TPM's storage hierarchy was cleared: it cannot be unsealed "
                "here, so the key store cannot be opened",
            )
        try:
            kek = bytes(self._proxy.call("unseal", public, private))
        except CryptoError as exc:
            raise CryptoError(exc.code, f"cannot unseal the KEK in {path}: {exc.message}") from None
        if len(kek) != KEK_SIZE:
            raise CryptoError(
                ErrorCode.PROVIDER_ERROR, f"the sealed object in {path} holds {len(kek)} bytes, not a KEK"
            )
        return kek
