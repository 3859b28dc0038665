"""Certificate management and verification contexts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptostack_core.client.arguments import (
    bool_arg,
    enum_arg,
    int_arg,
    optional_int_arg,
    str_arg,
    str_list_arg,
    wrong_type,
)
from cryptostack_core.client.contexts.base import (
    AsyncOperationContext,
    ContextConfig,
    ContextCore,
    ContextParent,
    OperationContext,
    ResourceLike,
    wire_rid,
)
from cryptostack_core.client.guards import AsyncCryptoResourceGuard, CryptoResourceGuard
from cryptostack_core.client.plans import Plan
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CertVerifyResult, KeyFormat, RevocationCheckPolicy


class CertificateVerificationContextConfig(ContextConfig):
    """Settings for :meth:`CryptoContext.create_certificate_verification_context`."""


class CertificateManagementContextConfig(ContextConfig):
    """Settings for :meth:`CryptoContext.create_certificate_management_context`."""


@dataclass(frozen=True)
class VerificationReport:
    """Details of the last ``verify()``: result, reason, validated chain (DER, leaf first)."""

    result: CertVerifyResult
    reason: str
    chain: list[bytes] = field(default_factory=list)
    #: User-constrained policy set of a VALID path (dotted OIDs; anyPolicy if unconstrained).
    policies: frozenset[str] = frozenset()
    #: The subject of each chain certificate (RFC 4514), as the daemon parsed it.
    subjects: tuple[str, ...] = ()

    def explain(self) -> str:
        """One human-readable line: the verdict and the path (VALID) or the reason."""
        if self.result is CertVerifyResult.VALID:
            return f"VALID: chain of {len(self.chain)} certificates: " + " -> ".join(
                s or "<empty subject>" for s in self.subjects
            )
        return f"{self.result.value}: {self.reason}"


def _encoded(data: object, what: str) -> bytes:
    """PEM (bytes or str) or DER input as bytes; anything else is INVALID_ARGUMENT."""
    if isinstance(data, str):
        try:
            return data.encode("ascii")
        except UnicodeEncodeError:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"a PEM {what} is ASCII text; this string is not"
            ) from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise wrong_type("data", f"a PEM or DER {what} (bytes, or str for PEM)", data)


def _rid_list(items: object, name: str) -> list[dict[str, Any]]:
    """Wire ids of one resource or an iterable of them (argument ``name``)."""
    if getattr(items, "resource_id", None) is not None:
        return [wire_rid(items, name)]
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise wrong_type(name, "an id or guard, or an iterable of them", items)
    return [wire_rid(item, f"each item of {name}") for item in items]


class CertificateVerificationCore(ContextCore):
    """Builder-style path validation (blocking and asyncio); ``verify()`` sends one request."""

    def __init__(self, parent: ContextParent, config: CertificateVerificationContextConfig) -> None:
        super().__init__(parent, config)
        self._certificate: dict[str, Any] | None = None
        self._trust_store: dict[str, Any] | None = None
        self._intermediates: list[dict[str, Any]] = []
        self._crls: list[dict[str, Any]] = []
        self._time: dt.datetime | None = None
        self._policy = RevocationCheckPolicy.NONE
        # RFC 5280 verifier settings; only those set travel (the daemon keeps its defaults).
        self._settings: dict[str, Any] = {}
        self.last_report: VerificationReport | None = None
        # The guards handed to the setters, kept alive while this context refers to them:
        # ``add_crl(cm.import_crl(data))`` must not release the CRL before ``verify()``.
        self._held: dict[str, Any] = {}
        self._held_lists: list[Any] = []

    def _p_close(self) -> Plan[None]:
        """Nothing is held in the daemon; drop the references to the guards given."""
        self._closed = True
        self._held.clear()
        self._held_lists.clear()
        return
        yield  # a plan without requests

    def set_certificate(self, cert: ResourceLike) -> None:
        """The certificate to validate (certificate slot or imported certificate)."""
        self._certificate = wire_rid(cert, "cert")
        self._held["certificate"] = cert

    def set_verification_trust_store(self, store: ResourceLike) -> None:
        """The anchors (and CRLs) to validate against."""
        self._trust_store = wire_rid(store, "store")
        self._held["trust_store"] = store

    def add_untrusted_intermediate(self, cert: ResourceLike) -> None:
        """A certificate that may be used to build the path (not trusted by itself)."""
        self._intermediates.append(wire_rid(cert, "cert"))
        self._held_lists.append(cert)

    def add_crl(self, crl: ResourceLike) -> None:
        """An extra CRL for revocation checking."""
        self._crls.append(wire_rid(crl, "crl"))
        self._held_lists.append(crl)

    def set_validation_time(self, when: dt.datetime) -> None:
        """Validate as of ``when`` (default: now). Naive datetimes are taken as UTC."""
        if not isinstance(when, dt.datetime):
            raise wrong_type("when", "a datetime", when)
        self._time = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)

    def set_revocation_check_policy(self, policy: RevocationCheckPolicy) -> None:
        """NONE or CRL_ONLY."""
        self._policy = enum_arg(policy, RevocationCheckPolicy, "policy")

    def set_max_chain_depth(self, n: int) -> None:
        """At most ``n`` intermediates between the certificate and the anchor (default 8)."""
        if int_arg(n, "n (max chain depth)") < 0:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, f"n (max chain depth) must not be negative, got {n!r}"
            )
        self._settings["max_chain_depth"] = n

    def set_initial_policy_set(self, policies: Iterable[str]) -> None:
        """RFC 5280 user-initial-policy-set: dotted policy OIDs (default: anyPolicy)."""
        if isinstance(policies, (str, bytes)) or not isinstance(policies, Iterable):
            raise wrong_type("policies", "an iterable of dotted OIDs", policies)
        oids = str_list_arg([getattr(p, "dotted_string", p) for p in policies], "policies")
        if not oids:
            raise CryptoError(
                ErrorCode.INVALID_ARGUMENT, "policies (the initial policy set) must not be empty"
            )
        self._settings["initial_policy_set"] = oids

    def set_initial_explicit_policy(self, required: bool = True) -> None:
        """RFC 5280 initial-explicit-policy: the path must be valid for a policy."""
        self._settings["initial_explicit_policy"] = bool_arg(required, "required")

    def set_initial_policy_mapping_inhibit(self, inhibit: bool = True) -> None:
        """RFC 5280 initial-policy-mapping-inhibit: policy mappings are not allowed."""
        self._settings["initial_policy_mapping_inhibit"] = bool_arg(inhibit, "inhibit")

    def set_initial_any_policy_inhibit(self, inhibit: bool = True) -> None:
        """RFC 5280 initial-any-policy-inhibit: anyPolicy in a certificate matches nothing."""
        self._settings["initial_any_policy_inhibit"] = bool_arg(inhibit, "inhibit")

    def set_profile(self, profile: str) -> None:
        """``"rfc5280"`` (default: RFC 5280 profile rules enforced) or ``"lenient"``."""
        self._settings["profile"] = str_arg(profile, "profile")

    def _p_verify(self) -> Plan[CertVerifyResult]:
        result = yield from self._call(
            "cert.verify",
            {
                "certificate": self._certificate,
                "trust_store": self._trust_store,
                "intermediates": self._intermediates,
                "crls": self._crls,
                "time": None if self._time is None else self._time.timestamp(),
                "policy": self._policy.value,
                **self._settings,
            },
        )
        report = VerificationReport(
            CertVerifyResult(result["result"]),
            result.get("reason", ""),
            [bytes(c) for c in result.get("chain", [])],
            frozenset(result.get("policies", ())),
            tuple(result.get("subjects", ())),
        )
        self.last_report = report
        return report.result

    def validated_chain(self) -> list[bytes]:
        """DER certificates of the last validated path (leaf first); empty if none."""
        return list(self.last_report.chain) if self.last_report else []

    def explain(self) -> str:
        """Why the last ``verify()`` gave its result."""
        if self.last_report is None:
            raise CryptoError(ErrorCode.INVALID_STATE, "verify() has not been called")
        return self.last_report.explain()


class CertificateVerificationContext(CertificateVerificationCore, OperationContext):
    """Builder-style path validation; ``verify()`` sends one request."""

    def verify(self) -> CertVerifyResult:
        """Validate; details in :attr:`last_report` / :meth:`explain`."""
        return self._run(self._p_verify())


class AsyncCertificateVerificationContext(CertificateVerificationCore, AsyncOperationContext):
    """:class:`CertificateVerificationContext` for asyncio stacks (``await verify()``)."""

    async def verify(self) -> CertVerifyResult:
        """Validate; details in :attr:`last_report` / :meth:`explain`."""
        return await self._run(self._p_verify())


class CertificateManagementCore(ContextCore):
    """Certificate, CRL and trust-store plans (blocking and asyncio)."""

    def __init__(
        self,
        parent: ContextParent,
        config: CertificateManagementContextConfig,
    ) -> None:
        super().__init__(parent, config)
        # set_provider() on the config pins where load_certificate_public_key imports keys.
        self._provider = config.provider

    def _p_close(self) -> Plan[None]:
        """Nothing is held in the daemon."""
        self._closed = True
        return
        yield  # a plan without requests

    def _p_import(self, op: str, data: bytes | str, what: str) -> Plan[dict[str, Any]]:
        info: dict[str, Any] = yield from self._call(op, {"data": _encoded(data, what)})
        return info

    def _p_trust_store(
        self, anchors: Iterable[ResourceLike] | ResourceLike, crls: Iterable[ResourceLike] | ResourceLike
    ) -> Plan[dict[str, Any]]:
        args = {"anchors": _rid_list(anchors, "anchors"), "crls": _rid_list(crls, "crls")}
        info: dict[str, Any] = yield from self._call("truststore.create", args)
        return info

    def _p_public_key(self, cert: ResourceLike, provider: int | None) -> Plan[tuple[dict[str, Any], str]]:
        cert_id = wire_rid(cert, "cert")
        pinned = optional_int_arg(provider, "provider")
        if pinned is None:
            pinned = self._provider
        result = yield from self._call("cert.public_key", {"cert": cert_id, "provider": pinned})
        return result["key"], str(result["algorithm"])

    def _p_export(self, cert: ResourceLike, fmt: str | KeyFormat) -> Plan[bytes]:
        if isinstance(fmt, KeyFormat):
            fmt = fmt.value
        if not isinstance(fmt, str):
            raise wrong_type("fmt", '"PEM" or "DER"', fmt)
        data: bytes = yield from self._call(
            "cert.export", {"cert": wire_rid(cert, "cert"), "format": fmt.upper()}
        )
        return data

    def _p_persist_certificate(self, slot: ResourceLike, cert: ResourceLike) -> Plan[int]:
        result = yield from self._call(
            "cert.persist", {"slot": wire_rid(slot, "slot"), "cert": wire_rid(cert, "cert")}
        )
        return int(result["version"])

    def _p_persist_trust_store(
        self,
        store: ResourceLike,
        anchors: Iterable[ResourceLike] | ResourceLike,
        crls: Iterable[ResourceLike] | ResourceLike,
    ) -> Plan[int]:
        result = yield from self._call(
            "truststore.persist",
            {
                "store": wire_rid(store, "store"),
                "anchors": _rid_list(anchors, "anchors"),
                "crls": _rid_list(crls, "crls"),
            },
        )
        return int(result["version"])


class CertificateManagementContext(CertificateManagementCore, OperationContext):
    """Import certificates and CRLs, build and persist trust stores, extract public keys."""

    def _guard(self, info: dict[str, Any]) -> CryptoResourceGuard:
        return CryptoResourceGuard._from_wire(self._channel, info)

    def import_certificate(self, data: bytes | str) -> CryptoResourceGuard:
        """An ephemeral certificate from PEM (bytes or str) or DER."""
        return self._guard(self._run(self._p_import("cert.import", data, "certificate")))

    def import_crl(self, data: bytes | str) -> CryptoResourceGuard:
        """An ephemeral CRL from PEM (bytes or str) or DER."""
        return self._guard(self._run(self._p_import("crl.import", data, "CRL")))

    def create_trust_store(
        self,
        anchors: Iterable[ResourceLike] | ResourceLike,
        crls: Iterable[ResourceLike] | ResourceLike = (),
    ) -> CryptoResourceGuard:
        """An ephemeral trust store of anchors (and CRLs): ids or guards, one or a list.

        The daemon copies their content: releasing them afterwards leaves the store intact.
        """
        return self._guard(self._run(self._p_trust_store(anchors, crls)))

    def load_certificate_public_key(
        self,
        cert: ResourceLike,
        provider: int | None = None,
    ) -> tuple[CryptoResourceGuard, str]:
        """(VERIFY-only public key guard, canonical algorithm name).

        The key is imported into ``provider`` if given, else the config's ``set_provider``
        choice, else the first provider in the daemon's preference order that can import it.
        """
        info, algorithm = self._run(self._p_public_key(cert, provider))
        return self._guard(info), algorithm

    def export_certificate(self, cert: ResourceLike, fmt: str | KeyFormat = "PEM") -> bytes:
        """The certificate as PEM or DER (``"PEM"``/``"DER"``, any case, or ``KeyFormat.PEM``)."""
        return self._run(self._p_export(cert, fmt))

    def persist_certificate(self, slot: ResourceLike, cert: ResourceLike) -> int:
        """Replace a configured certificate slot (atomic); returns its new version."""
        return self._run(self._p_persist_certificate(slot, cert))

    def persist_trust_store(
        self,
        store: ResourceLike,
        anchors: Iterable[ResourceLike] | ResourceLike,
        crls: Iterable[ResourceLike] | ResourceLike = (),
    ) -> int:
        """Replace a configured trust store's anchors and CRLs (atomic); returns its version."""
        return self._run(self._p_persist_trust_store(store, anchors, crls))


class AsyncCertificateManagementContext(CertificateManagementCore, AsyncOperationContext):
    """:class:`CertificateManagementContext` for asyncio stacks (the same calls, awaited)."""

    def _guard(self, info: dict[str, Any]) -> AsyncCryptoResourceGuard:
        return AsyncCryptoResourceGuard._from_wire(self._channel, info)

    async def import_certificate(self, data: bytes | str) -> AsyncCryptoResourceGuard:
        """An ephemeral certificate from PEM (bytes or str) or DER."""
        return self._guard(await self._run(self._p_import("cert.import", data, "certificate")))

    async def import_crl(self, data: bytes | str) -> AsyncCryptoResourceGuard:
        """An ephemeral CRL from PEM (bytes or str) or DER."""
        return self._guard(await self._run(self._p_import("crl.import", data, "CRL")))

    async def create_trust_store(
        self,
        anchors: Iterable[ResourceLike] | ResourceLike,
        crls: Iterable[ResourceLike] | ResourceLike = (),
    ) -> AsyncCryptoResourceGuard:
        """An ephemeral trust store of anchors (and CRLs)."""
        return self._guard(await self._run(self._p_trust_store(anchors, crls)))

    async def load_certificate_public_key(
        self,
        cert: ResourceLike,
        provider: int | None = None,
    ) -> tuple[AsyncCryptoResourceGuard, str]:
        """(VERIFY-only public key guard, canonical algorithm name)."""
        info, algorithm = await self._run(self._p_public_key(cert, provider))
        return self._guard(info), algorithm

    async def export_certificate(self, cert: ResourceLike, fmt: str | KeyFormat = "PEM") -> bytes:
        """The certificate as PEM or DER."""
        return await self._run(self._p_export(cert, fmt))

    async def persist_certificate(self, slot: ResourceLike, cert: ResourceLike) -> int:
        """Replace a configured certificate slot (atomic); returns its new version."""
        return await self._run(self._p_persist_certificate(slot, cert))

    async def persist_trust_store(
        self,
        store: ResourceLike,
        anchors: Iterable[ResourceLike] | ResourceLike,
        crls: Iterable[ResourceLike] | ResourceLike = (),
    ) -> int:
        """Replace a configured trust store's anchors and CRLs (atomic); returns its version."""
        return await self._run(self._p_persist_trust_store(store, anchors, crls))
