"""The cryptostack conformance kit against this provider: the provider contract through the
SDK and over a real daemon, and every vector file and known-answer set for its claims
(``pytest --cryptostack-provider oqs`` runs the same). Its profile -- id, backend, policy --
is ``cryptostack_oqs.conformance``."""

import pytest
from cryptostack_oqs import library

from cryptostack_core.testing.conformance import ConformanceSuite

if library.locate() is None:  # the one allowed skip (see conftest.py)
    pytest.skip("liboqs not found (set OQS_INSTALL_PATH to a liboqs 0.16 install)", allow_module_level=True)


@pytest.mark.liboqs
class TestOqsConformance(ConformanceSuite):
    provider = "oqs"
