"""cryptostack provider for PKCS#11 tokens (HSMs, SoftHSM2), run in a supervised worker
process. See :mod:`cryptostack_pkcs11.provider` and the README."""

from __future__ import annotations

from .provider import PKCS11Provider

__all__ = ["PKCS11Provider"]
