"""Test support shipped with the core: the mock provider and a daemon-process fixture."""

from cryptostack_core.testing.mock import MockProvider

__all__ = ["MockProvider"]
