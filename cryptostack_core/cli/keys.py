"""``cryptostack key list|info|generate|import|export-public|rotate|retire|minimum|clear``:
the key slots of a running daemon.

A slot is named in the daemon's configuration; these commands fill, rotate and empty it
through the same requests as the library (``key.generate``/``key.import`` then
``key.persist``; ``key.retire_version``, ``key.set_minimum_version``), so the daemon's access
rules and permission narrowing apply unchanged. A rotation adds a version: older ones keep
decrypting and verifying until retired.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click

from cryptostack_core.cli.connection import connect, endpoint_options
from cryptostack_core.cli.output import Output, add_row, explained, fail, json_option, new_table
from cryptostack_core.cli.streams import Sink, Source
from cryptostack_core.client.contexts.keys import (
    GenerateKeyParams,
    ImportKeyParams,
    KeyManagementContext,
)
from cryptostack_core.client.guards import CryptoResourceGuard
from cryptostack_core.client.stack import CryptoContext
from cryptostack_core.wire.algorithms import REGISTRY, KeyClass
from cryptostack_core.wire.permissions import KeyOperationPermission, parse_permissions, permission_names
from cryptostack_core.wire.resources import (
    CryptoResourceId,
    KeyFormat,
    KeySlotInfo,
    KeySlotStatus,
    ResourceType,
)

P = ParamSpec("P")
R = TypeVar("R")

KEY_FILE_LIMIT = 1024 * 1024
"""Larger than any key file (an SLH-DSA or RSA-8192 private key is a few KB)."""
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.S)


@click.group(short_help="List, inspect, generate, import, rotate, retire or clear key slots.")
def key() -> None:
    """The daemon's key slots: list, inspect, fill, rotate (versions), retire, empty."""


def _slot_info_dict(info: KeySlotInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "status": info.status.value,
        "algorithm": info.algorithm,
        "provider": info.provider,
        "compatible_providers": info.compatible_providers,
        "permissions": permission_names(info.permissions),
        "version": info.version,
        "created": info.created,
        "updated": info.updated,
        "min_version": info.min_version,
        "placement": info.placement,
        "components": info.components,
        "versions": [
            {
                "version": v.version,
                "state": v.state.value,
                "algorithm": v.algorithm,
                "provider": v.provider,
                "permissions": permission_names(v.permissions),
                "created": v.created,
                "updated": v.updated,
            }
            for v in info.versions
        ],
    }


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat(timespec="seconds")


def _print_info(out: Output, info: KeySlotInfo) -> None:
    rows = new_table("", "")
    rows.show_header = False
    for label, value in [
        ("slot", info.name),
        ("status", info.status.value),
        ("algorithm", info.algorithm or "-"),
        ("provider", "-" if info.provider is None else str(info.provider)),
        ("compatible providers", ", ".join(map(str, info.compatible_providers)) or "-"),
        ("permissions", ", ".join(permission_names(info.permissions)) or "none"),
        ("version", str(info.version)),
        ("created", _when(info.created)),
        ("updated", _when(info.updated)),
        ("minimum version", str(info.min_version) if info.min_version else "-"),
        ("placement", info.placement),
        (
            "components",
            ", ".join(f"{c['role']} {c['algorithm']} on provider {c['provider']}" for c in info.components)
            or "-",
        ),
    ]:
        add_row(rows, label, value)
    out.table(rows)
    if info.versions:
        versions = new_table("version", "state", "created", "updated")
        for v in info.versions:
            add_row(versions, str(v.version), v.state.value, _when(v.created), _when(v.updated))
        out.table(versions)


@key.command(name="list", short_help="The key slots: status, key type, version.")
@endpoint_options
@json_option
@explained
def list_slots(endpoint: str, timeout: float, json: bool) -> None:
    """The key slots this user may use: status, key type, provider, version."""
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        slots = stack.status()["key_slots"]

    def text() -> None:
        rows = new_table("slot", "status", "algorithm", "provider", "version")
        for s in slots:
            add_row(
                rows, s["name"], s["status"], s["algorithm"] or "-", str(s["provider"]), str(s["version"])
            )
        out.table(rows)

    out.result(slots, text)


@key.command(short_help="Everything about one key slot.")
@click.argument("slot")
@endpoint_options
@json_option
@explained
def info(slot: str, endpoint: str, timeout: float, json: bool) -> None:
    """Everything the daemon says about key slot SLOT."""
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        details = km.get_key_slot_info(ctx.resolve_resource(slot, ResourceType.KEY_SLOT))
    out.result(_slot_info_dict(details), lambda: _print_info(out, details))


def _permissions(value: str | None) -> KeyOperationPermission | None:
    if value is None:
        return None
    try:
        return parse_permissions(p.strip() for p in value.split(",") if p.strip())
    except ValueError as exc:
        names = ", ".join(permission_names(~KeyOperationPermission.NONE))
        raise click.BadParameter(f"{exc}; known: {names}", param_hint="--permissions") from None


def _key_options(command: Callable[P, R]) -> Callable[P, R]:
    command = click.option(
        "--provider", type=int, metavar="ID", help="Provider to create the key on (default: the slot's)."
    )(command)
    command = click.option(
        "--permissions",
        metavar="LIST",
        help="Comma-separated: encrypt, decrypt, sign, verify, mac, derive, "
        "export ... (default: what the key type allows, never export; "
        "the slot's own list narrows it).",
    )(command)
    return click.option(
        "--algorithm", "-a", metavar="KEY_TYPE", help="Key type (default: the one the slot declares)."
    )(command)


def _fill(
    ctx: CryptoContext,
    slot_name: str,
    occupied: bool | None,
    hint: str,
    make: Callable[[KeyManagementContext, str, KeySlotInfo], CryptoResourceGuard],
    algorithm: str | None,
) -> tuple[KeySlotInfo, KeySlotInfo]:
    """Persist the key ``make(km, key_type, slot_info)`` returns into the slot, after checking the
    slot is EMPTY (``occupied`` False) or OCCUPIED (True); returns (before, after)."""
    km = ctx.create_key_management_context()
    slot: CryptoResourceId = ctx.resolve_resource(slot_name, ResourceType.KEY_SLOT)
    before = km.get_key_slot_info(slot)
    is_occupied = before.status is KeySlotStatus.OCCUPIED
    if occupied is not None and is_occupied != occupied:
        fail(
            f"key slot {slot_name!r} is "
            + (f"occupied (version {before.version})" if is_occupied else "empty"),
            hint,
        )
    key_type = algorithm or before.algorithm
    if key_type is None:
        fail(f"key slot {slot_name!r} declares no key type", "give --algorithm")
    with make(km, key_type, before) as new_key:
        after = km.persist_key(slot, new_key)
    return before, after


def _generate(
    permissions: KeyOperationPermission | None,
    provider: int | None,
) -> Callable[[KeyManagementContext, str, KeySlotInfo], CryptoResourceGuard]:
    def make(km: KeyManagementContext, key_type: str, slot: KeySlotInfo) -> CryptoResourceGuard:
        params = GenerateKeyParams().set_algorithm(key_type)
        if permissions is not None:
            params.set_permissions(permissions)
        _place(params, slot, provider)
        return km.generate_key(params)

    return make


def _place(params: GenerateKeyParams, slot: KeySlotInfo, provider: int | None) -> None:
    """Where the new key goes: ``provider``, or -- into a slot that keeps a hybrid key's
    halves apart -- split, each half on the provider of the slot's current one (the daemon
    moves a half to the slot's configured providers when persisting, if it may)."""
    if provider is not None:
        params.set_provider(provider)
    elif slot.placement == "split" or slot.components:
        params.set_placement("split")
        halves = {c["role"]: c["provider"] for c in slot.components if c.get("role") in ("pq", "classical")}
        if halves:
            params.set_component_providers(**halves)


def _report(out: Output, verb: str, before: KeySlotInfo, after: KeySlotInfo) -> None:
    def text() -> None:
        was = f" (was version {before.version})" if before.status is KeySlotStatus.OCCUPIED else ""
        out.line(
            f"{verb} {after.name}: {after.algorithm} on provider {after.provider}, "
            f"version {after.version}{was}; permissions "
            f"{', '.join(permission_names(after.permissions)) or 'none'}"
        )

    out.result({"before": _slot_info_dict(before), "after": _slot_info_dict(after)}, text)


@key.command(short_help="Generate a key into an empty slot.")
@click.argument("slot")
@_key_options
@endpoint_options
@json_option
@explained
def generate(
    slot: str,
    algorithm: str | None,
    permissions: str | None,
    provider: int | None,
    endpoint: str,
    timeout: float,
    json: bool,
) -> None:
    """Generate a key inside the daemon and store it in the empty key slot SLOT."""
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        before, after = _fill(
            stack.create_crypto_context(),
            slot,
            False,
            f"'cryptostack key rotate {slot}' adds a new version",
            _generate(_permissions(permissions), provider),
            algorithm,
        )
    _report(out, "generated", before, after)


@key.command(short_help="Add a new version of a slot's key.")
@click.argument("slot")
@_key_options
@endpoint_options
@json_option
@explained
def rotate(
    slot: str,
    algorithm: str | None,
    permissions: str | None,
    provider: int | None,
    endpoint: str,
    timeout: float,
    json: bool,
) -> None:
    """Generate a new key into key slot SLOT as a new version, which becomes the primary.
    Older versions keep decrypting and verifying what was made under them until retired
    ('cryptostack key retire')."""
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        before, after = _fill(
            stack.create_crypto_context(),
            slot,
            True,
            f"'cryptostack key generate {slot}' puts a first key in it",
            _generate(_permissions(permissions), provider),
            algorithm,
        )
    _report(out, "rotated", before, after)


def _decode_key_file(data: bytes, fmt: str | None, key_type: str) -> tuple[bytes, KeyFormat]:
    """The material and its format: PEM PKCS#8/SPKI are sent as DER, the rest as given."""
    if fmt is None:
        if data.lstrip().startswith(b"-----BEGIN"):
            fmt = "PEM"
        else:
            spec = REGISTRY.find(key_type)
            fmt = "PKCS8_DER" if spec is not None and spec.key_class is KeyClass.ASYMMETRIC else "RAW"
    if fmt == "PEM":
        block = PEM_BLOCK.search(data)
        labels = {b"PRIVATE KEY": KeyFormat.PKCS8_DER, b"PUBLIC KEY": KeyFormat.SPKI_DER}
        if block is not None and block.group(1) in labels:
            try:
                return base64.b64decode(block.group(2), validate=False), labels[block.group(1)]
            except ValueError:
                fail("the PEM block is not base64", "check the key file")
        return data, KeyFormat.PEM
    return data, KeyFormat(fmt)


@key.command(name="import", short_help="Import a key file into a slot.")
@click.argument("slot")
@click.argument("file", metavar="FILE")
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in KeyFormat]),
    help="Encoding of FILE (default: PEM if it looks like PEM, else PKCS8_DER for "
    "key pairs and RAW for secret keys).",
)
@click.option("--replace", is_flag=True, help="Replace the key the slot holds.")
@_key_options
@endpoint_options
@json_option
@explained
def import_key(
    slot: str,
    file: str,
    fmt: str | None,
    replace: bool,
    algorithm: str | None,
    permissions: str | None,
    provider: int | None,
    endpoint: str,
    timeout: float,
    json: bool,
) -> None:
    """Import the key in FILE (- for stdin) into key slot SLOT."""
    out = Output(json)
    perms = _permissions(permissions)
    with Source(file) as source:
        data = source.read_all(KEY_FILE_LIMIT, "key file")

    def make(km: KeyManagementContext, key_type: str, slot: KeySlotInfo) -> CryptoResourceGuard:
        material, key_format = _decode_key_file(data, fmt, key_type)
        params = ImportKeyParams().set_algorithm(key_type).set_material(material, key_format)
        if perms is not None:
            params.set_permissions(perms)
        _place(params, slot, provider)
        return km.import_key(params)

    with connect(endpoint, timeout) as stack:
        before, after = _fill(
            stack.create_crypto_context(),
            slot,
            None if replace else False,
            "give --replace to replace its key",
            make,
            algorithm,
        )
    _report(out, "imported into", before, after)


@key.command(name="export-public", short_help="Write the public key of a slot's key pair.")
@click.argument("slot")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["PEM", "DER", "RAW"]),
    default="PEM",
    show_default=True,
    help="PEM or DER SubjectPublicKeyInfo, or the raw key.",
)
@click.option(
    "--output", "-o", default="-", show_default=True, metavar="FILE", help="Where to write; - is stdout."
)
@click.option("--force", "-f", is_flag=True, help="Replace the output file if it exists.")
@endpoint_options
@json_option
@explained
def export_public(
    slot: str, fmt: str, output: str, force: bool, endpoint: str, timeout: float, json: bool
) -> None:
    """Write the public key of the key pair in key slot SLOT."""
    out = Output(json)
    if json and output != "-":
        raise click.UsageError("--json prints the key in the JSON result: leave out -o")
    with connect(endpoint, timeout) as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        slot_id = ctx.resolve_resource(slot, ResourceType.KEY_SLOT)
        raw = km.export_public_key(slot_id, KeyFormat.RAW if fmt == "RAW" else KeyFormat.SPKI_DER)
    data = raw
    if fmt == "PEM":
        body = base64.encodebytes(raw).replace(b"\n", b"")
        data = (
            b"-----BEGIN PUBLIC KEY-----\n"
            + b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
            + b"\n-----END PUBLIC KEY-----\n"
        )
    if json:
        out.result({"slot": slot, "format": fmt, "public_key": data.decode() if fmt == "PEM" else data.hex()})
        return
    with Sink(output, force, binary=fmt != "PEM") as sink:
        sink.write(data)
        sink.commit()


def _version_change(
    slot: str,
    endpoint: str,
    timeout: float,
    json: bool,
    verb: str,
    change: Callable[[KeyManagementContext, CryptoResourceId], KeySlotInfo],
) -> None:
    out = Output(json)
    with connect(endpoint, timeout) as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        after = change(km, ctx.resolve_resource(slot, ResourceType.KEY_SLOT))

    def text() -> None:
        out.line(f"{verb} {slot}")
        _print_info(out, after)

    out.result(_slot_info_dict(after), text)


@key.command(short_help="Retire an older version of a slot's key, destroying it.")
@click.argument("slot")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--yes", is_flag=True, help="Really destroy that version.")
@endpoint_options
@json_option
@explained
def retire(slot: str, version: int, yes: bool, endpoint: str, timeout: float, json: bool) -> None:
    """Retire VERSION of key slot SLOT: its key is destroyed, and what was encrypted under
    it can no longer be decrypted (KEY_VERSION_RETIRED). The primary cannot be retired."""
    if not yes:
        fail(
            f"this destroys version {version} of slot {slot!r}; what it encrypted cannot be "
            "decrypted afterwards",
            "rerun with --yes (or 'cryptostack key minimum' disables older versions without destroying them)",
        )
    _version_change(
        slot,
        endpoint,
        timeout,
        json,
        f"retired version {version} of",
        lambda km, s: km.retire_key_version(s, version),
    )


@key.command(short_help="Disable the versions below a number (reversible).")
@click.argument("slot")
@click.argument("version", type=click.IntRange(min=0))
@endpoint_options
@json_option
@explained
def minimum(slot: str, version: int, endpoint: str, timeout: float, json: bool) -> None:
    """Refuse the versions of key slot SLOT below VERSION (0: none), without destroying
    them; lower it again to use them."""
    _version_change(
        slot,
        endpoint,
        timeout,
        json,
        f"minimum version {version} set on",
        lambda km, s: km.set_minimum_version(s, version),
    )


@key.command(short_help="Empty a slot, destroying every version of its key.")
@click.argument("slot")
@click.option("--yes", is_flag=True, help="Really destroy the key.")
@endpoint_options
@json_option
@explained
def clear(slot: str, yes: bool, endpoint: str, timeout: float, json: bool) -> None:
    """Empty key slot SLOT, destroying every version of its key (and token copies, once
    nothing uses them)."""
    out = Output(json)
    if not yes:
        fail(
            f"this destroys the key in slot {slot!r}; what it encrypted cannot be decrypted afterwards",
            "rerun with --yes",
        )
    with connect(endpoint, timeout) as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        slot_id = ctx.resolve_resource(slot, ResourceType.KEY_SLOT)
        before = km.get_key_slot_info(slot_id)
        km.clear_key_slot(slot_id)
    out.result(
        {"slot": slot, "cleared_version": before.version},
        lambda: out.line(f"cleared {slot} (was version {before.version})"),
    )
