"""Provider instances for provider tests: started by entry-point name, closed together.

What every plugin's tests did with a ``make_provider`` fixture of their own::

    factory = ProviderFactory(tmp_path)
    provider = factory("openssl", min_mac_length=24)   # started; files under tmp_path
    ...
    factory.close_all()

The ``cryptostack`` pytest plugin offers it as the fixture ``cryptostack_provider_factory``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from cryptostack_core.sdk import Provider, ProviderEnvironment
from cryptostack_core.sdk.ids import THIRD_PARTY, WELL_KNOWN
from cryptostack_core.server.discovery import register_algorithms
from cryptostack_core.testing.conformance.target import load_provider_class

__all__ = ["ProviderFactory", "start_provider"]


def start_provider(name: str, directory: Path, provider_id: int | None = None, **options: Any) -> Provider:
    """The installed provider ``name`` with ``options``, started, its files under
    ``directory`` (id: its well-known one unless given). The caller closes it."""
    cls = load_provider_class(name)
    register_algorithms(cls)
    directory.mkdir(parents=True, exist_ok=True)
    pid = provider_id if provider_id is not None else WELL_KNOWN.get(name, THIRD_PARTY.start)
    provider = cls(pid, options, ProviderEnvironment(state_dir=directory, config_dir=directory))
    provider.start()
    return provider


class ProviderFactory:
    """Starts providers in subdirectories of ``directory``; :meth:`close_all` closes them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Provider] = []
        self._lock = threading.Lock()

    def __call__(
        self, name: str, provider_id: int | None = None, *, state_dir: Path | None = None, **options: Any
    ) -> Provider:
        """``start_provider(name, ...)`` in a fresh subdirectory (or ``state_dir``, to share
        a provider's state between instances), remembered for closing."""
        with self._lock:
            directory = state_dir or self.directory / f"{name}-{len(self.started)}"
        provider = start_provider(name, directory, provider_id, **options)
        with self._lock:
            self.started.append(provider)
        return provider

    def close_all(self) -> None:
        """Close every provider this factory started (the last first)."""
        with self._lock:
            started, self.started = self.started, []
        for provider in reversed(started):
            provider.close()
