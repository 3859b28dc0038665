"""Many daemons, one truth (issue 16): the key store on a real PostgreSQL server.

Every test runs daemons (subprocesses) or stores against a private cluster started by the
``pg_cluster`` fixture. Scenarios: two and three daemons with concurrent clients rotating
and using one slot (every acknowledged version present on every daemon afterwards, none
lost, none duplicated); the database killed mid-rotation and restarted (cached keys keep
serving, what needs the store fails clearly, everything recovers without a restart); one
daemon SIGKILLed while persisting; propagation of changes between daemons; refusals."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.sdk import StoredKey
from cryptostack_core.server.keystore import KeyStore, KeyStoreError
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.postgres import PostgresCluster
from cryptostack_core.testing.waiting import eventually

pytestmark = pytest.mark.needs_postgresql
P = cs.KeyOperationPermission
E = cs.ErrorCode


def shared_config(url: str, kek: Path, **daemon: Any) -> dict[str, Any]:
    return {
        "daemon": {"allow_test_providers": True, "keystore": url, "kek_file": str(kek), **daemon},
        "providers": [{"name": "mock", "id": 1}],
        "key_slots": [
            {
                "name": "Shared",
                "algorithm": "AES-256",
                "provider": 1,
                "permissions": ["encrypt", "decrypt"],
                "provision": "generate",
            },
            {"name": "Cold", "algorithm": "AES-256", "provider": 1, "permissions": ["encrypt", "decrypt"]},
        ],
    }


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[..., list[DaemonProcess]]]:
    """Start n daemons on one store (one after the other); all stopped at the end."""
    started: list[DaemonProcess] = []

    def start(url: str, n: int, kek: Path | None = None, **daemon: Any) -> list[DaemonProcess]:
        kek = kek or tmp_path / "kek" / "shared.kek"
        procs = []
        for i in range(len(started), len(started) + n):
            proc = DaemonProcess(tmp_path / f"d{i}", shared_config(url, kek, **daemon))
            started.append(proc)
            procs.append(proc.start())
        return procs

    yield start
    for proc in started:
        proc.stop()


def _new_key(km: cs.KeyManagementContext) -> cs.CryptoResourceGuard:
    return km.generate_key(
        cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
    )


class Client:
    """One connection's view of the shared slot."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.stack = daemon.stack(timeout=30)
        self.ctx = self.stack.create_crypto_context()
        self.km = self.ctx.create_key_management_context()
        self.slot = self.ctx.resolve_resource("Shared", cs.ResourceType.KEY_SLOT)
        self.sealer = self.ctx.create_seal_context(cs.SealContextConfig().set_key(self.slot))

    def versions(self, name: str = "Shared") -> list[int]:
        slot = self.ctx.resolve_resource(name, cs.ResourceType.KEY_SLOT)
        return [v.version for v in self.km.get_key_slot_info(slot).versions]

    def close(self) -> None:
        self.stack.close()


@pytest.mark.parametrize("daemons", [2, 3])
def test_concurrent_rotations_on_several_daemons(pg_url: str, fleet: Any, daemons: int) -> None:
    """Every acknowledged version is on every daemon afterwards, none lost (the numbers
    are contiguous), none duplicated; messages sealed anywhere open everywhere."""
    procs = fleet(pg_url, daemons)
    rounds, per_daemon = 8, 2
    acknowledged: list[int] = []
    sealed: list[tuple[bytes, bytes]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(proc: DaemonProcess, n: int) -> None:
        client = Client(proc)
        try:
            for i in range(rounds):
                version = client.km.persist_key(client.slot, _new_key(client.km)).version
                message = f"client {n} round {i}".encode()
                box = client.sealer.seal(message)
                with lock:
                    acknowledged.append(version)
                    sealed.append((box, message))
                    other = random.choice(sealed)
                assert client.sealer.open(other[0]) == other[1]
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(proc, n)) for n, proc in enumerate(procs * per_daemon)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    total = daemons * per_daemon * rounds
    assert len(acknowledged) == total and len(set(acknowledged)) == total  # no duplicate
    for proc in procs:
        client = Client(proc)
        try:
            # version 1 was provisioned; the rest are exactly the acknowledged ones
            assert client.versions() == list(range(1, total + 2))
            assert sorted(acknowledged) == list(range(2, total + 2))
            for box, message in sealed:
                assert client.sealer.open(box) == message
        finally:
            client.close()


def test_a_change_on_one_daemon_is_seen_on_the_others(pg_url: str, fleet: Any) -> None:
    a, b = (Client(p) for p in fleet(pg_url, 2))
    try:
        old = b.sealer.seal(b"v1")  # b has version 1 cached
        version = a.km.persist_key(a.slot, _new_key(a.km)).version
        assert version == 2 and b.versions() == [1, 2]  # slot info reads through at once
        new = a.sealer.seal(b"v2")
        assert b.sealer.open(new) == b"v2"  # a version b did not know is read through
        # b's own seals move to version 2 as soon as the notification arrives
        eventually(
            lambda: b.sealer.seal(b"x")[2:6] == (2).to_bytes(4, "big"), 10, "b sealing with the new primary"
        )
        a.km.retire_key_version(a.slot, 1)

        def refused() -> bool:
            try:
                b.sealer.open(old)
            except cs.CryptoError as exc:
                return exc.code is E.KEY_VERSION_RETIRED
            return False

        eventually(refused, 10, "b refusing the version a retired")
    finally:
        a.close()
        b.close()


def test_the_database_killed_mid_rotation(tmp_path: Path, fleet: Any) -> None:
    """Cached keys keep serving while the database is gone; what needs the store fails
    with KEYSTORE_UNAVAILABLE; both daemons recover when it is back, without a restart;
    nothing acknowledged is lost."""
    cluster = PostgresCluster()
    try:
        procs = fleet(cluster.database(), 2)
        acknowledged: list[int] = []
        codes: list[E] = []
        stop = threading.Event()
        progress = threading.Semaphore(0)

        def rotate(proc: DaemonProcess) -> None:
            client = Client(proc)
            try:
                while not stop.is_set():
                    try:
                        acknowledged.append(client.km.persist_key(client.slot, _new_key(client.km)).version)
                        progress.release()
                    except cs.CryptoError as exc:
                        codes.append(exc.code)
                        time.sleep(0.05)
            finally:
                client.close()

        threads = [threading.Thread(target=rotate, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        try:
            for _ in range(6):
                assert progress.acquire(timeout=30)
            users = [Client(p) for p in procs]
            boxes = [u.sealer.seal(b"before the outage") for u in users]
            cluster.kill()
            try:
                for user, box in zip(users, boxes):
                    # what the daemon holds keeps working
                    assert user.sealer.open(box) == b"before the outage"
                    again = user.sealer.seal(b"during the outage")
                    assert user.sealer.open(again) == b"during the outage"
                    # what needs the store is refused, clearly
                    for needs_store in (
                        lambda u=user: u.km.persist_key(u.slot, _new_key(u.km)),
                        lambda u=user: u.versions("Cold"),
                    ):
                        with pytest.raises(cs.CryptoError) as err:
                            needs_store()
                        assert err.value.code is E.KEYSTORE_UNAVAILABLE, err.value
                        assert "unreachable" in err.value.message
                    store = user.stack.status()["keystore"]
                    assert store["engine"] == "postgresql" and store["available"] is False
            finally:
                cluster.start()
            # back without restarting a daemon
            for user in users:
                eventually(lambda u=user: _persists(u), 30, "persisting again after the restart")
            before = len(acknowledged)
            eventually(lambda: len(acknowledged) >= before + 4, 30, "rotations resuming")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert E.KEYSTORE_UNAVAILABLE in codes  # the rotations did meet the outage
        assert set(codes) <= {E.KEYSTORE_UNAVAILABLE}, set(codes)
        for user in users:
            present = user.versions()
            assert present == list(range(1, present[-1] + 1))  # contiguous, unique
            assert set(acknowledged) <= set(present)
            assert len(acknowledged) == len(set(acknowledged))
            user.close()
        for proc in procs:
            assert "Traceback" not in proc.log_text()
    finally:
        cluster.close()


def _persists(client: Client) -> bool:
    try:
        client.km.persist_key(client.slot, _new_key(client.km))
    except cs.CryptoError as exc:
        assert exc.code is E.KEYSTORE_UNAVAILABLE, exc
        return False
    return True


def test_a_daemon_killed_while_persisting(pg_url: str, fleet: Any) -> None:
    a, b = fleet(pg_url, 2)
    acknowledged: list[int] = []
    progress = threading.Semaphore(0)
    stop = threading.Event()

    def rotate(proc: DaemonProcess) -> None:
        client = Client(proc)
        try:
            while not stop.is_set():
                acknowledged.append(client.km.persist_key(client.slot, _new_key(client.km)).version)
                progress.release()
        except cs.CryptoError as exc:
            assert exc.code is E.CONNECTION_FAILED, exc  # its daemon was killed
        finally:
            client.close()

    threads = [threading.Thread(target=rotate, args=(p,)) for p in (a, a, b)]
    for t in threads:
        t.start()
    try:
        for _ in range(8):
            assert progress.acquire(timeout=30)
        a.kill()  # SIGKILL, mid-persist as likely as not
        for _ in range(4):  # b goes on
            assert progress.acquire(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    checker = Client(b)
    present = checker.versions()
    checker.close()
    assert set(acknowledged) <= set(present) and len(acknowledged) == len(set(acknowledged))
    assert present == list(range(1, present[-1] + 1))
    a.start()  # the store is consistent: it verifies and opens
    again = Client(a)
    assert again.versions() == present
    assert again.km.persist_key(again.slot, _new_key(again.km)).version == present[-1] + 1
    again.close()


def test_refusals_name_the_problem(pg_cluster: Any, tmp_path: Path, fleet: Any) -> None:
    url = pg_cluster.database()
    fleet(url, 1)
    # another KEK on the same store
    other = DaemonProcess(tmp_path / "other", shared_config(url, tmp_path / "elsewhere.kek"))
    try:
        with pytest.raises(RuntimeError) as err:
            other.start()
    finally:
        other.stop()
    assert "missing" in str(err.value) and "Traceback" not in str(err.value)
    wrong = tmp_path / "wrong.kek"
    wrong.write_bytes(os.urandom(32))
    wrong.chmod(0o600)
    other = DaemonProcess(tmp_path / "wrong", shared_config(url, wrong))
    try:
        with pytest.raises(RuntimeError) as err:
            other.start()
    finally:
        other.stop()
    assert "does not belong" in str(err.value) and "Traceback" not in str(err.value)
    # an unreachable database at start
    gone = url.replace("host=", "host=/nonexistent")
    down = DaemonProcess(tmp_path / "down", shared_config(gone, tmp_path / "k2.kek"))
    try:
        with pytest.raises(RuntimeError) as err:
            down.start()
    finally:
        down.stop()
    assert "KEYSTORE_UNAVAILABLE" in str(err.value) and "Traceback" not in str(err.value)


# --- the store itself, on PostgreSQL ------------------------------------------------------------
@pytest.mark.parametrize(
    "statement,needle",
    [
        ("UPDATE key_slots SET permissions = permissions | 2048 WHERE version = 1", "fails authentication"),
        ("DELETE FROM key_slots WHERE version = 2", "rolled back"),
        ("UPDATE meta SET value = '1' WHERE key = 'generation'", "manifest fails authentication"),
        ("DELETE FROM cert_slots", "missing"),
    ],
)
def test_same_integrity_rules_as_sqlite(pg_cluster: Any, tmp_path: Path, statement: str, needle: str) -> None:
    url, kek = pg_cluster.database(), tmp_path / "k.kek"
    store = KeyStore.open(url, kek_path=kek)
    store.store_key("S", "AES-256", 1, (1,), P.ENCRYPT, StoredKey(os.urandom(40), True))
    store.store_key("S", "AES-256", 1, (1,), P.ENCRYPT, StoredKey(os.urandom(40), True))
    store.store_certificate("C", b"0\x82" + os.urandom(30))
    assert store.verify() == []
    store.close()
    pg_cluster.execute(url, statement)
    with pytest.raises(KeyStoreError) as err:
        KeyStore.open(url, kek_path=kek)
    assert needle in err.value.message, err.value.message
    with pytest.raises(KeyStoreError) as err:
        KeyStore.open(url, kek_path=tmp_path / "another.kek")
    assert "missing" in err.value.message


def test_concurrent_writers_in_one_process(pg_url: str, tmp_path: Path) -> None:
    """Two store connections in threads: the write lock serialises them."""
    kek = tmp_path / "k.kek"
    stores = [KeyStore.open(pg_url, kek_path=kek) for _ in range(2)]
    got: list[int] = []

    def persist(store: KeyStore) -> None:
        for _ in range(25):
            got.append(store.store_key("S", "AES-256", 1, (1,), P.ENCRYPT, StoredKey(os.urandom(40), True)))

    threads = [threading.Thread(target=persist, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == list(range(1, 51))
    assert [v.version for v in stores[1].slot_versions("S").versions] == list(range(1, 51))
    for store in stores:
        store.close()


def test_known_versions_serve_through_an_outage_after_a_behind_persist(tmp_path: Path) -> None:
    """Regression (a full-suite run of the mid-rotation kill): a persist on a daemon whose
    cache was behind another daemon's persist dropped the slot's cached rows, and the
    re-read that follows a persist (the answer's slot info) failed when the database died in
    between: the version every client had been sealing with was then refused with
    KEYSTORE_UNAVAILABLE. What a daemon has checked now stays until it is replaced."""
    cluster = PostgresCluster()
    try:
        url, kek = cluster.database(), tmp_path / "k.kek"
        a, b = (KeyStore.open(url, kek_path=kek) for _ in range(2))
        material = os.urandom(40)
        a.store_key("S", "AES-256", 1, (1,), P.ENCRYPT | P.DECRYPT, StoredKey(material, True))
        assert a.load_key("S", 1)[1].blob == material  # a has version 1 checked and cached
        b.store_key(
            "S", "AES-256", 1, (1,), P.ENCRYPT | P.DECRYPT, StoredKey(os.urandom(40), True)
        )  # a is now behind
        assert (
            a.store_key("S", "AES-256", 1, (1,), P.ENCRYPT | P.DECRYPT, StoredKey(os.urandom(40), True)) == 3
        )
        cluster.kill()  # before a reads the slot again
        record, stored = a.load_key("S", 1)
        assert (record.version, stored.blob) == (1, material)
        with pytest.raises(cs.CryptoError) as err:
            a.slot_versions("S")  # what must be current is refused, clearly
        assert err.value.code is E.KEYSTORE_UNAVAILABLE
        for store in (a, b):
            store.close()
    finally:
        cluster.close()


def test_a_sqlite_store_copied_into_postgresql_verifies(pg_cluster: Any, tmp_path: Path) -> None:
    """The way from one device to a fleet (docs/scaling.md): MACs bind the store id, not the
    engine, so the four tables copied row for row open under the same KEK."""
    import sqlite3

    kek, path = tmp_path / "k.kek", tmp_path / "ks.sqlite3"
    store = KeyStore.open(path, kek_path=kek)
    material = os.urandom(40)
    store.store_key(
        "S", "AES-256", 1, (1, 2), P.ENCRYPT, StoredKey(material, True), export_uids=frozenset({0})
    )
    store.store_key("S", "AES-256", 1, (1, 2), P.ENCRYPT, StoredKey(os.urandom(40), True))
    store.retire_version("S", 1)
    store.store_key("S", "AES-256", 1, (1, 2), P.ENCRYPT, StoredKey(os.urandom(40), True))
    store.set_minimum_version("S", 2)
    store.store_trust_store("T", [os.urandom(20)], [])
    store.close()
    url = pg_cluster.database()
    KeyStore.open(url, kek_path=tmp_path / "throwaway.kek").close()  # creates the tables
    source = sqlite3.connect(path)
    for table in ("key_slots", "cert_slots", "trust_stores", "meta"):
        pg_cluster.execute(url, f"DELETE FROM {table}")
        for row in source.execute(f"SELECT * FROM {table}"):  # noqa: S608
            pg_cluster.execute(
                url,
                f"INSERT INTO {table} VALUES "  # noqa: S608
                f"({', '.join(['%s'] * len(row))})",
                row,
            )
    source.close()
    copy = KeyStore.open(url, kek_path=kek)
    assert copy.verify() == []
    versions = copy.slot_versions("S")
    assert [(v.version, v.state) for v in versions.versions] == [
        (1, "retired"),
        (2, "active"),
        (3, "active"),
    ] and versions.min_version == 2
    assert copy.load_key("S", 3)[0].export_uids is None
    copy.close()
