"""Make a provider class loadable by entry-point name without installing a distribution.

The daemon finds providers through the ``cryptostack.providers`` entry points of installed
distributions. A test (or a provider author trying a class before packaging it) can write a
minimal ``*.dist-info`` directory naming the class into a directory of its own and put that
directory on the path of whatever loads providers: :func:`provider_path` does the first,
:func:`provider_environment` gives the ``PYTHONPATH`` for a daemon subprocess, and
:func:`on_sys_path` does it for the current process::

    path = provider_path(tmp_path / "eps", {"toy": "toy_provider:ToyProvider"},
                         modules=[Path("tests/toy_provider.py")])
    with on_sys_path(path):
        ...  # inproc:// stacks load "toy"
    DaemonProcess(tmp_path / "d", config, env=provider_environment(path))
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from stevedore.extension import ExtensionManager

__all__ = ["on_sys_path", "provider_environment", "provider_path"]

GROUP = "cryptostack.providers"
PROFILES = "cryptostack.conformance"


def provider_path(
    directory: Path,
    providers: Mapping[str, str],
    modules: Iterable[Path] = (),
    distribution: str = "cryptostack-test-providers",
    profiles: Mapping[str, str] | None = None,
) -> Path:
    """Write a distribution's metadata registering ``providers`` (``{name: "module:Class"}``)
    and conformance ``profiles`` (``{name: "module:function"}``) into ``directory``, with
    copies of ``modules`` (single-file modules) beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9.]+", "_", distribution)
    info = directory / f"{safe}-0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0\n", encoding="utf-8"
    )
    lines = [f"[{GROUP}]"] + [f"{name} = {target}" for name, target in providers.items()]
    if profiles:
        lines += ["", f"[{PROFILES}]"] + [f"{name} = {target}" for name, target in profiles.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for module in modules:
        shutil.copy(module, directory / module.name)
    return directory


def provider_environment(path: Path) -> dict[str, str]:
    """``PYTHONPATH`` for a subprocess (a daemon) that must find the providers at ``path``."""
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(path), existing) if p)}


def _forget_entry_points() -> None:
    # stevedore keeps each namespace's entry points for the life of the process.
    importlib.invalidate_caches()
    ExtensionManager.ENTRY_POINT_CACHE.pop(GROUP, None)


@contextlib.contextmanager
def on_sys_path(path: Path) -> Iterator[None]:
    """The providers at ``path`` are loadable in this process while the block runs."""
    sys.path.insert(0, str(path))
    _forget_entry_points()
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path))
        _forget_entry_points()
