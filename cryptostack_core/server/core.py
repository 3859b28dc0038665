"""The service core: what every family of operations shares.

Providers and the key store, the sessions of connected clients, audit, access decisions,
registering new handles for a call, and finding keys (slots, guards, copies on another
provider). The operation families in :mod:`cryptostack_core.server.ops` are built over a
:class:`ServiceCore`; the core knows none of them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from cryptostack_core.sdk.provider import Provider, ProviderKey, ProviderState, StoredKey
from cryptostack_core.server import paths
from cryptostack_core.server.arguments import invalid, rid_arg
from cryptostack_core.server.budget import MemoryBudget
from cryptostack_core.server.config import ConfigError, DaemonConfig, KeySlotConfig
from cryptostack_core.server.discovery import LoadedProvider, ProviderStartError, load_provider
from cryptostack_core.server.hooks import (
    AccessRequest,
    AuditEvent,
    AuditLogger,
    PeerIdentity,
    make_plugin_manager,
)
from cryptostack_core.server.keystore import KeyStore, SlotRecord, open_store
from cryptostack_core.server.keystore.parts import (
    SPLIT_PROVIDER,
    StoredPart,
    decode_parts,
    encode_parts,
)
from cryptostack_core.server.selection import ProviderSet
from cryptostack_core.server.session import Handle, KeyEntry, Session
from cryptostack_core.server.split import choice as split_choice
from cryptostack_core.server.split import keys as split_keys
from cryptostack_core.server.split import plan as split_plan
from cryptostack_core.server.states import ContextState, StreamContextState
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmSpec, KeyClass, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.permissions import has_permission
from cryptostack_core.wire.protocol import rid_to_wire
from cryptostack_core.wire.resources import (
    CryptoResourceId,
    KeyFormat,
    KeySlotStatus,
    ResourcePersistence,
    ResourceType,
)

log = logging.getLogger("cryptostack.service")
PROBE_TIMEOUT = 1.0  # seconds a provider has to answer a status probe
SLOT_KEY_CACHE = 256
"""Slot versions whose provider key the daemon keeps loaded between uses (least recently
used first out)."""
RECEIVING = P.DECRYPT | P.UNWRAP | P.VERIFY | P.DECAPSULATE | P.AGREE | P.EXPORT
"""What a slot's older (non-primary) versions may still do: undo or check what was made
under them; never make anything new."""


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(slots=True)
class Call:
    """One request in flight: its client, its deadline, and whether the front end gave up
    on it (then anything it creates later is released at once)."""

    session: Session
    deadline: float | None = None
    abandoned: bool = False
    created: list[int] = field(default_factory=list)


class ServiceCore:
    """Providers, key store, sessions, audit and access: the state every family shares."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.pm = plugin_manager or make_plugin_manager()
        self._audit_logger = AuditLogger(config.audit_log, config.audit_log_group)
        self.pm.register(self._audit_logger, name="audit-log")
        self.daemon_uid = os.getuid()
        self.started = time.time()
        base = config.state_dir or (config.keystore.parent if config.keystore else None)
        self.state_root = (
            state_dir
            or base
            or Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / f"cryptostack-{os.getpid()}"
        )
        config_dir = Path(config.source).resolve().parent if not config.source.startswith("<") else Path.cwd()
        self.warnings: list[str] = []
        """What an operator must hear: logged at start and listed by ``status``."""
        loaded = [
            load_provider(p, self.state_root, config_dir, allow_test_providers=config.allow_test_providers)
            for p in config.providers
        ]
        self.providers = ProviderSet(loaded, config.preference)
        try:
            self._require_providers()
            # Key slots may name algorithms the providers just registered.
            failed = "".join(
                f"; provider {p.name} ({p.id}) failed to load: {p.load_error}"
                for p in loaded
                if p.instance is None and not p.algorithms
            )
            config = self.config = config.resolve_key_algorithms(failed)
            for slot in config.key_slots:  # hybrid placements, once the names are known
                problem = split_plan.slot_problem(slot)
                if problem is not None:
                    raise ConfigError(f"{config.source}: [[key_slots]] {slot.name!r}: {problem}")
            self.keystore = self._open_keystore()
        except BaseException:
            self._close_providers()
            self._audit_logger.close()
            raise
        for warning in self.warnings:
            log.warning("%s", warning)
        self.slots = {s.name: s for s in config.key_slots}
        self.cert_slots = {s.name: s for s in config.cert_slots}
        self.trust_stores = {s.name: s for s in config.trust_stores}
        self.budget = MemoryBudget(config.memory_budget, config.connection_memory_budget)
        self.provider_executor: Callable[[int], concurrent.futures.Executor | None] | None = None
        """Set by a front end with worker pools: where to run a provider's status probe."""
        self.running_on = threading.local()
        """``provider``: the provider whose pool runs the current thread's request (set by
        the front end), so a probe never waits for its own thread."""
        self.admin_uids = frozenset({0, self.daemon_uid, *config.admin_uids})
        self.sessions: dict[int, Session] = {}
        self._session_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._slot_keys: OrderedDict[tuple[str, int], tuple[tuple[Any, ...], KeyEntry]] = OrderedDict()
        self._slot_keys_lock = threading.Lock()
        # Backend objects (token objects) in use by loaded keys, and those whose version was
        # retired or cleared while in use: destroyed when their last user lets go.
        self._stored_users: dict[tuple[int, bytes], int] = {}
        self._doomed: dict[tuple[int, bytes], tuple[StoredKey, str]] = {}
        self._stored_lock = threading.Lock()
        self._reconcile_stored()
        self.provision_slots()

    def _require_providers(self) -> None:
        """ProviderStartError unless every provider not marked ``optional`` is up."""
        down = []
        for loaded in self.providers.by_id.values():
            if loaded.instance is not None and loaded.instance.test_only:
                self.warnings.append(
                    f"provider {loaded.name} ({loaded.id}) is a test provider "
                    "(allow_test_providers = true): not for production"
                )
            state, reason = loaded.state()
            if state is not ProviderState.UNAVAILABLE:
                continue
            if loaded.config.optional:
                self.warnings.append(
                    f"optional provider {loaded.name} ({loaded.id}) is unavailable: {reason}"
                )
                continue
            down.append(f"[[providers]] {loaded.name} (id {loaded.id}): {reason}")
        if down:
            raise ProviderStartError(
                f"{self.config.source}: provider(s) cannot start: {'; '.join(down)} (mark a "
                "provider optional = true to start without it)"
            )

    def _open_keystore(self) -> KeyStore:
        config = self.config
        self.warnings += paths.storage_warnings(config)
        kek_source = None
        if config.kek_provider is not None:
            kp = self.providers.get(config.kek_provider)
            if kp.instance is None or kp.instance.kek_source() is None:
                raise CryptoError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"kek_provider {kp.name} ({kp.id}) cannot protect the key "
                    f"store: {kp.load_error or 'it offers no KEK source'}",
                )
            kek_source = kp.instance.kek_source()
        location = paths.store_location(config)
        if location is None:
            return KeyStore.open(None)
        kek, notes = paths.kek_location(config)
        self.warnings += notes
        if kek_source is None or kek_source.uses_file:
            paths.prepare_kek(location, kek)
        store = open_store(location, kek_source, kek)
        for note in store.notes:
            log.warning("%s", note)
        return store

    def _close_providers(self) -> None:
        for loaded in self.providers.by_id.values():
            if loaded.instance is not None:
                try:
                    loaded.instance.close()
                except Exception:
                    log.exception("provider %s failed to close", loaded.name)

    # --- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Close every session, provider and the key store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self.sessions.values())
        for session in sessions:
            self.close_session(session)
        self.forget_slot_keys()
        self._close_providers()
        self.keystore.close()
        self._audit_logger.close()

    def reopen_audit(self, path: Path | None) -> None:
        """Reopen the audit log (after rotation, on SIGHUP), at ``path`` from now on."""
        self._audit_logger.reopen(path)

    def open_session(self, peer: PeerIdentity) -> Session:
        """Register a client: RESOURCE_EXHAUSTED past its uid's share of connections, then
        (kept for last) past the daemon's total."""
        config = self.config
        with self._lock:
            same_uid = sum(1 for s in self.sessions.values() if s.peer.uid == peer.uid)
            if same_uid >= config.max_connections_per_uid:
                raise CryptoError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"uid {peer.uid} already has {same_uid} connections "
                    f"(max_connections_per_uid {config.max_connections_per_uid})",
                )
            if len(self.sessions) >= config.max_clients:
                raise CryptoError(
                    ErrorCode.RESOURCE_EXHAUSTED, f"too many clients (max_clients {config.max_clients})"
                )
            session = Session(
                next(self._session_ids),
                peer,
                config.max_contexts_per_client,
                config.max_resources_per_client,
                memory=self.budget.account(),
            )
            self.sessions[session.id] = session
        return session

    def detach_session(self, session: Session) -> None:
        """Stop counting a client that disconnected (at once: its connection slot is free
        even while :meth:`close_session` still releases what it held)."""
        with self._lock:
            self.sessions.pop(session.id, None)

    def close_session(self, session: Session) -> None:
        """Free everything a client held (it disconnected or died)."""
        self.detach_session(session)
        session.close(self.release_handle)
        session.memory.release_all()

    def provider_facts(self, detailed: bool) -> list[dict[str, Any]]:
        """Each provider's state (and, ``detailed``, its own description), each asked on its
        provider's pool when there are pools: a hung provider shows as unavailable after
        :data:`PROBE_TIMEOUT` instead of holding up ``status``."""

        def probe(loaded: LoadedProvider) -> dict[str, Any]:
            if detailed:
                return loaded.describe()
            state, reason = loaded.state()
            return {"id": loaded.id, "name": loaded.name, "state": state.value, "reason": reason}

        providers = list(self.providers.by_id.values())
        futures = []
        here = getattr(self.running_on, "provider", None)
        for loaded in providers:
            pool = self.provider_executor(loaded.id) if self.provider_executor else None
            if loaded.id == here:
                pool = None  # this thread is that provider's: waiting for it would stall
            futures.append(pool.submit(probe, loaded) if pool is not None else None)
        deadline = time.monotonic() + PROBE_TIMEOUT
        facts = []
        for loaded, future in zip(providers, futures):
            if future is None:
                facts.append(probe(loaded))
                continue
            try:
                facts.append(future.result(max(0.0, deadline - time.monotonic())))
            except concurrent.futures.TimeoutError:
                future.cancel()
                facts.append(
                    {
                        "id": loaded.id,
                        "name": loaded.name,
                        "state": ProviderState.UNAVAILABLE.value,
                        "reason": f"busy: no answer to a status probe within {PROBE_TIMEOUT:g} s",
                    }
                )
        return facts

    def may(
        self, session: Session, action: str, rtype: ResourceType, name: str, allowed: tuple[int, ...] | None
    ) -> bool:
        """Whether the access hooks allow ``action`` (no audit event: for listings)."""
        return bool(
            self.pm.hook.cryptostack_access_decision(
                request=AccessRequest(
                    client=session.peer,
                    action=action,
                    resource_type=rtype.value,
                    resource_name=name,
                    daemon_uid=self.daemon_uid,
                    allowed_uids=allowed,
                )
            )
        )

    def is_admin(self, session: Session) -> bool:
        """Whether the client may see other clients and restricted slots (``admin_uids``,
        root and the daemon's own uid)."""
        return session.peer.uid in self.admin_uids

    def session_list(self) -> list[Session]:
        """The connected clients, for ``status``."""
        with self._lock:
            return list(self.sessions.values())

    def release_handle(self, handle: Handle) -> None:
        """Free what one handle holds (a context, a key reference); never raises."""
        try:
            if handle.kind == "context":
                ctx: ContextState = handle.obj
                # A call still running on this context (abandoned after a timeout) keeps
                # its lock; do not wait long for it: closing marks the context dead anyway.
                # On an event loop never wait: the call holding it may need that loop.
                acquired = ctx.lock.acquire(timeout=0 if ctx.error or _on_event_loop() else 5)
                try:
                    ctx.close()
                finally:
                    if acquired:
                        ctx.lock.release()
            elif handle.kind == "key":
                handle.obj.release()
        except Exception:
            log.exception("releasing a %s failed", handle.kind)

    # --- audit and access --------------------------------------------------------------
    def audit(
        self,
        session: Session,
        action: str,
        resource: str,
        result: str = "ok",
        *,
        provider: int | None = None,
        algorithm: str | None = None,
        operation: str | None = None,
        detail: str = "",
        providers: tuple[int, ...] = (),
    ) -> None:
        """Emit an audit event to every hook implementation (``providers``: all of them when
        a request involved several, e.g. the halves of a split hybrid key)."""
        providers = providers if len(providers) > 1 else ()
        try:
            hook = self.pm.hook.cryptostack_audit
            impls = hook.get_hookimpls()
            if len(impls) == 1 and impls[0].plugin is self._audit_logger:
                # The built-in logger alone (the usual case): no event object, no dispatch.
                self._audit_logger.record(
                    action,
                    session.peer,
                    resource,
                    result,
                    provider,
                    algorithm,
                    operation,
                    detail,
                    None,
                    providers,
                )
                return
            hook(
                event=AuditEvent(
                    action=action,
                    client=session.peer,
                    resource=resource,
                    result=result,
                    provider=provider,
                    algorithm=algorithm,
                    operation=operation,
                    detail=detail,
                    providers=providers,
                )
            )
        except Exception:
            log.exception("an audit hook failed")

    def metric(self, name: str, value: float, labels: dict[str, str]) -> None:
        """Emit a measurement to every metrics hook."""
        try:
            self.pm.hook.cryptostack_metric(name=name, value=value, labels=labels)
        except Exception:
            log.exception("a metrics hook failed")

    def check_access(
        self, session: Session, action: str, rtype: ResourceType, name: str, allowed: tuple[int, ...] | None
    ) -> None:
        """Ask the access hooks; ACCESS_DENIED (audited) if refused."""
        decision = self.pm.hook.cryptostack_access_decision(
            request=AccessRequest(
                client=session.peer,
                action=action,
                resource_type=rtype.value,
                resource_name=name,
                daemon_uid=self.daemon_uid,
                allowed_uids=allowed,
            )
        )
        if not decision:
            self.audit(session, f"access.{action}", name, ErrorCode.ACCESS_DENIED.value)
            raise CryptoError(
                ErrorCode.ACCESS_DENIED, f"uid {session.peer.uid} may not {action} {rtype.value} {name!r}"
            )

    def require_permission(
        self,
        session: Session,
        entry: KeyEntry,
        wanted: P,
        algorithm: str,
        alternatives: P = P.NONE,
        operation: Operation | None = None,
    ) -> None:
        """KEY_OPERATION_NOT_PERMITTED (audited as ``operation``) unless the key allows
        ``wanted`` (or one of ``alternatives``)."""
        ok = has_permission(entry.permissions, wanted) or (
            alternatives and bool(int(entry.permissions) & int(alternatives))
        )
        if not ok:
            names = (wanted | alternatives).name or str(wanted)
            # One spelling in the audit log: Operation values ("encrypt"), lower case.
            spelled = operation.value if operation is not None else names.lower()
            self.audit(
                session,
                "key.use",
                entry.slot or "ephemeral key",
                ErrorCode.KEY_OPERATION_NOT_PERMITTED.value,
                provider=entry.home.id,
                algorithm=algorithm,
                operation=spelled,
            )
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                f"the key ({entry.algorithm}) does not permit "
                f"{str(names).replace('|', ' or ')} (it allows "
                f"{entry.permissions.name or 'nothing'})",
            )

    @staticmethod
    def check_key_algorithm(spec: AlgorithmSpec, entry: KeyEntry) -> None:
        """INVALID_ARGUMENT unless ``spec`` takes keys of the entry's algorithm."""
        if entry.algorithm not in spec.key_algorithms:
            raise invalid(
                f"a {entry.algorithm} key cannot be used with {spec.name} (it takes "
                f"{', '.join(spec.key_algorithms)} keys)"
            )

    # --- handles -----------------------------------------------------------------------
    def register(self, call: Call, handle: Handle) -> int:
        """Add a handle to the call's session; released at once if the call was abandoned.
        A stream context's buffered messages are charged to the session's memory budget."""
        if isinstance(handle.obj, StreamContextState):
            handle.obj.memory = call.session.memory
        number = call.session.add(handle)
        with call.session.lock:
            call.created.append(number)
        if call.abandoned:
            popped = call.session.pop(number)
            if popped is not None:
                self.release_handle(popped)
            raise CryptoError(ErrorCode.OPERATION_TIMED_OUT, "the call was abandoned")
        return number

    def context(self, call: Call, number: object, kind: type[ContextState]) -> Any:
        """The caller's context ``number``, which must be a usable ``kind``."""
        ctx = call.session.context(number)
        if not isinstance(ctx, kind) or type(ctx).kind != kind.kind:
            raise invalid(f"context #{number} is a {ctx.kind} context, not {kind.kind}")
        ctx.check_usable()
        return ctx

    def guard_info(self, number: int, entry: KeyEntry) -> dict[str, Any]:
        """The wire description of a key guard."""
        info: dict[str, Any] = {
            "id": rid_to_wire(CryptoResourceId(ResourceType.KEY, number)),
            "persistence": entry.persistence.value,
            "permissions": int(entry.permissions),
            "algorithm": entry.algorithm,
            "provider": entry.home.id,
        }
        if entry.components is not None:  # split hybrid key: provider is its pq half's
            info["components"] = entry.component_info()
        return info

    def add_key(self, call: Call, entry: KeyEntry) -> dict[str, Any]:
        """Hand a new key to the client (the entry's reference moves to the handle)."""
        try:
            number = self.register(call, Handle("key", entry, ResourceType.KEY, entry.persistence))
        except BaseException:
            entry.release()
            raise
        return self.guard_info(number, entry)

    # --- providers and keys -------------------------------------------------------------
    def provider_instance(self, loaded: LoadedProvider) -> Provider:
        """The provider's instance, or PROVIDER_UNAVAILABLE with its load error."""
        if loaded.instance is None:
            raise CryptoError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"provider {loaded.name} ({loaded.id}) is unavailable: {loaded.load_error}",
            )
        return loaded.instance

    def key_on(self, session: Session, entry: KeyEntry, target: LoadedProvider) -> ProviderKey:
        """The key as ``target`` holds it, copying it there (audited) if it lives elsewhere."""
        if entry.components is not None:  # never whole: its halves move one by one
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                f"this {entry.algorithm} key is split across providers "
                f"{', '.join(str(h['provider']) for h in entry.component_info())};"
                " it cannot be moved to one provider",
            )
        if target.id == entry.home.id:
            return entry.pkey
        existing = entry.copies.get(target.id)
        if existing is not None:
            return existing
        home = self.provider_instance(entry.home)
        dest = self.provider_instance(target)
        if entry.has_private:
            spec = REGISTRY.get(entry.algorithm)
            fmt = KeyFormat.RAW if spec.key_class is KeyClass.SYMMETRIC else KeyFormat.PKCS8_DER
            material = home.export_key(entry.pkey, fmt)
        else:
            fmt = KeyFormat.SPKI_DER
            material = home.export_public_key(entry.pkey, fmt)
        copy = dest.import_key(entry.algorithm, material, fmt, entry.permissions)
        copy._cryptostack_owner = dest  # type: ignore[attr-defined]
        entry.copies[target.id] = copy
        self.audit(
            session,
            "key.transfer",
            entry.slot or "ephemeral key",
            provider=target.id,
            algorithm=entry.algorithm,
            detail=f"copied from provider {entry.home.id} to {target.id}",
        )
        return copy

    def key_argument(self, call: Call, args: Any, name: str = "key") -> KeyEntry:
        """A key given as slot or key id; the caller owns one reference to the result."""
        rid = rid_arg(args, name)
        if rid.type is ResourceType.KEY_SLOT:
            handle = call.session.get(rid)
            return self.load_slot(call.session, handle.obj.name)
        if rid.type is ResourceType.KEY:
            entry: KeyEntry = call.session.get(rid).obj
            return entry.retain()
        raise invalid(f"{name!r} must be a key slot or a key, got a {rid.type.value}")

    # --- key slots ---------------------------------------------------------------------
    def slot_config(self, name: str) -> KeySlotConfig:
        """The configured slot, or RESOURCE_NOT_FOUND."""
        slot = self.slots.get(name)
        if slot is None:
            raise CryptoError(ErrorCode.RESOURCE_NOT_FOUND, f"no key slot named {name!r}")
        return slot

    def slot_info(self, name: str) -> dict[str, Any]:
        """A slot's metadata and versions as the client's ``KeySlotInfo`` (not
        access-checked; read from the key store, so another daemon's change shows at once)."""
        slot = self.slot_config(name)
        versions = self.keystore.slot_versions(name)
        listed = [
            {
                "version": v.version,
                "state": _version_state(v, versions.min_version),
                "created": v.created,
                "updated": v.updated,
                "algorithm": v.algorithm,
                "provider": v.provider,
                "permissions": int(v.permissions),
            }
            for v in versions.versions
        ]
        common = {
            "name": name,
            "versions": listed,
            "min_version": versions.min_version,
            "head_version": versions.head,
        }
        if slot.placement != "auto" or slot.components:
            common["placement"] = "split" if slot.split else slot.placement
        primary = versions.primary
        if primary is not None and primary.provider == SPLIT_PROVIDER:
            # a hybrid key split over two providers: where each half is (docs/hybrid.md)
            common["components"] = [
                {"role": part.role, "provider": part.provider, "algorithm": part.algorithm}
                for part in self._parts(name, primary.version)
            ]
        if primary is None:
            return {
                **common,
                "status": KeySlotStatus.EMPTY.value,
                "algorithm": slot.algorithm,
                "provider": slot.provider,
                "compatible_providers": list(slot.compatible_providers),
                "permissions": int(slot.permissions or 0),
                "version": 0,
                "created": None,
                "updated": None,
            }
        return {
            **common,
            "status": KeySlotStatus.OCCUPIED.value,
            "algorithm": primary.algorithm,
            "provider": primary.provider,
            "compatible_providers": list(primary.compatible),
            "permissions": int(primary.permissions),
            "version": primary.version,
            "created": versions.versions[0].created,
            "updated": primary.created,
        }

    def export_uids(self, name: str) -> frozenset[int]:
        """The uids slot ``name``'s configuration lets export (``write_uids``; unset: root
        and the daemon's uid, as the default access policy decides)."""
        slot = self.slot_config(name)
        if slot.write_uids is not None:
            return frozenset(slot.write_uids)
        return frozenset({0, self.daemon_uid})

    def load_slot(self, session: Session, name: str, version: int | None = None) -> KeyEntry:
        """The key of slot ``name`` (its primary version, or ``version``) as a
        :class:`KeyEntry` the caller owns one reference to (access-checked). The entry
        carries the export allow-list of the slot, narrowed by any slot its material came
        from. A version that is not the primary may only decrypt, unwrap, verify,
        decapsulate and agree (and export, if it could).

        Loaded versions stay cached (:data:`SLOT_KEY_CACHE`), so a slot used again costs no
        provider call; the key store is still asked every time whether the version may be
        used (retired, below the minimum, or cleared by another daemon)."""
        slot = self.slot_config(name)
        self.check_access(session, "use", ResourceType.KEY_SLOT, name, slot.use_uids)
        record = self.keystore.resolve(name, version)
        stamp = (record.created, record.primary, record.provider, record.algorithm, int(record.permissions))
        key = (name, record.version)
        with self._slot_keys_lock:
            hit = self._slot_keys.get(key)
            if hit is not None and hit[0] == stamp:
                self._slot_keys.move_to_end(key)
                return hit[1].retain()
        entry = self._load_version(name, record)
        entry.retain()  # the cache's reference
        with self._slot_keys_lock:
            old = self._slot_keys.pop(key, None)
            self._slot_keys[key] = (stamp, entry)
            evicted = [old[1]] if old is not None else []
            while len(self._slot_keys) > SLOT_KEY_CACHE:
                evicted.append(self._slot_keys.popitem(last=False)[1][1])
        for gone in evicted:
            gone.release()
        return entry

    def _parts(self, name: str, version: int) -> list[StoredPart]:
        """The parts of a split version (a hybrid key over two providers)."""
        _, stored = self.keystore.load_key(name, version)
        return decode_parts(stored.blob, f"key slot {name!r} v{version}")

    def _load_version(self, name: str, record: SlotRecord) -> KeyEntry:
        _, stored = self.keystore.load_key(name, record.version)
        perms = record.permissions
        if not record.primary:
            perms = (perms & RECEIVING) | (P.VERIFY if perms & P.MAC else P.NONE)
        exports = self.export_uids(name)
        if record.export_uids is not None:
            exports &= record.export_uids
        if record.provider == SPLIT_PROVIDER:
            plan = split_plan.plan_for(record.algorithm)
            if plan is None or not plan.splittable:
                raise CryptoError(
                    ErrorCode.PROVIDER_ERROR,
                    f"key slot {name!r} v{record.version} holds {record.algorithm} "
                    "split over providers, which cannot be split",
                )
            slot = self.slot_config(name)
            return split_keys.load(
                plan,
                decode_parts(stored.blob, f"key slot {name!r} v{record.version}"),
                perms,
                self.providers.get,
                slot=name,
                version=record.version,
                export_uids=exports,
                lists=slot.components,
                on_free=lambda part: (
                    None if part.stored.secret else self._track_stored(part.provider, part.stored)
                ),
            )
        loaded = self.providers.get(record.provider)
        instance = self.provider_instance(loaded)
        pkey = instance.load_stored_key(stored, record.algorithm, perms)
        on_free = None if stored.secret else self._track_stored(loaded.id, stored)
        return KeyEntry(
            algorithm=record.algorithm,
            permissions=perms,
            home=loaded,
            pkey=pkey,
            persistence=ResourcePersistence.PERSISTENT,
            compatible=record.compatible,
            slot=name,
            export_uids=exports,
            version=record.version,
            on_free=on_free,
        )

    def forget_slot_keys(self, name: str | None = None) -> None:
        """Drop cached keys of slot ``name`` (all slots: None), e.g. after a version was
        retired or the configuration reloaded; users keep theirs until they let go."""
        with self._slot_keys_lock:
            keys = [k for k in self._slot_keys if name is None or k[0] == name]
            gone = [self._slot_keys.pop(k)[1] for k in keys]
        for entry in gone:
            entry.release()

    # --- backend objects of stored keys --------------------------------------------------
    def _track_stored(self, provider: int, stored: StoredKey) -> Callable[[], None]:
        """Count a loaded key as a user of its backend object; the returned callback is the
        key's ``on_free``."""
        ref = (provider, bytes(stored.blob))
        with self._stored_lock:
            self._stored_users[ref] = self._stored_users.get(ref, 0) + 1

        def free() -> None:
            with self._stored_lock:
                left = self._stored_users.get(ref, 1) - 1
                if left > 0:
                    self._stored_users[ref] = left
                    return
                self._stored_users.pop(ref, None)
                doomed = self._doomed.pop(ref, None)
            if doomed is not None:
                self._destroy_stored(provider, *doomed)

        return free

    def destroy_when_unused(self, provider: int, stored: StoredKey, what: str) -> None:
        """Destroy the backend object of a retired or cleared version (a token object) now,
        or -- while a loaded key or an open context still uses it -- when the last of them
        is released. One rule on every provider: what a client holds keeps working."""
        if stored.secret:
            return
        ref = (provider, bytes(stored.blob))
        with self._stored_lock:
            if self._stored_users.get(ref):
                self._doomed[ref] = (stored, what)
                log.info("%s: its backend object is destroyed when its last user lets go", what)
                return
        self._destroy_stored(provider, stored, what)

    def _destroy_stored(self, provider: int, stored: StoredKey, what: str) -> None:
        def run() -> None:
            try:
                loaded = self.providers.get(provider)
                self.provider_instance(loaded).delete_stored_key(stored)
            except Exception:
                log.exception(
                    "could not destroy the backend object of %s (the provider's "
                    "reconciliation retries at the next start)",
                    what,
                )
                return
            self._daemon_audit("key.destroy", what, provider, "backend object destroyed (no user left)")

        if _on_event_loop():
            threading.Thread(target=run, name="destroy-stored", daemon=True).start()
        else:
            run()

    def _daemon_audit(self, action: str, resource: str, provider: int | None, detail: str) -> None:
        daemon = PeerIdentity(os.getpid(), os.getuid(), os.getgid())
        try:
            self.pm.hook.cryptostack_audit(
                event=AuditEvent(
                    action=action,
                    client=daemon,
                    resource=resource,
                    result="ok",
                    provider=provider,
                    detail=detail,
                )
            )
        except Exception:
            log.exception("an audit hook failed")

    def _reconcile_stored(self) -> None:
        """Let each provider destroy durable objects a crash left without a slot (audited)."""
        daemon = PeerIdentity(os.getpid(), os.getuid(), os.getgid())
        for loaded in self.providers.by_id.values():
            if loaded.instance is None:
                continue
            try:
                destroyed = loaded.instance.reconcile_stored(self.keystore.references(loaded.id))
            except Exception as exc:  # noqa: BLE001 - retried at the next start
                log.error(
                    "provider %s (%d) could not reconcile its stored objects: %s", loaded.name, loaded.id, exc
                )
                continue
            for orphan in destroyed:
                log.warning(
                    "provider %s (%d): %s: %s", loaded.name, loaded.id, orphan.resource, orphan.detail
                )
                try:
                    self.pm.hook.cryptostack_audit(
                        event=AuditEvent(
                            action="key.reconcile",
                            client=daemon,
                            resource=orphan.resource,
                            result="ok",
                            provider=loaded.id,
                            detail=orphan.detail,
                        )
                    )
                except Exception:
                    log.exception("an audit hook failed")

    def provision_slots(self) -> None:
        """Fill every empty slot marked ``provision``/``import`` (at start and on reload)."""
        for slot in self.config.key_slots:
            if not (slot.provision or slot.import_file) or self.keystore.slot(slot.name):
                continue
            if slot.split:
                self._provision_split(slot)
                continue
            assert slot.algorithm is not None and slot.provider is not None
            loaded = self.providers.get(slot.provider)
            if loaded.instance is None:
                log.error("cannot provision slot %s: provider %s unavailable", slot.name, loaded.name)
                continue
            spec = REGISTRY.get(slot.algorithm)
            perms = slot.permissions if slot.permissions is not None else spec.default_permissions
            try:
                if slot.import_file is not None:
                    material = slot.import_file.read_bytes()
                    fmt = (
                        KeyFormat(slot.import_format)
                        if slot.import_format
                        else (
                            KeyFormat.PEM
                            if material.lstrip().startswith(b"-----")
                            else KeyFormat.RAW
                            if spec.key_class is KeyClass.SYMMETRIC
                            else KeyFormat.PKCS8_DER
                        )
                    )
                    pkey = loaded.instance.import_key(spec.name, material, fmt, perms)
                else:
                    pkey = loaded.instance.generate_key(spec.name, perms)
                try:
                    stored = loaded.instance.persist_key(pkey, slot.name)
                finally:
                    loaded.instance.release_key(pkey)
                # Daemons sharing a store may provision at once: only the first key counts.
                if not self.keystore.store_key(
                    slot.name, spec.name, loaded.id, slot.compatible_providers, perms, stored, if_empty=True
                ):
                    self.destroy_when_unused(
                        loaded.id, stored, f"key slot {slot.name} (provisioned by another daemon first)"
                    )
                    continue
                self.forget_slot_keys(slot.name)
                log.info("provisioned key slot %s (%s on %s)", slot.name, spec.name, loaded.name)
            except (CryptoError, OSError) as exc:
                raise CryptoError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"{self.config.source}: [[key_slots]] {slot.name!r}: provisioning failed: {exc}",
                ) from None

    def _provision_split(self, slot: KeySlotConfig) -> None:
        """Fill an empty split slot: each half generated (or imported) on the first provider
        of its role's list that can hold it, persisted there, one version over both."""
        assert slot.algorithm is not None
        plan = split_plan.plan_for(slot.algorithm)
        assert plan is not None
        spec = REGISTRY.get(slot.algorithm)
        perms = slot.permissions if slot.permissions is not None else spec.default_permissions
        where = f"{self.config.source}: [[key_slots]] {slot.name!r}"
        request = split_plan.PlacementRequest.of_slot(slot)
        operation = Operation.IMPORT_KEY if slot.import_file is not None else Operation.GENERATE_KEY
        choice = split_choice.choose_new(self.providers, spec.name, (operation,), request)
        if choice.halves is None:
            log.error("cannot provision slot %s: %s", slot.name, choice.error)
            return
        try:
            if slot.import_file is not None:
                material = slot.import_file.read_bytes()
                fmt = (
                    KeyFormat(slot.import_format)
                    if slot.import_format
                    else (KeyFormat.PEM if material.lstrip().startswith(b"-----") else KeyFormat.RAW)
                )
                entry = split_keys.import_key(plan, material, fmt, perms, choice.halves, slot.components)
            else:
                entry = split_keys.generate(plan, perms, choice.halves, slot.components)
            try:
                parts = split_keys.persist(entry, slot.name, choice.halves, lambda half, target: half.pkey)
            finally:
                entry.release()
        except (CryptoError, OSError, ValueError) as exc:
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{where}: provisioning failed: {exc}") from None
        # Daemons sharing a store may provision at once: only the first key counts. Until
        # the row commits no version names the halves: a crash here leaves token objects
        # that the next start's reconciliation destroys (nothing half-made is visible).
        try:
            stored = self.keystore.store_key(
                slot.name,
                spec.name,
                SPLIT_PROVIDER,
                (),
                perms,
                StoredKey(encode_parts(parts), True),
                if_empty=True,
            )
        except CryptoError as exc:
            if not getattr(exc, "maybe_committed", False):
                for part in parts:
                    self.destroy_when_unused(
                        part.provider, part.stored, f"key slot {slot.name} (provisioning failed)"
                    )
            raise
        if not stored:
            for part in parts:
                self.destroy_when_unused(
                    part.provider, part.stored, f"key slot {slot.name} (provisioned by another daemon first)"
                )
            return
        self.forget_slot_keys(slot.name)
        log.info(
            "provisioned key slot %s (%s split: %s)",
            slot.name,
            spec.name,
            ", ".join(f"{part.role} on provider {part.provider}" for part in parts),
        )


def _version_state(version: SlotRecord, minimum: int) -> str:
    """A version's state as clients see it: PRIMARY, ACTIVE, DISABLED (below the minimum)
    or RETIRED."""
    if version.state == "retired":
        return "RETIRED"
    if version.primary:
        return "PRIMARY"
    return "DISABLED" if version.version < minimum else "ACTIVE"
