"""Key management operations: generate, import, load, slot info, persist, versions (retire,
minimum), clear, export, derive, random. Every change is access-checked and audited;
material leaves only with EXPORT."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptostack_core.sdk.provider import StoredKey
from cryptostack_core.server.arguments import (
    algorithm_arg,
    arg,
    data_arg,
    enum_arg,
    int_arg,
    invalid,
    permissions_arg,
    rid_arg,
)
from cryptostack_core.server.core import Call, ServiceCore
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.server.keystore.parts import SPLIT_PROVIDER, encode_parts
from cryptostack_core.server.session import KeyEntry
from cryptostack_core.server.split import keys as split_keys
from cryptostack_core.server.split.choice import choose_new, role_candidates
from cryptostack_core.server.split.plan import PQ, PlacementRequest, plan_for
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmKind, AlgorithmSpec, KeyClass, Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.permissions import has_permission
from cryptostack_core.wire.resources import KeyFormat, ResourcePersistence, ResourceType

RANDOM_CHUNK = 4096
PUBLIC_KEY_PERMISSIONS = P.VERIFY | P.ENCAPSULATE | P.ENCRYPT | P.WRAP


class KeyOps:
    """The ``key.*`` and ``random.generate`` operations."""

    def __init__(self, core: ServiceCore) -> None:
        self.core = core

    def operations(self) -> dict[str, Callable[[Call, Mapping[str, Any]], Any]]:
        """Wire operations served here."""
        return {
            "random.generate": self._op_random,
            "key.generate": self._op_generate,
            "key.import": self._op_import,
            "key.load": self._op_load,
            "key.slot_info": self._op_slot_info,
            "key.persist": self._op_persist,
            "key.retire_version": self._op_retire_version,
            "key.set_minimum_version": self._op_set_minimum_version,
            "key.clear_slot": self._op_clear_slot,
            "key.export": self._op_export,
            "key.export_public": self._op_export_public,
            "key.derive": self._op_derive,
        }

    def _op_random(self, call: Call, args: Mapping[str, Any]) -> bytes:
        length = int_arg(args, "length", lo=1, hi=REGISTRY.get("RANDOM").max_output)
        loaded = self.core.providers.select(
            "RANDOM", Operation.RANDOM, pinned=int_arg(args, "provider", default=None)
        )
        instance = self.core.provider_instance(loaded)
        # In bounded chunks: a slow source (a TPM returns 64 bytes per command) then serves
        # other clients between them, and the deadline is honoured between chunks.
        out = bytearray()
        while len(out) < length:
            if call.abandoned or (call.deadline is not None and time.monotonic() > call.deadline):
                raise CryptoError(
                    ErrorCode.OPERATION_TIMED_OUT,
                    f"random.generate passed its deadline after {len(out)} bytes",
                )
            want = min(RANDOM_CHUNK, length - len(out))
            chunk = instance.random_bytes(want)
            if len(chunk) != want:
                raise CryptoError(ErrorCode.PROVIDER_ERROR, "provider returned the wrong length")
            out += chunk
            if len(out) < length:
                time.sleep(0)  # let a thread waiting for this provider have its turn
        return bytes(out)

    # --- key management --------------------------------------------------------------
    def _key_spec(self, args: Mapping[str, Any]) -> AlgorithmSpec:
        spec = algorithm_arg(args)
        if not spec.is_key_algorithm:
            raise invalid(f"{spec.name} is not a key type (use e.g. AES-256, ECDSA-P256, ML-DSA-65)")
        return spec

    def _placement(
        self, spec: AlgorithmSpec, operation: Operation, args: Mapping[str, Any]
    ) -> tuple[LoadedProvider | None, dict[str, LoadedProvider] | None, PlacementRequest]:
        """Where a new key goes: (one provider, None) -- or, for a hybrid key split across
        providers, (None, its halves' providers)."""
        pinned = int_arg(args, "provider", default=None)
        request = PlacementRequest.from_args(args)
        if plan_for(spec.name) is None:
            if request.explicit:
                raise invalid(
                    f"{spec.name} is not a hybrid algorithm: 'placement' and "
                    "'components' apply to hybrid keys only"
                )
            return self.core.providers.select(spec.name, operation, pinned=pinned), None, request
        choice = choose_new(self.core.providers, spec.name, (operation,), request, pinned)
        choice.raise_error()
        return choice.native, choice.halves, request

    def _split_audit(self, call: Call, action: str, entry: KeyEntry, detail: str) -> None:
        halves = entry.component_info()
        where = ", ".join(f"{h['role']} {h['algorithm']} on provider {h['provider']}" for h in halves)
        self.core.audit(
            call.session,
            action,
            entry.slot or "ephemeral key",
            provider=entry.home.id,
            algorithm=entry.algorithm,
            detail=f"split: {where}; combiner: daemon; {detail}",
            providers=tuple(h["provider"] for h in halves),
        )

    def _op_generate(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = self._key_spec(args)
        perms = permissions_arg(args)
        if perms is None:
            perms = spec.default_permissions
        loaded, halves, request = self._placement(spec, Operation.GENERATE_KEY, args)
        if halves is not None:
            plan = plan_for(spec.name)
            assert plan is not None
            try:
                entry = split_keys.generate(plan, perms, halves, request.components)
            except CryptoError as exc:
                self.core.audit(
                    call.session,
                    "key.generate",
                    "ephemeral key",
                    exc.code.value,
                    provider=halves[PQ].id,
                    algorithm=spec.name,
                    providers=tuple(h.id for h in halves.values()),
                )
                raise
            self._split_audit(call, "key.generate", entry, f"permissions={int(perms):#x}")
            return self.core.add_key(call, entry)
        assert loaded is not None
        try:
            pkey = self.core.provider_instance(loaded).generate_key(spec.name, perms)
        except CryptoError as exc:
            self.core.audit(
                call.session,
                "key.generate",
                "ephemeral key",
                exc.code.value,
                provider=loaded.id,
                algorithm=spec.name,
            )
            raise
        self.core.audit(
            call.session,
            "key.generate",
            "ephemeral key",
            provider=loaded.id,
            algorithm=spec.name,
            detail=f"permissions={int(perms):#x}",
        )
        return self.core.add_key(
            call,
            KeyEntry(
                algorithm=spec.name,
                permissions=perms,
                home=loaded,
                pkey=pkey,
                persistence=ResourcePersistence.EPHEMERAL,
            ),
        )

    def _op_import(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = self._key_spec(args)
        material = bytes(data_arg(args, "material"))
        fmt = enum_arg(args, "format", KeyFormat)
        perms = permissions_arg(args)
        loaded, halves, request = self._placement(spec, Operation.IMPORT_KEY, args)
        requested = perms if perms is not None else spec.default_permissions
        if perms is None and fmt is KeyFormat.RAW and spec.key_class is KeyClass.ASYMMETRIC:
            # 32 raw bytes may be an Ed25519/X25519 public or private key: RAW is read as a
            # public key unless the caller asks for a private-key operation explicitly.
            requested = spec.default_permissions & PUBLIC_KEY_PERMISSIONS
        if halves is not None:
            plan = plan_for(spec.name)
            assert plan is not None
            entry = split_keys.import_key(plan, material, fmt, P(requested), halves, request.components)
            if not entry.has_private and perms is None:
                entry.permissions = spec.default_permissions & PUBLIC_KEY_PERMISSIONS
            self._split_audit(call, "key.import", entry, f"format={fmt.value}")
            return self.core.add_key(call, entry)
        assert loaded is not None
        pkey = self.core.provider_instance(loaded).import_key(spec.name, material, fmt, requested)
        if not getattr(pkey, "has_private", True):
            requested &= PUBLIC_KEY_PERMISSIONS
            if perms is None:
                requested = spec.default_permissions & PUBLIC_KEY_PERMISSIONS
        self.core.audit(
            call.session,
            "key.import",
            "ephemeral key",
            provider=loaded.id,
            algorithm=spec.name,
            detail=f"format={fmt.value}",
        )
        return self.core.add_key(
            call,
            KeyEntry(
                algorithm=spec.name,
                permissions=P(requested),
                home=loaded,
                pkey=pkey,
                persistence=ResourcePersistence.EPHEMERAL,
            ),
        )

    def _op_load(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        rid = rid_arg(args, "slot")
        if rid.type is not ResourceType.KEY_SLOT:
            raise invalid(f"load_key needs a key slot, got a {rid.type.value}")
        name = call.session.get(rid).obj.name
        version = int_arg(args, "version", default=None, lo=1, hi=2**63 - 1)
        try:
            entry = self.core.load_slot(call.session, name, version)
        except CryptoError as exc:
            if exc.code is ErrorCode.KEY_VERSION_RETIRED:
                self.core.audit(call.session, "key.load", name, exc.code.value, detail=f"version={version}")
            raise
        self.core.audit(
            call.session,
            "key.load",
            name,
            provider=entry.home.id,
            algorithm=entry.algorithm,
            detail=f"version={entry.version}",
        )
        return {**self.core.add_key(call, entry), "version": entry.version}

    def _slot_name(self, call: Call, args: Mapping[str, Any], name: str = "slot") -> str:
        rid = rid_arg(args, name)
        if rid.type is not ResourceType.KEY_SLOT:
            raise invalid(f"{name!r} must be a key slot, got a {rid.type.value}")
        slot_name: str = call.session.get(rid).obj.name
        return slot_name

    def _op_slot_info(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._slot_name(call, args)
        self.core.check_access(
            call.session, "use", ResourceType.KEY_SLOT, name, self.core.slots[name].use_uids
        )
        return self.core.slot_info(name)

    def _op_persist(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._slot_name(call, args)
        slot = self.core.slots[name]
        self.core.check_access(call.session, "mutate", ResourceType.KEY_SLOT, name, slot.write_uids)
        rid = rid_arg(args, "key")
        if rid.type is not ResourceType.KEY:
            raise invalid("persist_key takes a key (guard), not a slot")
        entry: KeyEntry = call.session.get(rid).obj
        if slot.algorithm is not None and slot.algorithm != entry.algorithm:
            raise invalid(f"slot {name!r} holds {slot.algorithm} keys; this key is {entry.algorithm}")
        if not entry.has_private and REGISTRY.get(entry.algorithm).key_class is KeyClass.ASYMMETRIC:
            raise invalid("only key pairs and secret keys can be persisted in a key slot")
        if entry.components is not None or slot.split:
            return self._persist_split(call, name, entry)
        target = self.core.providers.get(slot.provider) if slot.provider is not None else entry.home
        if target.id != entry.home.id and not entry.placement.extractable:
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                f"slot {name!r} lives on provider {target.id}; this key cannot "
                f"leave provider {entry.home.id}",
            )
        pkey = self.core.key_on(call.session, entry, target)
        perms = entry.permissions & slot.permissions if slot.permissions is not None else entry.permissions
        stored = self.core.provider_instance(target).persist_key(pkey, name)
        # The copy keeps the export allow-list its material carries (narrowed again, by this
        # slot's own list, whenever it is loaded): persisting never widens who may export it.
        # A new version; the older ones stay (decrypt, verify) until retired.
        try:
            version = self.core.keystore.store_key(
                name,
                entry.algorithm,
                target.id,
                slot.compatible_providers,
                perms,
                stored,
                export_uids=entry.export_uids,
            )
        except CryptoError as exc:
            self.core.audit(
                call.session,
                "key.persist",
                name,
                exc.code.value,
                provider=target.id,
                algorithm=entry.algorithm,
            )
            if not getattr(exc, "maybe_committed", False):
                # Never recorded: its backend object goes now (a crash here is reconciled
                # at the next start). Perhaps recorded: it must stay.
                self.core.destroy_when_unused(target.id, stored, f"key slot {name} (persist failed)")
            raise
        self.core.audit(
            call.session,
            "key.persist",
            name,
            provider=target.id,
            algorithm=entry.algorithm,
            detail=f"version={version}",
        )
        # ``version`` is the one this call made (another daemon's may already be newer).
        return {**self.core.slot_info(name), "version": version}

    def _persist_split(self, call: Call, name: str, entry: KeyEntry) -> dict[str, Any]:
        """A new version of slot ``name`` holding the halves of split ``entry``, each
        persisted by its own provider: where it lives, unless the slot's role list names
        others (then the first it may move to)."""
        slot = self.core.slots[name]
        held = ", ".join(f"{h['role']} on provider {h['provider']}" for h in entry.component_info())
        if entry.components is None:
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                f"slot {name!r} keeps a hybrid key's halves on providers of their "
                f"own (components); this {entry.algorithm} key is held whole by "
                f"provider {entry.home.id}: generate or import it split",
            )
        if slot.provider is not None or slot.placement == "native":
            raise CryptoError(
                ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                f"slot {name!r} holds keys whole"
                f"{f' on provider {slot.provider}' if slot.provider else ''}; "
                f"this {entry.algorithm} key is split ({held})",
            )
        plan = plan_for(entry.algorithm)
        assert plan is not None
        providers = self.core.providers
        targets: dict[str, LoadedProvider] = {}
        for role, half in entry.components.items():
            listed = slot.components.get(role)
            if not listed or half.home.id in listed:
                targets[role] = half.home
                continue
            candidates, _ = role_candidates(
                providers,
                role,
                plan.component(role).requirements((Operation.IMPORT_KEY,)),
                listed,
                home=half.home.id,
                extractable=half.placement.extractable,
                key_algorithm=half.algorithm,
            )
            taken = next((c for c in candidates if c.taken), None)
            if taken is None:
                reasons = "; ".join(f"{c.name} ({c.provider}): {c.reason}" for c in candidates)
                raise CryptoError(
                    ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                    f"slot {name!r} keeps the {role} half on providers "
                    f"{list(listed)}; this key's, on provider {half.home.id}, "
                    f"cannot go there: {reasons}",
                )
            targets[role] = providers.by_id[taken.provider]
        perms = entry.permissions & slot.permissions if slot.permissions is not None else entry.permissions
        parts = split_keys.persist(
            entry, name, targets, lambda half, target: self.core.key_on(call.session, half, target)
        )
        where = tuple(part.provider for part in parts)
        detail = ", ".join(f"{part.role} {part.algorithm} on provider {part.provider}" for part in parts)
        try:
            version = self.core.keystore.store_key(
                name,
                entry.algorithm,
                SPLIT_PROVIDER,
                (),
                perms,
                StoredKey(encode_parts(parts), True),
                export_uids=entry.export_uids,
            )
        except CryptoError as exc:
            self.core.audit(
                call.session,
                "key.persist",
                name,
                exc.code.value,
                provider=where[0],
                algorithm=entry.algorithm,
                providers=where,
                detail=f"split: {detail}",
            )
            if not getattr(exc, "maybe_committed", False):
                for part in parts:
                    self.core.destroy_when_unused(
                        part.provider, part.stored, f"key slot {name} (persist failed)"
                    )
            raise
        self.core.audit(
            call.session,
            "key.persist",
            name,
            provider=where[0],
            algorithm=entry.algorithm,
            providers=where,
            detail=f"version={version}; split: {detail}; combiner: daemon",
        )
        return {**self.core.slot_info(name), "version": version}

    def _op_retire_version(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._slot_name(call, args)
        slot = self.core.slots[name]
        self.core.check_access(call.session, "mutate", ResourceType.KEY_SLOT, name, slot.write_uids)
        version = int_arg(args, "version", lo=1, hi=2**63 - 1)
        try:
            record = self.core.keystore.slot_versions(name)
            retired = next((v for v in record.versions if v.version == version), None)
            references = self.core.keystore.retire_version(name, version)
        except CryptoError as exc:
            self.core.audit(call.session, "key.retire", name, exc.code.value, detail=f"version={version}")
            raise
        self.core.forget_slot_keys(name)
        for provider, reference in references:  # one, or each part of a split version
            self.core.destroy_when_unused(provider, reference, f"key slot {name} version {version}")
        self.core.audit(
            call.session,
            "key.retire",
            name,
            provider=retired.provider if retired else None,
            algorithm=retired.algorithm if retired else None,
            detail=f"version={version}",
        )
        return self.core.slot_info(name)

    def _op_set_minimum_version(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._slot_name(call, args)
        slot = self.core.slots[name]
        self.core.check_access(call.session, "mutate", ResourceType.KEY_SLOT, name, slot.write_uids)
        minimum = int_arg(args, "version", lo=0, hi=2**63 - 1)
        try:
            self.core.keystore.set_minimum_version(name, minimum)
        except CryptoError as exc:
            self.core.audit(
                call.session, "key.minimum_version", name, exc.code.value, detail=f"version={minimum}"
            )
            raise
        self.core.forget_slot_keys(name)
        self.core.audit(call.session, "key.minimum_version", name, detail=f"version={minimum}")
        return self.core.slot_info(name)

    def _op_clear_slot(self, call: Call, args: Mapping[str, Any]) -> None:
        name = self._slot_name(call, args)
        slot = self.core.slots[name]
        self.core.check_access(call.session, "mutate", ResourceType.KEY_SLOT, name, slot.write_uids)
        try:
            versions = self.core.keystore.slot_versions(name)
            references = self.core.keystore.clear_slot(name)
        except CryptoError as exc:
            self.core.audit(call.session, "key.clear", name, exc.code.value)
            raise
        self.core.forget_slot_keys(name)
        for provider, reference in references:
            self.core.destroy_when_unused(provider, reference, f"key slot {name} (cleared)")
        removed = [v.version for v in versions.versions]
        self.core.audit(
            call.session, "key.clear", name, detail=f"versions={','.join(map(str, removed)) or 'none'}"
        )

    def _op_export(self, call: Call, args: Mapping[str, Any]) -> bytes:
        entry = self.core.key_argument(call, args)
        try:
            resource = entry.slot or "ephemeral key"
            if not has_permission(entry.permissions, P.EXPORT):
                self.core.audit(
                    call.session,
                    "key.export",
                    resource,
                    ErrorCode.KEY_OPERATION_NOT_PERMITTED.value,
                    provider=entry.home.id,
                    algorithm=entry.algorithm,
                )
                raise CryptoError(
                    ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                    "the key does not carry EXPORT; its material stays in the daemon",
                )
            if entry.export_uids is not None and call.session.peer.uid not in entry.export_uids:
                self.core.audit(
                    call.session,
                    "key.export",
                    resource,
                    ErrorCode.ACCESS_DENIED.value,
                    provider=entry.home.id,
                    algorithm=entry.algorithm,
                    detail="export allow-list",
                )
                raise CryptoError(
                    ErrorCode.ACCESS_DENIED,
                    f"uid {call.session.peer.uid} may not export this key: its "
                    "material comes from a key slot whose export allow-list "
                    "does not include it (copies keep that list)",
                )
            if entry.slot is not None:
                self.core.check_access(
                    call.session,
                    "export",
                    ResourceType.KEY_SLOT,
                    entry.slot,
                    self.core.slots[entry.slot].write_uids,
                )
            spec = REGISTRY.get(entry.algorithm)
            default = KeyFormat.RAW if spec.key_class is KeyClass.SYMMETRIC else KeyFormat.PKCS8_DER
            fmt = enum_arg(args, "format", KeyFormat, default=default)
            if not entry.has_private:
                raise invalid("this is a public key; use export_public_key")
            if entry.components is not None:
                plan = plan_for(entry.algorithm)
                assert plan is not None
                data = split_keys.export_private(plan, entry, fmt)
                self._split_audit(call, "key.export", entry, f"format={fmt.value}")
                return data
            data = self.core.provider_instance(entry.home).export_key(entry.pkey, fmt)
            self.core.audit(
                call.session,
                "key.export",
                resource,
                provider=entry.home.id,
                algorithm=entry.algorithm,
                detail=f"format={fmt.value}",
            )
            return data
        finally:
            entry.release()

    def _op_export_public(self, call: Call, args: Mapping[str, Any]) -> bytes:
        entry = self.core.key_argument(call, args)
        try:
            if REGISTRY.get(entry.algorithm).key_class is not KeyClass.ASYMMETRIC:
                raise invalid(f"{entry.algorithm} is a secret key; it has no public part")
            fmt = enum_arg(args, "format", KeyFormat, default=KeyFormat.SPKI_DER)
            if entry.components is not None:
                plan = plan_for(entry.algorithm)
                assert plan is not None
                return split_keys.export_public(plan, entry, fmt)
            return self.core.provider_instance(entry.home).export_public_key(entry.pkey, fmt)
        finally:
            entry.release()

    def _op_derive(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = algorithm_arg(args)
        if spec.kind is not AlgorithmKind.KDF:
            raise invalid(f"{spec.name} is not a key-derivation algorithm")
        out_spec = REGISTRY.get(arg(args, "output_algorithm", str, default="GENERIC-SECRET"))
        if not out_spec.is_key_algorithm or out_spec.key_class is not KeyClass.SYMMETRIC:
            raise invalid(f"cannot derive {out_spec.name} keys (secret key types only)")
        length = int_arg(args, "length", default=out_spec.key_size or 32, lo=1, hi=255 * 64)
        if out_spec.key_size and length != out_spec.key_size:
            raise invalid(f"{out_spec.name} keys are {out_spec.key_size} bytes, not {length}")
        perms = permissions_arg(args)
        perms = perms if perms is not None else out_spec.default_permissions
        salt = bytes(data_arg(args, "salt")) if args.get("salt") is not None else b""
        info = bytes(data_arg(args, "info")) if args.get("info") is not None else b""
        entry = self.core.key_argument(call, args)
        try:
            self.core.require_permission(call.session, entry, P.DERIVE, spec.name, operation=Operation.DERIVE)
            if perms & P.EXPORT and not has_permission(entry.permissions, P.EXPORT):
                # A derived key is a copy of its parent's secret, in another form.
                raise CryptoError(
                    ErrorCode.KEY_OPERATION_NOT_PERMITTED,
                    "a key derived from a key without EXPORT cannot carry EXPORT",
                )
            lineage = entry.export_uids
            loaded = self.core.providers.select(spec.name, Operation.DERIVE, key=entry.placement)
            pkey = self.core.key_on(call.session, entry, loaded)
            new = self.core.provider_instance(loaded).derive(
                spec.name,
                pkey,
                length=length,
                salt=salt,
                info=info,
                output_algorithm=out_spec.name,
                permissions=perms,
            )
            self.core.audit(
                call.session,
                "key.derive",
                entry.slot or "ephemeral key",
                provider=loaded.id,
                algorithm=spec.name,
            )
        finally:
            entry.release()
        return self.core.add_key(
            call,
            KeyEntry(
                algorithm=out_spec.name,
                permissions=perms,
                home=loaded,
                pkey=new,
                persistence=ResourcePersistence.EPHEMERAL,
                compatible=self.core.providers.preference,
                export_uids=lineage,
            ),
        )
