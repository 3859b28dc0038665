"""The crypto service: every request the daemon (or an in-process stack) serves.

The service is transport-agnostic. Frontends (``daemon`` over a unix socket, ``inproc``
in the caller's process) open a :class:`~cryptostack_core.session.Session` per client, hand
each request to :meth:`Service.handle` (in a worker thread unless :meth:`Service.is_inline`
says it is cheap) and, when a request outlives its deadline, call
:meth:`Service.abandon` so the context involved enters its error state.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import __version__
from .algorithms import REGISTRY, AlgorithmKind, AlgorithmSpec, KeyClass, Operation
from .arguments import (
    algorithm_arg,
    arg,
    data_arg,
    enum_arg,
    int_arg,
    invalid,
    permissions_arg,
    rid_arg,
)
from .daemon_config import DaemonConfig, KeySlotConfig
from .discovery import LoadedProvider, load_provider
from .errors import CryptoError, ErrorCode
from .hooks import AccessRequest, AuditEvent, AuditLogger, PeerIdentity, make_plugin_manager
from .keystore import KeyStore
from .operations import (
    AgreementContext,
    CipherContext,
    HashContext,
    KemContext,
    ServerContext,
    SignContext,
    StreamContext,
    VerifyContext,
)
from .permissions import KeyOperationPermission as P
from .permissions import has_permission
from .protocol import rid_to_wire
from .provider import _DEADLINE, Provider, ProviderKey
from .resources import (
    CipherDirection,
    CryptoResourceId,
    KeyFormat,
    KeySlotStatus,
    ResourcePersistence,
    ResourceType,
)
from .selection import ProviderSet
from .session import Handle, KeyEntry, Session
from .shm import SHM_ARGUMENTS, DaemonRegion, is_reference, reference_length

log = logging.getLogger("cryptostack.service")

MIN_MAC_TAG = 10  # bytes: the shortest truncated MAC a verify context accepts (80 bits)


@dataclass
class Call:
    """One request in flight: its deadline and whether the frontend gave up on it."""

    session: Session
    deadline: float | None = None
    abandoned: bool = False
    created: list[int] = field(default_factory=list)


# --- argument parsing ----------------------------------------------------------------
class Service:
    """One crypto service instance: providers, key store, sessions."""

    def __init__(self, config: DaemonConfig, *, plugin_manager: pluggy.PluginManager | None = None,
                 state_dir: Path | None = None) -> None:
        self.config = config
        self.pm = plugin_manager or make_plugin_manager()
        self._audit_logger = AuditLogger(config.audit_log)
        self.pm.register(self._audit_logger, name="audit-log")
        self.daemon_uid = os.getuid()
        self.started = time.time()
        base = config.state_dir or (config.keystore.parent if config.keystore else None)
        self._state_root = state_dir or base or Path(
            os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / f"cryptostack-{os.getpid()}"
        config_dir = Path(config.source).resolve().parent if not config.source.startswith(
            "<") else Path.cwd()
        loaded = [load_provider(p, self._state_root, config_dir) for p in config.providers]
        self.providers = ProviderSet(loaded, config.preference)
        kek_source = None
        if config.kek_provider is not None:
            kp = self.providers.get(config.kek_provider)
            if kp.instance is None or kp.instance.kek_source() is None:
                raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                                  f"kek_provider {kp.name} ({kp.id}) cannot protect the key "
                                  f"store: {kp.load_error or 'it offers no KEK source'}")
            kek_source = kp.instance.kek_source()
        self.keystore = KeyStore.open(config.keystore, kek_source, config.kek_file)
        self.slots = {s.name: s for s in config.key_slots}
        self.cert_slots = {s.name: s for s in config.cert_slots}
        self.trust_stores = {s.name: s for s in config.trust_stores}
        self.sessions: dict[int, Session] = {}
        self._session_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._ops = self._build_ops()
        self._provision_slots()
        self._extra_init()

    def _extra_init(self) -> None:
        """The feature services: key management and certificates add their operations."""
        from .certstore import CertificateService
        from .keymanagement import KeyManagementService

        self.keys = KeyManagementService(self)
        self._ops.update(self.keys.operations())
        self.certs = CertificateService(self)
        self._ops.update(self.certs.operations())

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
        for loaded in self.providers.by_id.values():
            if loaded.instance is not None:
                try:
                    loaded.instance.close()
                except Exception:
                    log.exception("provider %s failed to close", loaded.name)
        self.keystore.close()
        self._audit_logger.close()

    def open_session(self, peer: PeerIdentity) -> Session:
        """Register a client."""
        with self._lock:
            if len(self.sessions) >= self.config.max_clients:
                raise CryptoError(ErrorCode.RESOURCE_EXHAUSTED,
                                  f"too many clients (limit {self.config.max_clients})")
            session = Session(next(self._session_ids), peer, self.config.max_contexts_per_client,
                              self.config.max_resources_per_client)
            self.sessions[session.id] = session
        return session

    def close_session(self, session: Session) -> None:
        """Free everything a client held (it disconnected or died)."""
        with self._lock:
            self.sessions.pop(session.id, None)
        session.close(self._release_handle)

    def _release_handle(self, handle: Handle) -> None:
        try:
            if handle.kind == "context":
                ctx: ServerContext = handle.obj
                # A call still running on this context (abandoned after a timeout) keeps
                # its lock; do not wait long for it: closing marks the context dead anyway.
                acquired = ctx.lock.acquire(timeout=0 if ctx.error else 5)
                try:
                    ctx.close()
                finally:
                    if acquired:
                        ctx.lock.release()
            elif handle.kind == "key":
                handle.obj.release()
        except Exception:
            log.exception("releasing a %s failed", handle.kind)

    # --- request entry points ----------------------------------------------------------
    def handle(self, call: Call, op: str, args: Mapping[str, Any]) -> Any:
        """Serve one request (synchronously)."""
        fn = self._ops.get(op) if isinstance(op, str) else None
        if fn is None:
            raise CryptoError(ErrorCode.PROTOCOL_ERROR, f"unknown operation {op!r}")
        if not isinstance(args, Mapping):
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "'args' must be a map")
        region = call.session.shm
        if region is not None:
            args = {k: region.resolve(v) if k in SHM_ARGUMENTS and is_reference(v) else v
                    for k, v in args.items()}
        token = _DEADLINE.set(call.deadline)
        observed = op != "batch" and bool(self.pm.hook.cryptostack_metric.get_hookimpls())
        started = time.perf_counter() if observed else 0.0
        result = "ok"
        try:
            if call.deadline is not None and time.monotonic() > call.deadline:
                raise CryptoError(ErrorCode.OPERATION_TIMED_OUT,
                                  "the deadline passed before the daemon could start the call")
            return fn(call, args)
        except CryptoError as exc:
            result = exc.code.value
            raise
        except Exception as exc:  # a provider bug becomes PROVIDER_ERROR, never a traceback
            result = ErrorCode.PROVIDER_ERROR.value
            log.exception("%s failed inside a provider", op)
            raise CryptoError(ErrorCode.PROVIDER_ERROR, f"{type(exc).__name__}: {exc}") from None
        finally:
            _DEADLINE.reset(token)
            if observed:
                self._metric("request.seconds", time.perf_counter() - started,
                             {"op": op, "result": result})

    def is_inline(self, session: Session, op: str, args: Mapping[str, Any]) -> bool:
        """Whether a request is cheap enough to run on the frontend's own thread/loop."""
        if op in _CONTROL_OPS:
            return True
        if op == "batch":
            calls = args.get("calls") if isinstance(args, Mapping) else None
            return isinstance(calls, list) and all(
                isinstance(c, Mapping) and self.is_inline(session, c.get("op", ""),
                                                          c.get("args", {}))
                for c in calls)
        if not isinstance(op, str) or not isinstance(args, Mapping):
            return True  # fails fast with an error
        family, _, verb = op.partition(".")
        if family in ("hash", "cipher", "sign", "verify") and verb != "create":
            try:
                ctx = session.context(args.get("ctx"))
            except CryptoError:
                return True
            instance = ctx.loaded.instance
            if instance is None:
                return True
            data = args.get("data")
            size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else \
                reference_length(data)
            return bool(instance.run_inline(_STREAM_OPERATION[family], size,
                                            algorithm=ctx.algorithm))
        if family == "hash" and verb == "create":
            return True
        if op in _SECRET_OPERATION:
            try:
                ctx = session.context(args.get("ctx"))
            except CryptoError:
                return True
            instance = ctx.loaded.instance
            peer = args.get("peer", args.get("ciphertext"))
            size = len(peer) if isinstance(peer, (bytes, bytearray, memoryview)) else 0
            return instance is not None and bool(
                instance.run_inline(_SECRET_OPERATION[op], size, algorithm=ctx.algorithm))
        return False

    def abandon(self, call: Call, op: str, args: Mapping[str, Any], reason: str) -> None:
        """The frontend stopped waiting for ``call``: the context involved enters error state
        and anything the call creates later is released."""
        call.abandoned = True
        calls = args.get("calls") if op == "batch" and isinstance(args, Mapping) else None
        targets = [c.get("args", {}) for c in calls if isinstance(c, Mapping)] if isinstance(
            calls, list) else [args]
        for target in targets:
            number = target.get("ctx") if isinstance(target, Mapping) else None
            if number is None:
                continue
            try:
                ctx: ServerContext = call.session.context(number)
            except CryptoError:
                continue
            ctx.mark_error(reason)
        with call.session.lock:
            created = list(call.created)
        for number in created:
            handle = call.session.pop(number)
            if handle is not None:
                self._release_handle(handle)

    # --- helpers ---------------------------------------------------------------------
    def audit(self, session: Session, action: str, resource: str, result: str = "ok", *,
              provider: int | None = None, algorithm: str | None = None,
              operation: str | None = None, detail: str = "") -> None:
        """Emit an audit event to every hook implementation."""
        try:
            self.pm.hook.cryptostack_audit(event=AuditEvent(
                action=action, client=session.peer, resource=resource, result=result,
                provider=provider, algorithm=algorithm, operation=operation, detail=detail))
        except Exception:
            log.exception("an audit hook failed")

    def _metric(self, name: str, value: float, labels: dict[str, str]) -> None:
        try:
            self.pm.hook.cryptostack_metric(name=name, value=value, labels=labels)
        except Exception:
            log.exception("a metrics hook failed")

    def check_access(self, session: Session, action: str, rtype: ResourceType, name: str,
                     allowed: tuple[int, ...] | None) -> None:
        """Ask the access hooks; ACCESS_DENIED (audited) if refused."""
        decision = self.pm.hook.cryptostack_access_decision(request=AccessRequest(
            client=session.peer, action=action, resource_type=rtype.value, resource_name=name,
            daemon_uid=self.daemon_uid, allowed_uids=allowed))
        if not decision:
            self.audit(session, f"access.{action}", name, ErrorCode.ACCESS_DENIED.value)
            raise CryptoError(ErrorCode.ACCESS_DENIED,
                              f"uid {session.peer.uid} may not {action} {rtype.value} {name!r}")

    def register(self, call: Call, handle: Handle) -> int:
        number = call.session.add(handle)
        with call.session.lock:
            call.created.append(number)
        if call.abandoned:
            popped = call.session.pop(number)
            if popped is not None:
                self._release_handle(popped)
            raise CryptoError(ErrorCode.OPERATION_TIMED_OUT, "the call was abandoned")
        return number

    def provider_instance(self, loaded: LoadedProvider) -> Provider:
        if loaded.instance is None:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                              f"provider {loaded.name} ({loaded.id}) is unavailable: "
                              f"{loaded.load_error}")
        return loaded.instance

    def guard_info(self, number: int, entry: KeyEntry) -> dict[str, Any]:
        return {"id": rid_to_wire(CryptoResourceId(ResourceType.KEY, number)),
                "persistence": entry.persistence.value, "permissions": int(entry.permissions),
                "algorithm": entry.algorithm, "provider": entry.home.id}

    def add_key(self, call: Call, entry: KeyEntry) -> dict[str, Any]:
        try:
            number = self.register(call, Handle("key", entry, ResourceType.KEY, entry.persistence))
        except BaseException:
            entry.release()
            raise
        return self.guard_info(number, entry)

    def key_on(self, session: Session, entry: KeyEntry, target: LoadedProvider) -> ProviderKey:
        """The key as ``target`` holds it, copying it there (audited) if it lives elsewhere."""
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
        self.audit(session, "key.transfer", entry.slot or "ephemeral key", provider=target.id,
                   algorithm=entry.algorithm,
                   detail=f"copied from provider {entry.home.id} to {target.id}")
        return copy

    # --- slots -------------------------------------------------------------------------
    def slot_config(self, name: str) -> KeySlotConfig:
        slot = self.slots.get(name)
        if slot is None:
            raise CryptoError(ErrorCode.RESOURCE_NOT_FOUND, f"no key slot named {name!r}")
        return slot

    def _provision_slots(self) -> None:
        for slot in self.config.key_slots:
            if not (slot.provision or slot.import_file) or self.keystore.slot(slot.name):
                continue
            assert slot.algorithm is not None and slot.provider is not None
            loaded = self.providers.get(slot.provider)
            if loaded.instance is None:
                log.error("cannot provision slot %s: provider %s unavailable", slot.name,
                          loaded.name)
                continue
            spec = REGISTRY.get(slot.algorithm)
            perms = slot.permissions if slot.permissions is not None else spec.default_permissions
            try:
                if slot.import_file is not None:
                    material = slot.import_file.read_bytes()
                    fmt = KeyFormat(slot.import_format) if slot.import_format else (
                        KeyFormat.PEM if material.lstrip().startswith(b"-----") else
                        KeyFormat.RAW if spec.key_class is KeyClass.SYMMETRIC
                        else KeyFormat.PKCS8_DER)
                    pkey = loaded.instance.import_key(spec.name, material, fmt, perms)
                else:
                    pkey = loaded.instance.generate_key(spec.name, perms)
                try:
                    stored = loaded.instance.persist_key(pkey, slot.name)
                finally:
                    loaded.instance.release_key(pkey)
                self.keystore.store_key(slot.name, spec.name, loaded.id,
                                        slot.compatible_providers, perms, stored)
                log.info("provisioned key slot %s (%s on %s)", slot.name, spec.name, loaded.name)
            except (CryptoError, OSError) as exc:
                raise CryptoError(ErrorCode.INVALID_ARGUMENT,
                                  f"{self.config.source}: [[key_slots]] {slot.name!r}: "
                                  f"provisioning failed: {exc}") from None

    def load_slot(self, session: Session, name: str) -> KeyEntry:
        """Load a key slot's key into a fresh :class:`KeyEntry` (access-checked)."""
        slot = self.slot_config(name)
        self.check_access(session, "use", ResourceType.KEY_SLOT, name, slot.use_uids)
        record, stored = self.keystore.load_key(name)
        loaded = self.providers.get(record.provider)
        instance = self.provider_instance(loaded)
        pkey = instance.load_stored_key(stored, record.algorithm, record.permissions)
        return KeyEntry(algorithm=record.algorithm, permissions=record.permissions, home=loaded,
                        pkey=pkey, persistence=ResourcePersistence.PERSISTENT,
                        compatible=record.compatible, slot=name)

    def key_argument(self, call: Call, args: Mapping[str, Any], name: str = "key") -> KeyEntry:
        """A key given as slot or key id; the caller owns one reference to the result."""
        rid = rid_arg(args, name)
        if rid.type is ResourceType.KEY_SLOT:
            handle = call.session.get(rid)
            return self.load_slot(call.session, handle.obj.name)
        if rid.type is ResourceType.KEY:
            entry: KeyEntry = call.session.get(rid).obj
            return entry.retain()
        raise invalid(f"{name!r} must be a key slot or a key, got a {rid.type.value}")

    # --- operation table ---------------------------------------------------------------
    def _build_ops(self) -> dict[str, Callable[[Call, Mapping[str, Any]], Any]]:
        ops: dict[str, Callable[[Call, Mapping[str, Any]], Any]] = {
            "ping": lambda call, args: "pong",
            "shm.attach": self._op_shm_attach,
            "status": lambda call, args: self.status(),
            "explain": self._op_explain,
            "batch": self._op_batch,
            "resource.resolve": self._op_resolve,
            "resource.release": self._op_release,
            "resource.describe": self._op_describe,
            "context.close": self._op_close_context,
            "hash.create": self._op_hash_create,
            "cipher.create": self._op_cipher_create,
            "sign.create": self._op_sign_create,
            "verify.create": self._op_verify_create,
            "kem.create": self._op_kem_create,
            "kem.encapsulate": self._op_encapsulate,
            "kem.decapsulate": self._op_decapsulate,
            "agree.create": self._op_agree_create,
            "agree.agree": self._op_agree,
        }
        for family, kind in (("hash", HashContext), ("cipher", CipherContext),
                             ("sign", SignContext), ("verify", VerifyContext)):
            for verb in ("init", "update", "finalize", "reset", "single_shot", "update_aad"):
                ops[f"{family}.{verb}"] = self._stream_op(family, kind, verb)
        return ops

    # --- control ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Providers, slots, clients and their resource counts."""
        slots = []
        for slot in self.config.key_slots:
            record = self.keystore.slot(slot.name)
            slots.append({
                "name": slot.name,
                "status": (KeySlotStatus.OCCUPIED if record else KeySlotStatus.EMPTY).value,
                "algorithm": record.algorithm if record else slot.algorithm,
                "provider": record.provider if record else slot.provider,
                "version": record.version if record else 0})
        with self._lock:
            sessions = list(self.sessions.values())
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "providers": [p.describe() for p in self.providers.by_id.values()],
            "preference": list(self.providers.preference),
            "key_slots": slots,
            "cert_slots": self.certs.slot_status(),
            "trust_stores": sorted(self.trust_stores),
            "clients": [{"session": s.id, "pid": s.peer.pid, "uid": s.peer.uid,
                         "gid": s.peer.gid, **s.counts()} for s in sessions],
        }

    def _op_explain(self, call: Call, args: Mapping[str, Any]) -> list[dict[str, object]]:
        spec = algorithm_arg(args)
        op_name = arg(args, "operation", str)
        try:
            operation = Operation(op_name)
        except ValueError:
            raise invalid(f"unknown operation {op_name!r}; one of "
                       f"{', '.join(o.value for o in Operation)}") from None
        pinned = int_arg(args, "provider", default=None)
        placement = None
        if args.get("key") is not None:
            entry = self.key_argument(call, args)
            try:
                placement = entry.placement
            finally:
                entry.release()
        return [c.to_wire() for c in self.providers.candidates(
            spec.name, operation, key=placement, pinned=pinned)]

    def _op_batch(self, call: Call, args: Mapping[str, Any]) -> list[Any]:
        calls = arg(args, "calls", list)
        results = []
        for item in calls:
            if not isinstance(item, Mapping) or not isinstance(item.get("op"), str):
                raise invalid("each batch entry must be a map with 'op' and 'args'")
            if item["op"] == "batch":
                raise invalid("batches do not nest")
            results.append(self.handle(call, item["op"], item.get("args", {})))
        return results

    def _op_resolve(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        name = arg(args, "name", str)
        rtype = enum_arg(args, "type", ResourceType)
        named: dict[ResourceType, Mapping[str, object]] = {
            ResourceType.KEY_SLOT: self.slots, ResourceType.CERT_SLOT: self.cert_slots,
            ResourceType.VERIFICATION_TRUST_STORE: self.trust_stores}
        known = named.get(rtype)
        if known is None:
            raise invalid(f"only slots and trust stores have names; {rtype.value} resources are "
                       "created by import or generate")
        if name not in known:
            raise CryptoError(ErrorCode.RESOURCE_NOT_FOUND,
                              f"no {rtype.value} named {name!r} in {self.config.source}")
        number = call.session.resolve_name(rtype, name)
        return {"type": rtype.value, "handle": number, "name": name}

    def _op_shm_attach(self, call: Call, args: Mapping[str, Any]) -> dict[str, int]:
        fd = int_arg(args, "fd")
        size = int_arg(args, "size", lo=4096, hi=self.config.max_frame_size)
        region = DaemonRegion(call.session.peer.pid, fd, size)
        with call.session.lock:
            old, call.session.shm = call.session.shm, region
        if old is not None:
            old.close()
        return {"size": size}

    def _op_release(self, call: Call, args: Mapping[str, Any]) -> None:
        rid = rid_arg(args, "id")
        if args.get("quiet"):
            # Releases queued by garbage-collected guards: the resource may be gone already.
            try:
                call.session.get(rid)
            except CryptoError:
                return
        call.session.get(rid)
        handle = call.session.pop(rid.handle)
        if handle is not None:
            self._release_handle(handle)

    def _op_describe(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        rid = rid_arg(args, "id")
        handle = call.session.get(rid)
        if handle.kind == "key":
            return self.guard_info(rid.handle, handle.obj)
        if handle.kind == "slot" and rid.type is ResourceType.KEY_SLOT:
            info = self.keys.slot_info(handle.obj.name)
            return {"id": rid_to_wire(rid), "persistence": "PERSISTENT",
                    "permissions": info["permissions"], "algorithm": info["algorithm"],
                    "provider": info["provider"]}
        return {"id": rid_to_wire(rid), "persistence": handle.persistence.value,
                "permissions": 0, "algorithm": None, "provider": None}

    def _op_close_context(self, call: Call, args: Mapping[str, Any]) -> None:
        number = args.get("ctx")
        call.session.context(number)
        handle = call.session.pop(number)  # type: ignore[arg-type]
        if handle is not None:
            self._release_handle(handle)

    # --- contexts ----------------------------------------------------------------------
    def require_permission(self, session: Session, entry: KeyEntry, wanted: P, algorithm: str,
                 alternatives: P = P.NONE) -> None:
        ok = has_permission(entry.permissions, wanted) or (
            alternatives and bool(int(entry.permissions) & int(alternatives)))
        if not ok:
            names = (wanted | alternatives).name or str(wanted)
            self.audit(session, "key.use", entry.slot or "ephemeral key",
                       ErrorCode.KEY_OPERATION_NOT_PERMITTED.value, provider=entry.home.id,
                       algorithm=algorithm, operation=str(names))
            raise CryptoError(ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                              f"the key ({entry.algorithm}) does not permit "
                              f"{str(names).replace('|', ' or ')} (it allows "
                              f"{entry.permissions.name or 'nothing'})")

    def _check_key_algorithm(self, spec: AlgorithmSpec, entry: KeyEntry) -> None:
        if entry.algorithm not in spec.key_algorithms:
            raise invalid(f"a {entry.algorithm} key cannot be used with {spec.name} (it takes "
                       f"{', '.join(spec.key_algorithms)} keys)")

    def _keyed_context(self, call: Call, args: Mapping[str, Any], spec: AlgorithmSpec,
                       operation: Operation, wanted: P,
                       build: Callable[[LoadedProvider, KeyEntry, ProviderKey], ServerContext],
                       alternatives: P = P.NONE) -> dict[str, Any]:
        entry = self.key_argument(call, args)
        try:
            self.require_permission(call.session, entry, wanted, spec.name, alternatives)
            self._check_key_algorithm(spec, entry)
            loaded = self.providers.select(spec.name, operation, key=entry.placement,
                                           pinned=int_arg(args, "provider", default=None))
            pkey = self.key_on(call.session, entry, loaded)
            ctx = build(loaded, entry, pkey)
        except BaseException:
            entry.release()
            raise
        try:
            info = ctx.describe()
            number = self.register(call, Handle("context", ctx))
        except BaseException:
            ctx.close()
            raise
        self.audit(call.session, "key.use", entry.slot or "ephemeral key", provider=loaded.id,
                   algorithm=spec.name, operation=operation.value)
        return {"ctx": number, **info}

    def _op_hash_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = algorithm_arg(args)
        if spec.kind is not AlgorithmKind.HASH:
            raise invalid(f"{spec.name} is not a hash algorithm")
        loaded = self.providers.select(spec.name, Operation.HASH,
                                       pinned=int_arg(args, "provider", default=None))
        ctx = HashContext(spec, loaded, None, None, self.config.max_buffered_message)
        number = self.register(call, Handle("context", ctx))
        return {"ctx": number, **ctx.describe()}

    def _op_cipher_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = algorithm_arg(args)
        if spec.kind not in (AlgorithmKind.CIPHER, AlgorithmKind.AEAD):
            raise invalid(f"{spec.name} is not a cipher")
        direction = enum_arg(args, "direction", CipherDirection)
        tag_length = int_arg(args, "tag_length", default=spec.tag_size or 0, lo=0, hi=64)
        if spec.kind is AlgorithmKind.AEAD and not 4 <= tag_length <= spec.tag_size:
            raise invalid(f"tag length {tag_length} is out of range for {spec.name} "
                       f"(4..{spec.tag_size})")
        operation = Operation.ENCRYPT if direction is CipherDirection.ENCRYPT else Operation.DECRYPT
        wanted = P.ENCRYPT if direction is CipherDirection.ENCRYPT else P.DECRYPT
        return self._keyed_context(call, args, spec, operation, wanted, lambda loaded, entry, pkey:
                                   CipherContext(spec, loaded, entry, pkey,
                                                 self.config.max_buffered_message, direction,
                                                 tag_length))

    def _context_string(self, spec: AlgorithmSpec, args: Mapping[str, Any]) -> bytes:
        context = bytes(data_arg(args, "context")) if args.get("context") is not None else b""
        if context and not spec.supports_context_string:
            raise invalid(f"{spec.name} takes no context string")
        if len(context) > 255:
            raise invalid("context strings are at most 255 bytes")
        return context

    def _op_sign_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = algorithm_arg(args)
        if spec.kind not in (AlgorithmKind.SIGNATURE, AlgorithmKind.MAC):
            raise invalid(f"{spec.name} is not a signature or MAC algorithm")
        context = self._context_string(spec, args)
        alternatives = P.MAC if spec.kind is AlgorithmKind.MAC else P.NONE
        return self._keyed_context(call, args, spec, Operation.SIGN, P.SIGN, lambda loaded, entry,
                                   pkey: SignContext(spec, loaded, entry, pkey,
                                                     self.config.max_buffered_message, context),
                                   alternatives)

    def _op_verify_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = algorithm_arg(args)
        if spec.kind not in (AlgorithmKind.SIGNATURE, AlgorithmKind.MAC):
            raise invalid(f"{spec.name} is not a signature or MAC algorithm")
        context = self._context_string(spec, args)
        tag_length = int_arg(args, "tag_length", default=None, lo=MIN_MAC_TAG,
                          hi=spec.digest_size or 64)
        if tag_length is not None and spec.kind is not AlgorithmKind.MAC:
            raise invalid("tag_length applies to MAC algorithms only")
        is_mac = spec.kind is AlgorithmKind.MAC
        # A MAC is checked by recomputing it, so the provider is asked for SIGN/MAC.
        operation = Operation.SIGN if is_mac else Operation.VERIFY
        alternatives = P.MAC if is_mac else P.NONE
        return self._keyed_context(call, args, spec, operation, P.VERIFY, lambda loaded, entry,
                                   pkey: VerifyContext(spec, loaded, entry, pkey,
                                                       self.config.max_buffered_message, context,
                                                       tag_length), alternatives)

    def _derived_permissions(self, args: Mapping[str, Any]) -> P:
        perms = permissions_arg(args, "derived_permissions")
        return perms if perms is not None else P.DERIVE

    def _op_kem_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = algorithm_arg(args)
        if spec.kind is not AlgorithmKind.KEM:
            raise invalid(f"{spec.name} is not a KEM")
        derived = self._derived_permissions(args)
        entry_perms = P.ENCAPSULATE | P.DECAPSULATE
        return self._keyed_context(call, args, spec, Operation.ENCAPSULATE, P.NONE,
                                   lambda loaded, entry, pkey: KemContext(spec, loaded, entry,
                                                                          pkey, derived),
                                   entry_perms)

    def _op_agree_create(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = algorithm_arg(args)
        if spec.kind is not AlgorithmKind.KEY_AGREEMENT:
            raise invalid(f"{spec.name} is not a key-agreement algorithm")
        derived = self._derived_permissions(args)
        return self._keyed_context(call, args, spec, Operation.AGREE, P.AGREE,
                                   lambda loaded, entry, pkey: AgreementContext(
                                       spec, loaded, entry, pkey, derived))

    def _context(self, call: Call, args: Mapping[str, Any], kind: type[ServerContext]) -> Any:
        ctx = call.session.context(args.get("ctx"))
        if not isinstance(ctx, kind) or (kind is SignContext and isinstance(ctx, VerifyContext)):
            raise invalid(f"context #{args.get('ctx')} is a {ctx.kind} context, not {kind.kind}")
        ctx.check_usable()
        return ctx

    def _secret_key(self, call: Call, ctx: KemContext, pkey: ProviderKey,
                    operation: str) -> dict[str, Any]:
        # A derived secret is not bound to a slot's compatible list: if its provider lets it
        # out, any provider may use it (e.g. HKDF on openssl from an ML-KEM-512 secret on oqs).
        entry = KeyEntry(algorithm=getattr(pkey, "algorithm", "GENERIC-SECRET"),
                         permissions=ctx.derived_permissions, home=ctx.loaded, pkey=pkey,
                         persistence=ResourcePersistence.EPHEMERAL,
                         compatible=self.providers.preference)
        self.audit(call.session, f"key.{operation}", "ephemeral key", provider=ctx.loaded.id,
                   algorithm=ctx.algorithm)
        return self.add_key(call, entry)

    def _op_encapsulate(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        ctx: KemContext = self._context(call, args, KemContext)
        assert ctx.key is not None and ctx.pkey is not None
        self.require_permission(call.session, ctx.key, P.ENCAPSULATE, ctx.algorithm)
        with ctx.lock:
            ct, secret = ctx.provider.encapsulate(ctx.algorithm, ctx.pkey,
                                                  ctx.derived_permissions)
        return {"ciphertext": ct, "key": self._secret_key(call, ctx, secret, "encapsulate")}

    def _op_decapsulate(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        ctx: KemContext = self._context(call, args, KemContext)
        assert ctx.key is not None and ctx.pkey is not None
        self.require_permission(call.session, ctx.key, P.DECAPSULATE, ctx.algorithm)
        if not ctx.key.has_private:
            raise CryptoError(ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                              "decapsulation needs the private key; this is a public key")
        ciphertext = bytes(data_arg(args, "ciphertext"))
        with ctx.lock:
            secret = ctx.provider.decapsulate(ctx.algorithm, ctx.pkey, ciphertext,
                                              ctx.derived_permissions)
        return self._secret_key(call, ctx, secret, "decapsulate")

    def _op_agree(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        ctx: AgreementContext = self._context(call, args, AgreementContext)
        assert ctx.pkey is not None
        peer = bytes(data_arg(args, "peer"))
        with ctx.lock:
            secret = ctx.provider.agree(ctx.algorithm, ctx.pkey, peer, ctx.derived_permissions)
        return self._secret_key(call, ctx, secret, "agree")

    def _stream_op(self, family: str, kind: type[StreamContext],
                   verb: str) -> Callable[[Call, Mapping[str, Any]], Any]:
        def run(call: Call, args: Mapping[str, Any]) -> Any:
            ctx = self._context(call, args, kind)
            with ctx.lock:
                ctx.check_usable()
                if verb == "init":
                    if family == "cipher":
                        iv = bytes(data_arg(args, "iv")) if args.get("iv") is not None else b""
                        return ctx.init(iv=iv)
                    return ctx.init()
                if verb == "reset":
                    return ctx.reset()
                if verb == "update":
                    return ctx.update(data_arg(args))
                if verb == "update_aad":
                    if family != "cipher":
                        raise invalid("update_aad is for cipher contexts")
                    return ctx.update_aad(data_arg(args))
                if verb == "finalize":
                    if family == "verify":
                        return ctx.finalize_verify(
                            bytes(data_arg(args, "signature")))
                    return ctx.finalize()
                if verb == "single_shot":
                    if family == "hash":
                        return ctx.single_shot(data_arg(args))
                    raise invalid(f"single_shot is not available on {family} contexts")
            raise invalid(f"unknown call {family}.{verb}")
        return run


_CONTROL_OPS = frozenset({"ping", "status", "explain", "resource.resolve", "resource.release",
                          "resource.describe"})
_SECRET_OPERATION = {"kem.encapsulate": Operation.ENCAPSULATE,
                     "kem.decapsulate": Operation.DECAPSULATE, "agree.agree": Operation.AGREE}
_STREAM_OPERATION = {"hash": Operation.HASH, "cipher": Operation.ENCRYPT,
                     "sign": Operation.SIGN, "verify": Operation.VERIFY}
