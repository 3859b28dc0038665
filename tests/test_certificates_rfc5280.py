"""RFC 5280 section 6 rules of the certificate engine, one small PKI per rule.

Each test builds its PKI with ``pki.py`` and names the issue-15 defect it guards against;
most of them failed on the previous engine (``cryptostack_core/certificates.py``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

import cryptostack_core as cs
from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CertVerifyResult, RevocationCheckPolicy
from cryptostack_core.x509 import (
    MAX_CANDIDATE_PATHS,
    MAX_SUBTREES,
    ValidationOutcome,
    ValidationRequest,
    parse_certificate,
    validate_path,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pki import (  # noqa: E402
    DAY,
    Entity,
    T,
    issue,
    key_usage,
    make_crl,
    name,
    new_key,
    policy_mappings,
    with_extension_oid_replaced,
)

R = CertVerifyResult
NONE = RevocationCheckPolicy.NONE
CRL_ONLY = RevocationCheckPolicy.CRL_ONLY
P1, P2, P3 = (f"2.16.840.1.101.3.2.1.48.{i}" for i in (1, 2, 3))
ANY = "2.5.29.32.0"


def check(
    leaf: Entity,
    anchors: Sequence[Entity],
    intermediates: Sequence[Entity] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    *,
    policy: RevocationCheckPolicy = CRL_ONLY,
    **options: object,
) -> ValidationOutcome:
    return validate_path(
        ValidationRequest(
            leaf=leaf.cert,
            anchors=[a.cert for a in anchors],
            intermediates=[i.cert for i in intermediates],
            crls=list(crls),
            validation_time=T,
            revocation_policy=policy,
            **options,
        )
    )  # type: ignore[arg-type]


def expect(outcome: ValidationOutcome, result: CertVerifyResult, *phrases: str) -> None:
    assert outcome.result is result, outcome.reason
    for phrase in phrases:
        assert phrase in outcome.reason, outcome.reason


def policies(*oids: str) -> tuple[x509.CertificatePolicies, bool]:
    return x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier(o), None) for o in oids]
    ), False


def oids(*dotted: str) -> frozenset[x509.ObjectIdentifier]:
    return frozenset(x509.ObjectIdentifier(d) for d in dotted)


# ------------------------------------------------------------- 7.1 name normalisation


def test_name_chaining_ignores_case_whitespace_and_string_type() -> None:
    root = issue("Root", None, ca=True)
    printable = x509.Name(
        [
            x509.NameAttribute(
                NameOID.ORGANIZATION_NAME, "Example  Corp", x509.name._ASN1Type.PrintableString
            ),
            x509.NameAttribute(NameOID.COMMON_NAME, "Issuing CA", x509.name._ASN1Type.PrintableString),
        ]
    )
    inter = issue("", root, ca=True, subject_name=printable)
    folded = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, " example corp "),
            x509.NameAttribute(NameOID.COMMON_NAME, "ISSUING   ca"),
        ]
    )
    leaf = issue("leaf", inter, issuer_name=folded)
    outcome = check(leaf, [root], [inter], [make_crl(root), make_crl(inter)])
    expect(outcome, R.VALID)  # was UNTRUSTED: exact DER comparison
    reordered = x509.Name(list(reversed(folded.rdns)))
    other = issue("other", inter, issuer_name=reordered)
    expect(check(other, [root], [inter], policy=NONE), R.UNTRUSTED, "neither a trust anchor")


# ------------------------------------------------------------- 6.1.4 (l) self-issued


def test_self_issued_key_rollover_is_not_counted_in_path_length() -> None:
    root = issue("Root", None, ca=True)
    old = issue("Issuing CA", root, ca=True, path_length=0)
    new_key_ca = issue("Issuing CA", old, ca=True, path_length=0)  # self-issued, new key
    leaf = issue("leaf", new_key_ca)
    outcome = check(leaf, [root], [old, new_key_ca], policy=NONE)
    expect(outcome, R.VALID)  # was INVALID: pathLen counted the self-issued certificate
    assert outcome.chain == [leaf.cert, new_key_ca.cert, old.cert, root.cert]
    sub = issue("Sub CA", old, ca=True)
    expect(
        check(issue("leaf2", sub), [root], [old, sub], policy=NONE),
        R.INVALID,
        "pathLenConstraint 0 of 'CN=Issuing CA' is exceeded by 'CN=Sub CA'",
    )


# ------------------------------------------------------------- 6.3.3 (f) CRL signer


def _separate_crl_key_pki() -> tuple[Entity, Entity, Entity, Entity]:
    root = issue("Root", None, ca=True)
    ca = issue("Issuing CA", root, ca=True, usage=key_usage(key_cert_sign=True))
    signer = issue("Issuing CA", root, ca=False, usage=key_usage(crl_sign=True))
    leaf = issue("leaf", ca)
    return root, ca, signer, leaf


def test_crl_signed_by_a_separate_key_of_the_same_ca() -> None:
    root, ca, signer, leaf = _separate_crl_key_pki()
    crl = make_crl(signer)
    outcome = check(leaf, [root], [ca, signer], [make_crl(root), crl])
    expect(outcome, R.VALID)  # was REVOCATION_STATUS_UNKNOWN: the signer was never found
    revoking = make_crl(signer, revoked=[(leaf, x509.ReasonFlags.key_compromise)])
    expect(check(leaf, [root], [ca, signer], [make_crl(root), revoking]), R.REVOKED, "'CN=leaf'")
    signer_revoked = make_crl(root, revoked=[(signer, x509.ReasonFlags.key_compromise)])
    expect(
        check(leaf, [root], [ca, signer], [signer_revoked, crl]),
        R.REVOCATION_STATUS_UNKNOWN,
        "its signer 'CN=Issuing CA'",
        "no valid certification path",
        "REVOKED",
    )
    other_root = issue("Root", None, ca=True)  # same name, another anchor: not the same
    foreign = issue("Issuing CA", other_root, ca=False, usage=key_usage(crl_sign=True))
    expect(
        check(leaf, [root], [ca, foreign], [make_crl(root), make_crl(foreign)]),
        R.REVOCATION_STATUS_UNKNOWN,
        "no valid certification path",
    )


# ------------------------------------------------------------- 6.3.3 (b)-(d) scope


def _idp(**options: object) -> tuple[x509.IssuingDistributionPoint, bool]:
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
    return x509.IssuingDistributionPoint(**values), True  # type: ignore[arg-type]


def test_reason_partitioned_crls_together_cover_every_reason() -> None:
    root = issue("Root", None, ca=True)
    ca = issue("CA", root, ca=True)
    leaf = issue("leaf", ca)
    compromise = frozenset({x509.ReasonFlags.key_compromise, x509.ReasonFlags.ca_compromise})
    others = frozenset(
        {
            x509.ReasonFlags.affiliation_changed,
            x509.ReasonFlags.superseded,
            x509.ReasonFlags.cessation_of_operation,
            x509.ReasonFlags.certificate_hold,
            x509.ReasonFlags.privilege_withdrawn,
            x509.ReasonFlags.aa_compromise,
        }
    )
    first = make_crl(ca, extensions=[_idp(only_some_reasons=compromise)])
    second = make_crl(ca, number=2, extensions=[_idp(only_some_reasons=others)])
    crls = [make_crl(root), first, second]
    expect(check(leaf, [root], [ca], crls), R.VALID)  # was UNKNOWN: partitions refused
    expect(
        check(leaf, [root], [ca], crls[:2]),
        R.REVOCATION_STATUS_UNKNOWN,
        "cover only some revocation reasons",
        "superseded",
    )
    revoked = make_crl(
        ca, revoked=[(leaf, x509.ReasonFlags.key_compromise)], extensions=[_idp(only_some_reasons=compromise)]
    )
    expect(check(leaf, [root], [ca], [crls[0], revoked, second]), R.REVOKED, "keyCompromise")


def test_indirect_crl_named_by_the_certificate() -> None:
    root = issue("Root", None, ca=True)
    ca = issue("CA", root, ca=True)
    authority = issue("CRL Authority", root, ca=False, usage=key_usage(crl_sign=True))
    dp = x509.CRLDistributionPoints(
        [x509.DistributionPoint(None, None, None, [x509.DirectoryName(authority.cert.subject)])]
    )
    leaf = issue("leaf", ca, extensions=[(dp, False)])
    for_ca = [x509.CertificateIssuer([x509.DirectoryName(ca.cert.subject)])]
    indirect = _idp(indirect_crl=True)
    clean = make_crl(authority, extensions=[indirect])
    listing = make_crl(
        authority,
        extensions=[indirect],
        revoked=[(leaf, x509.ReasonFlags.key_compromise, [(for_ca[0], True)])],
    )
    pool = [ca, authority]
    base = [make_crl(root), make_crl(ca)]
    expect(check(leaf, [root], pool, [*base, clean]), R.VALID)
    expect(check(leaf, [root], pool, [*base, listing]), R.REVOKED, "CRL Authority")
    # The same serial listed for another issuer does not revoke this certificate.
    for_other = x509.CertificateIssuer([x509.DirectoryName(name("Someone Else"))])
    elsewhere = make_crl(
        authority,
        extensions=[indirect],
        revoked=[(leaf, x509.ReasonFlags.key_compromise, [(for_other, True)])],
    )
    expect(check(leaf, [root], pool, [*base, elsewhere]), R.VALID)
    # Without indirectCRL the authority's CRL is not about this CA's certificates; the CA's
    # own CRL alone covers the implicit distribution point.
    expect(
        check(leaf, [root], pool, [make_crl(root), make_crl(authority)]),
        R.REVOCATION_STATUS_UNKNOWN,
        "not an indirect CRL",
    )


def test_delta_crls() -> None:
    root = issue("Root", None, ca=True)
    ca = issue("CA", root, ca=True)
    leaf = issue("leaf", ca)
    root_crl = make_crl(root)
    base = make_crl(ca, number=5)
    delta_indicator = (x509.DeltaCRLIndicator(5), True)
    revoking_delta = make_crl(
        ca,
        number=6,
        extensions=[delta_indicator],
        this_update=T - 1 * DAY,
        revoked=[(leaf, x509.ReasonFlags.key_compromise)],
    )
    # Was VALID: a revocation that only the delta CRL lists was ignored.
    expect(check(leaf, [root], [ca], [root_crl, base, revoking_delta]), R.REVOKED, "delta CRL")
    held = make_crl(ca, number=5, revoked=[(leaf, x509.ReasonFlags.certificate_hold)])
    released = make_crl(
        ca, number=6, extensions=[delta_indicator], revoked=[(leaf, x509.ReasonFlags.remove_from_crl)]
    )
    expect(check(leaf, [root], [ca], [root_crl, held]), R.REVOKED, "certificateHold")
    expect(check(leaf, [root], [ca], [root_crl, held, released]), R.VALID)
    # A delta for a newer base than the complete CRL does not apply.
    newer = make_crl(
        ca,
        number=9,
        extensions=[(x509.DeltaCRLIndicator(7), True)],
        revoked=[(leaf, x509.ReasonFlags.key_compromise)],
    )
    expect(check(leaf, [root], [ca], [root_crl, base, newer]), R.VALID)
    expect(
        check(leaf, [root], [ca], [root_crl, revoking_delta]), R.REVOCATION_STATUS_UNKNOWN, "is a delta CRL"
    )


def test_crl_number_rules() -> None:
    root = issue("Root", None, ca=True)
    ca = issue("CA", root, ca=True)
    leaf = issue("leaf", ca)
    unnumbered = make_crl(ca, number=None)
    critical = make_crl(ca, number_critical=True)
    for crl, phrase in ((unnumbered, "has no cRLNumber"), (critical, "marks cRLNumber critical")):
        # Was VALID: such CRLs were accepted.
        expect(check(leaf, [root], [ca], [make_crl(root), crl]), R.REVOCATION_STATUS_UNKNOWN, phrase)
        expect(check(leaf, [root], [ca], [make_crl(root), crl], profile="lenient"), R.VALID)


# ------------------------------------------------------------- policies


def test_policies_are_processed_with_the_verifier_settings() -> None:
    root = issue("Root", None, ca=True)
    ca = issue("CA", root, ca=True, extensions=[policies(P1, P2)])
    leaf = issue("leaf", ca, extensions=[policies(P1)])
    outcome = check(leaf, [root], [ca], policy=NONE)
    expect(outcome, R.VALID)
    assert outcome.policies == {P1}
    expect(check(leaf, [root], [ca], policy=NONE, initial_policy_set=oids(P2)), R.VALID)
    expect(
        check(leaf, [root], [ca], policy=NONE, initial_policy_set=oids(P2), initial_explicit_policy=True),
        R.INVALID,
        "no acceptable policy remains",
        "'CN=leaf'",
    )
    no_policy_leaf = issue("bare", ca)
    require = (x509.PolicyConstraints(require_explicit_policy=0, inhibit_policy_mapping=None), True)
    strict_ca = issue("Strict CA", root, ca=True, extensions=[policies(P1), require])
    expect(
        check(issue("bare", strict_ca), [root], [strict_ca], policy=NONE),
        R.INVALID,
        "explicit policy is required",
    )
    expect(check(no_policy_leaf, [root], [ca], policy=NONE), R.VALID)


def test_policy_mapping_and_its_inhibition() -> None:
    root = issue("Root", None, ca=True)
    mapping = (policy_mappings([(P1, P2)]), True)
    ca = issue("CA", root, ca=True, extensions=[policies(P1), mapping])
    sub = issue("Sub CA", ca, ca=True, extensions=[policies(P2)])
    leaf = issue("leaf", sub, extensions=[policies(P2)])
    outcome = check(leaf, [root], [ca, sub], policy=NONE, initial_explicit_policy=True)
    expect(outcome, R.VALID)  # was INVALID: critical policyMappings "not understood"
    assert outcome.policies == {P1}  # in the trust anchor's policy domain
    expect(
        check(
            leaf,
            [root],
            [ca, sub],
            policy=NONE,
            initial_explicit_policy=True,
            initial_policy_mapping_inhibit=True,
        ),
        R.INVALID,
        "'CN=Sub CA'",
    )
    to_any = issue("Bad CA", root, ca=True, extensions=[policies(P1), (policy_mappings([(P1, ANY)]), True)])
    expect(
        check(issue("x", to_any, extensions=[policies(P1)]), [root], [to_any], policy=NONE),
        R.INVALID,
        "maps to or from anyPolicy",
    )


def test_any_policy_and_its_inhibition() -> None:
    root = issue("Root", None, ca=True)
    ca = issue("CA", root, ca=True, extensions=[policies(ANY)])
    leaf = issue("leaf", ca, extensions=[policies(P3)])
    expect(check(leaf, [root], [ca], policy=NONE, initial_explicit_policy=True), R.VALID)
    expect(
        check(leaf, [root], [ca], policy=NONE, initial_explicit_policy=True, initial_any_policy_inhibit=True),
        R.INVALID,
        "'CN=CA'",
    )
    inhibiting = issue(
        "Inhibiting CA", root, ca=True, extensions=[policies(ANY), (x509.InhibitAnyPolicy(0), True)]
    )
    sub = issue("Sub CA", inhibiting, ca=True, extensions=[policies(ANY)])
    expect(
        check(
            issue("leaf", sub, extensions=[policies(P3)]),
            [root],
            [inhibiting, sub],
            policy=NONE,
            initial_explicit_policy=True,
        ),
        R.INVALID,
        "'CN=Sub CA'",
    )


def test_policy_tree_growth_is_bounded() -> None:
    first = [f"1.3.6.1.4.1.55555.1.{i}" for i in range(50)]
    second = [f"1.3.6.1.4.1.55555.2.{i}" for i in range(50)]
    third = [f"1.3.6.1.4.1.55555.3.{i}" for i in range(50)]
    root = issue("Root", None, ca=True)
    ca = issue(
        "CA",
        root,
        ca=True,
        extensions=[policies(*first), (policy_mappings([(a, b) for a in first for b in second]), True)],
    )
    sub = issue(
        "Sub CA",
        ca,
        ca=True,
        extensions=[policies(*second), (policy_mappings([(a, b) for a in second for b in third]), True)],
    )
    leaf = issue("leaf", sub, extensions=[policies(*third)])
    started = time.monotonic()
    outcome = check(leaf, [root], [ca, sub], policy=NONE)
    expect(outcome, R.INVALID, "policy processing limit")
    assert time.monotonic() - started < 60  # generous: the bound keeps it well under a second


# ------------------------------------------------------------- name constraints


def _constrained(
    permitted: list[x509.GeneralName] | None, excluded: list[x509.GeneralName] | None = None
) -> tuple[Entity, Entity]:
    root = issue("Root", None, ca=True)
    nc = x509.NameConstraints(permitted, excluded)
    return root, issue("Inter", root, ca=True, extensions=[(nc, True)])


def test_directory_name_constraints_use_name_normalisation() -> None:
    base = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp")])
    root, inter = _constrained([x509.DirectoryName(base)])
    inside = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EXAMPLE   corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, "device"),
        ]
    )
    outside = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Other"),
            x509.NameAttribute(NameOID.COMMON_NAME, "device"),
        ]
    )
    expect(check(issue("", inter, subject_name=inside), [root], [inter], policy=NONE), R.VALID)
    expect(
        check(issue("", inter, subject_name=outside), [root], [inter], policy=NONE),
        R.INVALID,
        "outside the permitted subtrees of 'CN=Inter'",
    )


@pytest.mark.parametrize(
    ("base", "address", "result"),
    [
        ("example.com", "dev@example.com", R.VALID),
        ("example.com", "dev@sub.example.com", R.INVALID),
        (".example.com", "dev@sub.example.com", R.VALID),
        (".example.com", "dev@example.com", R.INVALID),
        ("dev@example.com", "dev@EXAMPLE.com", R.VALID),
        ("dev@example.com", "Dev@example.com", R.INVALID),
    ],
)
def test_rfc822_name_constraints(base: str, address: str, result: CertVerifyResult) -> None:
    root, inter = _constrained([x509.RFC822Name(base)])
    leaf = issue("leaf", inter, san=[x509.RFC822Name(address)])
    expect(check(leaf, [root], [inter], policy=NONE), result)


def test_rfc822_constraints_apply_to_the_subject_email_address() -> None:
    root, inter = _constrained([x509.RFC822Name("example.com")])
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "leaf"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "dev@example.org"),
        ]
    )
    expect(
        check(issue("", inter, subject_name=subject), [root], [inter], policy=NONE),
        R.INVALID,
        "rfc822Name 'dev@example.org'",
    )


@pytest.mark.parametrize(
    ("base", "uri", "result"),
    [
        (".example.com", "https://www.example.com/firmware", R.VALID),
        (".example.com", "https://example.com/firmware", R.INVALID),
        ("example.com", "https://EXAMPLE.com:8443/x", R.VALID),
        ("example.com", "https://www.example.com/x", R.INVALID),
        ("example.com", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", R.INVALID),
    ],
)
def test_uri_name_constraints(base: str, uri: str, result: CertVerifyResult) -> None:
    root, inter = _constrained([x509.UniformResourceIdentifier(base)])
    leaf = issue("leaf", inter, san=[x509.UniformResourceIdentifier(uri)])
    # Valid URIs were refused before: URI constraints were "unsupported".
    expect(check(leaf, [root], [inter], policy=NONE), result)


def test_name_constraint_work_is_capped() -> None:
    many = [x509.DNSName(f"host{i}.example.com") for i in range(MAX_SUBTREES + 1)]
    root, inter = _constrained(many)
    leaf = issue("leaf", inter, san=[x509.DNSName("host5.example.com")])
    # Was VALID after thousands of comparisons: now refused before any.
    expect(check(leaf, [root], [inter], policy=NONE), R.INVALID, f"more than the limit of {MAX_SUBTREES}")
    subtrees = [x509.DNSName(f"zone{i}.example.com") for i in range(1000)]
    root, inter = _constrained(subtrees)
    names = [x509.DNSName(f"h{i}.zone999.example.com") for i in range(80)]
    expect(
        check(issue("leaf", inter, san=names), [root], [inter], policy=NONE),
        R.INVALID,
        "name constraint work limit",
    )


# ------------------------------------------------------------- profile


def test_profile_rules_and_the_lenient_profile() -> None:
    root = issue("Root", None, ca=True)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key())  # type: ignore[arg-type]
    cases = []
    critical_aki = issue("leaf", root, key_ids=False, extensions=[(aki, True)])
    cases.append((critical_aki, [], "authorityKeyIdentifier"))
    ski = x509.SubjectKeyIdentifier.from_public_key(new_key().public_key())  # type: ignore[arg-type]
    cases.append((issue("leaf", root, key_ids=False, extensions=[(ski, True)]), [], "subjectKeyIdentifier"))
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier("http://x/ca")
            )
        ]
    )
    cases.append((issue("leaf", root, extensions=[(aia, True)]), [], "authorityInfoAccess"))
    no_ski = issue("CA", root, ca=True, key_ids=False, extensions=[(aki, False)])
    cases.append((issue("leaf", no_ski), [no_ski], "CA certificate 'CN=CA' has no subjectKeyIdentifier"))
    ca_key = new_key()
    no_aki = issue(
        "CA",
        root,
        key=ca_key,
        ca=True,
        key_ids=False,
        extensions=[(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)],
    )  # type: ignore[arg-type]
    cases.append((issue("leaf", no_aki), [no_aki], "has no authorityKeyIdentifier"))
    soft_bc = issue("CA", root, ca=True, bc_critical=False)
    cases.append((issue("leaf", soft_bc), [soft_bc], "non-critical basicConstraints"))
    for leaf, intermediates, phrase in cases:
        # pyhanko-certvalidator accepts all of these; the rfc5280 profile does not.
        expect(check(leaf, [root], intermediates, policy=NONE), R.INVALID, phrase, "profile rfc5280")
        expect(check(leaf, [root], intermediates, policy=NONE, profile="lenient"), R.VALID)


def test_duplicate_extensions_are_refused_at_import() -> None:
    root = issue("Root", None, ca=True)
    placeholder = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.99"), b"\x04\x01\x00")
    leaf = issue("leaf", root, extensions=[(placeholder, False)])
    duplicated = with_extension_oid_replaced(leaf, root.key, "2.5.29.99", "2.5.29.14")
    with pytest.raises(CryptoError) as caught:
        parse_certificate(_der(duplicated))
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "duplicate 2.5.29.14 extension" in caught.value.message


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


# ------------------------------------------------------------- depth, DSA, bounds


def test_max_chain_depth() -> None:
    root = issue("Root", None, ca=True)
    first = issue("First", root, ca=True)
    second = issue("Second", first, ca=True)
    leaf = issue("leaf", second)
    expect(check(leaf, [root], [first, second], policy=NONE, max_chain_depth=2), R.VALID)
    expect(
        check(leaf, [root], [first, second], policy=NONE, max_chain_depth=1),
        R.INVALID,
        "the path has 2 intermediates, at most 1 are allowed",
    )
    expect(check(issue("direct", root), [root], policy=NONE, max_chain_depth=0), R.VALID)
    for bad in (-1, 33, True, "2"):
        with pytest.raises(CryptoError, match="max_chain_depth"):
            check(leaf, [root], policy=NONE, max_chain_depth=bad)


def test_dsa_is_refused_as_unsupported() -> None:
    dsa_key = dsa.generate_private_key(2048)
    root = issue("DSA Root", None, key=dsa_key, ca=True)  # type: ignore[arg-type]
    leaf = issue("leaf", root)
    with pytest.raises(CryptoError) as caught:
        check(leaf, [root], policy=NONE)
    assert caught.value.code is ErrorCode.UNSUPPORTED_ALGORITHM
    assert "DSA" in caught.value.message and "not supported" in caught.value.message


def test_chain_building_is_bounded() -> None:
    root = issue("Root", None, ca=True)
    levels = [
        [issue(f"Level {depth}", root, ca=True, signing_key=new_key()) for _ in range(6)]
        for depth in range(4)
    ]
    for depth in range(1, 4):  # every certificate of a level names every one above it
        levels[depth] = [
            issue(f"Level {depth}", Entity(levels[depth - 1][0].cert, new_key()), ca=True) for _ in range(6)
        ]
    leaf = issue("leaf", Entity(levels[3][0].cert, new_key()))
    pool = [c for level in levels for c in level]
    started = time.monotonic()
    outcome = check(leaf, [root], pool, policy=NONE)
    assert outcome.result is R.INVALID_SIGNATURE, outcome.reason
    assert f"best of {MAX_CANDIDATE_PATHS} candidate paths" in outcome.reason
    assert "limit of candidate paths" in outcome.reason
    assert time.monotonic() - started < 60  # generous; the bound keeps it around a second


# ------------------------------------------------------------- through the client API


def test_verifier_settings_through_the_public_api() -> None:
    root = issue("Root", None, ca=True)
    ca = issue("CA", root, ca=True, extensions=[policies(P1)])
    leaf = issue("leaf", ca, extensions=[policies(P1)], not_before=T - DAY)
    stack = cs.create_crypto_stack(
        cs.CryptoStackConfig()
        .set_connection_endpoint("inproc://")
        .set_daemon_config(
            {"daemon": {"allow_test_providers": True}, "providers": [{"name": "mock", "id": 1}]}
        )
    )
    try:
        ctx = stack.create_crypto_context()
        cm = ctx.create_certificate_management_context()
        store = cm.create_trust_store([cm.import_certificate(_der(root.cert))])

        def verify(**settings: object) -> cs.CertificateVerificationContext:
            ver = ctx.create_certificate_verification_context(cs.CertificateVerificationContextConfig())
            ver.set_certificate(cm.import_certificate(_der(leaf.cert)))
            ver.set_verification_trust_store(store)
            ver.add_untrusted_intermediate(cm.import_certificate(_der(ca.cert)))
            ver.set_validation_time(T)
            for setter, value in settings.items():
                getattr(ver, f"set_{setter}")(value)
            ver.verify()
            return ver

        valid = verify(initial_policy_set=[P1], initial_explicit_policy=True)
        assert valid.last_report is not None and valid.last_report.policies == {P1}
        refused = verify(initial_policy_set=[P2], initial_explicit_policy=True)
        assert refused.last_report is not None
        assert refused.last_report.result is R.INVALID
        assert "explicit policy" in refused.explain()
        deep = verify(max_chain_depth=0)
        assert deep.last_report is not None and deep.last_report.result is R.INVALID
        assert "at most 0 are allowed" in deep.explain()
        for setter, value, phrase in (
            ("profile", "strict", "unknown profile"),
            ("max_chain_depth", 99, "max_chain_depth"),
            ("initial_policy_set", ["not-an-oid"], "invalid OID"),
        ):
            with pytest.raises(cs.CryptoError) as caught:
                verify(**{setter: value})
            assert caught.value.code is cs.ErrorCode.INVALID_ARGUMENT
            assert phrase in caught.value.message
    finally:
        stack.close()
