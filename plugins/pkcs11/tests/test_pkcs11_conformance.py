"""The cryptostack conformance kit against this provider: the provider contract through the
SDK and over a real daemon, and every vector file and known-answer set for its claims
(``pytest --cryptostack-provider pkcs11`` runs the same). Its profile -- id, backend, policy --
is ``cryptostack_pkcs11.conformance``."""

from cryptostack_core.testing.conformance import ConformanceSuite


class TestPkcs11Conformance(ConformanceSuite):
    provider = "pkcs11"
