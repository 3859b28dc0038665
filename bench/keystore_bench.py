"""Key store rates: load, persist and rotate through real daemons on SQLite and on
PostgreSQL, with 1, 2 and 3 daemons sharing one store (issue 16; docs/scaling.md).

Each daemon runs the openssl provider and one AES-256 slot; ``--clients`` client threads per
daemon (default 2) loop for ``--seconds`` on each operation, and the rate printed is every
client's completed operations together, per second:

* ``persist``   -- ``persist_key`` of an AES-256 key into the slot: one new version (a write
  transaction under the store-wide write lock: the manifest and a row);
* ``rotate``    -- ``persist_key`` then ``retire_key_version`` of the previous version (two
  writes);
* ``load``      -- ``load_key`` of the primary and its release (the daemon's cached path: a
  check that nothing changed, no database read);
* ``load vN``   -- ``load_key`` of an older, randomly chosen version of 21 (cached the same
  way).

Each operation has a slot of its own (one measurement's versions do not slow the next).

The SQLite store is a file in a temporary directory (WAL, ``synchronous=FULL``); the
PostgreSQL server is a private cluster started here (``fsync`` on; unix socket). Both are on
this machine's disk, so persist rates include real fsyncs. Measurements, not assertions.

Run by ``make bench`` (or ``.venv/bin/python bench/keystore_bench.py --seconds 2``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.postgres import PostgresCluster

P = cs.KeyOperationPermission
SOFT = 2
OPERATIONS = ("persist", "rotate", "load", "load vN")


SLOTS = {op: f"Bench-{op.replace(' ', '-')}" for op in OPERATIONS}
"""One slot per operation, so one measurement's versions do not slow the next."""
OLD_VERSIONS = 20  # versions the "load vN" slot holds


def _config(keystore: str, kek: Path) -> dict[str, Any]:
    return {
        "daemon": {"keystore": keystore, "kek_file": str(kek)},
        "providers": [{"name": "openssl", "id": SOFT}],
        "key_slots": [
            {
                "name": slot,
                "algorithm": "AES-256",
                "provider": SOFT,
                "permissions": ["encrypt", "decrypt"],
                "provision": "generate",
            }
            for slot in SLOTS.values()
        ],
    }


class _Client:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.stack = daemon.stack(timeout=60)
        self.ctx = self.stack.create_crypto_context()
        self.km = self.ctx.create_key_management_context()
        self.key = self.km.generate_key(
            cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
        )

    def slot(self, operation: str) -> cs.CryptoResourceId:
        return self.ctx.resolve_resource(SLOTS[operation], cs.ResourceType.KEY_SLOT)

    def operation(self, name: str) -> Callable[[], None]:
        km, slot, key = self.km, self.slot(name), self.key

        def persist() -> None:
            km.persist_key(slot, key)

        def rotate() -> None:
            version = km.persist_key(slot, key).version
            try:
                km.retire_key_version(slot, version - 1)
            except cs.CryptoError as exc:  # another client retired it, or made it primary
                if exc.code not in (cs.ErrorCode.INVALID_STATE, cs.ErrorCode.RESOURCE_NOT_FOUND):
                    raise

        def load() -> None:
            km.load_key(slot).release()

        versions: list[int] = []

        def load_old() -> None:
            if not versions:
                info = km.get_key_slot_info(slot)
                versions.extend(
                    v.version
                    for v in info.versions
                    if v.state in (cs.KeyVersionState.ACTIVE, cs.KeyVersionState.PRIMARY)
                )
            km.load_key(slot, version=random.choice(versions)).release()

        return {"persist": persist, "rotate": rotate, "load": load, "load vN": load_old}[name]


def _rate(clients: list[_Client], name: str, seconds: float) -> float:
    counts = [0] * len(clients)
    start = threading.Barrier(len(clients) + 1)
    stop = threading.Event()

    def run(i: int) -> None:
        call = clients[i].operation(name)
        call()  # warm
        start.wait()
        while not stop.is_set():
            call()
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def measure(
    engine: str, keystore: str, daemons: int, clients: int, seconds: float, base: Path
) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{engine}-{daemons}-", dir=base))
    kek = run_dir / "kek" / "bench.kek"
    procs = []
    try:
        for i in range(daemons):
            procs.append(DaemonProcess(run_dir / f"d{i}", _config(keystore, kek)).start())
        users = [_Client(p) for p in procs for _ in range(clients)]
        for _ in range(OLD_VERSIONS):
            users[0].km.persist_key(users[0].slot("load vN"), users[0].key)
        try:
            return {name: _rate(users, name, seconds) for name in OPERATIONS}
        finally:
            for user in users:
                user.stack.close()
    finally:
        for proc in procs:
            proc.stop()


def propagation(url: str, base: Path, rounds: int = 20) -> list[float]:
    """Milliseconds from daemon A acknowledging a new version until daemon B seals with it
    (B polls with seals; PostgreSQL's NOTIFY tells B)."""
    run_dir = Path(tempfile.mkdtemp(prefix="propagation-", dir=base))
    kek = run_dir / "kek" / "bench.kek"
    procs = [DaemonProcess(run_dir / f"d{i}", _config(url, kek)).start() for i in range(2)]
    times = []
    try:
        a, b = _Client(procs[0]), _Client(procs[1])
        slot_a, slot_b = a.slot("persist"), b.slot("persist")
        sealer = b.ctx.create_seal_context(cs.SealContextConfig().set_key(slot_b))
        sealer.seal(b"warm")
        for _ in range(rounds):
            version = a.km.persist_key(slot_a, a.key).version
            acked = time.perf_counter()
            while int.from_bytes(sealer.seal(b"x")[2:6], "big") != version:
                pass
            times.append((time.perf_counter() - acked) * 1000)
        a.stack.close()
        b.stack.close()
    finally:
        for proc in procs:
            proc.stop()
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="per operation and setup")
    parser.add_argument("--clients", type=int, default=2, help="client threads per daemon")
    parser.add_argument("--daemons", type=int, nargs="*", default=[1, 2, 3])
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cs-ksbench-"))
    cluster = PostgresCluster(durable=True)
    rows: list[tuple[str, int, dict[str, float]]] = []
    spread: list[float] = []
    try:
        spread = propagation(cluster.database("propagation"), base)
        for n in args.daemons:
            sqlite = str(base / f"sqlite-{n}" / "keystore.sqlite3")
            rows.append(("SQLite", n, measure("sqlite", sqlite, n, args.clients, args.seconds, base)))
            rows.append(
                (
                    "PostgreSQL",
                    n,
                    measure("pg", cluster.database(f"bench{n}"), n, args.clients, args.seconds, base),
                )
            )
    finally:
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"\nKey store rates through the daemon (operations/s, {args.clients} client thread(s) "
        f"per daemon, {args.seconds:g} s each; persist and rotate fsync on both engines)"
    )
    print(f"{'engine':<11} {'daemons':>7} " + " ".join(f"{op:>10}" for op in OPERATIONS))
    for engine, n, rates in rows:
        print(f"{engine:<11} {n:>7} " + " ".join(f"{rates[op]:>10.0f}" for op in OPERATIONS))
    if spread:
        print(
            f"PostgreSQL, 2 daemons: a new primary reaches the other daemon's seals after "
            f"{spread[len(spread) // 2]:.2f} ms median, {spread[-1]:.2f} ms max "
            f"({len(spread)} rotations; LISTEN/NOTIFY)"
        )


if __name__ == "__main__":
    main()
