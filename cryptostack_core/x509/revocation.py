"""CRL processing: RFC 5280 6.3 for one certificate of a validated path.

For each distribution point of the certificate (its cRLDistributionPoints, then the
implicit one of 6.3.3: the certificate issuer's name, all reasons, no cRLIssuer) and each
supplied complete CRL, newest first:

* (b)(1) the CRL issuer is the certificate issuer, or -- when the distribution point names a
  cRLIssuer -- that issuer, and the CRL is then an indirect CRL;
* (b)(2) the issuingDistributionPoint scope covers the certificate: its distribution point
  names one of the distribution point's names (nameRelativeToCRLIssuer expanded),
  onlyContainsUserCerts / onlyContainsCACerts / onlyContainsAttributeCerts;
* (c)-(d) the reasons it covers (onlySomeReasons and the distribution point's reasons)
  add to the reasons already covered;
* (f) the CRL signer: the path issuer, or another certificate with the CRL issuer's name
  (a separate CRL-signing key, or the issuer of an indirect CRL) whose own certification
  path is validated to the *same trust anchor*, revocation included; keyUsage must allow
  cRLSign;
* (g) the signature verifies, the CRL is current (thisUpdate <= t < nextUpdate; without
  nextUpdate it cannot be shown current), it has no critical extension (or entry
  extension) we do not understand, and -- profile ``rfc5280`` -- a non-critical cRLNumber;
* (a)(2), (h) the newest usable delta CRL for it (deltaCRLIndicator, same issuer, signer
  and scope, BaseCRLNumber <= the complete CRL's number, current) is searched first;
* (i)-(j) entries are matched by serial number and certificate issuer (indirect CRLs: the
  certificateIssuer entry extension, carried over to the following entries); a
  removeFromCRL entry un-revokes.

The certificate is REVOKED when an applicable entry lists it (certificateHold included);
GOOD once the covered reasons reach all reasons; otherwise UNKNOWN with the reason each
CRL was not usable. An older usable CRL in scope still counts for a permanent revocation
(only a hold can be released by a newer CRL).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from .names import names_equal
from .parsing import describe
from .profile import is_ca
from .signatures import SignatureCheck, check_signature

__all__ = ["CrlStatus", "RevocationContext", "certificate_status"]

R = x509.ReasonFlags
ALL_REASONS = frozenset(
    {
        R.key_compromise,
        R.ca_compromise,
        R.affiliation_changed,
        R.superseded,
        R.cessation_of_operation,
        R.certificate_hold,
        R.privilege_withdrawn,
        R.aa_compromise,
    }
)
_UNDERSTOOD_CRL_EXTENSIONS = frozenset(
    {
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.DELTA_CRL_INDICATOR,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.ISSUING_DISTRIBUTION_POINT,
        ExtensionOID.FRESHEST_CRL,
    }
)
_UNDERSTOOD_ENTRY_EXTENSIONS = frozenset(
    {
        CRLEntryExtensionOID.CRL_REASON,
        CRLEntryExtensionOID.INVALIDITY_DATE,
        CRLEntryExtensionOID.CERTIFICATE_ISSUER,
    }
)


class CrlStatus(enum.Enum):
    """Revocation status of one certificate."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclasses.dataclass
class RevocationContext:
    """What CRL processing for one validation sees.

    ``validate_signer(cert, depth)`` validates a CRL signer's own path to the same trust
    anchor (revocation included) and returns "" when it is VALID, else why not.
    """

    crls: Sequence[x509.CertificateRevocationList]
    time: datetime.datetime
    profile: str
    pool: Sequence[x509.Certificate]
    anchor: x509.Certificate
    validate_signer: Callable[[x509.Certificate, int], str]
    depth: int = 0


@dataclasses.dataclass(frozen=True)
class _DistributionPoint:
    names: tuple[x509.GeneralName, ...] | None  # None: the distribution point has no name
    reasons: frozenset[x509.ReasonFlags] | None
    crl_issuer: tuple[x509.GeneralName, ...] | None
    label: str


def _ext(
    obj: x509.Certificate | x509.CertificateRevocationList, oid: x509.ObjectIdentifier
) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return obj.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def _with_rdn(base: x509.Name, rdn: x509.RelativeDistinguishedName) -> x509.Name:
    return x509.Name([*base.rdns, rdn])


def _distribution_points(cert: x509.Certificate) -> list[_DistributionPoint]:
    points: list[_DistributionPoint] = []
    ext = _ext(cert, ExtensionOID.CRL_DISTRIBUTION_POINTS)
    if ext is not None and isinstance(ext.value, x509.CRLDistributionPoints):
        for index, dp in enumerate(ext.value):
            crl_issuer = tuple(dp.crl_issuer) if dp.crl_issuer else None
            names: tuple[x509.GeneralName, ...] | None = None
            if dp.full_name:
                names = tuple(dp.full_name)
            elif dp.relative_name is not None:
                base = cert.issuer
                if crl_issuer:
                    directories = [n.value for n in crl_issuer if isinstance(n, x509.DirectoryName)]
                    base = directories[0] if directories else base
                names = (x509.DirectoryName(_with_rdn(base, dp.relative_name)),)
            points.append(
                _DistributionPoint(names, dp.reasons, crl_issuer, f"distribution point #{index + 1}")
            )
    # 6.3.3: CRLs not named by a distribution point but issued by the certificate issuer.
    implicit: list[x509.GeneralName] = [x509.DirectoryName(cert.issuer)]
    ian = _ext(cert, ExtensionOID.ISSUER_ALTERNATIVE_NAME)
    if ian is not None and isinstance(ian.value, x509.IssuerAlternativeName):
        implicit.extend(ian.value)
    points.append(_DistributionPoint(tuple(implicit), None, None, "the certificate issuer"))
    return points


def _general_names_equal(a: x509.GeneralName, b: x509.GeneralName) -> bool:
    if isinstance(a, x509.DirectoryName) and isinstance(b, x509.DirectoryName):
        return names_equal(a.value, b.value)
    return type(a) is type(b) and a == b


def _idp(crl: x509.CertificateRevocationList) -> x509.IssuingDistributionPoint | None:
    ext = _ext(crl, ExtensionOID.ISSUING_DISTRIBUTION_POINT)
    return ext.value if ext is not None and isinstance(ext.value, x509.IssuingDistributionPoint) else None


def _number(crl: x509.CertificateRevocationList) -> int | None:
    ext = _ext(crl, ExtensionOID.CRL_NUMBER)
    return ext.value.crl_number if ext is not None and isinstance(ext.value, x509.CRLNumber) else None


def _delta_base(crl: x509.CertificateRevocationList) -> int | None:
    ext = _ext(crl, ExtensionOID.DELTA_CRL_INDICATOR)
    return ext.value.crl_number if ext is not None and isinstance(ext.value, x509.DeltaCRLIndicator) else None


def _issuer_problem(
    crl: x509.CertificateRevocationList, dp: _DistributionPoint, cert: x509.Certificate
) -> str | None:
    """6.3.3 (b)(1): None when ``crl`` is from another issuer, "" when it may apply."""
    idp = _idp(crl)
    if dp.crl_issuer:
        directories = [n.value for n in dp.crl_issuer if isinstance(n, x509.DirectoryName)]
        if not any(names_equal(crl.issuer, d) for d in directories):
            return None
        if idp is None or not idp.indirect_crl:
            return (
                f"is issued by the cRLIssuer {dp.label} names but is not an indirect CRL "
                "(issuingDistributionPoint indirectCRL)"
            )
        return ""
    return "" if names_equal(crl.issuer, cert.issuer) else None


def _scope_problem(
    crl: x509.CertificateRevocationList, dp: _DistributionPoint, cert: x509.Certificate
) -> str | None:
    """6.3.3 (b)(2)."""
    idp = _idp(crl)
    if idp is None:
        return None
    if idp.full_name or idp.relative_name is not None:
        idp_names = (
            list(idp.full_name)
            if idp.full_name
            else [x509.DirectoryName(_with_rdn(crl.issuer, idp.relative_name))]
            if idp.relative_name is not None
            else []
        )
        dp_names = list(dp.names) if dp.names is not None else list(dp.crl_issuer or ())
        if not any(_general_names_equal(a, b) for a in idp_names for b in dp_names):
            return (
                f"is scoped (issuingDistributionPoint) to a distribution point that "
                f"{dp.label} of {describe(cert)} does not name"
            )
    if idp.only_contains_user_certs and is_ca(cert):
        return f"covers only end-entity certificates and {describe(cert)} is a CA"
    if idp.only_contains_ca_certs and not is_ca(cert):
        return f"covers only CA certificates and {describe(cert)} is not a CA"
    if idp.only_contains_attribute_certs:
        return "covers only attribute certificates"
    return None


def _interim_reasons(
    crl: x509.CertificateRevocationList, dp: _DistributionPoint
) -> frozenset[x509.ReasonFlags]:
    """6.3.3 (c)."""
    idp = _idp(crl)
    idp_reasons = idp.only_some_reasons if idp is not None else None
    if idp_reasons and dp.reasons:
        return frozenset(idp_reasons) & frozenset(dp.reasons)
    if idp_reasons:
        return frozenset(idp_reasons)
    if dp.reasons:
        return frozenset(dp.reasons)
    return ALL_REASONS


def _content_problem(crl: x509.CertificateRevocationList, ctx: RevocationContext) -> str | None:
    """Currency, extensions and entries (6.3.3 (g), 5.2, 5.3)."""
    if ctx.time < crl.last_update_utc:
        return "is not yet issued at the validation time"
    next_update = crl.next_update_utc
    if next_update is None:
        return "has no nextUpdate, so it cannot be shown to be current"
    if ctx.time >= next_update:
        return f"is expired: nextUpdate {next_update.isoformat()} is not after the validation time"
    for ext in crl.extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD_CRL_EXTENSIONS:
            return f"has an unsupported critical extension {ext.oid.dotted_string}"
    if ctx.profile != "lenient":
        number = _ext(crl, ExtensionOID.CRL_NUMBER)
        if number is None:
            return "has no cRLNumber (RFC 5280 5.2.3, profile rfc5280)"
        if number.critical:
            return "marks cRLNumber critical; it MUST be non-critical (RFC 5280 5.2.3, profile rfc5280)"
    idp = _idp(crl)
    indirect = idp is not None and idp.indirect_crl
    for entry in crl:
        for ext in entry.extensions:
            if ext.oid == CRLEntryExtensionOID.CERTIFICATE_ISSUER and not indirect:
                return "has a certificateIssuer entry extension but is not an indirect CRL (RFC 5280 5.3.3)"
            if ext.critical and ext.oid not in _UNDERSTOOD_ENTRY_EXTENSIONS:
                return f"has an entry with an unsupported critical extension {ext.oid.dotted_string}"
    return None


def _entry_for(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> x509.RevokedCertificate | None:
    idp = _idp(crl)
    if (idp is None or not idp.indirect_crl) and cert.serial_number >= 0:
        return crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if idp is None or not idp.indirect_crl:
        # pyca's look-up refuses negative serials (which RFC 5280 4.1.2.2 asks relying
        # parties to handle gracefully): scan.
        return next((e for e in crl if e.serial_number == cert.serial_number), None)
    current = crl.issuer
    for entry in crl:
        try:
            issuers = entry.extensions.get_extension_for_class(x509.CertificateIssuer).value
        except x509.ExtensionNotFound:
            pass
        else:
            directories = [n.value for n in issuers if isinstance(n, x509.DirectoryName)]
            current = directories[0] if directories else x509.Name([])
        if entry.serial_number == cert.serial_number and names_equal(current, cert.issuer):
            return entry
    return None


def _entry_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified


def _recency(crl: x509.CertificateRevocationList) -> tuple[datetime.datetime, int]:
    number = _number(crl)
    return crl.last_update_utc, -1 if number is None else number


class _Checker:
    def __init__(self, cert: x509.Certificate, issuer: x509.Certificate, ctx: RevocationContext) -> None:
        self.cert = cert
        self.issuer = issuer
        self.ctx = ctx
        self.labels = {id(crl): f"CRL #{i + 1}" for i, crl in enumerate(ctx.crls)}
        self.problems: dict[str, str] = {}
        self.signers: dict[int, x509.Certificate | None] = {}

    def label(self, crl: x509.CertificateRevocationList) -> str:
        return (
            f"{self.labels[id(crl)]} (issuer '{crl.issuer.rfc4514_string()}', "
            f"thisUpdate {crl.last_update_utc.isoformat()})"
        )

    def note(self, crl: x509.CertificateRevocationList, problem: str) -> None:
        self.problems.setdefault(self.label(crl), problem)

    def signer(self, crl: x509.CertificateRevocationList) -> x509.Certificate | None:
        """6.3.3 (f)-(g): a validated certificate whose key signed ``crl``."""
        if id(crl) in self.signers:
            return self.signers[id(crl)]
        candidates: list[x509.Certificate] = []
        if names_equal(self.issuer.subject, crl.issuer):
            candidates.append(self.issuer)
        for cert in self.ctx.pool:
            if names_equal(cert.subject, crl.issuer) and all(cert != c for c in candidates):
                candidates.append(cert)
        problems: list[str] = []
        found: x509.Certificate | None = None
        for candidate in candidates:
            verdict, why = check_signature(crl, candidate)
            if verdict is not SignatureCheck.GOOD:
                if candidate is self.issuer or len(candidates) == 1:
                    problems.append(
                        why
                        if verdict is not SignatureCheck.BAD
                        else f"its signature does not verify under the key of {describe(candidate)}"
                    )
                continue
            try:
                usage = candidate.extensions.get_extension_for_class(x509.KeyUsage).value
            except x509.ExtensionNotFound:
                usage = None
            if usage is not None and not usage.crl_sign:
                problems.append(f"keyUsage of its signer {describe(candidate)} does not assert cRLSign")
                continue
            if candidate in (self.issuer, self.ctx.anchor) or (self.ctx.depth > 0 and candidate == self.cert):
                # The path issuer and the anchor are validated by the path itself. Inside a
                # CRL signer's own validation (depth > 0), a signer whose status is on the
                # CRL it signed (an indirect CRL authority, PKITS 4.14.30) is the path being
                # validated right now, up to this very check.
                found = candidate
                break
            why_not = self.ctx.validate_signer(candidate, self.ctx.depth + 1)
            if why_not:
                problems.append(
                    f"its signer {describe(candidate)} has no valid certification "
                    f"path to the same trust anchor: {why_not}"
                )
                continue
            found = candidate
            break
        if found is None:
            if not candidates:
                problems.append(
                    "no certificate of its issuer (neither the path issuer nor a "
                    "supplied one) was found to check its signature"
                )
            self.note(crl, "is unusable: " + "; ".join(dict.fromkeys(problems)))
        self.signers[id(crl)] = found
        return found

    def delta_for(
        self, base: x509.CertificateRevocationList, signer: x509.Certificate
    ) -> x509.CertificateRevocationList | None:
        """The newest usable delta CRL for the complete CRL ``base`` (6.3.3 (a)(2), (c))."""
        base_number = _number(base)
        best: x509.CertificateRevocationList | None = None
        for delta in self.ctx.crls:
            delta_base = _delta_base(delta)
            if delta_base is None or not names_equal(delta.issuer, base.issuer):
                continue
            problem = None
            if base_number is None or delta_base > base_number:
                problem = (
                    f"is a delta CRL for base CRL number {delta_base}, newer than "
                    f"complete CRL number {base_number}"
                )
            elif _idp(delta) != _idp(base):
                problem = "is a delta CRL whose scope differs from its complete CRL"
            elif check_signature(delta, signer)[0] is not SignatureCheck.GOOD:
                problem = (
                    f"is a delta CRL not signed by the key of {describe(signer)}, "
                    "which signed the complete CRL"
                )
            else:
                problem = _content_problem(delta, self.ctx)
            if problem:
                self.note(delta, problem)
                continue
            if best is None or _recency(delta) > _recency(best):
                best = delta
        return best

    def run(self) -> tuple[CrlStatus, str]:
        complete = [crl for crl in self.ctx.crls if _delta_base(crl) is None]
        complete.sort(key=_recency, reverse=True)
        reasons: frozenset[x509.ReasonFlags] = frozenset()
        first_use: dict[int, bool] = {}
        for dp in _distribution_points(self.cert):
            for crl in complete:
                problem = _issuer_problem(crl, dp, self.cert)
                if problem is None:
                    continue
                if problem:
                    self.note(crl, problem)
                    continue
                problem = _scope_problem(crl, dp, self.cert)
                if problem:
                    self.note(crl, problem)
                    continue
                interim = _interim_reasons(crl, dp)
                signer = self.signer(crl)
                if signer is None:
                    continue
                content = _content_problem(crl, self.ctx)
                if content:
                    self.note(crl, content)
                    continue
                newest = id(crl) not in first_use and not (interim <= reasons)
                first_use[id(crl)] = True
                delta = self.delta_for(crl, signer) if newest else None
                verdict = self.lookup(crl, delta, permanent_only=not newest)
                if verdict:
                    return CrlStatus.REVOKED, verdict
                reasons |= interim
        if reasons >= ALL_REASONS:
            return CrlStatus.GOOD, ""
        subject = describe(self.cert)
        for crl in self.ctx.crls:
            if _delta_base(crl) is not None and names_equal(crl.issuer, self.cert.issuer):
                self.note(crl, "is a delta CRL and no usable complete CRL applies")
        details = "; ".join(f"{label} {problem}" for label, problem in self.problems.items())
        if reasons:
            missing = ", ".join(sorted(r.value for r in ALL_REASONS - reasons))
            lead = f"the usable CRLs for {subject} cover only some revocation reasons (not {missing})"
            return CrlStatus.UNKNOWN, f"{lead}: {details}" if details else lead
        if not details:
            return CrlStatus.UNKNOWN, (
                f"no CRL issued by '{self.cert.issuer.rfc4514_string()}' was supplied for {subject}"
            )
        lead = f"no usable CRL for {subject}"
        return CrlStatus.UNKNOWN, f"{lead}: {details}"

    def lookup(
        self,
        crl: x509.CertificateRevocationList,
        delta: x509.CertificateRevocationList | None,
        *,
        permanent_only: bool,
    ) -> str:
        """6.3.3 (h)-(j): the revocation text, or "" when the certificate is not revoked."""
        for source in ([delta] if delta is not None else []) + [crl]:
            entry = _entry_for(source, self.cert)
            if entry is None:
                continue
            reason = _entry_reason(entry)
            if reason is x509.ReasonFlags.remove_from_crl:
                return ""
            if permanent_only and reason is x509.ReasonFlags.certificate_hold:
                return ""
            kind = "delta CRL " if source is delta else ""
            reason_text = "" if reason is x509.ReasonFlags.unspecified else f", reason {reason.value}"
            return (
                f"{describe(self.cert)} (serial {self.cert.serial_number:#x}) is revoked by "
                f"{kind}{self.labels[id(source)]} of '{source.issuer.rfc4514_string()}' "
                f"(thisUpdate {source.last_update_utc.isoformat()}): revoked at "
                f"{entry.revocation_date_utc.isoformat()}{reason_text}"
            )
        return ""


def certificate_status(
    cert: x509.Certificate, issuer: x509.Certificate, ctx: RevocationContext
) -> tuple[CrlStatus, str]:
    """Revocation status of ``cert`` (issued by ``issuer`` in the path) and why."""
    return _Checker(cert, issuer, ctx).run()
