"""RFC 5280 section 6.1 path validation, with section 6.3 CRL checking, for one request.

Candidate paths come from :mod:`.building`; each is run through the basic path validation
algorithm of 6.1 (signatures, validity, name chaining under 7.1 normalisation, name
constraints, the policy tree, basicConstraints and pathLenConstraint -- self-issued
intermediates not counted --, keyUsage, critical extensions) plus the profile rules of
:mod:`.profile`, then revocation (:mod:`.revocation`). The first valid path wins; otherwise
the best failure is reported, with the certificate and the rule that failed.

Result precedence for one path (the first that applies decides):

1. a signature that does not verify -> ``INVALID_SIGNATURE``;
2. any rule of 6.1 or of the profile (including a disallowed algorithm or a path longer
   than ``max_chain_depth`` intermediates) -> ``INVALID``;
3. a DSA signature (not supported) -> the path is *unsupported*;
4. a certificate outside its validity period -> ``EXPIRED`` / ``NOT_YET_VALID``, decided
   by the out-of-window certificate nearest the leaf (the reason lists all of them);
   validity is inclusive at both ends, the validation time truncated to whole seconds;
5. with ``CRL_ONLY``: a revoked certificate -> ``REVOKED``; a certificate whose status no
   usable CRL tells -> ``REVOCATION_STATUS_UNKNOWN``.

Among paths: ``VALID``, ``REVOCATION_STATUS_UNKNOWN``, unsupported, ``REVOKED``,
``EXPIRED``/``NOT_YET_VALID``, ``INVALID``, ``INVALID_SIGNATURE``; no path to an anchor is
``UNTRUSTED``. When the best path is unsupported, :func:`validate_path` raises
``UNSUPPORTED_ALGORITHM`` rather than guess a verdict.

Trust anchors are certificates. As pyca and most validators do, an anchor is also held to
what it says about itself when it issues the next certificate: its validity period,
basicConstraints cA (v3 anchors), keyUsage keyCertSign, pathLenConstraint and
nameConstraints apply; its policy extensions and its own signature do not.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CertVerifyResult, RevocationCheckPolicy

from .building import PathBuilder
from .names import BudgetExceeded, NameConstraintsState, constrained_names, names_equal
from .parsing import describe, library_detail
from .policies import ANY_POLICY, PolicyError, PolicySettings, PolicyState
from .profile import PROFILES, profile_problem, unknown_critical
from .revocation import CrlStatus, RevocationContext, certificate_status
from .signatures import SignatureCheck, check_signature

__all__ = [
    "DEFAULT_MAX_CHAIN_DEPTH",
    "KEY_USAGE_NAMES",
    "MAX_CHAIN_DEPTH_LIMIT",
    "ValidationOutcome",
    "ValidationRequest",
    "validate_path",
]

#: Names accepted in :attr:`ValidationRequest.required_key_usage` (``x509.KeyUsage`` fields).
KEY_USAGE_NAMES = frozenset(
    {
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    }
)
#: Intermediates allowed between the leaf and the trust anchor unless the request says
#: otherwise (pyca's default).
DEFAULT_MAX_CHAIN_DEPTH = 8
#: The largest ``max_chain_depth`` a request may ask for.
MAX_CHAIN_DEPTH_LIMIT = 32
#: CRL signers validated within CRL signers' paths (separate CRL keys, indirect CRLs).
MAX_CRL_SIGNER_DEPTH = 3

_ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidationRequest:
    """Everything one path validation looks at.

    Attributes:
        leaf: the certificate to validate (the target of the path).
        anchors: trust anchors (full certificates). A leaf that is an anchor is valid alone.
        validation_time: timezone-aware instant to validate at (truncated to whole seconds).
        revocation_policy: ``CRL_ONLY`` checks every non-anchor path certificate against
            ``crls``; ``NONE`` ignores them.
        intermediates: untrusted certificates that may be used to build the path (and to
            find CRL signers).
        crls: candidate CRLs, complete and delta (any issuer; the engine picks).
        required_key_usage: ``x509.KeyUsage`` field names (see :data:`KEY_USAGE_NAMES`) the
            leaf must assert if it has a keyUsage extension.
        required_extended_key_usage: purpose the leaf, and every CA with an EKU extension,
            must allow (or anyExtendedKeyUsage); ``None`` skips EKU checks.
        initial_policy_set: RFC 5280 user-initial-policy-set (default: anyPolicy).
        initial_explicit_policy: RFC 5280 initial-explicit-policy.
        initial_policy_mapping_inhibit: RFC 5280 initial-policy-mapping-inhibit.
        initial_any_policy_inhibit: RFC 5280 initial-any-policy-inhibit.
        max_chain_depth: intermediates allowed between leaf and anchor (0 ..
            :data:`MAX_CHAIN_DEPTH_LIMIT`).
        profile: ``"rfc5280"`` (default) or ``"lenient"`` (see :mod:`.profile`).
    """

    leaf: x509.Certificate
    anchors: Sequence[x509.Certificate]
    validation_time: datetime.datetime
    revocation_policy: RevocationCheckPolicy
    intermediates: Sequence[x509.Certificate] = ()
    crls: Sequence[x509.CertificateRevocationList] = ()
    required_key_usage: frozenset[str] = frozenset()
    required_extended_key_usage: x509.ObjectIdentifier | None = None
    initial_policy_set: frozenset[x509.ObjectIdentifier] = frozenset({ANY_POLICY})
    initial_explicit_policy: bool = False
    initial_policy_mapping_inhibit: bool = False
    initial_any_policy_inhibit: bool = False
    max_chain_depth: int = DEFAULT_MAX_CHAIN_DEPTH
    profile: str = "rfc5280"

    def __post_init__(self) -> None:
        def bad(message: str) -> CryptoError:
            return CryptoError(ErrorCode.INVALID_ARGUMENT, message)

        if not isinstance(self.leaf, x509.Certificate):
            raise bad("leaf must be an x509.Certificate")
        for label, items, kind in (
            ("anchors", self.anchors, x509.Certificate),
            ("intermediates", self.intermediates, x509.Certificate),
            ("crls", self.crls, x509.CertificateRevocationList),
        ):
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, kind) for i in items):
                raise bad(f"{label} must be a list or tuple of {kind.__name__}")
        if not isinstance(self.validation_time, datetime.datetime):
            raise bad("validation_time must be a datetime")
        if self.validation_time.tzinfo is None or self.validation_time.utcoffset() is None:
            raise bad("validation_time must be timezone-aware")
        if not isinstance(self.revocation_policy, RevocationCheckPolicy):
            raise bad("revocation_policy must be a RevocationCheckPolicy")
        unknown = set(self.required_key_usage) - KEY_USAGE_NAMES
        if unknown:
            raise bad(f"unknown key usage names: {', '.join(sorted(unknown))}")
        eku = self.required_extended_key_usage
        if eku is not None and not isinstance(eku, x509.ObjectIdentifier):
            raise bad("required_extended_key_usage must be an ObjectIdentifier or None")
        policies = self.initial_policy_set
        if (
            not isinstance(policies, frozenset)
            or not policies
            or not all(isinstance(p, x509.ObjectIdentifier) for p in policies)
        ):
            raise bad("initial_policy_set must be a non-empty frozenset of ObjectIdentifier")
        for flag in (
            "initial_explicit_policy",
            "initial_policy_mapping_inhibit",
            "initial_any_policy_inhibit",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise bad(f"{flag} must be a bool")
        depth = self.max_chain_depth
        if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= MAX_CHAIN_DEPTH_LIMIT:
            raise bad(f"max_chain_depth must be an integer from 0 to {MAX_CHAIN_DEPTH_LIMIT}")
        if self.profile not in PROFILES:
            raise bad(f"unknown profile {self.profile!r} (one of {', '.join(PROFILES)})")
        # Decode every extension now (pyca caches them): validation must not fail later.
        for cert in [self.leaf, *self.anchors, *self.intermediates]:
            try:
                _ = cert.extensions
            except (ValueError, x509.DuplicateExtension) as exc:
                raise bad(
                    f"certificate {describe(cert)} has malformed extensions: {library_detail(exc)}"
                ) from None
        for crl in self.crls:
            try:
                _ = crl.extensions
                for entry in crl:
                    _ = entry.extensions
            except (ValueError, x509.DuplicateExtension) as exc:
                raise bad(f"CRL has malformed extensions: {library_detail(exc)}") from None

    @property
    def policy_settings(self) -> PolicySettings:
        """The four RFC 5280 policy inputs."""
        return PolicySettings(
            self.initial_policy_set,
            self.initial_explicit_policy,
            self.initial_policy_mapping_inhibit,
            self.initial_any_policy_inhibit,
        )


@dataclasses.dataclass(frozen=True)
class ValidationOutcome:
    """Result of :func:`validate_path`.

    Attributes:
        result: the verdict.
        chain: the validated path, leaf first and trust anchor last; empty unless VALID.
        reason: precise explanation of a failure (certificate and rule); ``""`` when VALID.
        policies: the user-constrained policy set of a VALID path (RFC 5280 6.1.6), as
            dotted OIDs in the trust anchor's policy domain: empty when the certificates
            assert no policy, ``{"2.5.29.32.0"}`` when the path is valid for any policy.
    """

    result: CertVerifyResult
    chain: list[x509.Certificate]
    reason: str
    policies: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class _PathVerdict:
    result: CertVerifyResult | None  # None: unsupported (a DSA signature)
    reason: str
    chain: list[x509.Certificate] = dataclasses.field(default_factory=list)
    policies: frozenset[str] = frozenset()


_RANK: dict[CertVerifyResult | None, int] = {
    CertVerifyResult.VALID: 0,
    CertVerifyResult.REVOCATION_STATUS_UNKNOWN: 1,
    None: 2,
    CertVerifyResult.REVOKED: 3,
    CertVerifyResult.EXPIRED: 4,
    CertVerifyResult.NOT_YET_VALID: 4,
    CertVerifyResult.INVALID: 5,
    CertVerifyResult.INVALID_SIGNATURE: 6,
    CertVerifyResult.UNTRUSTED: 7,
}


def _ext_value(cert: x509.Certificate, kind: type) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _key_usage_bit(ku: x509.KeyUsage, name: str) -> bool:
    # encipher_only/decipher_only raise unless keyAgreement is set; then they are false.
    if name in ("encipher_only", "decipher_only") and not ku.key_agreement:
        return False
    return bool(getattr(ku, name))


def _within(cert: x509.Certificate, time: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= time <= cert.not_valid_after_utc


def _time_failure(out_of_window: list[x509.Certificate], time: datetime.datetime) -> _PathVerdict:
    details = []
    for cert in out_of_window:
        if time > cert.not_valid_after_utc:
            details.append(f"{describe(cert)} expired at {cert.not_valid_after_utc.isoformat()}")
        else:
            details.append(f"{describe(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}")
    first = out_of_window[0]
    result = CertVerifyResult.EXPIRED if time > first.not_valid_after_utc else CertVerifyResult.NOT_YET_VALID
    return _PathVerdict(result, f"at {time.isoformat()}: " + "; ".join(details))


class _Engine:
    """One validation request: its normalised time, and CRL-signer validations it spawns."""

    def __init__(self, request: ValidationRequest, time: datetime.datetime) -> None:
        self.request = request
        self.time = time
        self.pool = [*request.anchors, *request.intermediates]
        self._signer_cache: dict[tuple[bytes, bytes], str] = {}
        self._signers_in_progress: set[bytes] = set()

    # ------------------------------------------------------------------ path search

    def search(
        self,
        leaf: x509.Certificate,
        anchors: Sequence[x509.Certificate],
        settings: PolicySettings,
        crl_depth: int,
    ) -> _PathVerdict:
        max_length = 2 * self.request.max_chain_depth + 4
        builder = PathBuilder(anchors, self.request.intermediates, max_length)
        best: _PathVerdict | None = None
        count = 0
        for path in builder.paths(leaf):
            count += 1
            verdict = self.evaluate(path, settings, crl_depth)
            if verdict.result is CertVerifyResult.VALID:
                return verdict
            if best is None or _RANK[verdict.result] < _RANK[best.result]:
                best = verdict
        limit = " (the search stopped at its limit of candidate paths)" if builder.truncated else ""
        if best is None:
            shown = "; ".join(dict.fromkeys(builder.dead_ends[:5])) or "no candidate path"
            return _PathVerdict(CertVerifyResult.UNTRUSTED, f"no path to a trust anchor: {shown}{limit}")
        if count > 1:
            return dataclasses.replace(
                best, reason=f"best of {count} candidate paths failed: {best.reason}{limit}"
            )
        return best

    # ------------------------------------------------------------------ one path

    def evaluate(
        self, path: list[x509.Certificate], settings: PolicySettings, crl_depth: int
    ) -> _PathVerdict:
        anchor = path[-1]
        chain = path[-2::-1]  # certificates 1..n of RFC 5280 6.1, anchor excluded
        unsupported = disallowed = ""
        for index, cert in enumerate(chain):
            issuer = anchor if index == 0 else chain[index - 1]
            verdict, why = check_signature(cert, issuer)
            if verdict is SignatureCheck.BAD:
                return _PathVerdict(CertVerifyResult.INVALID_SIGNATURE, why)
            if verdict is SignatureCheck.DISALLOWED:
                disallowed = disallowed or why
            elif verdict is SignatureCheck.UNSUPPORTED:
                unsupported = unsupported or why
        if disallowed:
            return _PathVerdict(CertVerifyResult.INVALID, disallowed)
        problem, policies = self.structure(anchor, chain, settings)
        if problem:
            return _PathVerdict(CertVerifyResult.INVALID, problem)
        if unsupported:
            return _PathVerdict(None, unsupported)
        out_of_window = [c for c in path if not _within(c, self.time)]
        if out_of_window:
            return _time_failure(out_of_window, self.time)
        if self.request.revocation_policy is RevocationCheckPolicy.CRL_ONLY:
            revocation = self.revocation(path, crl_depth)
            if revocation is not None:
                return revocation
        shown = frozenset(p.dotted_string for p in policies)
        return _PathVerdict(CertVerifyResult.VALID, "", list(path), shown)

    def structure(
        self, anchor: x509.Certificate, chain: list[x509.Certificate], settings: PolicySettings
    ) -> tuple[str | None, frozenset[x509.ObjectIdentifier]]:
        """RFC 5280 6.1.3-6.1.5 and the profile; (first problem, user-constrained policies)."""
        request = self.request
        n = len(chain)
        if n == 0:
            return None, frozenset({ANY_POLICY})
        if n - 1 > request.max_chain_depth:
            return (
                f"the path has {n - 1} intermediates, at most {request.max_chain_depth} "
                "are allowed (max chain depth)"
            ), frozenset()
        constraints = NameConstraintsState()
        max_path_length = n
        length_owner, length_value = "", n
        anchor_problem = self.issuer_problem(anchor, "trust anchor")
        if anchor_problem:
            return anchor_problem, frozenset()
        anchor_bc = _ext_value(anchor, x509.BasicConstraints)
        if isinstance(anchor_bc, x509.BasicConstraints) and anchor_bc.path_length is not None:
            max_path_length = length_value = anchor_bc.path_length
            length_owner = describe(anchor)
        anchor_nc = _ext_value(anchor, x509.NameConstraints)
        if isinstance(anchor_nc, x509.NameConstraints):
            problem = constraints.add(f"trust anchor {describe(anchor)}", anchor_nc)
            if problem:
                return problem, frozenset()
        policy = PolicyState(settings, n)
        try:
            for i, cert in enumerate(chain, start=1):
                who = describe(cert)
                last = i == n
                self_issued = names_equal(cert.issuer, cert.subject)
                problem = None if last else self.issuer_problem(cert, "issuing certificate")
                problem = problem or profile_problem(
                    cert, as_issuer=not last, profile=request.profile, who=who
                )
                if problem:
                    return problem, frozenset()
                if last or not self_issued:  # 6.1.3 (b)-(c)
                    problem = constraints.check(who, constrained_names(cert))
                    if problem:
                        return problem, frozenset()
                policy.process_certificate(cert, i, self_issued, who)
                if last:
                    policies = policy.wrap_up(cert, who)
                    problem = self.leaf_problem(cert)
                    return problem, policies
                policy.prepare_next(cert, i, self_issued, who)
                nc = _ext_value(cert, x509.NameConstraints)
                if isinstance(nc, x509.NameConstraints):  # 6.1.4 (g)
                    problem = constraints.add(who, nc)
                    if problem:
                        return problem, frozenset()
                if not self_issued:  # 6.1.4 (l)
                    if max_path_length <= 0:
                        return (
                            f"path length constraint violated: pathLenConstraint "
                            f"{length_value} of {length_owner} is exceeded by {who} (self-issued "
                            "certificates are not counted, RFC 5280 6.1.4 (l))"
                        ), frozenset()
                    max_path_length -= 1
                bc = _ext_value(cert, x509.BasicConstraints)
                if (
                    isinstance(bc, x509.BasicConstraints)
                    and bc.path_length is not None
                    and bc.path_length < max_path_length
                ):  # 6.1.4 (m)
                    max_path_length = length_value = bc.path_length
                    length_owner = who
        except PolicyError as exc:
            return str(exc), frozenset()
        except BudgetExceeded:
            return (
                "name constraint checking exceeds its limit of comparisons for one path "
                "(name constraint work limit)"
            ), frozenset()
        raise AssertionError("unreachable: the loop returns at the last certificate")

    def issuer_problem(self, cert: x509.Certificate, role: str) -> str | None:
        """6.1.4 (k), (n), (o) and EKU chaining for a certificate that issues the next one."""
        who = describe(cert)
        bc = _ext_value(cert, x509.BasicConstraints)
        if bc is None:
            if cert.version is x509.Version.v1 and role == "trust anchor":
                return None  # a version 1 anchor is a CA by configuration
            return f"{role} {who} has no basicConstraints (RFC 5280 6.1.4 (k))"
        if isinstance(bc, x509.BasicConstraints) and not bc.ca:
            return f"{role} {who} does not assert cA in basicConstraints (RFC 5280 6.1.4 (k))"
        ku = _ext_value(cert, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
            return f"keyUsage of CA certificate {who} does not assert keyCertSign (RFC 5280 6.1.4 (n))"
        if role != "trust anchor":
            unknown = unknown_critical(cert)
            if unknown:
                return (
                    f"{who} has unsupported critical extension(s) {', '.join(unknown)} (RFC 5280 6.1.4 (o))"
                )
        return self.eku_problem(cert, "CA certificate")

    def leaf_problem(self, cert: x509.Certificate) -> str | None:
        """6.1.5 (f) and the request's key-usage and purpose requirements."""
        who = describe(cert)
        unknown = unknown_critical(cert)
        if unknown:
            return f"{who} has unsupported critical extension(s) {', '.join(unknown)} (RFC 5280 6.1.5 (f))"
        ku = _ext_value(cert, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage):
            bc = _ext_value(cert, x509.BasicConstraints)
            if ku.key_cert_sign and not (isinstance(bc, x509.BasicConstraints) and bc.ca):
                return (
                    f"keyUsage of {who} asserts keyCertSign but it is not a CA "
                    "(basicConstraints cA is not set; RFC 5280 4.2.1.3)"
                )
            missing = [
                name for name in sorted(self.request.required_key_usage) if not _key_usage_bit(ku, name)
            ]
            if missing:
                return f"keyUsage of leaf certificate {who} lacks {', '.join(missing)}"
        return self.eku_problem(cert, "leaf certificate")

    def eku_problem(self, cert: x509.Certificate, role: str) -> str | None:
        required = self.request.required_extended_key_usage
        eku = _ext_value(cert, x509.ExtendedKeyUsage)
        if required is None or not isinstance(eku, x509.ExtendedKeyUsage):
            return None
        if required not in eku and _ANY_EKU not in eku:
            return f"extendedKeyUsage of {role} {describe(cert)} does not allow {required.dotted_string}"
        return None

    # ------------------------------------------------------------------ revocation

    def revocation(self, path: list[x509.Certificate], crl_depth: int) -> _PathVerdict | None:
        anchor = path[-1]
        context = RevocationContext(
            crls=self.request.crls,
            time=self.time,
            profile=self.request.profile,
            pool=self.pool,
            anchor=anchor,
            validate_signer=lambda cert, depth: self.validate_signer(cert, anchor, depth),
            depth=crl_depth,
        )
        unknown: list[str] = []
        for cert, issuer in itertools.pairwise(path):
            status, why = certificate_status(cert, issuer, context)
            if status is CrlStatus.REVOKED:
                return _PathVerdict(CertVerifyResult.REVOKED, why)
            if status is CrlStatus.UNKNOWN:
                unknown.append(why)
        if unknown:
            return _PathVerdict(CertVerifyResult.REVOCATION_STATUS_UNKNOWN, "; ".join(unknown))
        return None

    def validate_signer(self, cert: x509.Certificate, anchor: x509.Certificate, depth: int) -> str:
        """RFC 5280 6.3.3 (f): a CRL signer's own path to ``anchor``; "" when VALID."""
        key = (cert.public_bytes(Encoding.DER), anchor.public_bytes(Encoding.DER))
        if key in self._signer_cache:
            return self._signer_cache[key]
        if depth > MAX_CRL_SIGNER_DEPTH:
            return f"CRL signers are nested deeper than {MAX_CRL_SIGNER_DEPTH} levels"
        if key[0] in self._signers_in_progress:
            return "its validation depends on itself (a circular CRL signer)"
        self._signers_in_progress.add(key[0])
        try:
            verdict = self.search(cert, [anchor], PolicySettings(), depth)
        finally:
            self._signers_in_progress.discard(key[0])
        if verdict.result is CertVerifyResult.VALID:
            why = ""
        elif verdict.result is None:
            why = f"unsupported: {verdict.reason}"
        else:
            why = f"{verdict.result.value}: {verdict.reason}"
        self._signer_cache[key] = why
        return why


def validate_path(request: ValidationRequest) -> ValidationOutcome:
    """Validate ``request.leaf`` against the trust anchors; never raises for a bad path.

    See the module docstring for what is checked and how failures are ranked.

    Raises:
        CryptoError: ``UNSUPPORTED_ALGORITHM`` when the best candidate path could only be
            judged by verifying a DSA signature, which is not supported.
    """
    time = request.validation_time.astimezone(datetime.UTC).replace(microsecond=0)
    if not request.anchors:
        return ValidationOutcome(CertVerifyResult.UNTRUSTED, [], "no trust anchors were supplied")
    verdict = _Engine(request, time).search(request.leaf, request.anchors, request.policy_settings, 0)
    if verdict.result is None:
        raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, verdict.reason)
    return ValidationOutcome(verdict.result, verdict.chain, verdict.reason, verdict.policies)
