"""Path validation, CRL checking and parsing of cryptostack_core.x509 on real PKIs.

Every PKI is built here with pyca's builders (see ``pki.py``); nothing is mocked.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CertVerifyResult, RevocationCheckPolicy
from cryptostack_core.x509 import (
    ValidationOutcome,
    ValidationRequest,
    parse_certificate,
    parse_crl,
    public_key_algorithm,
    spki_der,
    validate_path,
)

# tests/ is not a package; make the PKI helper beside this file importable in any import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pki import (
    DAY,
    SECOND,
    YEAR,
    Entity,
    T,
    crl_without_next_update,
    issue,
    key_usage,
    make_crl,
    name,
    new_key,
)

R = CertVerifyResult
CRL_ONLY = RevocationCheckPolicy.CRL_ONLY
UNKNOWN_CRITICAL = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x05\x00")


def check(
    leaf: Entity,
    anchors: Sequence[Entity],
    intermediates: Sequence[Entity] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    *,
    at: object = T,
    policy: RevocationCheckPolicy = CRL_ONLY,
    **options: object,
) -> ValidationOutcome:
    return validate_path(
        ValidationRequest(
            leaf=leaf.cert,
            anchors=[a.cert for a in anchors],
            intermediates=[i.cert for i in intermediates],
            crls=list(crls),
            validation_time=at,  # type: ignore[arg-type]
            revocation_policy=policy,
            **options,  # type: ignore[arg-type]
        )
    )


class Chain:
    """root -> intermediate -> leaf with empty current CRLs from both CAs."""

    def __init__(self, kind: str = "p256", **leaf_options: object) -> None:
        self.root = issue("Root CA", None, key=new_key(kind), ca=True)  # type: ignore[arg-type]
        self.inter = issue("Issuing CA", self.root, key=new_key(kind), ca=True, path_length=0)  # type: ignore[arg-type]
        self.leaf = issue("device-0001", self.inter, key=new_key(kind), **leaf_options)  # type: ignore[arg-type]
        self.root_crl = make_crl(self.root)
        self.inter_crl = make_crl(self.inter)

    def verify(self, leaf: Entity | None = None, **kwargs: object) -> ValidationOutcome:
        kwargs.setdefault("crls", [self.root_crl, self.inter_crl])
        return check(leaf or self.leaf, [self.root], [self.inter], **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def chain() -> Chain:
    return Chain()


def assert_result(outcome: ValidationOutcome, result: CertVerifyResult, *phrases: str) -> None:
    assert outcome.result is result, outcome.reason
    for phrase in phrases:
        assert phrase in outcome.reason, outcome.reason
    if result is R.VALID:
        assert outcome.reason == "" and outcome.chain
    else:
        assert outcome.chain == [] and outcome.reason


# ------------------------------------------------------------------------------------ VALID


def test_valid_chain_returns_leaf_to_anchor(chain: Chain) -> None:
    outcome = chain.verify()
    assert_result(outcome, R.VALID)
    assert outcome.chain == [chain.leaf.cert, chain.inter.cert, chain.root.cert]


def test_device_certificate_without_san_or_eku_is_valid(chain: Chain) -> None:
    extensions = chain.leaf.cert.extensions
    with pytest.raises(x509.ExtensionNotFound):
        extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert_result(chain.verify(), R.VALID)


def test_leaf_directly_under_anchor_without_revocation() -> None:
    root = issue("Root", None, ca=True)
    leaf = issue("leaf", root)
    outcome = check(leaf, [root], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.VALID)
    assert outcome.chain == [leaf.cert, root.cert]


def test_anchor_as_leaf_is_valid_alone() -> None:
    root = issue("Root", None, ca=True)
    outcome = check(root, [root])
    assert_result(outcome, R.VALID)
    assert outcome.chain == [root.cert]


def test_revocation_none_ignores_missing_crls(chain: Chain) -> None:
    assert_result(chain.verify(crls=[], policy=RevocationCheckPolicy.NONE), R.VALID)


def test_minimal_pki_without_key_identifiers_or_key_usage() -> None:
    root = issue("Root", None, ca=True, usage=None, key_ids=False)
    leaf = issue("bare-device", root, ca=None, usage=None, key_ids=False)
    assert len(leaf.cert.extensions) == 0
    outcome = check(leaf, [root], crls=[make_crl(root)])
    assert_result(outcome, R.VALID)


def test_unknown_non_critical_extension_is_ignored() -> None:
    c = Chain(extensions=[(x509.UnrecognizedExtension(UNKNOWN_CRITICAL.oid, b"\x05\x00"), False)])
    assert_result(c.verify(), R.VALID)


def test_ed25519_chain_with_ed25519_crls() -> None:
    c = Chain("ed25519")
    outcome = c.verify()
    assert_result(outcome, R.VALID)
    assert outcome.chain == [c.leaf.cert, c.inter.cert, c.root.cert]


def test_mldsa65_chain_with_mldsa_crls() -> None:
    c = Chain("mldsa65")
    outcome = c.verify()
    assert_result(outcome, R.VALID)
    assert public_key_algorithm(outcome.chain[1]) == "ML-DSA-65"


def test_rsa_chain_mixing_pss_and_pkcs1() -> None:
    key = new_key("rsa")
    root = issue("RSA Root", None, key=key, ca=True)  # PKCS#1 v1.5 self-signature
    inter = issue("RSA Issuing", root, key=key, ca=True, rsa_pss=True)
    leaf = issue("rsa-device", inter, key=new_key())
    crls = [make_crl(root, rsa_pss=True), make_crl(inter)]
    outcome = check(leaf, [root], [inter], crls)
    assert_result(outcome, R.VALID)
    assert inter.cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS


def test_ecdsa_leaf_key_types_under_mixed_cas() -> None:
    root = issue("Root", None, key=new_key("p384"), ca=True)
    inter = issue("Inter", root, key=new_key("mldsa44"), ca=True)
    leaf = issue("leaf", inter, key=new_key("ed25519"))
    outcome = check(leaf, [root], [inter], [make_crl(root), make_crl(inter)])
    assert_result(outcome, R.VALID)


def test_cross_signed_intermediate_reaches_the_new_root() -> None:
    old_root = issue("Old Root", None, ca=True)
    new_root = issue("New Root", None, ca=True)
    inter = issue("Issuing CA", old_root, ca=True)
    cross = issue("Issuing CA", new_root, key=inter.key, ca=True)  # same subject and key
    leaf = issue("device", inter)
    crls = [make_crl(new_root), make_crl(inter)]
    outcome = check(leaf, [new_root], [inter, cross], crls)
    assert_result(outcome, R.VALID)
    assert outcome.chain == [leaf.cert, cross.cert, new_root.cert]


def test_cross_signed_path_chosen_when_the_other_is_revoked() -> None:
    old_root = issue("Old Root", None, ca=True)
    new_root = issue("New Root", None, ca=True)
    inter = issue("Issuing CA", old_root, ca=True)
    cross = issue("Issuing CA", new_root, key=inter.key, ca=True)
    leaf = issue("device", inter)
    crls = [
        make_crl(old_root, revoked=[(inter, x509.ReasonFlags.superseded)]),
        make_crl(new_root),
        make_crl(inter),
    ]
    outcome = check(leaf, [old_root, new_root], [inter, cross], crls)
    assert_result(outcome, R.VALID)
    assert outcome.chain == [leaf.cert, cross.cert, new_root.cert]
    # Without the cross certificate the only path is the revoked one.
    assert_result(check(leaf, [old_root, new_root], [inter], crls), R.REVOKED, "Issuing CA")


def test_cross_signed_path_chosen_when_the_old_root_expired() -> None:
    old_root = issue("Old Root", None, ca=True, not_after=T - DAY)
    new_root = issue("New Root", None, ca=True)
    inter = issue("Issuing CA", old_root, ca=True, not_before=T - 2 * DAY)
    cross = issue("Issuing CA", new_root, key=inter.key, ca=True)
    leaf = issue("device", inter)
    outcome = check(leaf, [old_root, new_root], [inter, cross], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.VALID)
    assert outcome.chain[1] == cross.cert


def test_required_eku_present_or_any() -> None:
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    for ekus in ([client], [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]):
        c = Chain(eku=ekus)
        assert_result(c.verify(required_extended_key_usage=client), R.VALID)


def test_required_key_usage_present(chain: Chain) -> None:
    outcome = chain.verify(required_key_usage=frozenset({"digital_signature"}))
    assert_result(outcome, R.VALID)


def test_name_constraints_satisfied() -> None:
    root = issue("Root", None, ca=True)
    nc = x509.NameConstraints([x509.DNSName("devices.example.com")], None)
    inter = issue("Inter", root, ca=True, extensions=[(nc, True)])
    leaf = issue("d1", inter, san=[x509.DNSName("d1.devices.example.com")])
    no_san = issue("d2", inter)
    for target in (leaf, no_san):
        assert_result(check(target, [root], [inter], policy=RevocationCheckPolicy.NONE), R.VALID)


# ------------------------------------------------------------------------- validity window


@pytest.mark.parametrize(
    ("offset", "result"),
    [(0, R.VALID), (-1, R.NOT_YET_VALID)],
    ids=["at-notBefore", "1s-before-notBefore"],
)
def test_leaf_not_before_edge(offset: int, result: CertVerifyResult) -> None:
    c = Chain(not_before=T - DAY)
    outcome = c.verify(at=T - DAY + offset * SECOND)
    assert_result(outcome, result)
    if result is not R.VALID:
        assert "'CN=device-0001' is not valid before" in outcome.reason


@pytest.mark.parametrize(
    ("offset", "result"),
    [(0, R.VALID), (1, R.EXPIRED)],
    ids=["at-notAfter", "1s-after-notAfter"],
)
def test_leaf_not_after_edge(offset: int, result: CertVerifyResult) -> None:
    c = Chain(not_after=T + DAY)
    outcome = c.verify(at=T + DAY + offset * SECOND)
    assert_result(outcome, result)
    if result is not R.VALID:
        assert "'CN=device-0001' expired at" in outcome.reason


def test_sub_second_validation_time_is_truncated(chain: Chain) -> None:
    at = chain.leaf.cert.not_valid_after_utc + 0.5 * SECOND
    assert_result(chain.verify(at=at, policy=RevocationCheckPolicy.NONE), R.VALID)


def test_intermediate_expired() -> None:
    root = issue("Root", None, ca=True)
    inter = issue("Inter", root, ca=True, not_after=T - SECOND)
    leaf = issue("leaf", inter, not_after=T + YEAR)
    outcome = check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.EXPIRED, "'CN=Inter' expired at")
    assert "leaf" not in outcome.reason


def test_intermediate_not_yet_valid() -> None:
    root = issue("Root", None, ca=True)
    inter = issue("Inter", root, ca=True, not_before=T + SECOND)
    leaf = issue("leaf", inter)
    outcome = check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.NOT_YET_VALID, "'CN=Inter' is not valid before")


def test_expired_trust_anchor() -> None:
    root = issue("Root", None, ca=True, not_after=T - DAY)
    leaf = issue("leaf", root, not_before=T - 2 * DAY)
    outcome = check(leaf, [root], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.EXPIRED, "'CN=Root' expired")


def test_out_of_window_certificate_nearest_the_leaf_decides() -> None:
    root = issue("Root", None, ca=True)
    inter = issue("Inter", root, ca=True, not_after=T - DAY)
    leaf = issue("leaf", inter, not_before=T + DAY)
    outcome = check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.NOT_YET_VALID, "'CN=leaf' is not valid before", "'CN=Inter' expired")


def test_expired_ed25519_leaf() -> None:
    c = Chain("ed25519", not_after=T - SECOND)
    assert_result(c.verify(), R.EXPIRED, "'CN=device-0001' expired")


# ------------------------------------------------------------------------------- UNTRUSTED


def test_leaf_issuer_missing_is_untrusted(chain: Chain) -> None:
    outcome = check(chain.leaf, [chain.root])
    assert_result(
        outcome,
        R.UNTRUSTED,
        "issuer 'CN=Issuing CA' of 'CN=device-0001' is neither a trust anchor",
    )


def test_intermediate_from_unknown_root_is_untrusted(chain: Chain) -> None:
    other_root = issue("Other Root", None, ca=True)
    outcome = check(chain.leaf, [other_root], [chain.inter])
    assert_result(outcome, R.UNTRUSTED, "issuer 'CN=Root CA' of 'CN=Issuing CA'")


def test_self_signed_leaf_is_untrusted(chain: Chain) -> None:
    selfie = issue("selfie", None)
    assert_result(check(selfie, [chain.root]), R.UNTRUSTED, "'CN=selfie' is self-issued")


def test_no_anchors_is_untrusted(chain: Chain) -> None:
    assert_result(check(chain.leaf, [], [chain.inter]), R.UNTRUSTED, "no trust anchors")


# ------------------------------------------------------------------------ INVALID_SIGNATURE


def test_leaf_signature_by_wrong_key(chain: Chain) -> None:
    forged = issue("device-0001", chain.inter, signing_key=new_key())
    outcome = chain.verify(forged)
    assert_result(
        outcome,
        R.INVALID_SIGNATURE,
        "signature of 'CN=device-0001' does not verify under the public key of its issuer 'CN=Issuing CA'",
    )


def test_intermediate_signature_by_wrong_key(chain: Chain) -> None:
    forged_inter = issue("Issuing CA", chain.root, key=chain.inter.key, ca=True, signing_key=new_key())
    outcome = check(chain.leaf, [chain.root], [forged_inter], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID_SIGNATURE, "signature of 'CN=Issuing CA'", "'CN=Root CA'")


def test_signature_algorithm_not_matching_the_issuer_key(chain: Chain) -> None:
    forged = issue("device-0001", chain.inter, signing_key=new_key("rsa"))
    outcome = chain.verify(forged)
    assert_result(outcome, R.INVALID_SIGNATURE, "does not match issuer key type")


def test_ed25519_leaf_with_bad_signature() -> None:
    c = Chain("ed25519")
    forged = issue("device-0001", c.inter, key=new_key("ed25519"), signing_key=new_key("ed25519"))
    assert_result(c.verify(forged), R.INVALID_SIGNATURE, "'CN=device-0001'")


def test_bad_signature_outranks_expiry(chain: Chain) -> None:
    forged = issue("device-0001", chain.inter, signing_key=new_key(), not_after=T - DAY)
    assert_result(chain.verify(forged), R.INVALID_SIGNATURE)


# --------------------------------------------------------------------------------- REVOKED


def test_revoked_leaf(chain: Chain) -> None:
    crl = make_crl(chain.inter, revoked=[(chain.leaf, x509.ReasonFlags.key_compromise)])
    outcome = chain.verify(crls=[chain.root_crl, crl])
    assert_result(
        outcome,
        R.REVOKED,
        f"'CN=device-0001' (serial {chain.leaf.serial:#x}) is revoked",
        "keyCompromise",
    )


def test_revoked_intermediate(chain: Chain) -> None:
    crl = make_crl(chain.root, revoked=[(chain.inter, x509.ReasonFlags.ca_compromise)])
    outcome = chain.verify(crls=[crl, chain.inter_crl])
    assert_result(outcome, R.REVOKED, "'CN=Issuing CA'", "cACompromise")


def test_revoked_without_reason_code(chain: Chain) -> None:
    crl = make_crl(chain.inter, revoked=[(chain.leaf, None)])
    assert_result(chain.verify(crls=[chain.root_crl, crl]), R.REVOKED, "'CN=device-0001'")


def test_revoked_ed25519_and_mldsa_leaves() -> None:
    for kind in ("ed25519", "mldsa65"):
        c = Chain(kind)
        crl = make_crl(c.inter, revoked=[(c.leaf, None)])
        assert_result(c.verify(crls=[c.root_crl, crl]), R.REVOKED, "'CN=device-0001'")


def test_certificate_hold_in_newest_crl_is_revoked(chain: Chain) -> None:
    old = make_crl(chain.inter, number=1, this_update=T - 2 * DAY)
    new = make_crl(chain.inter, number=2, revoked=[(chain.leaf, x509.ReasonFlags.certificate_hold)])
    assert_result(chain.verify(crls=[chain.root_crl, old, new]), R.REVOKED, "certificateHold")


def test_released_hold_is_not_revoked(chain: Chain) -> None:
    old = make_crl(
        chain.inter,
        number=1,
        this_update=T - 2 * DAY,
        revoked=[(chain.leaf, x509.ReasonFlags.certificate_hold)],
    )
    new = make_crl(chain.inter, number=2)
    assert_result(chain.verify(crls=[chain.root_crl, old, new]), R.VALID)


def test_permanent_revocation_in_older_crl_still_counts(chain: Chain) -> None:
    old = make_crl(
        chain.inter,
        number=1,
        this_update=T - 2 * DAY,
        revoked=[(chain.leaf, x509.ReasonFlags.key_compromise)],
    )
    new = make_crl(chain.inter, number=2)
    assert_result(chain.verify(crls=[chain.root_crl, new, old]), R.REVOKED, "keyCompromise")


def test_other_serials_do_not_revoke(chain: Chain) -> None:
    crl = make_crl(chain.inter, revoked=[(chain.leaf.serial + 1, x509.ReasonFlags.superseded)])
    assert_result(chain.verify(crls=[chain.root_crl, crl]), R.VALID)


# ----------------------------------------------------------------- REVOCATION_STATUS_UNKNOWN


def test_no_crl_for_leaf_issuer(chain: Chain) -> None:
    outcome = chain.verify(crls=[chain.root_crl])
    assert_result(
        outcome,
        R.REVOCATION_STATUS_UNKNOWN,
        "no CRL issued by 'CN=Issuing CA' was supplied for 'CN=device-0001'",
    )


def test_no_crl_for_intermediate_issuer(chain: Chain) -> None:
    outcome = chain.verify(crls=[chain.inter_crl])
    assert_result(
        outcome,
        R.REVOCATION_STATUS_UNKNOWN,
        "no CRL issued by 'CN=Root CA' was supplied for 'CN=Issuing CA'",
    )
    assert "device-0001" not in outcome.reason


@pytest.mark.parametrize(
    ("at", "result"),
    [(T + 7 * DAY - SECOND, R.VALID), (T + 7 * DAY, R.REVOCATION_STATUS_UNKNOWN)],
    ids=["before-nextUpdate", "at-nextUpdate"],
)
def test_expired_crl(at: object, result: CertVerifyResult) -> None:
    c = Chain()
    outcome = c.verify(at=at)
    assert_result(outcome, result)
    if result is not R.VALID:
        assert "is expired: nextUpdate" in outcome.reason


@pytest.mark.parametrize(
    ("this_update", "result"),
    [(T, R.VALID), (T + SECOND, R.REVOCATION_STATUS_UNKNOWN)],
    ids=["thisUpdate-at-t", "thisUpdate-after-t"],
)
def test_crl_this_update_edge(chain: Chain, this_update: object, result: CertVerifyResult) -> None:
    crl = make_crl(chain.inter, this_update=this_update)  # type: ignore[arg-type]
    outcome = chain.verify(crls=[chain.root_crl, crl])
    assert_result(outcome, result)
    if result is not R.VALID:
        assert "not yet issued" in outcome.reason


def test_crl_signed_by_wrong_key(chain: Chain) -> None:
    crl = make_crl(chain.inter, signing_key=new_key())
    outcome = chain.verify(crls=[chain.root_crl, crl])
    assert_result(
        outcome,
        R.REVOCATION_STATUS_UNKNOWN,
        "signature does not verify under the key of 'CN=Issuing CA'",
    )


def test_crl_signed_by_wrong_key_hides_a_revocation(chain: Chain) -> None:
    crl = make_crl(chain.inter, revoked=[(chain.leaf, None)], signing_key=new_key())
    assert_result(chain.verify(crls=[chain.root_crl, crl]), R.REVOCATION_STATUS_UNKNOWN)


def test_crl_issuer_without_crl_sign() -> None:
    root = issue("Root", None, ca=True)
    inter = issue("Inter", root, ca=True, usage=key_usage(key_cert_sign=True))
    leaf = issue("leaf", inter)
    outcome = check(leaf, [root], [inter], [make_crl(root), make_crl(inter)])
    assert_result(
        outcome,
        R.REVOCATION_STATUS_UNKNOWN,
        "keyUsage of its signer 'CN=Inter' does not assert cRLSign",
    )


def test_crl_without_next_update(chain: Chain) -> None:
    crl = crl_without_next_update(chain.inter)
    assert crl.next_update_utc is None
    outcome = chain.verify(crls=[chain.root_crl, crl])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "has no nextUpdate")


def test_delta_crl_is_rejected(chain: Chain) -> None:
    delta = make_crl(
        chain.inter, revoked=[(chain.leaf, None)], extensions=[(x509.DeltaCRLIndicator(1), True)]
    )
    outcome = chain.verify(crls=[chain.root_crl, delta])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "is a delta CRL")


def _idp(**options: object) -> x509.IssuingDistributionPoint:
    values: dict[str, object] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    values.update(options)
    return x509.IssuingDistributionPoint(**values)  # type: ignore[arg-type]


def test_indirect_crl_of_the_issuer_covers_its_own_certificates(chain: Chain) -> None:
    crl = make_crl(chain.inter, extensions=[(_idp(indirect_crl=True), True)])
    assert_result(chain.verify(crls=[chain.root_crl, crl]), R.VALID)
    revoking = make_crl(
        chain.inter, revoked=[(chain.leaf, None)], extensions=[(_idp(indirect_crl=True), True)]
    )
    assert_result(chain.verify(crls=[chain.root_crl, revoking]), R.REVOKED, "device-0001")


def test_certificate_issuer_entry_marks_an_indirect_crl(chain: Chain) -> None:
    other = x509.CertificateIssuer([x509.DirectoryName(name("Someone Else"))])
    crl = make_crl(chain.inter, revoked=[(chain.leaf, None)], entry_extensions=[(other, True)])
    outcome = chain.verify(crls=[chain.root_crl, crl])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "certificateIssuer", "indirect")


def test_reason_partitioned_crl_alone_does_not_cover_every_reason(chain: Chain) -> None:
    idp = _idp(only_some_reasons=frozenset({x509.ReasonFlags.key_compromise}))
    crl = make_crl(chain.inter, extensions=[(idp, True)])
    outcome = chain.verify(crls=[chain.root_crl, crl])
    assert_result(
        outcome, R.REVOCATION_STATUS_UNKNOWN, "cover only some revocation reasons", "not aACompromise"
    )


def test_crl_scope_must_cover_the_certificate(chain: Chain) -> None:
    ca_only = make_crl(chain.inter, extensions=[(_idp(only_contains_ca_certs=True), True)])
    outcome = chain.verify(crls=[chain.root_crl, ca_only])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "covers only CA certificates")
    users_only = make_crl(chain.root, extensions=[(_idp(only_contains_user_certs=True), True)])
    outcome = chain.verify(crls=[users_only, chain.inter_crl])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "covers only end-entity certificates")
    users_only_leaf = make_crl(chain.inter, extensions=[(_idp(only_contains_user_certs=True), True)])
    assert_result(chain.verify(crls=[chain.root_crl, users_only_leaf]), R.VALID)


def test_distribution_point_scoped_crl() -> None:
    url = x509.UniformResourceIdentifier("http://pki.example/issuing.crl")
    root = issue("Root", None, ca=True)
    inter = issue("Inter", root, ca=True)
    dp = x509.CRLDistributionPoints([x509.DistributionPoint([url], None, None, None)])
    listed = issue("listed", inter, extensions=[(dp, False)])
    unlisted = issue("unlisted", inter)
    crls = [make_crl(root), make_crl(inter, extensions=[(_idp(full_name=[url]), True)])]
    assert_result(check(listed, [root], [inter], crls), R.VALID)
    outcome = check(unlisted, [root], [inter], crls)
    assert_result(
        outcome, R.REVOCATION_STATUS_UNKNOWN, "is scoped (issuingDistributionPoint) to a distribution point"
    )


def test_crl_with_unknown_critical_extension(chain: Chain) -> None:
    crl = make_crl(chain.inter, extensions=[(UNKNOWN_CRITICAL, True)])
    outcome = chain.verify(crls=[chain.root_crl, crl])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "unsupported critical extension 1.3.6.1.4.1.55555.7")


def test_crl_entry_with_unknown_critical_extension(chain: Chain) -> None:
    crl = make_crl(
        chain.inter,
        revoked=[(chain.leaf.serial + 1, None)],
        entry_extensions=[(UNKNOWN_CRITICAL, True)],
    )
    outcome = chain.verify(crls=[chain.root_crl, crl])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "entry with an unsupported critical")


def test_every_unusable_crl_is_explained(chain: Chain) -> None:
    expired = make_crl(chain.inter, this_update=T - 9 * DAY, next_update=T - DAY)
    forged = make_crl(chain.inter, signing_key=new_key())
    outcome = chain.verify(crls=[chain.root_crl, expired, forged])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "CRL #2", "is expired", "CRL #3", "signature")


def test_one_usable_crl_is_enough(chain: Chain) -> None:
    expired = make_crl(chain.inter, this_update=T - 9 * DAY, next_update=T - DAY)
    assert_result(chain.verify(crls=[chain.root_crl, expired, chain.inter_crl]), R.VALID)


def test_crl_with_disallowed_signature_algorithm(chain: Chain) -> None:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(chain.inter.cert.subject)
        .last_update(T - DAY)
        .next_update(T + DAY)
    )
    sha224 = builder.sign(chain.inter.key, hashes.SHA224())  # type: ignore[arg-type]
    outcome = chain.verify(crls=[chain.root_crl, sha224])
    assert_result(outcome, R.REVOCATION_STATUS_UNKNOWN, "disallowed signature algorithm")


# --------------------------------------------------------------------------------- INVALID


def test_path_length_exceeded() -> None:
    root = issue("Root", None, ca=True)
    i1 = issue("I1", root, ca=True, path_length=0)
    i2 = issue("I2", i1, ca=True)
    leaf = issue("leaf", i2)
    outcome = check(leaf, [root], [i1, i2], policy=RevocationCheckPolicy.NONE)
    assert_result(
        outcome,
        R.INVALID,
        "path length constraint violated: pathLenConstraint 0 of 'CN=I1' is exceeded",
    )


def test_path_length_exceeded_in_ed25519_path() -> None:
    root = issue("Root", None, key=new_key("ed25519"), ca=True)
    i1 = issue("I1", root, key=new_key("ed25519"), ca=True, path_length=0)
    i2 = issue("I2", i1, key=new_key("ed25519"), ca=True)
    leaf = issue("leaf", i2, key=new_key("ed25519"))
    outcome = check(leaf, [root], [i1, i2], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "path length constraint violated")
    assert_result(check(leaf, [i2], policy=RevocationCheckPolicy.NONE), R.VALID)


def test_structural_defect_outranks_expiry() -> None:
    root = issue("Root", None, ca=True)
    i1 = issue("I1", root, ca=True, path_length=0)
    i2 = issue("I2", i1, ca=True)
    leaf = issue("leaf", i2, not_after=T - DAY)
    outcome = check(leaf, [root], [i1, i2], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "path length")


def test_intermediate_without_key_cert_sign() -> None:
    for kind in ("p256", "ed25519"):
        root = issue("Root", None, key=new_key(kind), ca=True)  # type: ignore[arg-type]
        usage = key_usage(digital_signature=True, crl_sign=True)
        inter = issue("Inter", root, key=new_key(kind), ca=True, usage=usage)  # type: ignore[arg-type]
        leaf = issue("leaf", inter)
        outcome = check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE)
        assert_result(outcome, R.INVALID, "'CN=Inter' does not assert keyCertSign")


def test_leaf_asserting_key_cert_sign_without_ca() -> None:
    c = Chain(usage=key_usage(digital_signature=True, key_cert_sign=True))
    outcome = c.verify()
    assert_result(outcome, R.INVALID, "'CN=device-0001' asserts keyCertSign but it is not a CA")


def test_required_key_usage_missing(chain: Chain) -> None:
    outcome = chain.verify(required_key_usage=frozenset({"key_agreement", "digital_signature"}))
    assert_result(outcome, R.INVALID, "lacks key_agreement")


def test_leaf_eku_without_required_purpose() -> None:
    c = Chain(eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    outcome = c.verify(required_extended_key_usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    assert_result(outcome, R.INVALID, "extendedKeyUsage of leaf certificate 'CN=device-0001'")
    assert_result(c.verify(), R.VALID)  # no purpose requested: EKU not checked


def test_intermediate_eku_without_required_purpose() -> None:
    root = issue("Root", None, ca=True)
    inter = issue("Inter", root, ca=True, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    leaf = issue("leaf", inter)
    outcome = check(
        leaf,
        [root],
        [inter],
        policy=RevocationCheckPolicy.NONE,
        required_extended_key_usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    assert_result(outcome, R.INVALID, "extendedKeyUsage of CA certificate 'CN=Inter'")
    assert_result(check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE), R.VALID)


def test_unknown_critical_extension_on_leaf() -> None:
    c = Chain(extensions=[(UNKNOWN_CRITICAL, True)])
    outcome = c.verify()
    assert_result(outcome, R.INVALID, "1.3.6.1.4.1.55555.7", "critical", "'CN=device-0001'")


def test_unknown_critical_extension_on_intermediate() -> None:
    for kind in ("p256", "ed25519"):
        root = issue("Root", None, key=new_key(kind), ca=True)  # type: ignore[arg-type]
        inter = issue("Inter", root, key=new_key(kind), ca=True, extensions=[(UNKNOWN_CRITICAL, True)])  # type: ignore[arg-type]
        leaf = issue("leaf", inter)
        outcome = check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE)
        assert_result(outcome, R.INVALID, "1.3.6.1.4.1.55555.7")


def test_critical_certificate_policies_are_processed() -> None:
    policies = x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("2.5.29.32.0"), None)])
    c = Chain(extensions=[(policies, True)])
    outcome = c.verify()
    assert_result(outcome, R.VALID)
    # The CAs assert no policy, so the tree is empty; that is fine unless one is required.
    assert outcome.policies == frozenset()
    assert_result(c.verify(initial_explicit_policy=True), R.INVALID, "explicit policy")


@pytest.mark.parametrize(
    ("permitted", "excluded", "san"),
    [
        ([x509.DNSName("devices.example.com")], None, x509.DNSName("evil.example.org")),
        (None, [x509.DNSName("blocked.example.com")], x509.DNSName("x.blocked.example.com")),
        (
            [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
            None,
            x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        ),
    ],
    ids=["outside-permitted-dns", "inside-excluded-dns", "outside-permitted-ip"],
)
def test_name_constraint_violation(
    permitted: list[x509.GeneralName] | None,
    excluded: list[x509.GeneralName] | None,
    san: x509.GeneralName,
) -> None:
    root = issue("Root", None, ca=True)
    nc = x509.NameConstraints(permitted, excluded)
    inter = issue("Inter", root, ca=True, extensions=[(nc, True)])
    leaf = issue("leaf", inter, san=[san])
    outcome = check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "name constraint")


def test_name_constraint_on_the_anchor_applies_to_the_intermediate_path() -> None:
    nc = x509.NameConstraints([x509.DNSName("example.com")], None)
    root = issue("Root", None, ca=True, extensions=[(nc, True)])
    inter = issue("Inter", root, ca=True)
    leaf = issue("leaf", inter, san=[x509.DNSName("example.net")])
    outcome = check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "name constraint")


@pytest.mark.parametrize("critical", [True, False])
def test_directory_name_constraints_are_applied(critical: bool) -> None:
    root = issue("Root", None, ca=True)
    nc = x509.NameConstraints([x509.DirectoryName(name("leaf"))], None)
    inter = issue("Inter", root, ca=True, extensions=[(nc, critical)])
    inside = issue("leaf", inter)
    outside = issue("other", inter)
    outcome = check(inside, [root], [inter], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.VALID)
    outcome = check(outside, [root], [inter], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "directoryName 'CN=other'", "outside the permitted")


def test_intermediate_without_basic_constraints_or_ca_flag() -> None:
    root = issue("Root", None, ca=True)
    for ca in (None, False):
        inter = issue("Inter", root, ca=ca, usage=key_usage(key_cert_sign=True))
        leaf = issue("leaf", inter)
        outcome = check(leaf, [root], [inter], policy=RevocationCheckPolicy.NONE)
        state = "has no basicConstraints" if ca is None else "does not assert cA"
        assert_result(outcome, R.INVALID, f"issuing certificate 'CN=Inter' {state}")


def test_rsa_pss_with_non_standard_salt_is_disallowed() -> None:
    key = new_key("rsa")
    root = issue("RSA Root", None, key=key, ca=True)
    max_salt = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH)
    leaf = issue("leaf", root, rsa_pss=max_salt)
    outcome = check(leaf, [root], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "'CN=leaf' is signed with a disallowed signature algorithm")


def test_weak_rsa_issuer_is_disallowed() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    root = issue("Weak Root", None, key=weak, ca=True)
    leaf = issue("leaf", root)
    outcome = check(leaf, [root], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "too weak (1024 bits)")


def test_ed25519_anchor_must_be_a_ca() -> None:
    root = issue("Root", None, key=new_key("ed25519"), ca=False, usage=None)
    leaf = issue("leaf", root, key=new_key("ed25519"))
    outcome = check(leaf, [root], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "basicConstraints")


# ------------------------------------------------------------------------ request checking


@pytest.mark.parametrize(
    ("field", "value", "phrase"),
    [
        ("validation_time", T.replace(tzinfo=None), "timezone-aware"),
        ("validation_time", "2030-01-01", "must be a datetime"),
        ("anchors", [b"not a certificate"], "anchors must be"),
        ("crls", None, "crls must be"),
        ("required_key_usage", frozenset({"sign_everything"}), "unknown key usage"),
        ("revocation_policy", "CRL_ONLY", "RevocationCheckPolicy"),
    ],
)
def test_request_arguments_are_checked(chain: Chain, field: str, value: object, phrase: str) -> None:
    arguments: dict[str, object] = {
        "leaf": chain.leaf.cert,
        "anchors": [chain.root.cert],
        "validation_time": T,
        "revocation_policy": CRL_ONLY,
    }
    arguments[field] = value
    with pytest.raises(CryptoError) as caught:
        ValidationRequest(**arguments)  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert phrase in caught.value.message


def test_validation_time_in_another_timezone(chain: Chain) -> None:
    shifted = chain.leaf.cert.not_valid_after_utc.astimezone(datetime.timezone(datetime.timedelta(hours=5)))
    assert_result(chain.verify(at=shifted, policy=RevocationCheckPolicy.NONE), R.VALID)
    assert_result(chain.verify(at=shifted + SECOND, policy=RevocationCheckPolicy.NONE), R.EXPIRED)


# --------------------------------------------------------------------------------- parsing


def test_parse_certificate_pem_and_der(chain: Chain) -> None:
    for encoding in (Encoding.PEM, Encoding.DER):
        assert parse_certificate(chain.leaf.cert.public_bytes(encoding)) == chain.leaf.cert
    assert parse_certificate(bytearray(chain.leaf.cert.public_bytes(Encoding.DER))) == chain.leaf.cert


def test_parse_crl_pem_and_der(chain: Chain) -> None:
    for encoding in (Encoding.PEM, Encoding.DER):
        assert parse_crl(chain.inter_crl.public_bytes(encoding)) == chain.inter_crl


def _bad_certificate_inputs(chain: Chain) -> list[tuple[object, str]]:
    der = chain.leaf.cert.public_bytes(Encoding.DER)
    pem = chain.leaf.cert.public_bytes(Encoding.PEM)
    crl_der = chain.inter_crl.public_bytes(Encoding.DER)
    crl_pem = chain.inter_crl.public_bytes(Encoding.PEM)
    key_pem = chain.leaf.key.public_key().public_bytes(
        Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return [
        (b"garbage", "not a valid X.509 certificate"),
        (der[:-10], "not a valid X.509 certificate"),
        (der + b"\x00", "not a valid X.509 certificate"),
        (pem[: len(pem) // 2], "malformed PEM framing"),
        (pem.replace(b"MII", b"MIJ", 1), "not a valid X.509 certificate"),
        (pem + chain.inter.cert.public_bytes(Encoding.PEM), "exactly one PEM block"),
        (crl_der, "input is a CRL, not a certificate"),
        (crl_pem, "PEM block is 'X509 CRL', expected 'CERTIFICATE'"),
        (key_pem, "PEM block is 'PUBLIC KEY'"),
        (b"", "empty"),
        (b"  \n", "empty"),
        (pem.decode(), "must be PEM or DER bytes, not str"),
        (None, "not NoneType"),
        (42, "not int"),
    ]


def test_parse_certificate_rejects_bad_input(chain: Chain) -> None:
    for data, phrase in _bad_certificate_inputs(chain):
        with pytest.raises(CryptoError) as caught:
            parse_certificate(data)  # type: ignore[arg-type]
        assert caught.value.code is ErrorCode.INVALID_ARGUMENT, data
        assert phrase in caught.value.message, (data, caught.value.message)


def test_parse_crl_rejects_bad_input(chain: Chain) -> None:
    der = chain.inter_crl.public_bytes(Encoding.DER)
    pem = chain.inter_crl.public_bytes(Encoding.PEM)
    cases: list[tuple[object, str]] = [
        (b"garbage", "not a valid X.509 CRL"),
        (der[:-3], "not a valid X.509 CRL"),
        (der + b"\x00", "not a valid X.509 CRL"),
        (pem[:40], "malformed PEM framing"),
        (chain.leaf.cert.public_bytes(Encoding.DER), "input is a certificate, not a CRL"),
        (chain.leaf.cert.public_bytes(Encoding.PEM), "expected 'X509 CRL'"),
        (b"", "empty"),
        ("text", "not str"),
    ]
    for data, phrase in cases:
        with pytest.raises(CryptoError) as caught:
            parse_crl(data)  # type: ignore[arg-type]
        assert caught.value.code is ErrorCode.INVALID_ARGUMENT, data
        assert phrase in caught.value.message, (data, caught.value.message)


# -------------------------------------------------------------------------- key helpers


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("p256", "ECDSA-P256"),
        ("p384", "ECDSA-P384"),
        ("ed25519", "Ed25519"),
        ("rsa", "RSA-2048"),
        ("mldsa44", "ML-DSA-44"),
        ("mldsa65", "ML-DSA-65"),
        ("mldsa87", "ML-DSA-87"),
    ],
)
def test_public_key_algorithm_and_spki(kind: str, expected: str) -> None:
    root = issue("Root", None, ca=True)
    leaf = issue("leaf", root, key=new_key(kind))  # type: ignore[arg-type]
    assert public_key_algorithm(leaf.cert) == expected
    assert spki_der(leaf.cert) == leaf.cert.public_key().public_bytes(
        Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_public_key_algorithm_rsa_3072() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    leaf = issue("leaf", issue("Root", None, ca=True), key=key)
    assert public_key_algorithm(leaf.cert) == "RSA-3072"


@pytest.mark.parametrize("kind", ["p521", "ed448"])
def test_public_key_algorithm_unsupported(kind: str) -> None:
    leaf = issue("leaf", issue("Root", None, ca=True), key=new_key(kind))  # type: ignore[arg-type]
    with pytest.raises(CryptoError) as caught:
        public_key_algorithm(leaf.cert)
    assert caught.value.code is ErrorCode.UNSUPPORTED_ALGORITHM


def test_weak_rsa_key_is_unsupported() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    leaf = issue("leaf", issue("Root", None, ca=True), key=weak)
    with pytest.raises(CryptoError) as caught:
        public_key_algorithm(leaf.cert)
    assert caught.value.code is ErrorCode.UNSUPPORTED_ALGORITHM
    assert "1024" in caught.value.message


# ------------------------------------------------------------------------ path building


def test_duplicated_inputs_are_harmless(chain: Chain) -> None:
    outcome = check(
        chain.leaf,
        [chain.root, chain.root],
        [chain.inter, chain.inter, chain.root, chain.leaf],
        [chain.root_crl, chain.inter_crl],
    )
    assert_result(outcome, R.VALID)
    assert outcome.chain == [chain.leaf.cert, chain.inter.cert, chain.root.cert]


def test_issuer_loop_is_untrusted(chain: Chain) -> None:
    key_a, key_b = new_key(), new_key()
    seed_b = Entity(issue("B", None, key=key_b, ca=True).cert, key_b)
    a = issue("A", seed_b, key=key_a, ca=True)
    b = issue("B", Entity(a.cert, key_a), key=key_b, ca=True)
    outcome = check(issue("leaf", a), [chain.root], [a, b])
    assert_result(outcome, R.UNTRUSTED, "lead back into the path (a loop)")


def test_name_collisions_do_not_hide_the_real_issuer(chain: Chain) -> None:
    impostors = [issue("Issuing CA", chain.root, ca=True, signing_key=new_key()) for _ in range(20)]
    crls = [chain.root_crl, chain.inter_crl]
    outcome = check(chain.leaf, [chain.root], [*impostors, chain.inter], crls)
    assert_result(outcome, R.VALID)
    assert outcome.chain[1] == chain.inter.cert
    only_impostors = check(chain.leaf, [chain.root], impostors, crls)
    assert_result(only_impostors, R.INVALID_SIGNATURE, "best of 20 candidate paths")


def test_path_longer_than_eight_intermediates_is_invalid(chain: Chain) -> None:
    cas = [chain.root]
    for index in range(9):
        cas.append(issue(f"Level {index}", cas[-1], ca=True))
    leaf = issue("deep", cas[-1])
    outcome = check(leaf, [chain.root], cas[1:], policy=RevocationCheckPolicy.NONE)
    assert_result(outcome, R.INVALID, "the path has 9 intermediates, at most 8 are allowed")
    assert_result(check(leaf, [cas[1]], cas[2:], policy=RevocationCheckPolicy.NONE), R.VALID)
