"""Finding the native liboqs library and importing liboqs-python without surprises.

liboqs-python loads liboqs when ``oqs`` is imported. Its loader tries, in order,
``ctypes.util.find_library("liboqs")``, ``find_library("oqs")``, then
``$OQS_INSTALL_PATH/lib/liboqs.so`` and ``.../lib64/liboqs.so`` (``~/_oqs`` when the variable
is unset). If none loads it prints a countdown, sleeps five seconds, runs ``git clone`` and
a cmake build, and raises :class:`SystemExit` when that fails -- inside a daemon that is a
hang followed by an exit. It also prints a line to stdout on every import.

So this module looks first: it predicts exactly which file liboqs-python would load (same
candidates, same order, each opened with ``ctypes`` as liboqs-python does) and imports
``oqs`` only when one of them loads. A library found elsewhere (an ``LD_LIBRARY_PATH``
directory or a standard prefix missing from the linker cache) is handed to liboqs-python
through ``OQS_INSTALL_PATH`` when its directory layout allows it. The import runs with
stdout captured and ``SystemExit`` caught, and the loaded liboqs must be the 0.16 series
that liboqs-python 0.16 was written against (its structures are read by layout).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from cryptostack_core.sdk import CryptoError, ErrorCode

REQUIRED_SERIES = (0, 16)
"""liboqs major.minor that liboqs-python 0.16 reads by structure layout."""

INSTALL_HINT = (
    "install liboqs 0.16 as a shared library -- e.g. `git clone --branch 0.16.0 "
    "https://github.com/open-quantum-safe/liboqs && cmake -S liboqs -B build "
    "-DBUILD_SHARED_LIBS=ON -DCMAKE_INSTALL_PREFIX=/opt/liboqs && cmake --build build "
    "--target install` -- then set OQS_INSTALL_PATH=/opt/liboqs in the daemon's environment "
    "(or the provider option install_path)"
)

# Prefixes searched after liboqs-python's own candidates (lib dirs under each).
_STANDARD_PREFIXES = ("/usr/local", "/usr")
_LIB_DIRS = ("lib", "lib64")


@dataclass(frozen=True)
class Located:
    """Where liboqs was found and how liboqs-python will be told about it."""

    path: str
    """What liboqs-python will open (a file path or a soname resolved by the loader)."""
    install_path: str | None
    """Value to put in OQS_INSTALL_PATH before importing (None: leave the environment)."""


def _loads(candidate: str) -> bool:
    try:
        ctypes.CDLL(candidate)
    except OSError:
        return False
    return True


def _liboqs_python_candidates(install_path: str | None) -> list[str]:
    """The files liboqs-python's ``_load_liboqs`` tries, in its order."""
    candidates: list[str] = []
    for name in ("liboqs", "oqs"):  # it inserts "oqs" at 0, then "liboqs" at 0
        try:
            found = ctypes.util.find_library(name)
        except Exception:  # find_library shells out; any failure means "no"
            found = None
        if found:
            candidates.append(found)
    if install_path is not None:
        root = Path(install_path)
    else:
        try:
            root = Path.home() / "_oqs"
        except RuntimeError:  # no home directory: liboqs-python would fail the same way
            return candidates
    candidates += [str(root / "lib" / "liboqs.so"), str(root / "lib64" / "liboqs.so")]
    return candidates


def _other_locations() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    dirs += [Path(prefix) / sub for prefix in _STANDARD_PREFIXES for sub in _LIB_DIRS]
    return [d / "liboqs.so" for d in dirs]


def locate(install_path: str | None = None, *, system_search: bool = True) -> Located | None:
    """Find a loadable liboqs without importing liboqs-python; None when there is none.

    ``install_path`` overrides ``OQS_INSTALL_PATH``. With ``system_search`` False only
    ``install_path`` (or the variable) is searched, which makes "this exact install" testable
    on machines that also have a system-wide liboqs.
    """
    env_path = os.environ.get("OQS_INSTALL_PATH")
    root = install_path if install_path is not None else env_path
    if not system_search:
        if root is None:
            return None
        for sub in ("lib", "lib64"):
            in_root = Path(root) / sub / "liboqs.so"
            if in_root.exists() and _loads(str(in_root)):
                return Located(str(in_root), root if root != env_path else None)
        return None
    for candidate in _liboqs_python_candidates(root):
        if _loads(candidate):
            return Located(candidate, root if root != env_path else None)
    # Loadable, but somewhere liboqs-python does not look: tell it through OQS_INSTALL_PATH,
    # which it reads as <prefix>/lib/liboqs.so or <prefix>/lib64/liboqs.so.
    for candidate_path in _other_locations():
        if (
            candidate_path.parent.name in ("lib", "lib64")
            and candidate_path.exists()
            and _loads(str(candidate_path))
        ):
            return Located(str(candidate_path), str(candidate_path.parent.parent))
    return None


def _unavailable(reason: str) -> CryptoError:
    return CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"{reason}; {INSTALL_HINT}")


def import_oqs(
    install_path: str | None = None, *, system_search: bool = True, logger: logging.Logger | None = None
) -> ModuleType:
    """Import liboqs-python once liboqs is known to load; PROVIDER_UNAVAILABLE otherwise.

    Never lets liboqs-python start its download-and-build fallback, keeps its banner off
    stdout, and refuses a liboqs outside the 0.16 series.
    """
    log = logger or logging.getLogger("cryptostack.provider.oqs")
    already = sys.modules.get("oqs")
    if already is not None and hasattr(already, "oqs_version"):
        return _check_version(already)
    where = install_path if install_path is not None else os.environ.get("OQS_INSTALL_PATH")
    located = locate(install_path, system_search=system_search)
    if located is None:
        searched = f"OQS_INSTALL_PATH={where}" if where is not None else "OQS_INSTALL_PATH is not set"
        stray = (
            [str(p) for p in _other_locations() if p.parent.name not in ("lib", "lib64") and p.exists()]
            if system_search
            else []
        )
        found_elsewhere = (
            (
                f"; {', '.join(stray)} exists, but liboqs-python only opens "
                "<prefix>/lib/liboqs.so or <prefix>/lib64/liboqs.so"
            )
            if stray
            else ""
        )
        raise _unavailable(
            f"the native liboqs library was not found ({searched}; also "
            "searched the linker cache, LD_LIBRARY_PATH and "
            f"{', '.join(_STANDARD_PREFIXES)}{found_elsewhere})"
            if system_search
            else f"the native liboqs library was not found under {where}"
        )
    if located.install_path is not None:
        os.environ["OQS_INSTALL_PATH"] = located.install_path
    banner = io.StringIO()
    try:
        with contextlib.redirect_stdout(banner), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import oqs  # deferred on purpose, see the module docstring
    except (Exception, SystemExit) as exc:  # SystemExit: liboqs-python's failed self-install
        sys.modules.pop("oqs", None)
        sys.modules.pop("oqs.oqs", None)
        raise _unavailable(
            f"importing liboqs-python failed with {located.path}: {type(exc).__name__}: {exc}"
        ) from None
    _quiet_banner_handler()
    text = banner.getvalue().strip()
    if text:
        log.debug("liboqs-python said: %s", text)
    for warning in caught:
        log.warning("liboqs-python: %s", warning.message)
    return _check_version(oqs)


def _quiet_banner_handler() -> None:
    # liboqs-python attaches a StreamHandler bound to the stdout of import time (our capture
    # buffer); detach it so its later messages go through normal logging propagation only.
    oqs_logger = logging.getLogger("oqs.oqs")
    for handler in list(oqs_logger.handlers):
        if isinstance(handler, logging.StreamHandler) and isinstance(
            getattr(handler, "stream", None), io.StringIO
        ):
            oqs_logger.removeHandler(handler)


def _check_version(oqs: ModuleType) -> ModuleType:
    version = str(oqs.oqs_version())
    parts = version.split(".")
    try:
        series = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        series = (-1, -1)
    if series != REQUIRED_SERIES:
        raise _unavailable(
            f"liboqs {version} was loaded from {loaded_path(oqs)}, but "
            f"liboqs-python 0.16 needs the {REQUIRED_SERIES[0]}."
            f"{REQUIRED_SERIES[1]} series"
        )
    return oqs


def loaded_path(oqs: ModuleType) -> str:
    """The file (or soname) of the liboqs that liboqs-python opened."""
    return str(getattr(oqs.native(), "_name", "?"))
