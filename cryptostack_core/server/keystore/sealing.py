"""The key store's working keys, derived from the KEK and the store's random id.

Two keys come from the KEK with HKDF-SHA-256 (salt: the store id): a wrapping key
(AES-256-GCM over secret material, the row's metadata as associated data) and a MAC key
(HMAC-SHA-256 over every row, the manifest and the KEK check value). The derivation and the
wrapping format are unchanged since schema 2, so upgrading a store re-seals its rows'
MACs but never re-wraps material.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEK_SIZE = 32
ROW_LABEL = "cryptostack-keystore/3"
MANIFEST_LABEL = "cryptostack-manifest/3"
WRAP_NONCE = 12


def encode(*values: Any) -> bytes:
    """Canonical CBOR of ``values``: what every MAC and associated data is computed over
    (the same bytes whichever database returned the values)."""
    return cbor2.dumps(list(values), canonical=True)


class StoreKeys:
    """The wrapping and MAC keys of one store."""

    def __init__(self, kek: bytes, store_id: bytes) -> None:
        if len(kek) != KEK_SIZE:
            raise ValueError("KEK must be 32 bytes")

        def derive(purpose: bytes) -> bytes:
            return HKDF(hashes.SHA256(), 32, store_id, b"cryptostack key store v2 " + purpose).derive(kek)

        self._wrap = AESGCM(derive(b"wrap"))
        self._mac_key = derive(b"mac")
        self.store_id = store_id

    def mac(self, kind: str, row: tuple[Any, ...], label: str = ROW_LABEL) -> bytes:
        """HMAC of one row's columns (in table order, without the mac column)."""
        return hmac.new(self._mac_key, encode(label, kind, self.store_id, *row), hashlib.sha256).digest()

    def check(self, kind: str, row: tuple[Any, ...], mac: bytes, label: str = ROW_LABEL) -> bool:
        """Whether ``mac`` is the row's MAC."""
        return hmac.compare_digest(self.mac(kind, row, label), mac)

    def _aad(self, meta: tuple[Any, ...]) -> bytes:
        # A key row's metadata without blob, times and state: what the material may be used as.
        return encode("cryptostack-slot/2", self.store_id, *meta[:8])

    def wrap(self, meta: tuple[Any, ...], material: bytes, nonce: bytes) -> bytes:
        """Secret material sealed to its row's metadata (``nonce`` is 12 fresh bytes)."""
        return nonce + self._wrap.encrypt(nonce, material, self._aad(meta))

    def unwrap(self, meta: tuple[Any, ...], blob: bytes) -> bytes:
        """The material of :meth:`wrap`; raises ``cryptography``'s InvalidTag if the blob or
        its metadata was changed."""
        return self._wrap.decrypt(blob[:WRAP_NONCE], blob[WRAP_NONCE:], self._aad(meta))

    def kek_check(self) -> str:
        """The value that ties the KEK to this store."""
        return hmac.new(self._mac_key, b"kek-check" + self.store_id, hashlib.sha256).hexdigest()

    def manifest_mac(self, generation: int, text: str, label: str = MANIFEST_LABEL) -> str:
        """MAC of the manifest text at ``generation``."""
        return hmac.new(
            self._mac_key, encode(label, self.store_id, generation, text), hashlib.sha256
        ).hexdigest()
