"""Questions to a running daemon: ``status``, ``health``, ``explain``, ``algorithms``."""

from __future__ import annotations

import click

from cryptostack_core.cli.connection import connect, endpoint_options
from cryptostack_core.cli.output import Output, add_row, explained, json_option, new_table
from cryptostack_core.wire.resources import ResourceType
from cryptostack_core.wire.status import AlgorithmEntry, DaemonStatus


def _print_status(out: Output, status: DaemonStatus) -> None:
    out.line(f"cryptostack daemon {status['version']} (pid {status['pid']}, up {status['uptime']:.0f} s)")
    out.line("providers:")
    providers = new_table("id", "name", "state", "reason")
    for p in status["providers"]:
        add_row(providers, str(p["id"]), p["name"], p["state"], p.get("reason") or "")
    out.table(providers)
    out.line("key slots:")
    slots = new_table("name", "status", "algorithm", "provider", "version")
    for s in status["key_slots"]:
        add_row(slots, s["name"], s["status"], s["algorithm"] or "-", str(s["provider"]), f"v{s['version']}")
    out.table(slots)
    if status.get("cert_slots"):
        out.line("certificate slots:")
        certs = new_table("name", "status", "subject")
        for c in status["cert_slots"]:
            add_row(certs, c["name"], "OCCUPIED" if c["occupied"] else "EMPTY", c["subject"])
        out.table(certs)
    if status.get("trust_stores"):
        out.line("trust stores: " + ", ".join(status["trust_stores"]))
    for warning in status.get("warnings", []):
        out.line(f"WARNING: {warning}")
    out.line(f"clients ({len(status['clients'])}):")
    clients = new_table("pid", "uid", "contexts", "resources")
    for client in status["clients"]:
        add_row(
            clients, str(client["pid"]), str(client["uid"]), str(client["contexts"]), str(client["resources"])
        )
    out.table(clients)


@click.command(short_help="Providers, slots and clients of a running daemon.")
@endpoint_options
@json_option
@explained
def status(endpoint: str, timeout: float, json: bool) -> None:
    """Providers, key slots, certificate slots and clients of a running daemon."""
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        result = stack.status()
    out.result(result, lambda: _print_status(out, result))


@click.command(short_help="Exit 0 when every required provider is up.")
@endpoint_options
@json_option
@explained
def health(endpoint: str, timeout: float, json: bool) -> None:
    """Exit 0 when every required provider is up, 1 otherwise (or when no daemon answers)."""
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        result = stack.status()
    down = [p for p in result["providers"] if p["state"] == "unavailable" and not p.get("optional")]

    def text() -> None:
        for p in result["providers"]:
            mark = "DOWN" if p in down else p["state"]
            note = " (optional)" if p.get("optional") else ""
            reason = f": {p['reason']}" if p.get("reason") else ""
            out.line(f"{p['name']} ({p['id']}){note}: {mark}{reason}")
        for warning in result.get("warnings", []):
            out.line(f"WARNING: {warning}")
        out.line("unhealthy: a required provider is down" if down else "healthy")

    out.result(
        {"healthy": not down, "providers": result["providers"], "warnings": result.get("warnings", [])}, text
    )
    if down:
        raise click.exceptions.Exit(1)


@click.command(short_help="Which provider would run an operation, and why.")
@endpoint_options
@click.option("--algorithm", required=True, help="Algorithm name or alias (ML-DSA-65, sha256 ...).")
@click.option(
    "--operation", required=True, help="hash, encrypt, decrypt, sign, verify, encapsulate, agree, derive, ..."
)
@click.option("--key-slot", metavar="NAME", help="Explain for the key in this slot.")
@click.option("--provider", type=int, metavar="ID", help="Pin a provider id.")
@json_option
@explained
def explain(
    endpoint: str,
    timeout: float,
    algorithm: str,
    operation: str,
    key_slot: str | None,
    provider: int | None,
    json: bool,
) -> None:
    """Which provider would run an operation, and why each candidate was taken or skipped.
    Exit 1 when none would."""
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        key = None
        if key_slot:
            key = stack.create_crypto_context().resolve_resource(key_slot, ResourceType.KEY_SLOT)
        candidates = stack.explain(algorithm, operation, key=key, provider=provider)

    def text() -> None:
        out.line(f"{algorithm} / {operation}" + (f" with slot {key_slot}" if key else ""))
        for c in candidates:
            mark = "->" if c["taken"] else "  "
            role = f"{c['role']:<9} " if c.get("role") else ""  # the halves of a hybrid key
            out.line(f" {mark} {role}{c['provider']:>3} {c['name']:<10} {c['reason']}")
        if not any(c["taken"] for c in candidates):
            out.line(" no compatible provider")

    out.result(candidates, text)
    if not any(c["taken"] for c in candidates):
        raise click.exceptions.Exit(1)


def _operations(entry: AlgorithmEntry, names: dict[int, str]) -> str:
    ops = (
        "; ".join(
            f"{op}: " + ", ".join(f"{names.get(pid, '?')} ({pid})" for pid in pids)
            for op, pids in sorted(entry["providers"].items())
        )
        or "no provider"
    )
    split = entry.get("split")  # hybrids: may the halves live on two providers?
    if split is not None:
        ops += "; split: " + (
            " + ".join(f"{c['role']} {c['algorithm']}" for c in split.get("components", []))
            if split["splittable"]
            else "no (one provider holds both)"
        )
    return ops


@click.command(short_help="Every algorithm the daemon knows, and who runs it.")
@endpoint_options
@json_option
@explained
def algorithms(endpoint: str, timeout: float, json: bool) -> None:
    """Every algorithm the daemon knows (built in or brought by a provider): its kind, key
    types, and the providers that run each operation."""
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        table = stack.algorithms()
        names = {p["id"]: p["name"] for p in stack.status()["providers"]}

    def text() -> None:
        rows = new_table("algorithm", "kind", "key types", "providers, by operation")
        for entry in table:
            if entry["key_algorithms"]:
                keys = ", ".join(entry["key_algorithms"])
            elif entry.get("key_class"):
                keys = f"(a {entry['key_class']} key type)"
            else:
                keys = "-"
            add_row(rows, entry["name"], entry["kind"], keys, _operations(entry, names))
        out.table(rows)

    out.result(table, text)
