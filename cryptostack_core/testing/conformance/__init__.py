"""The provider conformance kit.

``pytest --cryptostack-provider NAME [--cryptostack-options FILE]`` runs it against any
installed provider; a provider's own suite subclasses :class:`ConformanceSuite`. What it
checks, and how a provider tells it about its backend and policy (:class:`Profile`), is in
``docs/provider-guide.md``.
"""

from cryptostack_core.testing.conformance.faults import ConformanceError
from cryptostack_core.testing.conformance.profile import (
    GROUP,
    Backend,
    HangProbe,
    Profile,
    load_profile,
    static_setup,
)
from cryptostack_core.testing.conformance.suite import ConformanceSuite
from cryptostack_core.testing.conformance.target import ProviderUnderTest

__all__ = [
    "GROUP",
    "Backend",
    "ConformanceError",
    "ConformanceSuite",
    "HangProbe",
    "Profile",
    "ProviderUnderTest",
    "load_profile",
    "static_setup",
]
