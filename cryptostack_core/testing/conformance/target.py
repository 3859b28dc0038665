"""The provider under test: one instance through the SDK, and daemons running it.

Built from a :class:`~cryptostack_core.testing.conformance.profile.Profile`; every user gets
its own backend from the profile's setup (the SDK instance one, each daemon one). Nothing
starts before it is asked for, and :meth:`ProviderUnderTest.close` stops everything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import cryptostack_core as cs
from cryptostack_core.sdk import (
    Capability,
    CryptoError,
    KeyClass,
    KeyFormat,
    KeyOperationPermission,
    Operation,
    Provider,
    ProviderEnvironment,
    ProviderKey,
)
from cryptostack_core.server.discovery import NAMESPACE, register_algorithms
from cryptostack_core.testing.conformance.profile import Profile
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.wire.algorithms import REGISTRY

__all__ = ["ProviderUnderTest", "load_provider_class"]

KEY_OPERATIONS = (Operation.GENERATE_KEY, Operation.IMPORT_KEY)
CALL_TIMEOUT = 120.0
"""Deadline of the kit's own calls: generous, as RSA-4096 generation or SLH-DSA signing
on a loaded two-core machine can take seconds."""


def load_provider_class(name: str) -> type[Provider]:
    """The class behind entry point ``name`` of ``cryptostack.providers``."""
    for ep in entry_points(group=NAMESPACE):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Provider)):
                raise TypeError(f"entry point {NAMESPACE}:{name} is not a Provider subclass")
            return cls
    installed = sorted({ep.name for ep in entry_points(group=NAMESPACE)})
    raise LookupError(
        f"no provider {name!r} is installed (entry points {NAMESPACE}: {', '.join(installed) or 'none'})"
    )


def slot_name(algorithm: str) -> str:
    """The kit's empty key slot for keys of ``algorithm``."""
    return f"kit-{algorithm}"


class ProviderUnderTest:
    """One provider, as the kit drives it."""

    def __init__(self, profile: Profile, directory: Path | None = None) -> None:
        self.profile = profile
        self.name = profile.name
        self.provider_id = profile.provider_id
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix=f"cryptostack-kit-{profile.name}-"))
        self._exit = ExitStack()
        self._lock = threading.RLock()
        self._provider: Provider | None = None
        self._daemon: DaemonProcess | None = None
        self._saved_environment: dict[str, str | None] = {}
        self._counter = 0
        self._shared_keys: dict[str, ProviderKey] = {}
        self._shared_material: dict[str, tuple[bytes, KeyFormat] | None] = {}
        self.provider_class = load_provider_class(profile.name)
        register_algorithms(self.provider_class)

    # --- facts ------------------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[Capability]:
        """What the provider claims (through the SDK instance)."""
        return frozenset(self.provider.capabilities())

    def claims(self, algorithm: str, operation: Operation) -> bool:
        """Whether ``(algorithm, operation)`` is claimed."""
        return Capability(algorithm, operation) in self.capabilities

    @property
    def claimed_algorithms(self) -> set[str]:
        """Every algorithm named in a claim."""
        return {c.algorithm for c in self.capabilities}

    def key_algorithms(self) -> list[str]:
        """Key types the provider generates or imports, sorted."""
        return sorted(
            {
                c.algorithm
                for c in self.capabilities
                if c.operation in KEY_OPERATIONS and REGISTRY.get(c.algorithm).is_key_algorithm
            }
        )

    def is_slow(self, algorithm: str) -> bool:
        """Whether the profile calls ``algorithm`` slow."""
        return algorithm in self.profile.slow

    def subdirectory(self, label: str) -> Path:
        """A fresh directory for one user of the provider."""
        with self._lock:
            self._counter += 1
            path = self.directory / f"{self._counter:02d}-{label}"
        path.mkdir(parents=True)
        return path

    # --- the SDK instance -------------------------------------------------------------------
    @property
    def provider(self) -> Provider:
        """The started SDK instance (made on first use, closed by :meth:`close`)."""
        with self._lock:
            if self._provider is None:
                self._provider = self.start_provider(self._exit)
            return self._provider

    def start_provider(
        self, stack: ExitStack, extra_options: Mapping[str, Any] | None = None, label: str = "sdk"
    ) -> Provider:
        """A further started instance with its own backend, closed when ``stack`` closes.

        The backend's environment is put into this process's (providers read it, and their
        worker processes inherit it) and restored by :meth:`close`.
        """
        directory = self.subdirectory(label)
        backend = stack.enter_context(self.profile.setup(directory / "backend"))
        self._apply_environment(backend.environment)
        state = directory / "state"
        state.mkdir()
        options = {**backend.options, **(extra_options or {})}
        instance = self.provider_class(
            self.provider_id, options, ProviderEnvironment(state_dir=state, config_dir=directory)
        )
        instance.start()
        stack.callback(instance.close)
        return instance

    def shared_key(self, algorithm: str) -> ProviderKey:
        """One key of a slow key type, made once (by ``generate_key``) and reused by every
        check that only needs some key of that type; released by :meth:`close`."""
        with self._lock:
            key = self._shared_keys.get(algorithm)
            if key is None:
                provider = self.provider
                permissions = REGISTRY.get(algorithm).default_permissions | KeyOperationPermission.EXPORT
                key = provider.generate_key(algorithm, permissions)
                self._shared_keys[algorithm] = key
                self._exit.callback(provider.release_key, key)
            return key

    def shared_material(self, algorithm: str) -> tuple[bytes, KeyFormat] | None:
        """The shared key's private material (PKCS8_DER, RAW or SEED, whichever the provider
        writes), for importing it elsewhere instead of generating again; None when the key
        does not leave the provider."""
        with self._lock:
            if algorithm not in self._shared_material:
                key = self.shared_key(algorithm)
                found = None
                formats = (
                    (KeyFormat.RAW,)
                    if REGISTRY.get(algorithm).key_class is KeyClass.SYMMETRIC
                    else (KeyFormat.PKCS8_DER, KeyFormat.RAW, KeyFormat.SEED)
                )
                if key.extractable:
                    for fmt in formats:
                        try:
                            found = (self.provider.export_key(key, fmt), fmt)
                            break
                        except CryptoError:
                            continue
                self._shared_material[algorithm] = found
            return self._shared_material[algorithm]

    def _apply_environment(self, environment: Mapping[str, str]) -> None:
        for key, value in environment.items():
            self._saved_environment.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    # --- daemons ----------------------------------------------------------------------------
    def daemon_config(
        self, options: Mapping[str, Any], provider_name: str | None = None, slots: bool = True
    ) -> dict[str, Any]:
        """A daemon config with the provider and one empty key slot per key type it holds."""
        config: dict[str, Any] = {
            "providers": [
                {"name": provider_name or self.name, "id": self.provider_id, "options": dict(options)}
            ]
        }
        if self.provider_class.test_only or provider_name is not None:
            # The mock (and the kit's own wrappers) are test providers: allowed explicitly.
            config["daemon"] = {"allow_test_providers": True}
        if slots:
            config["key_slots"] = [
                {"name": slot_name(a), "algorithm": a, "provider": self.provider_id}
                for a in self.key_algorithms()
            ]
        return config

    @contextlib.contextmanager
    def new_daemon(
        self,
        extra_options: Mapping[str, Any] | None = None,
        label: str = "daemon",
        provider_name: str | None = None,
        environment: Mapping[str, str] | None = None,
        wrap: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        slots: bool = True,
    ) -> Iterator[DaemonProcess]:
        """A daemon of its own (own backend, key store and socket), stopped on exit.

        ``wrap`` turns the provider's options into those of ``provider_name`` (a wrapper)."""
        with ExitStack() as stack:
            directory = self.subdirectory(label)
            backend = stack.enter_context(self.profile.setup(directory / "backend"))
            options = {**backend.options, **(extra_options or {})}
            config = self.daemon_config(wrap(options) if wrap else options, provider_name, slots)
            daemon = DaemonProcess(
                directory / "daemon",
                config,
                env={**backend.environment, **(environment or {})},
                start_timeout=60.0,
            )
            daemon.start()
            stack.callback(daemon.stop)
            yield daemon

    @property
    def daemon(self) -> DaemonProcess:
        """The shared daemon (started on first use)."""
        with self._lock:
            if self._daemon is None:
                self._daemon = self._exit.enter_context(self.new_daemon(label="shared-daemon"))
            return self._daemon

    def stack(
        self, daemon: DaemonProcess | None = None, timeout: float | None = CALL_TIMEOUT
    ) -> cs.CryptoStack:
        """A new connection to ``daemon`` (default: the shared one)."""
        return (daemon or self.daemon).stack(timeout=timeout)

    # --- the end ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop daemons and backends, close the SDK instance, restore the environment."""
        with self._lock:
            try:
                self._exit.close()
            finally:
                self._provider = None
                self._daemon = None
                self._shared_keys.clear()
                self._shared_material.clear()
                for key, value in self._saved_environment.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                self._saved_environment.clear()
                if self._own_directory:
                    shutil.rmtree(self.directory, ignore_errors=True)
