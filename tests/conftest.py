"""Fixtures for the core suite: the mock provider in-process and in a real daemon."""

from __future__ import annotations

import copy
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.plugin import DaemonFactory

TEST_DAEMON: dict[str, Any] = {"allow_test_providers": True}
"""The core suite runs on the mock provider, which a config must allow explicitly."""

BASE_CONFIG: dict[str, Any] = {
    "daemon": TEST_DAEMON,
    "providers": [{"name": "mock", "id": 1}],
    "key_slots": [
        {
            "name": "PreDeployedSlot",
            "algorithm": "AES-256",
            "provider": 1,
            "compatible_providers": [1],
            "permissions": ["encrypt", "decrypt"],
            "provision": "generate",
        },
        {
            "name": "MyNewSlot",
            "algorithm": "AES-256",
            "provider": 1,
            "permissions": ["encrypt", "decrypt"],
        },
        {
            "name": "SigningKey",
            "algorithm": "HMAC-SHA-256",
            "provider": 1,
            "permissions": ["sign", "verify", "mac"],
            "provision": "generate",
        },
        {"name": "EmptySlot", "algorithm": "Ed25519", "provider": 1},
    ],
}


def mock_config(**daemon: Any) -> dict[str, Any]:
    """A fresh copy of the base config, with extra ``[daemon]`` settings."""
    config = copy.deepcopy(BASE_CONFIG)
    config["daemon"].update(daemon)
    return config


@pytest.fixture(name="mock_config")
def mock_config_fixture() -> Callable[..., dict[str, Any]]:
    """The :func:`mock_config` factory, for tests (conftest is not importable as a module)."""
    return mock_config


@pytest.fixture
def inproc_stack() -> Iterator[cs.CryptoStack]:
    """An in-process stack on the mock provider."""
    stack = cs.create_crypto_stack(
        cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(mock_config())
    )
    yield stack
    stack.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start real daemon subprocesses (default: the base config); all are stopped at the end
    of the test (the testing plugin's factory)."""
    factory = DaemonFactory(tmp_path, mock_config())
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> DaemonProcess:
    """One daemon on the base config."""
    return daemon_factory(name="d")


@pytest.fixture(params=["inproc", "unix"])
def any_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[cs.CryptoStack]:
    """The same tests over ``inproc://`` and over a real daemon socket."""
    if request.param == "inproc":
        stack = cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(mock_config())
        )
        yield stack
        stack.close()
        return
    with DaemonProcess(tmp_path / "d", mock_config()) as proc, proc.stack() as stack:
        yield stack


# --- other uids: the trust-boundary tests run clients as unprivileged users -------------------
@dataclass(frozen=True)
class CodeForOthers:
    """Where another uid finds this environment's packages, ``cryptostack_core`` and the
    test helpers (``secutil``): this checkout itself when every uid can read it, else a
    hard-linked copy in a directory they can (a clone under ``mktemp -d`` is 0700)."""

    site: str
    path: str


@dataclass(frozen=True)
class OtherUser:
    """A throw-away unprivileged account created for the test session."""

    name: str
    uid: int
    gid: int
    code: CodeForOthers

    def run(self, code: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code args...`` as this user, with this environment's packages and
        ``secutil`` importable; never raises for a non-zero exit status."""
        return subprocess.run(
            self._command(code, args),
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env=self._env(),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, code: str, *args: str) -> subprocess.Popen[str]:
        """Start ``python -c code args...`` as this user with pipes for stdin and stdout (for
        scripts that report, then wait for the test before they let go)."""
        return subprocess.Popen(
            self._command(code, args),
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env=self._env(),
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _command(self, code: str, args: tuple[str, ...]) -> list[str]:
        preamble = f"import site; site.addsitedir({self.code.site!r})\n"
        return [_interpreter_for_others(), "-c", preamble + code, *args]

    def _env(self) -> dict[str, str]:
        return {**_ENV, "PYTHONPATH": self.code.path}


TESTS_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = Path(cs.__file__).resolve().parent
_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/",
    "PYTHONDONTWRITEBYTECODE": "1",
    "LANG": "C.UTF-8",
}


def _others_can_read(path: Path) -> bool:
    """Whether any uid may reach ``path`` (every directory on the way is o+x) and read it."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in path.parents) and bool(
        os.stat(path).st_mode & stat.S_IROTH
    )


def _link_tree(source: Path, target: Path) -> None:
    """A copy of ``source`` whose files are hard links (the same inodes, readable by their
    own modes); copied where linking is not possible (another file system)."""
    shutil.copytree(source, target, copy_function=_link_or_copy, symlinks=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@contextmanager
def _code_for_others() -> Iterator[CodeForOthers]:
    site_dir = Path(sysconfig.get_paths()["purelib"])
    needed = (site_dir, TESTS_DIR, PACKAGE_DIR)
    if all(_others_can_read(p) for p in needed):
        yield CodeForOthers(str(site_dir), str(TESTS_DIR))
        return
    stage = Path(tempfile.mkdtemp(prefix="cs-others-"))
    try:
        os.chmod(stage, 0o755)
        _link_tree(site_dir, stage / "site")
        _link_tree(TESTS_DIR, stage / "tests")
        _link_tree(PACKAGE_DIR, stage / "src" / PACKAGE_DIR.name)
        # The package comes from src (ahead of the editable install's finder, which points
        # into the unreadable checkout), the test helpers from tests.
        yield CodeForOthers(str(stage / "site"), f"{stage / 'src'}:{stage / 'tests'}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _interpreter_for_others() -> str:
    """This Python if every uid may run it; else the system's build of the same version
    (a venv made from an interpreter under /root is out of other users' reach)."""
    real = Path(os.path.realpath(sys.executable))
    if all(os.stat(p).st_mode & stat.S_IXOTH for p in [real, *real.parents]):
        return str(real)
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        pytest.skip(f"no interpreter other users may run ({real} is private)")
    return str(system)


_USER_PREFIX = "cstest-"


def _remove_stale_users() -> None:
    # Users left behind by a killed run (their creating process is gone).
    for entry in pwd.getpwall():
        parts = entry.pw_name.split("-")
        if entry.pw_name.startswith(_USER_PREFIX) and len(parts) == 3 and parts[1].isdigit():
            try:
                os.kill(int(parts[1]), 0)
            except ProcessLookupError:
                subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)
            except PermissionError:
                pass


@pytest.fixture(scope="session")
def other_users() -> Iterator[tuple[OtherUser, OtherUser]]:
    """Two unprivileged accounts (created with useradd, removed at the end of the session)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating test users needs root and useradd")
    _remove_stale_users()
    made: list[OtherUser] = []
    with ExitStack() as cleanup:
        code = cleanup.enter_context(_code_for_others())
        cleanup.callback(_remove_users, made)
        for suffix in ("a", "b"):
            name = f"{_USER_PREFIX}{os.getpid()}-{suffix}"
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--user-group",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(name)
            made.append(OtherUser(name, entry.pw_uid, entry.pw_gid, code))
        yield made[0], made[1]


def _remove_users(users: list[OtherUser]) -> None:
    for user in users:
        subprocess.run(["userdel", user.name], capture_output=True, check=False)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every uid can traverse (0711), for sockets other users connect to."""
    path = Path(tempfile.mkdtemp(prefix="cs-sec-"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- PostgreSQL: one private cluster per test session (per xdist worker) ----------------------
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A private PostgreSQL cluster (unix socket only, unprivileged server user); removed at
    the end of the session. Fails -- never skips -- when the server is not installed."""
    from cryptostack_core.testing.postgres import PostgresCluster

    cluster = PostgresCluster()
    yield cluster
    cluster.close()


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """A fresh database in the session's cluster."""
    url: str = pg_cluster.database()
    return url
