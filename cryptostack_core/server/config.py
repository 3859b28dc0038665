"""The daemon's TOML configuration: parsing and validation.

Every problem is reported as :class:`ConfigError` naming the file, the entry and what is
wrong, so a bad config is refused at start with a message an operator can act on.
"""

from __future__ import annotations

import grp
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptostack_core.wire.algorithms import REGISTRY
from cryptostack_core.wire.permissions import KeyOperationPermission, parse_permissions
from cryptostack_core.wire.protocol import DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT


class ConfigError(ValueError):
    """A configuration file or mapping that cannot be used."""


@dataclass(frozen=True)
class ProviderConfig:
    """One ``[[providers]]`` entry."""

    name: str
    id: int
    options: dict[str, Any] = field(default_factory=dict)
    optional: bool = False
    """True: the daemon starts (and reports it unavailable) when it cannot start."""


@dataclass(frozen=True)
class KeySlotConfig:
    """One ``[[key_slots]]`` entry."""

    name: str
    algorithm: str | None
    provider: int | None
    compatible_providers: tuple[int, ...] = ()
    permissions: KeyOperationPermission | None = None
    provision: str | None = None  # "generate"
    import_file: Path | None = None
    import_format: str | None = None
    use_uids: tuple[int, ...] | None = None
    write_uids: tuple[int, ...] | None = None
    placement: str = "auto"
    """Hybrid key slots: ``native`` (one provider holds both halves), ``split`` (each half
    on a provider of its role, docs/hybrid.md) or ``auto`` (split when ``components`` are
    named, else as any slot)."""
    components: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """A split slot's providers per role (``pq``, ``classical``), in order of preference."""

    @property
    def split(self) -> bool:
        """Whether this slot keeps a hybrid key's halves on providers of their own."""
        return self.placement == "split" or bool(self.components)


@dataclass(frozen=True)
class CertSlotConfig:
    """One ``[[cert_slots]]`` entry."""

    name: str
    file: Path | None
    use_uids: tuple[int, ...] | None = None
    write_uids: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrustStoreConfig:
    """One ``[[trust_stores]]`` entry."""

    name: str
    anchors: tuple[Path, ...] = ()
    crls: tuple[Path, ...] = ()
    use_uids: tuple[int, ...] | None = None
    write_uids: tuple[int, ...] = ()


@dataclass(frozen=True)
class DaemonConfig:
    """The whole daemon configuration with defaults applied."""

    source: str = "<built-in>"
    socket: Path | None = None
    keystore: Path | None = None
    """None: a daemon uses ``<state dir>/keystore.sqlite3``; an in-process service keeps
    keys in memory (see :mod:`cryptostack_core.server.paths`)."""
    keystore_in_memory: bool = False
    """``keystore = ":memory:"``: keys are lost when the service stops (logged as a warning)."""
    keystore_url: str | None = None
    """``keystore = "postgresql://..."``: a key store shared by several daemons
    (docs/scaling.md)."""
    kek_file: Path | None = None
    kek_provider: int | None = None
    audit_log: Path | None = None
    audit_log_group: int | None = None  # gid that may read the audit log (0640); else 0600
    state_dir: Path | None = None
    socket_mode: int = 0o660
    max_frame_size: int = DEFAULT_MAX_FRAME
    max_contexts_per_client: int = 256
    max_resources_per_client: int = 4096
    max_clients: int = 512
    max_buffered_message: int = 64 * 1024 * 1024
    worker_threads: int = 16
    hello_timeout: float = 10.0
    allow_test_providers: bool = False
    """Serve providers that are for tests only (the mock); logged as a warning."""
    allow_root: bool = False
    """Let the daemon run as root (refused by default, as Parsec does)."""
    # Limits of what clients may make the daemon hold (docs/security.md, "Limits"); sized for
    # a 2-core machine with 24 GiB that serves other programs too.
    memory_budget: int = 2 * 1024**3
    """Bytes all clients together may make the daemon hold: request frames being received
    or served, answers not yet read, buffered messages, batch results."""
    connection_memory_budget: int = 256 * 1024**2
    """The same, for one connection."""
    max_batch_length: int = 1024
    max_connections_per_uid: int = 64
    idle_timeout: float = 3600.0
    """Seconds a connection may stay silent with nothing in progress (0: no limit)."""
    frame_timeout: float = 30.0
    """Seconds within which a frame, once begun, must arrive completely."""
    admin_uids: tuple[int, ...] = ()
    """uids that see every client and slot in ``status``/``resource.describe`` (root and the
    daemon's own uid always do)."""
    provider_preference: tuple[int, ...] = ()
    providers: tuple[ProviderConfig, ...] = ()
    key_slots: tuple[KeySlotConfig, ...] = ()
    cert_slots: tuple[CertSlotConfig, ...] = ()
    trust_stores: tuple[TrustStoreConfig, ...] = ()

    @property
    def preference(self) -> tuple[int, ...]:
        """Provider ids in preference order (explicit, else the order of ``[[providers]]``)."""
        if self.provider_preference:
            return self.provider_preference
        return tuple(p.id for p in self.providers)

    def resolve_key_algorithms(self, hint: str = "") -> DaemonConfig:
        """This config with every key slot's algorithm checked and canonical.

        Called after the providers loaded (and registered the algorithms they bring); an
        unknown name or a name that is not a key type is a :class:`ConfigError`, ``hint``
        (e.g. the providers that failed to load) is appended to its message.
        """
        slots = []
        for slot in self.key_slots:
            if slot.algorithm is None:
                slots.append(slot)
                continue
            spec = REGISTRY.find(slot.algorithm)
            where = f"{self.source}: [[key_slots]] {slot.name!r}"
            if spec is None:
                raise ConfigError(
                    f"{where}: unknown key algorithm {slot.algorithm!r} (neither "
                    f"built in nor registered by a loaded provider){hint}"
                )
            if not spec.is_key_algorithm:
                raise ConfigError(
                    f"{where}: {spec.name} is not a key type (use e.g. AES-256, "
                    f"ECDSA-P256, or the key type the provider registers)"
                )
            slots.append(replace(slot, algorithm=spec.name))
        return replace(self, key_slots=tuple(slots))

    @classmethod
    def load(cls, path: str | Path) -> DaemonConfig:
        """Read and validate a TOML file."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, base_dir=path.resolve().parent, source=str(path))

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, source: str = "<mapping>"
    ) -> DaemonConfig:
        """Validate an already-parsed mapping (same shape as the TOML file)."""
        return _Parser(source, base_dir or Path.cwd()).parse(data)


_TOP_LEVEL = {"daemon", "providers", "key_slots", "cert_slots", "trust_stores"}
_DAEMON_KEYS = {
    "socket",
    "keystore",
    "kek_file",
    "kek_provider",
    "audit_log",
    "state_dir",
    "socket_mode",
    "max_frame_size",
    "max_contexts_per_client",
    "max_resources_per_client",
    "max_clients",
    "max_buffered_message",
    "worker_threads",
    "provider_preference",
    "hello_timeout",
    "allow_test_providers",
    "allow_root",
    "audit_log_group",
    "memory_budget",
    "connection_memory_budget",
    "max_batch_length",
    "max_connections_per_uid",
    "idle_timeout",
    "frame_timeout",
    "admin_uids",
}
PLACEMENTS = ("auto", "native", "split")
"""``placement`` of a hybrid key slot (docs/hybrid.md, "Halves on two providers")."""
COMPONENT_ROLES = ("pq", "classical")
"""The roles of a hybrid key's halves, as ``components`` names them."""
MEMORY_KEYSTORE = ":memory:"
"""The ``[daemon] keystore`` value that keeps keys in memory only."""
SHARED_KEYSTORE_SCHEMES = ("postgresql://", "postgres://")
"""``[daemon] keystore`` values that name a database shared by several daemons."""


class _Parser:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base = base_dir

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {problem}")

    def path(self, where: str, value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a path string, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base / p

    def int_(self, where: str, value: Any, minimum: int = 0, maximum: int | None = None) -> int:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise self.fail(where, f"expected an integer {bound}, got {value!r}")
        return value

    def bool_(self, where: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def group(self, where: str, value: Any) -> int:
        if isinstance(value, str):
            try:
                return grp.getgrnam(value).gr_gid
            except KeyError:
                raise self.fail(where, f"no group named {value!r}") from None
        return self.int_(where, value)

    def uids(self, where: str, value: Any) -> tuple[int, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of uids, got {value!r}")
        return tuple(self.int_(where, v) for v in value)

    def table_list(self, data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.fail(f"[[{key}]]", "expected an array of tables")
        return value

    def check_keys(self, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(
                where, f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
            )

    def placement(
        self, where: str, entry: Mapping[str, Any], ids: set[int]
    ) -> tuple[str, dict[str, tuple[int, ...]]]:
        """A key slot's ``placement`` and ``components`` (hybrid keys, docs/hybrid.md);
        whether its algorithm can be split is checked once the providers registered theirs."""
        placement = entry.get("placement", "auto")
        if placement not in PLACEMENTS:
            raise self.fail(where, f"'placement' must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        raw = entry.get("components", {})
        if not isinstance(raw, Mapping):
            raise self.fail(
                where,
                "'components' must be a table of role = [provider ids], e.g. { pq = [2], classical = [5] }",
            )
        components: dict[str, tuple[int, ...]] = {}
        for role, value in raw.items():
            if role not in COMPONENT_ROLES:
                raise self.fail(
                    where, f"'components': unknown role {role!r} (roles are {' and '.join(COMPONENT_ROLES)})"
                )
            listed = value if isinstance(value, list) else [value]
            if not listed or not all(isinstance(i, int) and not isinstance(i, bool) for i in listed):
                raise self.fail(
                    where,
                    f"'components' {role}: expected a provider id or a non-empty list of them, got {value!r}",
                )
            for pid in listed:
                if pid not in ids:
                    raise self.fail(
                        where, f"'components' {role}: provider {pid!r} is not a configured provider id"
                    )
            components[role] = tuple(listed)
        if placement == "native" and components:
            raise self.fail(
                where, "placement \"native\" keeps both halves on one provider; it takes no 'components'"
            )
        return placement, components

    def name(self, where: str, table: Mapping[str, Any], seen: set[str]) -> str:
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail(where, "needs a non-empty 'name'")
        if name in seen:
            raise self.fail(where, f"duplicate name {name!r}")
        seen.add(name)
        return name

    def parse(self, data: Mapping[str, Any]) -> DaemonConfig:
        self.check_keys("top level", data, _TOP_LEVEL)
        daemon = data.get("daemon", {})
        if not isinstance(daemon, Mapping):
            raise self.fail("[daemon]", "expected a table")
        self.check_keys("[daemon]", daemon, _DAEMON_KEYS)
        kw: dict[str, Any] = {"source": self.source}
        if daemon.get("keystore") == MEMORY_KEYSTORE:
            kw["keystore_in_memory"] = True
            daemon = {k: v for k, v in daemon.items() if k != "keystore"}
        elif isinstance(daemon.get("keystore"), str) and daemon["keystore"].startswith(
            SHARED_KEYSTORE_SCHEMES
        ):
            kw["keystore_url"] = daemon["keystore"]
            daemon = {k: v for k, v in daemon.items() if k != "keystore"}
        for key in ("allow_test_providers", "allow_root"):
            if key in daemon:
                kw[key] = self.bool_(f"[daemon] {key}", daemon[key])
        for key in ("socket", "keystore", "kek_file", "audit_log", "state_dir"):
            if key in daemon:
                kw[key] = self.path(f"[daemon] {key}", daemon[key])
        if "audit_log_group" in daemon:
            kw["audit_log_group"] = self.group("[daemon] audit_log_group", daemon["audit_log_group"])
        if "socket_mode" in daemon:
            kw["socket_mode"] = self.int_("[daemon] socket_mode", daemon["socket_mode"], 0, 0o777)
        if "max_frame_size" in daemon:
            kw["max_frame_size"] = self.int_(
                "[daemon] max_frame_size", daemon["max_frame_size"], 1024, MAX_FRAME_LIMIT
            )
        for key in (
            "max_contexts_per_client",
            "max_resources_per_client",
            "max_clients",
            "max_buffered_message",
            "worker_threads",
            "memory_budget",
            "connection_memory_budget",
            "max_batch_length",
            "max_connections_per_uid",
        ):
            if key in daemon:
                kw[key] = self.int_(f"[daemon] {key}", daemon[key], 1)
        for key, minimum in (("idle_timeout", 0.0), ("frame_timeout", 0.001)):
            if key in daemon:
                value = daemon[key]
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
                    raise self.fail(f"[daemon] {key}", f"expected seconds >= {minimum}, got {value!r}")
                kw[key] = float(value)
        if "admin_uids" in daemon:
            kw["admin_uids"] = self.uids("[daemon] admin_uids", daemon["admin_uids"])
        limits = {
            k: kw.get(k, getattr(DaemonConfig, k))
            for k in ("max_frame_size", "max_buffered_message", "connection_memory_budget", "memory_budget")
        }
        for small, large in (
            ("max_frame_size", "connection_memory_budget"),
            ("max_buffered_message", "connection_memory_budget"),
            ("connection_memory_budget", "memory_budget"),
        ):
            if limits[small] > limits[large]:
                raise self.fail(
                    f"[daemon] {small}",
                    f"{limits[small]} exceeds {large} ({limits[large]}): it could never be used",
                )

        providers = []
        ids: set[int] = set()
        for i, entry in enumerate(self.table_list(data, "providers"), 1):
            where = f"[[providers]] #{i}"
            self.check_keys(where, entry, {"name", "id", "options", "optional"})
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise self.fail(where, "needs 'name' (an entry-point name in cryptostack.providers)")
            where = f"[[providers]] #{i} ({name})"
            pid = self.int_(f"{where} id", entry.get("id"), 1, 2**31 - 1)
            if pid in ids:
                raise self.fail(where, f"duplicate provider id {pid}")
            ids.add(pid)  # the same plugin may appear twice (two tokens), ids differ
            options = entry.get("options", {})
            if not isinstance(options, Mapping):
                raise self.fail(where, "'options' must be a table")
            optional = self.bool_(f"{where} optional", entry.get("optional", False))
            providers.append(ProviderConfig(name, pid, dict(options), optional))
        kw["providers"] = tuple(providers)

        if "hello_timeout" in daemon:
            value = daemon["hello_timeout"]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise self.fail("[daemon] hello_timeout", f"expected seconds > 0, got {value!r}")
            kw["hello_timeout"] = float(value)
        if "provider_preference" in daemon:
            pref = daemon["provider_preference"]
            if not isinstance(pref, list):
                raise self.fail("[daemon] provider_preference", "expected a list of provider ids")
            for pid in pref:
                if pid not in ids:
                    raise self.fail("[daemon] provider_preference", f"unknown provider id {pid!r}")
            kw["provider_preference"] = tuple(pref)
        if "kek_provider" in daemon:
            kp = daemon["kek_provider"]
            if kp not in ids:
                raise self.fail("[daemon] kek_provider", f"unknown provider id {kp!r}")
            kw["kek_provider"] = kp

        slot_names: set[str] = set()
        slots = []
        for i, entry in enumerate(self.table_list(data, "key_slots"), 1):
            where = f"[[key_slots]] #{i}"
            self.check_keys(
                where,
                entry,
                {
                    "name",
                    "algorithm",
                    "provider",
                    "compatible_providers",
                    "permissions",
                    "provision",
                    "import",
                    "import_format",
                    "use_uids",
                    "write_uids",
                    "placement",
                    "components",
                },
            )
            name = self.name(where, entry, slot_names)
            where = f"[[key_slots]] {name!r}"
            algorithm = entry.get("algorithm")
            if algorithm is not None:
                if not isinstance(algorithm, str) or not algorithm:
                    raise self.fail(where, f"'algorithm' must be a key algorithm name, got {algorithm!r}")
                # Checked (and made canonical) by resolve_key_algorithms() once the
                # providers have registered their own algorithms.
                spec = REGISTRY.find(algorithm)
                algorithm = spec.name if spec is not None else algorithm
            provider = entry.get("provider")
            if provider is not None and provider not in ids:
                raise self.fail(where, f"provider {provider!r} is not a configured provider id")
            compatible = entry.get("compatible_providers", [])
            if not isinstance(compatible, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in compatible
            ):
                raise self.fail(where, "'compatible_providers' must be a list of provider ids")
            perms = None
            if "permissions" in entry:
                if not isinstance(entry["permissions"], list):
                    raise self.fail(where, "'permissions' must be a list of names")
                try:
                    perms = parse_permissions(entry["permissions"])
                except ValueError as exc:
                    raise self.fail(where, str(exc)) from None
            provision = entry.get("provision")
            if provision not in (None, "generate"):
                raise self.fail(where, f"'provision' must be \"generate\", got {provision!r}")
            import_file = self.path(f"{where} import", entry["import"]) if "import" in entry else None
            placement, components = self.placement(where, entry, ids)
            split = placement == "split" or bool(components)
            if split and (provider is not None or compatible):
                raise self.fail(
                    where,
                    "a split slot names its halves' providers in "
                    "'components' (per role); 'provider' and "
                    "'compatible_providers' are for keys held whole",
                )
            if (provision or import_file) and (algorithm is None or (provider is None and not split)):
                raise self.fail(
                    where, "a provisioned slot needs 'algorithm' and 'provider' (or, split, 'components')"
                )
            if provision and import_file:
                raise self.fail(where, "use either 'provision' or 'import', not both")
            slots.append(
                KeySlotConfig(
                    name,
                    algorithm,
                    provider,
                    tuple(compatible),
                    perms,
                    provision,
                    import_file,
                    entry.get("import_format"),
                    self.uids(f"{where} use_uids", entry.get("use_uids")),
                    self.uids(f"{where} write_uids", entry.get("write_uids")),
                    placement,
                    components,
                )
            )
        kw["key_slots"] = tuple(slots)

        cert_names: set[str] = set()
        certs = []
        for i, entry in enumerate(self.table_list(data, "cert_slots"), 1):
            where = f"[[cert_slots]] #{i}"
            self.check_keys(where, entry, {"name", "file", "use_uids", "write_uids"})
            name = self.name(where, entry, cert_names)
            where = f"[[cert_slots]] {name!r}"
            file = self.path(f"{where} file", entry["file"]) if "file" in entry else None
            certs.append(
                CertSlotConfig(
                    name,
                    file,
                    self.uids(where, entry.get("use_uids")),
                    self.uids(where, entry.get("write_uids")) or (),
                )
            )
        kw["cert_slots"] = tuple(certs)

        store_names: set[str] = set()
        stores = []
        for i, entry in enumerate(self.table_list(data, "trust_stores"), 1):
            where = f"[[trust_stores]] #{i}"
            self.check_keys(where, entry, {"name", "anchors", "crls", "use_uids", "write_uids"})
            name = self.name(where, entry, store_names)
            where = f"[[trust_stores]] {name!r}"
            anchors = entry.get("anchors", [])
            crls = entry.get("crls", [])
            if not isinstance(anchors, list) or not isinstance(crls, list):
                raise self.fail(where, "'anchors' and 'crls' must be lists of files")
            stores.append(
                TrustStoreConfig(
                    name,
                    tuple(self.path(f"{where} anchors", a) for a in anchors),
                    tuple(self.path(f"{where} crls", c) for c in crls),
                    self.uids(where, entry.get("use_uids")),
                    self.uids(where, entry.get("write_uids")) or (),
                )
            )
        kw["trust_stores"] = tuple(stores)
        return DaemonConfig(**kw)
