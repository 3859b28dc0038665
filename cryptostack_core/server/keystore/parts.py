"""Key versions made of several provider blobs: a hybrid key split over two providers.

Such a version is one ``key_slots`` row like any other -- MACed, listed in the manifest,
versioned, retired and cleared by the same rules -- whose ``provider`` column is
:data:`SPLIT_PROVIDER` (no provider has id 0) and whose blob is always wrapped
(``secret``): a CBOR list of the parts, each with its role, its provider, its key type and
that provider's :class:`~cryptostack_core.sdk.provider.StoredKey` (key material of a
software provider, or a reference to a token object). Wrapping the whole list binds every
part to the row's metadata exactly as a one-provider blob is bound; the store takes the
references out (to destroy retired or cleared parts, and for each provider's
reconciliation at start) by unwrapping the row.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from cryptostack_core.sdk.provider import StoredKey
from cryptostack_core.server.keystore.errors import KeyStoreError

SPLIT_PROVIDER = 0
"""The ``provider`` of a version whose parts live on providers of their own."""
_FORMAT = 1
_MAX_PARTS = 8


@dataclass(frozen=True)
class StoredPart:
    """One part of a split key version as its provider persisted it."""

    role: str
    """``pq`` or ``classical`` (docs/hybrid.md)."""
    provider: int
    algorithm: str
    """The part's own key type (``ML-DSA-65``, ``ECDSA-P256`` ...)."""
    stored: StoredKey


def encode_parts(parts: list[StoredPart]) -> bytes:
    """The blob of a split version (wrapped by the store like any secret blob)."""
    return bytes(
        cbor2.dumps(
            {
                "format": _FORMAT,
                "parts": [
                    {
                        "role": p.role,
                        "provider": p.provider,
                        "algorithm": p.algorithm,
                        "secret": p.stored.secret,
                        "blob": bytes(p.stored.blob),
                    }
                    for p in parts
                ],
            }
        )
    )


def decode_parts(blob: bytes, where: str) -> list[StoredPart]:
    """The parts of a split version's unwrapped blob; KeyStoreError when it is not one
    (it authenticated, so only a bug or an unknown format gets here)."""
    try:
        data = cbor2.loads(bytes(blob))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"unknown format {data.get('format') if isinstance(data, dict) else data!r}")
        items = data["parts"]
        if not isinstance(items, list) or not 0 < len(items) <= _MAX_PARTS:
            raise ValueError("no parts")
        parts = []
        for item in items:
            role, provider, algorithm = item["role"], item["provider"], item["algorithm"]
            secret, stored = item["secret"], item["blob"]
            if not (
                isinstance(role, str)
                and isinstance(algorithm, str)
                and isinstance(provider, int)
                and not isinstance(provider, bool)
                and provider > 0
                and isinstance(secret, bool)
                and isinstance(stored, bytes)
            ):
                raise ValueError(f"malformed part {item!r:.80}")
            parts.append(StoredPart(role, provider, algorithm, StoredKey(stored, secret)))
    except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
        raise KeyStoreError(f"{where}: not a split key version ({exc})") from None
    return parts
