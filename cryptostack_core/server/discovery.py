"""Finding and loading providers by entry-point name (stevedore)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from stevedore.driver import DriverManager

from cryptostack_core.sdk.provider import Provider, ProviderEnvironment, ProviderState
from cryptostack_core.server.config import ProviderConfig
from cryptostack_core.wire.errors import CryptoError

NAMESPACE = "cryptostack.providers"
log = logging.getLogger("cryptostack.discovery")


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
        info: dict[str, Any] = {"id": self.id, "name": self.name, "state": state.value,
                                "reason": reason}
        if self.instance is not None:
            try:
                info.update(self.instance.describe())
            except Exception as exc:
                info["describe_error"] = str(exc)
        return info


def load_provider(config: ProviderConfig, state_root: Path, config_dir: Path) -> LoadedProvider:
    """Instantiate and start one provider; any failure is captured, never raised."""
    state_dir = state_root / f"{config.name}-{config.id}"
    env = ProviderEnvironment(state_dir=state_dir, config_dir=config_dir,
                              logger=logging.getLogger(f"cryptostack.provider.{config.name}"))
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        mgr: DriverManager[Provider] = DriverManager(NAMESPACE, config.name, invoke_on_load=True,
                            invoke_args=(config.id, config.options, env),
                            on_load_failure_callback=_reraise)
        instance = mgr.driver
        if not isinstance(instance, Provider):
            raise TypeError(f"entry point {config.name!r} did not produce a Provider")
        instance.start()
    except CryptoError as exc:
        return _failed(config, exc.message or exc.code.value)
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin import must not kill us
        if isinstance(exc, KeyboardInterrupt):
            raise
        reason = str(exc) or type(exc).__name__
        if "No 'cryptostack.providers' driver found" in reason or "No ''" in reason:
            reason = (f"no provider named {config.name!r} is installed (entry point group "
                      f"{NAMESPACE}); installed: {', '.join(available_provider_names()) or 'none'}")
        return _failed(config, reason)
    log.info("provider %s (id %d) ready", config.name, config.id)
    return LoadedProvider(config, instance)


def _failed(config: ProviderConfig, reason: str) -> LoadedProvider:
    log.error("provider %s (id %d) unavailable: %s", config.name, config.id, reason)
    return LoadedProvider(config, None, reason)


def _reraise(_manager: object, _entrypoint: object, exc: BaseException) -> None:
    raise exc
