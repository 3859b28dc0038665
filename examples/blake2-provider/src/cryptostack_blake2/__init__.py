"""An example third-party cryptostack provider: BLAKE2b-512 and keyed BLAKE2b-512 (RFC 7693)
over :mod:`hashlib`. ``docs/provider-guide.md`` of cryptostack walks through it."""

from cryptostack_blake2.provider import BLAKE2B_512, BLAKE2B_512_MAC, Blake2Provider

__all__ = ["BLAKE2B_512", "BLAKE2B_512_MAC", "Blake2Provider"]
