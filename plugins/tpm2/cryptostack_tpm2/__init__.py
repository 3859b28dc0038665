"""cryptostack provider for TPM 2.0 devices and simulators (tpm2-pytss ESAPI).

The provider class is :class:`cryptostack_tpm2.provider.TPM2Provider` (entry point ``tpm2``).
"""

from __future__ import annotations

__all__ = ["TPM2Provider"]


def __getattr__(name: str) -> object:
    # Lazy: the worker process imports submodules without pulling in the provider.
    if name == "TPM2Provider":
        from .provider import TPM2Provider

        return TPM2Provider
    raise AttributeError(name)
