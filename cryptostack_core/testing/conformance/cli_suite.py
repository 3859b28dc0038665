"""The suite ``pytest --cryptostack-provider NAME`` runs (the plugin adds this file)."""

from cryptostack_core.testing.conformance.suite import ConformanceSuite


class TestConformance(ConformanceSuite):
    """The provider named by ``--cryptostack-provider``."""
