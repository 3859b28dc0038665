"""The cryptostack conformance kit against this provider: the provider contract through the
SDK and over a real daemon, and every vector file and known-answer set for its claims
(``pytest --cryptostack-provider openssl`` runs the same). Its profile -- id, backend, policy --
is ``cryptostack_openssl.conformance``."""

from cryptostack_core.testing.conformance import ConformanceSuite


class TestOpenSSLConformance(ConformanceSuite):
    provider = "openssl"
