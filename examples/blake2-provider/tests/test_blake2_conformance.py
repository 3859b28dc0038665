"""The cryptostack conformance kit against this provider (the same as
``pytest --cryptostack-provider blake2``)."""

from cryptostack_core.testing.conformance import ConformanceSuite


class TestBlake2Conformance(ConformanceSuite):
    provider = "blake2"
