"""A private PostgreSQL cluster for tests and benchmarks, started like swtpm and SoftHSM2.

:class:`PostgresCluster` runs Debian's server binaries (``make setup`` installs the
``postgresql`` package) on a temporary directory: ``initdb`` with trust authentication for
one role, the server listening on a unix socket in that directory only (no TCP port, so
parallel test workers never collide), as an unprivileged user when the caller is root (the
server refuses to run as root): ``postgres`` if it exists, else a throw-away system user.
:meth:`~PostgresCluster.database` creates one database per test; :meth:`~PostgresCluster.kill`
SIGKILLs every server process at once (a crash, recovered at the next start);
:meth:`~PostgresCluster.close` stops it and removes the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["PostgresCluster", "server_binaries"]

ROLE = "cryptostack"
PORT = 5432  # names the socket file only: the server listens on no TCP port


def server_binaries() -> Path:
    """The directory of ``initdb`` and ``postgres``; RuntimeError (never a skip) without
    them."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError(
        "the PostgreSQL server is not installed (apt-get install postgresql; `make setup` does it)"
    )


def _server_user() -> tuple[int, int, str | None]:
    """(uid, gid, name of a user made here) to run the server as."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid(), None
    try:
        entry = pwd.getpwnam("postgres")
        return entry.pw_uid, entry.pw_gid, None
    except KeyError:
        pass
    name = f"cspg-{os.getpid()}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid, name


class PostgresCluster:
    """One private cluster; ``durable=False`` turns fsync off (tests: a killed server keeps
    what it committed, since the kernel still has it; only a machine crash would lose it)."""

    def __init__(self, base: Path | None = None, *, durable: bool = False) -> None:
        self.bin = server_binaries()
        self.uid, self.gid, self._made_user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="cs-pg-", dir=base))
        os.chown(self.dir, self.uid, self.gid)
        os.chmod(self.dir, 0o700)
        self.data = self.dir / "data"
        self.socket_dir = self.dir
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                ROLE,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        self.start()

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(
            argv,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            cwd=self.dir,
            env=self._env(),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
            )

    @staticmethod
    def _env() -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"}

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (after :meth:`kill` too: it recovers) and wait until it takes
        connections."""
        settings = [
            "-c",
            "listen_addresses=",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "max_connections=100",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "log_min_messages=warning",
        ]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        os.chown(self.log, self.uid, self.gid)
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(PORT), *settings],
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            cwd=self.dir,
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode}: "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            if self._accepts():
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not start: {self.log.read_text(errors='replace')}")

    def _accepts(self) -> bool:
        if not (self.socket_dir / f".s.PGSQL.{PORT}").exists():
            return False
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def url(self, database: str) -> str:
        """Connection URL of ``database`` (unix socket, role ``cryptostack``)."""
        return f"postgresql://{ROLE}@/{database}?host={self.socket_dir}&port={PORT}"

    def database(self, name: str | None = None) -> str:
        """Create a fresh database; returns its URL."""
        import psycopg

        name = name or f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, database_url: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run one statement in a database (for tests that tamper or inspect)."""
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def kill(self) -> None:
        """SIGKILL every server process (a crash: the next :meth:`start` recovers)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
        # the backends are in the same session; wait until none is left
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _session_alive(self.data):
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def close(self) -> None:
        """Stop and remove everything."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._made_user is not None:
            subprocess.run(["userdel", self._made_user], capture_output=True, check=False)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _session_alive(data: Path) -> bool:
    """Whether a process still has the data directory as its working directory or open."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") == str(data):
                return True
        except OSError:
            continue
    return False
