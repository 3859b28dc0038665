"""cryptostack provider on pyca/cryptography (OpenSSL): see :mod:`cryptostack_openssl.provider`."""

from .provider import OpenSSLProvider

__all__ = ["OpenSSLProvider"]
