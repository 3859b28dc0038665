"""Control operations: ping, status, explain, algorithms, named resources, release, describe
and closing a context. (``shm.attach`` is a step of the daemon's front end: it needs the
socket.)"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptostack_core.sdk.provider import Capability, Provider
from cryptostack_core.server.arguments import algorithm_arg, arg, enum_arg, int_arg, invalid, rid_arg
from cryptostack_core.server.core import Call, ServiceCore
from cryptostack_core.server.split.choice import choose_for_key, choose_new
from cryptostack_core.server.split.plan import PlacementRequest, plan_for
from cryptostack_core.wire.algorithms import REGISTRY, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.protocol import rid_to_wire
from cryptostack_core.wire.resources import KeySlotStatus, ResourceType
from cryptostack_core.wire.version import __version__

Op = Callable[[Call, Mapping[str, Any]], Any]


def _capabilities(provider: Provider) -> list[Capability]:
    try:
        return list(provider.capabilities())
    except Exception:  # a provider's broken capability list must not break the listing
        return []


class ControlOps:
    """Requests about the service and the caller's handles, not about cryptography."""

    def __init__(self, core: ServiceCore, cert_slot_status: Callable[[], list[dict[str, Any]]]) -> None:
        self.core = core
        self._cert_slot_status = cert_slot_status

    def operations(self) -> dict[str, Op]:
        """Wire operations served here."""
        return {
            "ping": self.ping,
            "status": self.status,
            "explain": self.explain,
            "algorithms": self.algorithms,
            "resource.resolve": self.resolve,
            "resource.release": self.release,
            "resource.describe": self.describe,
            "context.close": self.close_context,
        }

    def ping(self, call: Call, args: Mapping[str, Any]) -> str:
        """One round trip."""
        return "pong"

    def status(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """Providers, slots, clients and their resource counts. Only admins (``admin_uids``,
        root, the daemon's uid) see every client, every slot and the providers' own details;
        other clients see their uid's connections and the slots they may use."""
        core = self.core
        admin = core.is_admin(call.session)
        slots = []
        records = core.keystore.slots()
        for slot in core.config.key_slots:
            if not admin and not core.may(
                call.session, "use", ResourceType.KEY_SLOT, slot.name, slot.use_uids
            ):
                continue
            record = records.get(slot.name)
            slots.append(
                {
                    "name": slot.name,
                    "status": (KeySlotStatus.OCCUPIED if record else KeySlotStatus.EMPTY).value,
                    "algorithm": record.algorithm if record else slot.algorithm,
                    "provider": record.provider if record else slot.provider,
                    "version": record.version if record else 0,
                }
            )
        cert_slots = [
            c
            for c in self._cert_slot_status()
            if admin
            or core.may(
                call.session, "use", ResourceType.CERT_SLOT, c["name"], core.cert_slots[c["name"]].use_uids
            )
        ]
        trust_stores = sorted(
            n
            for n, t in core.trust_stores.items()
            if admin or core.may(call.session, "use", ResourceType.VERIFICATION_TRUST_STORE, n, t.use_uids)
        )
        uid = call.session.peer.uid
        result: dict[str, Any] = {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - core.started, 3),
            "providers": core.provider_facts(detailed=admin),
            "preference": list(core.providers.preference),
            "key_slots": slots,
            "cert_slots": cert_slots,
            "trust_stores": trust_stores,
            "clients": [
                {"session": s.id, "pid": s.peer.pid, "uid": s.peer.uid, "gid": s.peer.gid, **s.counts()}
                for s in core.session_list()
                if admin or s.peer.uid == uid
            ],
        }
        store = core.keystore.status()
        result["keystore"] = store if admin else {k: store[k] for k in ("engine", "available") if k in store}
        if admin:  # operator facts: what to fix, and who holds the memory
            result["warnings"] = list(core.warnings)
            result["memory"] = core.budget.snapshot()
        return result

    def explain(self, call: Call, args: Mapping[str, Any]) -> list[dict[str, object]]:
        """Which provider would run (algorithm, operation[, key]) and why each candidate was
        taken or skipped."""
        spec = algorithm_arg(args)
        op_name = arg(args, "operation", str)
        try:
            operation = Operation(op_name)
        except ValueError:
            raise invalid(
                f"unknown operation {op_name!r}; one of {', '.join(o.value for o in Operation)}"
            ) from None
        pinned = int_arg(args, "provider", default=None)
        placement = None
        providers = self.core.providers
        if args.get("key") is not None:
            entry = self.core.key_argument(call, args)
            try:
                if entry.components is not None:  # a hybrid key split across providers
                    return [
                        c.to_wire() for c in choose_for_key(providers, entry, (operation,), pinned).candidates
                    ]
                placement = entry.placement
            finally:
                entry.release()
        elif plan_for(spec.name) is not None:  # a hybrid key: held whole, or split
            request = PlacementRequest.from_args(args)
            return [
                c.to_wire()
                for c in choose_new(providers, spec.name, (operation,), request, pinned).candidates
            ]
        return [c.to_wire() for c in providers.candidates(spec.name, operation, key=placement, pinned=pinned)]

    def algorithms(self, call: Call, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every algorithm name the daemon knows (built in, or registered by a provider):
        its facts, who registered it, and which providers can run each operation with it."""
        by_id = self.core.providers.by_id
        owners: dict[str, list[int]] = {}
        for loaded in by_id.values():
            for name in loaded.algorithms:
                owners.setdefault(name, []).append(loaded.id)
        support: dict[str, dict[str, list[int]]] = {}
        for pid in self.core.providers.preference:
            instance = by_id[pid].instance
            if instance is None:
                continue
            for capability in _capabilities(instance):
                ops = support.setdefault(capability.algorithm, {})
                ids = ops.setdefault(capability.operation.value, [])
                if pid not in ids:
                    ids.append(pid)
        out = []
        for spec in REGISTRY.specs():
            entry: dict[str, Any] = spec.to_wire()
            entry["registered_by"] = owners.get(spec.name, [])
            entry["providers"] = support.get(spec.name, {})
            plan = plan_for(spec.name)
            if plan is not None:  # hybrid: can its halves live on two providers?
                entry["split"] = plan.describe()
            out.append(entry)
        return out

    def resolve(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """A handle for a named key slot, certificate slot or trust store."""
        core = self.core
        name = arg(args, "name", str)
        rtype = enum_arg(args, "type", ResourceType)
        named: dict[ResourceType, Mapping[str, object]] = {
            ResourceType.KEY_SLOT: core.slots,
            ResourceType.CERT_SLOT: core.cert_slots,
            ResourceType.VERIFICATION_TRUST_STORE: core.trust_stores,
        }
        known = named.get(rtype)
        if known is None:
            raise invalid(
                f"only slots and trust stores have names; {rtype.value} resources are "
                "created by import or generate"
            )
        if name not in known:
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND, f"no {rtype.value} named {name!r} in {core.config.source}"
            )
        number = call.session.resolve_name(rtype, name)
        return {"type": rtype.value, "handle": number, "name": name}

    def release(self, call: Call, args: Mapping[str, Any]) -> None:
        """Free a resource handle (``quiet``: it may be gone already)."""
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
            self.core.release_handle(handle)

    def describe(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        """What a handle is: persistence, permissions, algorithm, provider."""
        rid = rid_arg(args, "id")
        handle = call.session.get(rid)
        if handle.kind == "key":
            return self.core.guard_info(rid.handle, handle.obj)
        if handle.kind == "slot" and rid.type is ResourceType.KEY_SLOT:
            name = handle.obj.name
            if not self.core.is_admin(call.session):
                self.core.check_access(
                    call.session, "use", ResourceType.KEY_SLOT, name, self.core.slot_config(name).use_uids
                )
            info = self.core.slot_info(name)
            return {
                "id": rid_to_wire(rid),
                "persistence": "PERSISTENT",
                "permissions": info["permissions"],
                "algorithm": info["algorithm"],
                "provider": info["provider"],
            }
        return {
            "id": rid_to_wire(rid),
            "persistence": handle.persistence.value,
            "permissions": 0,
            "algorithm": None,
            "provider": None,
        }

    def close_context(self, call: Call, args: Mapping[str, Any]) -> None:
        """Close one of the caller's contexts (``quiet``: it may be gone already)."""
        number = args.get("ctx")
        try:
            call.session.context(number)
        except CryptoError as exc:
            if args.get("quiet") and exc.code is ErrorCode.RESOURCE_NOT_FOUND:
                return  # closes queued by collected contexts: it may be gone already
            raise
        handle = call.session.pop(number)  # type: ignore[arg-type]
        if handle is not None:
            self.core.release_handle(handle)
