"""TPM-backed keys as the provider hands them to the daemon, and their stored form.

A key never exists in the clear outside the TPM. The provider keeps what is needed to
(re)load it on demand, which is also what survives a worker restart:

* ``blob``: TPM2B_PUBLIC + TPM2B_PRIVATE made by TPM2_Create/TPM2_Import under the storage
  primary key; the private part is encrypted by the TPM and useless without it;
* ``external``: a public key alone (verify only), loaded with TPM2_LoadExternal;
* ``persistent``: a pre-deployed key at a persistent handle (0x81xxxxxx), with its public
  area so a handle that later holds another key is detected.

The worker caches loaded objects by :attr:`TpmKey.key_id`; every request carries the
:class:`KeyRef` so a worker that lost its cache (restart, TPM reset) reloads on the spot.
"""

from __future__ import annotations

import itertools
import threading
from typing import NamedTuple

import cbor2

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderKey, StoredKey

BLOB, EXTERNAL, PERSISTENT = "blob", "external", "persistent"

_STORED_FORMAT = "cryptostack-tpm2-key"
_STORED_VERSION = 1

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def next_key_id() -> int:
    """A process-unique id for a key object (the worker cache key)."""
    with _ids_lock:
        return next(_ids)


class KeyRef(NamedTuple):
    """Everything the worker needs to find or load a key (plain data, crosses the pipe)."""

    key_id: int
    source: str
    public: bytes
    private: bytes | None
    handle: int | None


class TpmKey(ProviderKey):
    """A key inside (or loadable into) the TPM. Never extractable."""

    extractable = False

    def __init__(
        self,
        algorithm: str,
        source: str,
        public: bytes,
        *,
        private: bytes | None = None,
        handle: int | None = None,
        parent_name: bytes = b"",
        restricted: bool = False,
        size: int = 0,
    ) -> None:
        self.algorithm = algorithm
        self.source = source
        self.public = public
        self.private = private
        self.handle = handle
        self.parent_name = parent_name
        self.restricted = restricted
        self.has_private = source != EXTERNAL
        self.size = size
        self.key_id = next_key_id()

    @property
    def ref(self) -> KeyRef:
        """The worker-side reference of this key."""
        return KeyRef(self.key_id, self.source, self.public, self.private, self.handle)

    def __repr__(self) -> str:
        where = f" handle=0x{self.handle:08x}" if self.handle is not None else ""
        return f"TpmKey({self.algorithm}, {self.source}{where}, id={self.key_id})"


def encode_stored(key: TpmKey) -> StoredKey:
    """The key store record of ``key``: TPM blobs and metadata, not secret in the clear."""
    record = {
        "format": _STORED_FORMAT,
        "v": _STORED_VERSION,
        "algorithm": key.algorithm,
        "source": key.source,
        "public": key.public,
        "private": key.private,
        "handle": key.handle,
        "parent": key.parent_name,
        "restricted": key.restricted,
        "size": key.size,
    }
    return StoredKey(blob=cbor2.dumps(record), secret=False)


def decode_stored(stored: StoredKey, algorithm: str) -> TpmKey:
    """Rebuild a key from :func:`encode_stored` output; INVALID_ARGUMENT if it is not ours."""
    try:
        record = cbor2.loads(bytes(stored.blob))
        if not isinstance(record, dict) or record.get("format") != _STORED_FORMAT:
            raise ValueError("not a cryptostack-tpm2 key record")
        if record.get("v") != _STORED_VERSION:
            raise ValueError(f"unknown record version {record.get('v')!r}")
        source = record["source"]
        if source not in (BLOB, EXTERNAL, PERSISTENT):
            raise ValueError(f"unknown key source {source!r}")
        key = TpmKey(
            record["algorithm"],
            source,
            bytes(record["public"]),
            private=None if record["private"] is None else bytes(record["private"]),
            handle=record["handle"],
            parent_name=bytes(record["parent"]),
            restricted=bool(record["restricted"]),
            size=int(record["size"]),
        )
    except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as exc:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"stored key is not a TPM key record: {exc}") from None
    if key.algorithm != algorithm:
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT, f"stored TPM key is {key.algorithm}, slot says {algorithm}"
        )
    if key.source == BLOB and not key.private:
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, "stored TPM key lacks its private blob")
    return key
