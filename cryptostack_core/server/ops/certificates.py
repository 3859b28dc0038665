"""Certificate resources in the daemon: cert slots, trust stores, imported certificates and
CRLs, and the verification request. Path validation itself is in :mod:`.x509`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cryptostack_core import x509 as x509_engine
from cryptostack_core.server.core import Call, ServiceCore
from cryptostack_core.server.session import BlobResource, Handle, KeyEntry
from cryptostack_core.wire.algorithms import Operation
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.protocol import rid_from_wire, rid_to_wire
from cryptostack_core.wire.resources import (
    CryptoResourceId,
    KeyFormat,
    ResourcePersistence,
    ResourceType,
    RevocationCheckPolicy,
)

log = logging.getLogger("cryptostack.certificates")


def _bad(message: str) -> CryptoError:
    return CryptoError(ErrorCode.INVALID_ARGUMENT, message)


class TrustStoreContent:
    """Anchors and CRLs of a trust store (ephemeral or named)."""

    def __init__(self, anchors: list[x509.Certificate], crls: list[x509.CertificateRevocationList]):
        self.anchors = anchors
        self.crls = crls


class CertificateOps:
    """Certificates, CRLs and trust stores: import, persist, export, verify."""

    def __init__(self, core: ServiceCore) -> None:
        self.core = core
        self._seed()

    def _seed(self) -> None:
        """Copy configured certificate slots and trust stores into the key store at first start.

        The files are read only while the key store has no entry yet: afterwards the key
        store (which ``persist_certificate``/``persist_trust_store`` replace atomically) is
        authoritative. A file that cannot be read or parsed refuses the start, naming the
        config file, the entry and the file.
        """
        ks = self.core.keystore
        source = self.core.config.source

        def load(section: str, name: str, path: Path, parse: Callable[[bytes], Any]) -> Any:
            try:
                return parse(path.read_bytes())
            except OSError as exc:
                problem = f"cannot read {path}: {exc.strerror or exc}"
            except CryptoError as exc:
                problem = f"{path}: {exc.message or exc}"
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"{source}: [[{section}]] {name!r}: {problem}")

        for slot in self.core.config.cert_slots:
            if slot.file is None or ks.certificate(slot.name) is not None:
                continue
            cert = load("cert_slots", slot.name, slot.file, x509_engine.parse_certificate)
            ks.store_certificate(slot.name, cert.public_bytes(Encoding.DER))
        for store in self.core.config.trust_stores:
            if ks.trust_store(store.name) is not None:
                continue
            anchors = [
                load("trust_stores", store.name, p, x509_engine.parse_certificate) for p in store.anchors
            ]
            crls = [load("trust_stores", store.name, p, x509_engine.parse_crl) for p in store.crls]
            ks.store_trust_store(
                store.name,
                [a.public_bytes(Encoding.DER) for a in anchors],
                [c.public_bytes(Encoding.DER) for c in crls],
            )

    def slot_status(self) -> list[dict[str, Any]]:
        """Certificate slots for ``status``."""
        out = []
        for slot in self.core.config.cert_slots:
            der = self.core.keystore.certificate(slot.name)
            subject = ""
            if der is not None:
                try:
                    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
                except ValueError:
                    subject = "<unreadable>"
            out.append({"name": slot.name, "occupied": der is not None, "subject": subject})
        return out

    def operations(self) -> dict[str, Callable[[Call, Mapping[str, Any]], Any]]:
        """Wire operations served here."""
        return {
            "cert.import": self._op_import_certificate,
            "crl.import": self._op_import_crl,
            "truststore.create": self._op_create_trust_store,
            "cert.public_key": self._op_public_key,
            "cert.export": self._op_export,
            "cert.persist": self._op_persist_certificate,
            "truststore.persist": self._op_persist_trust_store,
            "cert.verify": self._op_verify,
        }

    # --- resolution ----------------------------------------------------------------------
    def certificate(self, call: Call, value: object) -> x509.Certificate:
        """A certificate from a CERT_SLOT or CERTIFICATE id."""
        rid = rid_from_wire(value)
        handle = call.session.get(rid)
        if rid.type is ResourceType.CERTIFICATE:
            cert: x509.Certificate = handle.obj.payload
            return cert
        if rid.type is ResourceType.CERT_SLOT:
            name = handle.obj.name
            slot = self.core.cert_slots[name]
            self.core.check_access(call.session, "use", rid.type, name, slot.use_uids)
            der = self.core.keystore.certificate(name)
            if der is None:
                raise CryptoError(ErrorCode.SLOT_EMPTY, f"certificate slot {name!r} is empty")
            return x509.load_der_x509_certificate(der)
        raise _bad(f"expected a certificate or certificate slot, got a {rid.type.value}")

    def crl(self, call: Call, value: object) -> x509.CertificateRevocationList:
        """A CRL from a CRL id."""
        rid = rid_from_wire(value)
        if rid.type is not ResourceType.CRL:
            raise _bad(f"expected a CRL, got a {rid.type.value}")
        crl: x509.CertificateRevocationList = call.session.get(rid).obj.payload
        return crl

    def trust_store(self, call: Call, value: object) -> TrustStoreContent:
        """Anchors and CRLs of a named or created trust store."""
        rid = rid_from_wire(value)
        if rid.type is not ResourceType.VERIFICATION_TRUST_STORE:
            raise _bad(f"expected a trust store, got a {rid.type.value}")
        handle = call.session.get(rid)
        if handle.kind == "blob":
            content: TrustStoreContent = handle.obj.payload
            return content
        name = handle.obj.name
        store = self.core.trust_stores[name]
        self.core.check_access(call.session, "use", rid.type, name, store.use_uids)
        stored = self.core.keystore.trust_store(name)
        anchors, crls = stored if stored is not None else ([], [])
        return TrustStoreContent(
            [x509.load_der_x509_certificate(a) for a in anchors], [x509.load_der_x509_crl(c) for c in crls]
        )

    def _add(self, call: Call, rtype: ResourceType, payload: Any, label: str) -> dict[str, Any]:
        number = self.core.register(
            call, Handle("blob", BlobResource(rtype, payload, label), rtype, ResourcePersistence.EPHEMERAL)
        )
        return {
            "id": rid_to_wire(CryptoResourceId(rtype, number)),
            "persistence": ResourcePersistence.EPHEMERAL.value,
            "permissions": 0,
            "algorithm": None,
            "provider": None,
            "label": label,
        }

    # --- operations ------------------------------------------------------------------------
    @staticmethod
    def _bytes(args: Mapping[str, Any], name: str) -> bytes:
        value = args.get(name)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise _bad(f"argument {name!r} must be bytes (PEM or DER)")
        return bytes(value)

    def _op_import_certificate(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        cert = x509_engine.parse_certificate(self._bytes(args, "data"))
        return self._add(call, ResourceType.CERTIFICATE, cert, cert.subject.rfc4514_string())

    def _op_import_crl(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        crl = x509_engine.parse_crl(self._bytes(args, "data"))
        return self._add(call, ResourceType.CRL, crl, crl.issuer.rfc4514_string())

    def _lists(
        self, call: Call, args: Mapping[str, Any]
    ) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
        anchors = args.get("anchors", [])
        crls = args.get("crls", []) or []
        if not isinstance(anchors, list) or not isinstance(crls, list):
            raise _bad("'anchors' and 'crls' must be lists of resource ids")
        return ([self.certificate(call, a) for a in anchors], [self.crl(call, c) for c in crls])

    def _op_create_trust_store(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        anchors, crls = self._lists(call, args)
        if not anchors:
            raise _bad("a trust store needs at least one anchor")
        return self._add(
            call,
            ResourceType.VERIFICATION_TRUST_STORE,
            TrustStoreContent(anchors, crls),
            f"{len(anchors)} anchors",
        )

    def _op_public_key(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        cert = self.certificate(call, args.get("cert"))
        algorithm = x509_engine.public_key_algorithm(cert)
        spki = x509_engine.spki_der(cert)
        pinned = args.get("provider")
        if pinned is not None and (not isinstance(pinned, int) or isinstance(pinned, bool)):
            raise _bad(f"argument 'provider' must be a provider id, got {pinned!r}")
        core = self.core
        loaded = core.providers.select(algorithm, Operation.IMPORT_KEY, pinned=pinned)
        pkey = core.provider_instance(loaded).import_key(algorithm, spki, KeyFormat.SPKI_DER, P.VERIFY)
        entry = KeyEntry(
            algorithm=algorithm,
            permissions=P.VERIFY,
            home=loaded,
            pkey=pkey,
            persistence=ResourcePersistence.EPHEMERAL,
        )
        core.audit(
            call.session,
            "key.import",
            cert.subject.rfc4514_string(),
            provider=loaded.id,
            algorithm=algorithm,
            detail="certificate public key",
        )
        return {"key": core.add_key(call, entry), "algorithm": algorithm}

    def _op_export(self, call: Call, args: Mapping[str, Any]) -> bytes:
        cert = self.certificate(call, args.get("cert"))
        fmt = args.get("format", "PEM")
        if fmt not in ("PEM", "DER"):
            raise _bad("format must be PEM or DER")
        return cert.public_bytes(Encoding.PEM if fmt == "PEM" else Encoding.DER)

    def _named(self, call: Call, value: object, rtype: ResourceType) -> str:
        rid = rid_from_wire(value)
        if rid.type is not rtype:
            raise _bad(f"expected a {rtype.value}, got a {rid.type.value}")
        handle = call.session.get(rid)
        if handle.kind != "slot":
            raise _bad(f"expected a named {rtype.value} (resolve_resource), not an ephemeral one")
        name: str = handle.obj.name
        return name

    def _op_persist_certificate(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._named(call, args.get("slot"), ResourceType.CERT_SLOT)
        slot = self.core.cert_slots[name]
        # Configured certificates are default-deny for mutation, root included: only the
        # uids listed in write_uids may replace them (an explicit, possibly empty, allow-list
        # keeps the policy's "daemon uid and root" fallback out of it).
        self.core.check_access(
            call.session, "mutate", ResourceType.CERT_SLOT, name, tuple(slot.write_uids or ())
        )
        cert = self.certificate(call, args.get("cert"))
        version = self.core.keystore.store_certificate(name, cert.public_bytes(Encoding.DER))
        self.core.audit(
            call.session,
            "cert.persist",
            name,
            detail=f"subject={cert.subject.rfc4514_string()} version={version}",
        )
        return {"name": name, "version": version}

    def _op_persist_trust_store(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._named(call, args.get("store"), ResourceType.VERIFICATION_TRUST_STORE)
        store = self.core.trust_stores[name]
        self.core.check_access(
            call.session, "mutate", ResourceType.VERIFICATION_TRUST_STORE, name, tuple(store.write_uids or ())
        )
        anchors, crls = self._lists(call, args)
        if not anchors:
            raise _bad("a trust store needs at least one anchor")
        version = self.core.keystore.store_trust_store(
            name,
            [a.public_bytes(Encoding.DER) for a in anchors],
            [c.public_bytes(Encoding.DER) for c in crls],
        )
        self.core.audit(
            call.session,
            "truststore.persist",
            name,
            detail=f"anchors={len(anchors)} crls={len(crls)} version={version}",
        )
        return {"name": name, "version": version}

    def _op_verify(self, call: Call, args: Mapping[str, Any]) -> dict[str, Any]:
        if args.get("certificate") is None:
            raise CryptoError(ErrorCode.INVALID_STATE, "set_certificate() was not called")
        if args.get("trust_store") is None:
            raise CryptoError(ErrorCode.INVALID_STATE, "set_verification_trust_store() was not called")
        leaf = self.certificate(call, args["certificate"])
        store = self.trust_store(call, args["trust_store"])
        intermediates = args.get("intermediates", []) or []
        extra_crls = args.get("crls", []) or []
        if not isinstance(intermediates, list) or not isinstance(extra_crls, list):
            raise _bad("'intermediates' and 'crls' must be lists of resource ids")
        when = args.get("time")
        if when is None:
            moment = dt.datetime.now(dt.timezone.utc)
        elif isinstance(when, (int, float)) and not isinstance(when, bool):
            try:
                moment = dt.datetime.fromtimestamp(when, dt.timezone.utc)
            except (OverflowError, OSError, ValueError):
                raise _bad(f"'time' {when!r} is not a representable instant") from None
        else:
            raise _bad("'time' must be seconds since the epoch")
        try:
            policy = RevocationCheckPolicy(args.get("policy", "NONE"))
        except ValueError:
            raise _bad(f"unknown revocation policy {args.get('policy')!r}") from None
        outcome = x509_engine.validate_path(
            x509_engine.ValidationRequest(
                leaf=leaf,
                anchors=store.anchors,
                intermediates=[self.certificate(call, i) for i in intermediates],
                crls=[*store.crls, *(self.crl(call, c) for c in extra_crls)],
                validation_time=moment,
                revocation_policy=policy,
                **_verifier_settings(args),
            )
        )
        self.core.audit(
            call.session,
            "cert.verify",
            leaf.subject.rfc4514_string(),
            outcome.result.value,
            detail=outcome.reason[:200],
        )
        return {
            "result": outcome.result.value,
            "reason": outcome.reason,
            "chain": [c.public_bytes(Encoding.DER) for c in outcome.chain],
            "subjects": [c.subject.rfc4514_string() for c in outcome.chain],
            "policies": sorted(outcome.policies),
        }


def _verifier_settings(args: Mapping[str, Any]) -> dict[str, Any]:
    """The optional RFC 5280 verifier settings of a ``cert.verify`` request (docs/protocol.md).

    Absent keys keep the engine's defaults; the engine checks ranges and profile names.
    """
    settings: dict[str, Any] = {}
    policies = args.get("initial_policy_set")
    if policies is not None:
        if (
            not isinstance(policies, list)
            or not policies
            or not all(isinstance(p, str) for p in policies)
            or len(policies) > 64
        ):
            raise _bad("'initial_policy_set' must be a list of 1 to 64 dotted OID strings")
        try:
            settings["initial_policy_set"] = frozenset(x509.ObjectIdentifier(p) for p in policies)
        except ValueError:
            raise _bad(f"'initial_policy_set' holds an invalid OID: {policies!r}"[:200]) from None
    for flag in ("initial_explicit_policy", "initial_policy_mapping_inhibit", "initial_any_policy_inhibit"):
        value = args.get(flag)
        if value is not None:
            if not isinstance(value, bool):
                raise _bad(f"{flag!r} must be true or false")
            settings[flag] = value
    depth = args.get("max_chain_depth")
    if depth is not None:
        settings["max_chain_depth"] = depth
    profile = args.get("profile")
    if profile is not None:
        settings["profile"] = profile
    return settings
