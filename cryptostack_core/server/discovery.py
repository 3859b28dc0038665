"""Finding and loading providers by entry-point name (stevedore)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from stevedore.driver import DriverManager

from cryptostack_core.sdk.ids import id_advice
from cryptostack_core.sdk.provider import Provider, ProviderEnvironment, ProviderState
from cryptostack_core.server.config import ProviderConfig
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmSpec
from cryptostack_core.wire.errors import CryptoError, ErrorCode

NAMESPACE = "cryptostack.providers"
log = logging.getLogger("cryptostack.discovery")


class ProviderStartError(CryptoError):
    """A configured provider that is not ``optional`` could not start: the service does
    not start either (the daemon exits with status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.PROVIDER_UNAVAILABLE, message)


def available_provider_names() -> list[str]:
    """Entry-point names installed in ``cryptostack.providers`` (nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=NAMESPACE)})


@dataclass
class LoadedProvider:
    """A configured provider and, when it loaded, its instance."""

    config: ProviderConfig
    instance: Provider | None
    load_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    algorithms: tuple[str, ...] = ()
    """Canonical names of the algorithms this provider registered (it brought them)."""

    @property
    def id(self) -> int:
        """The provider id from the config."""
        return self.config.id

    @property
    def name(self) -> str:
        """The entry-point name."""
        return self.config.name

    def state(self) -> tuple[ProviderState, str]:
        """Health now; a provider that failed to load is UNAVAILABLE with the reason."""
        if self.instance is None:
            return ProviderState.UNAVAILABLE, self.load_error
        try:
            return self.instance.state()
        except Exception as exc:  # a provider's health probe must not take the daemon down
            return ProviderState.UNAVAILABLE, f"health check failed: {exc}"

    def describe(self) -> dict[str, Any]:
        """Facts for ``status``."""
        state, reason = self.state()
        info: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": state.value,
            "reason": reason,
            "optional": self.config.optional,
        }
        if self.instance is not None:
            try:
                info.update(self.instance.describe())
            except Exception as exc:
                info["describe_error"] = str(exc)
        return info


def provider_class(name: str) -> type[Provider]:
    """The class behind entry point ``name`` (imports the plugin, instantiates nothing)."""
    mgr: DriverManager[Any] = DriverManager(
        NAMESPACE, name, invoke_on_load=False, on_load_failure_callback=_reraise
    )
    cls = mgr.driver
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"entry point {name!r} is not a Provider class")
    return cls


def missing_provider_reason(name: str) -> str:
    """Why ``name`` cannot be loaded when no such entry point is installed."""
    return (
        f"no provider named {name!r} is installed (entry point group {NAMESPACE}); "
        f"installed: {', '.join(available_provider_names()) or 'none'}"
    )


def refusal_of_test_provider(config: ProviderConfig) -> str:
    """Why a test provider is refused in a config without ``allow_test_providers``."""
    return (
        f"{config.name} is a test provider (not for production: its keys and behaviour "
        "are for tests); set [daemon] allow_test_providers = true to serve it anyway"
    )


def register_algorithms(provider_class: type[Provider]) -> list[str]:
    """Register the algorithms a provider class brings; their canonical names.

    Raises ValueError (nothing registered) when a name or alias already means something else.
    """
    specs = list(provider_class.algorithms())
    for spec in specs:
        if not isinstance(spec, AlgorithmSpec):
            raise TypeError(
                f"{provider_class.__name__}.algorithms() must yield AlgorithmSpec, got {type(spec).__name__}"
            )
        existing = REGISTRY.find(spec.name)
        if existing is not None and existing != spec:
            raise ValueError(
                f"{provider_class.__name__} registers algorithm {spec.name!r}, "
                f"which already means {existing.name} with other facts"
            )
    for spec in specs:
        REGISTRY.register(spec)
    return [spec.name for spec in specs]


def load_provider(
    config: ProviderConfig, state_root: Path, config_dir: Path, *, allow_test_providers: bool = False
) -> LoadedProvider:
    """Register its algorithms, instantiate and start one provider; any failure is captured,
    never raised.

    A ``test_only`` provider is refused (captured as its load error) unless
    ``allow_test_providers``.
    """
    state_dir = state_root / f"{config.name}-{config.id}"
    env = ProviderEnvironment(
        state_dir=state_dir,
        config_dir=config_dir,
        logger=logging.getLogger(f"cryptostack.provider.{config.name}"),
    )
    advice = id_advice(config.name, config.id)
    if advice:
        log.warning("%s", advice)
    registered: list[str] = []
    try:
        cls = provider_class(config.name)
        if cls.test_only and not allow_test_providers:
            return _failed(config, refusal_of_test_provider(config), registered)
        # Algorithms first: even a provider that cannot start makes its names known, so a
        # key slot naming one is reported as "provider unavailable", not "unknown algorithm".
        registered = register_algorithms(cls)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        instance = cls(config.id, config.options, env)
        if not isinstance(instance, Provider):
            raise TypeError(f"entry point {config.name!r} did not produce a Provider")
        instance.start()
    except CryptoError as exc:
        return _failed(config, exc.message or exc.code.value, registered)
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin import must not kill us
        if isinstance(exc, KeyboardInterrupt):
            raise
        reason = str(exc) or type(exc).__name__
        if "No 'cryptostack.providers' driver found" in reason or "No ''" in reason:
            reason = missing_provider_reason(config.name)
        return _failed(config, reason, registered)
    if cls.test_only:
        log.warning(
            "provider %s (id %d) is a TEST provider, served because "
            "allow_test_providers = true: never use it in production",
            config.name,
            config.id,
        )
    log.info("provider %s (id %d) ready", config.name, config.id)
    return LoadedProvider(config, instance, algorithms=tuple(registered))


def _failed(config: ProviderConfig, reason: str, registered: list[str]) -> LoadedProvider:
    log.error("provider %s (id %d) unavailable: %s", config.name, config.id, reason)
    return LoadedProvider(config, None, reason, algorithms=tuple(registered))


def _reraise(_manager: object, _entrypoint: object, exc: BaseException) -> None:
    raise exc
