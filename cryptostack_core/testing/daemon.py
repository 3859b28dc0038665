"""Run a real daemon subprocess for tests (and the demo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptostack_core.client.stack import CryptoStack, CryptoStackConfig, create_crypto_stack
from cryptostack_core.sdk import CryptoError


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Path):
        return _toml_value(str(value))
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: Mapping[str, Any]) -> str:
    """Serialise a config mapping of the daemon's shape as TOML."""
    lines: list[str] = []
    daemon = config.get("daemon", {})
    if daemon:
        lines.append("[daemon]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in daemon.items()]
        lines.append("")
    for section in ("providers", "key_slots", "cert_slots", "trust_stores"):
        for entry in config.get(section, []):
            lines.append(f"[[{section}]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
            lines.append("")
    return "\n".join(lines)


class DaemonProcess:
    """``python -m cryptostack_core daemon`` on a private socket and key store.

    ``config`` mirrors the TOML file; ``[daemon] socket`` and ``keystore`` default to files
    in ``directory``, and ``allow_root`` to true when the tests run as root (a test
    daemon runs as whoever runs the tests; set it to false to test the refusal). Test
    providers are not allowed by default: a config that uses the mock says
    ``allow_test_providers = true``. Use as a context manager; ``kill()``/``start()``
    restart it on the same state.
    """

    def __init__(
        self,
        directory: Path,
        config: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        daemon = dict(config.get("daemon", {}))
        daemon.setdefault("socket", str(self.directory / "daemon.sock"))
        daemon.setdefault("keystore", str(self.directory / "keystore.sqlite3"))
        if os.geteuid() == 0:
            daemon.setdefault("allow_root", True)
        self.config = {**config, "daemon": daemon}
        self.socket_path = Path(daemon["socket"])
        self.config_path = self.directory / "daemon.toml"
        self.config_path.write_text(to_toml(self.config), encoding="utf-8")
        self.log_path = self.directory / "daemon.log"
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``unix://`` endpoint of the socket."""
        return f"unix://{self.socket_path}"

    def start(self) -> DaemonProcess:
        """Start and wait until the socket answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cryptostack_core",
                "daemon",
                "--config",
                str(self.config_path),
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log_text()}")
            if self.socket_path.exists():
                try:
                    with self.stack(timeout=2):
                        return self
                except CryptoError:
                    pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"daemon did not become ready:\n{self.log_text()}")

    def stack(self, timeout: float | None = 10.0) -> CryptoStack:
        """A connected :class:`~cryptostack_core.CryptoStack`."""
        return create_crypto_stack(
            CryptoStackConfig().set_connection_endpoint(self.endpoint).set_default_operation_timeout(timeout)
        )

    def log_text(self) -> str:
        """What the daemon wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL (crash simulation)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
