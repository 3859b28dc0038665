"""Certificate management and verification contexts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CryptoError, ErrorCode
from ..resources import CertVerifyResult, RevocationCheckPolicy
from .base import ContextConfig, OperationContext, ResourceLike, wire_rid

if TYPE_CHECKING:
    from ..stack import CryptoContext, CryptoResourceGuard


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

    def explain(self) -> str:
        """One human-readable line."""
        if self.result is CertVerifyResult.VALID:
            return f"VALID: chain of {len(self.chain)} certificates"
        return f"{self.result.value}: {self.reason}"


class CertificateVerificationContext(OperationContext):
    """Builder-style path validation; ``verify()`` sends one request."""

    def __init__(self, parent: CryptoContext, config: CertificateVerificationContextConfig) -> None:
        super().__init__(parent, config)
        self._certificate: dict[str, Any] | None = None
        self._trust_store: dict[str, Any] | None = None
        self._intermediates: list[dict[str, Any]] = []
        self._crls: list[dict[str, Any]] = []
        self._time: dt.datetime | None = None
        self._policy = RevocationCheckPolicy.NONE
        self.last_report: VerificationReport | None = None

    def close(self) -> None:
        """Nothing is held in the daemon."""
        self._closed = True

    def set_certificate(self, cert: ResourceLike) -> None:
        """The certificate to validate (certificate slot or imported certificate)."""
        self._certificate = wire_rid(cert, "certificate")

    def set_verification_trust_store(self, store: ResourceLike) -> None:
        """The anchors (and CRLs) to validate against."""
        self._trust_store = wire_rid(store, "trust store")

    def add_untrusted_intermediate(self, cert: ResourceLike) -> None:
        """A certificate that may be used to build the path (not trusted by itself)."""
        self._intermediates.append(wire_rid(cert, "certificate"))

    def add_crl(self, crl: ResourceLike) -> None:
        """An extra CRL for revocation checking."""
        self._crls.append(wire_rid(crl, "CRL"))

    def set_validation_time(self, when: dt.datetime) -> None:
        """Validate as of ``when`` (default: now). Naive datetimes are taken as UTC."""
        if not isinstance(when, dt.datetime):
            raise CryptoError(ErrorCode.INVALID_ARGUMENT, "validation time must be a datetime")
        self._time = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)

    def set_revocation_check_policy(self, policy: RevocationCheckPolicy) -> None:
        """NONE or CRL_ONLY."""
        self._policy = RevocationCheckPolicy(policy)

    def verify(self) -> CertVerifyResult:
        """Validate; details in :attr:`last_report` / :meth:`explain`."""
        result = self._call("cert.verify", {
            "certificate": self._certificate, "trust_store": self._trust_store,
            "intermediates": self._intermediates, "crls": self._crls,
            "time": None if self._time is None else self._time.timestamp(),
            "policy": self._policy.value})
        report = VerificationReport(CertVerifyResult(result["result"]), result.get("reason", ""),
                                    [bytes(c) for c in result.get("chain", [])])
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


class CertificateManagementContext(OperationContext):
    """Import certificates and CRLs, build and persist trust stores, extract public keys."""

    def close(self) -> None:
        """Nothing is held in the daemon."""
        self._closed = True

    def _guard(self, info: dict[str, Any]) -> CryptoResourceGuard:
        from ..stack import CryptoResourceGuard

        return CryptoResourceGuard._from_wire(self._stack, info)

    def import_certificate(self, data: bytes) -> CryptoResourceGuard:
        """An ephemeral certificate from PEM or DER."""
        return self._guard(self._call("cert.import", {"data": bytes(data)}))

    def import_crl(self, data: bytes) -> CryptoResourceGuard:
        """An ephemeral CRL from PEM or DER."""
        return self._guard(self._call("crl.import", {"data": bytes(data)}))

    def create_trust_store(self, anchors: Iterable[ResourceLike],
                           crls: Iterable[ResourceLike] = ()) -> CryptoResourceGuard:
        """An ephemeral trust store of anchors (and CRLs)."""
        return self._guard(self._call("truststore.create", {
            "anchors": [wire_rid(a, "anchor") for a in anchors],
            "crls": [wire_rid(c, "CRL") for c in crls]}))

    def load_certificate_public_key(self, cert: ResourceLike) -> tuple[CryptoResourceGuard, str]:
        """(VERIFY-only public key guard, canonical algorithm name)."""
        result = self._call("cert.public_key", {"cert": wire_rid(cert, "certificate")})
        return self._guard(result["key"]), str(result["algorithm"])

    def export_certificate(self, cert: ResourceLike, fmt: str = "PEM") -> bytes:
        """The certificate as PEM or DER."""
        data: bytes = self._call("cert.export", {"cert": wire_rid(cert, "certificate"),
                                                 "format": fmt})
        return data

    def persist_certificate(self, slot: ResourceLike, cert: ResourceLike) -> int:
        """Replace a configured certificate slot (atomic); returns its new version."""
        result = self._call("cert.persist", {"slot": wire_rid(slot, "slot"),
                                             "cert": wire_rid(cert, "certificate")})
        return int(result["version"])

    def persist_trust_store(self, store: ResourceLike, anchors: Iterable[ResourceLike],
                            crls: Iterable[ResourceLike] = ()) -> int:
        """Replace a configured trust store's anchors and CRLs (atomic); returns its version."""
        result = self._call("truststore.persist", {
            "store": wire_rid(store, "trust store"),
            "anchors": [wire_rid(a, "anchor") for a in anchors],
            "crls": [wire_rid(c, "CRL") for c in crls]})
        return int(result["version"])
