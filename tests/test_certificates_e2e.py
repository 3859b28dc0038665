"""Certificates end to end: the design's verification flow and the certificate API over a
real daemon subprocess and its unix socket, on the core's mock provider (one test that
also loads the openssl plugin is marked ``needs_plugins``).

One daemon serves the read-only tests of this module; the management test, which replaces
slots and restarts the daemon, and the bad-config tests get their own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import cryptostack_core as cs
from cryptostack_core import CertVerifyResult as R
from cryptostack_core import ErrorCode as E
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core import RevocationCheckPolicy as Policy
from cryptostack_core.testing.daemon import DaemonProcess, to_toml

# tests/ is not a package; make the PKI helper beside this file importable in any import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pki import DAY, YEAR, Entity, issue, make_crl, new_key  # noqa: E402

# Certificates and CRLs must be current for the daemon's default validation time (now).
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
NOT_BEFORE = NOW - 30 * DAY
NOT_AFTER = NOW + YEAR
UID = os.getuid()
MESSAGE = b"firmware image 1.2.3"


def pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return obj.public_bytes(Encoding.PEM)


def der(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return obj.public_bytes(Encoding.DER)


def ecdsa_sign(entity: Entity, message: bytes) -> bytes:
    """A DER ECDSA-SHA256 signature by the entity's private key (held by the test only)."""
    assert isinstance(entity.key, ec.EllipticCurvePrivateKey)
    return entity.key.sign(message, ec.ECDSA(hashes.SHA256()))


def current_crl(
    issuer: Entity, revoked: tuple[Entity, ...] = (), number: int = 1
) -> x509.CertificateRevocationList:
    return make_crl(
        issuer,
        revoked=[(e, x509.ReasonFlags.key_compromise) for e in revoked],
        this_update=NOW - dt.timedelta(hours=1) + dt.timedelta(minutes=number),
        next_update=NOW + 7 * DAY,
        number=number,
    )


@dataclasses.dataclass(frozen=True)
class Pki:
    """Root -> {device, device2, revoked, ed25519 and P-384 leaves, intermediate -> leaf};
    a second root with its own leaf; the files the daemon config points at."""

    directory: Path
    root: Entity
    inter: Entity
    device: Entity
    device2: Entity
    revoked: Entity
    via_inter: Entity
    ed_leaf: Entity
    p384_leaf: Entity
    forged: Entity
    other_root: Entity
    other_leaf: Entity
    root_crl: x509.CertificateRevocationList
    revoking_crl: x509.CertificateRevocationList
    inter_crl: x509.CertificateRevocationList
    other_crl: x509.CertificateRevocationList

    def file(self, name: str) -> str:
        return str(self.directory / name)


def _leaf(subject: str, issuer: Entity, **kw: Any) -> Entity:
    return issue(subject, issuer, not_before=NOT_BEFORE, not_after=NOT_AFTER, **kw)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    root = issue("Root CA", None, ca=True, not_before=NOT_BEFORE, not_after=NOW + 5 * YEAR)
    inter = _leaf("Intermediate CA", root, ca=True)
    revoked = _leaf("Revoked Device", root)
    other_root = issue("Other Root CA", None, ca=True, not_before=NOT_BEFORE, not_after=NOW + 5 * YEAR)
    pki = Pki(
        directory=directory,
        root=root,
        inter=inter,
        device=_leaf("Device 0001", root),
        device2=_leaf("Device 0002", root),
        revoked=revoked,
        via_inter=_leaf("Device Behind Intermediate", inter),
        ed_leaf=_leaf("Ed25519 Device", root, key=new_key("ed25519")),
        p384_leaf=_leaf("P-384 Device", root, key=new_key("p384")),
        forged=_leaf("Forged Device", root, signing_key=new_key()),
        other_root=other_root,
        other_leaf=_leaf("Other Device", other_root),
        root_crl=current_crl(root),
        revoking_crl=current_crl(root, (revoked,), number=2),
        inter_crl=current_crl(inter),
        other_crl=current_crl(other_root),
    )
    for name, data in {
        "root.pem": pem(root.cert),
        "root.crl.pem": pem(pki.root_crl),
        "device.pem": pem(pki.device.cert),
        "device.der": der(pki.device.cert),
    }.items():
        (directory / name).write_bytes(data)
    return pki


@pytest.fixture(scope="module")
def cert_daemon(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    config = {
        "daemon": {"allow_test_providers": True},
        "providers": [{"name": "mock", "id": 1}],
        "cert_slots": [
            {"name": "DeviceCert", "file": pki.file("device.pem")},
            {"name": "DeviceCertDer", "file": pki.file("device.der")},
            {"name": "EmptyCert"},
            {"name": "RestrictedCert", "file": pki.file("device.pem"), "use_uids": [UID + 4242]},
        ],
        "trust_stores": [
            {"name": "RootCA", "anchors": [pki.file("root.pem")], "crls": [pki.file("root.crl.pem")]},
            {"name": "RestrictedCA", "anchors": [pki.file("root.pem")], "use_uids": [UID + 4242]},
        ],
    }
    with DaemonProcess(tmp_path_factory.mktemp("certd"), config) as daemon:
        yield daemon


@pytest.fixture
def stack(cert_daemon: DaemonProcess) -> Iterator[cs.CryptoStack]:
    with cert_daemon.stack() as connected:
        yield connected


@pytest.fixture
def ctx(stack: cs.CryptoStack) -> cs.CryptoContext:
    return stack.create_crypto_context()


def verifier(
    ctx: cs.CryptoContext, cert: Any, store: Any, policy: Policy = Policy.CRL_ONLY
) -> cs.CertificateVerificationContext:
    ver = ctx.create_certificate_verification_context(cs.CertificateVerificationContextConfig())
    ver.set_certificate(cert)
    ver.set_verification_trust_store(store)
    ver.set_revocation_check_policy(policy)
    return ver


def fails(code: E, fn: Any, *args: Any, **kw: Any) -> str:
    """Run ``fn``; it must raise CryptoError ``code`` with a message, which is returned."""
    with pytest.raises(cs.CryptoError) as err:
        fn(*args, **kw)
    assert err.value.code is code, err.value
    assert err.value.message
    return err.value.message


def my_guards(stack: cs.CryptoStack) -> int:
    """Guards this connection holds in the daemon (the newest session is this test's).

    Unreferenced guards (e.g. kept alive only by a failed call's traceback) are collected
    first: their releases ride along with the status request, so counts do not depend on
    when the garbage collector happens to run."""
    gc.collect()
    clients = stack.status()["clients"]
    return int(max(clients, key=lambda c: c["session"])["guards"])


# --- 1. the design's flow ------------------------------------------------------------------
def test_design_flow_verify_then_use_certificate_public_key(ctx: cs.CryptoContext, pki: Pki) -> None:
    cert = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
    anchor = ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
    assert cert.type is cs.ResourceType.CERT_SLOT
    assert anchor.type is cs.ResourceType.VERIFICATION_TRUST_STORE
    ver = ctx.create_certificate_verification_context(cs.CertificateVerificationContextConfig())
    ver.set_certificate(cert)
    ver.set_verification_trust_store(anchor)
    ver.set_revocation_check_policy(cs.RevocationCheckPolicy.CRL_ONLY)
    assert ver.verify() is R.VALID
    assert ver.validated_chain() == [der(pki.device.cert), der(pki.root.cert)]
    assert ver.explain() == "VALID: chain of 2 certificates: CN=Device 0001 -> CN=Root CA"

    cm = ctx.create_certificate_management_context()
    pub_key, alg = cm.load_certificate_public_key(cert)
    assert alg == "ECDSA-P256"
    assert pub_key.type is cs.ResourceType.KEY
    assert pub_key.persistence is cs.ResourcePersistence.EPHEMERAL
    assert pub_key.permitted_operations == P.VERIFY
    assert pub_key.provider == 1

    # A signature made by the device's private key, which only the test holds.
    signature = ecdsa_sign(pki.device, MESSAGE)
    check = ctx.create_verify_context(cs.VerifyContextConfig().set_algorithm(alg).set_key(pub_key))
    assert check.verify(MESSAGE, signature) is True
    assert check.verify(MESSAGE + b"!", signature) is False
    other = ecdsa_sign(pki.device2, MESSAGE)
    assert check.verify(MESSAGE, other) is False

    # The certificate's key is VERIFY-only: no signing with it.
    message = fails(
        E.KEY_OPERATION_NOT_PERMITTED,
        ctx.create_sign_context,
        cs.SignContextConfig().set_algorithm(alg).set_key(pub_key),
    )
    assert "SIGN" in message
    km = ctx.create_key_management_context()
    assert km.export_public_key(pub_key) == pki.device.cert.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    fails(E.KEY_OPERATION_NOT_PERMITTED, km.export_key, pub_key)

    # ~pub_key releases the ephemeral key.
    pub_key.release()
    fails(
        E.RESOURCE_NOT_FOUND,
        ctx.create_verify_context,
        cs.VerifyContextConfig().set_algorithm(alg).set_key(pub_key),
    )


def test_certificate_public_keys_of_other_algorithms(
    stack: cs.CryptoStack, ctx: cs.CryptoContext, pki: Pki
) -> None:
    cm = ctx.create_certificate_management_context(cs.CertificateManagementContextConfig().set_provider(1))
    ed_cert = cm.import_certificate(pem(pki.ed_leaf.cert))
    key, alg = cm.load_certificate_public_key(ed_cert)
    assert (alg, key.algorithm, key.permitted_operations) == ("Ed25519", "Ed25519", P.VERIFY)
    assert isinstance(pki.ed_leaf.key, ed25519.Ed25519PrivateKey)
    signature = pki.ed_leaf.key.sign(MESSAGE)
    check = ctx.create_verify_context(cs.VerifyContextConfig().set_algorithm(alg).set_key(key))
    assert check.verify(MESSAGE, signature) is True
    assert check.verify(MESSAGE, bytes(64)) is False
    # The only provider (mock) cannot hold a P-384 key: said so, nothing is created.
    p384 = cm.import_certificate(der(pki.p384_leaf.cert))
    held = my_guards(stack)
    message = fails(E.NO_COMPATIBLE_PROVIDER, cm.load_certificate_public_key, p384)
    assert "ECDSA-P384" in message
    assert my_guards(stack) == held


# --- 2. verification outcomes ----------------------------------------------------------------
def test_revoked_by_imported_crl_and_by_created_trust_store(ctx: cs.CryptoContext, pki: Pki) -> None:
    cm = ctx.create_certificate_management_context()
    anchor = ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
    revoked = cm.import_certificate(pem(pki.revoked.cert))
    assert revoked.type is cs.ResourceType.CERTIFICATE
    assert revoked.persistence is cs.ResourcePersistence.EPHEMERAL
    # Against the configured store alone (its CRL lists nothing) the leaf is fine.
    ver = verifier(ctx, revoked, anchor)
    assert ver.verify() is R.VALID
    crl = cm.import_crl(pem(pki.revoking_crl))
    assert crl.type is cs.ResourceType.CRL
    ver.add_crl(crl)
    assert ver.verify() is R.REVOKED
    assert ver.validated_chain() == []
    explanation = ver.explain()
    assert explanation.startswith("REVOKED: ")
    assert f"{pki.revoked.serial:#x}" in explanation and "keyCompromise" in explanation
    # Revocation is not looked at under NONE.
    ver.set_revocation_check_policy(Policy.NONE)
    assert ver.verify() is R.VALID
    # The same CRL inside an ephemeral trust store built from imported objects.
    root = cm.import_certificate(der(pki.root.cert))
    store = cm.create_trust_store([root], crls=[cm.import_crl(der(pki.revoking_crl))])
    assert store.type is cs.ResourceType.VERIFICATION_TRUST_STORE
    assert store.persistence is cs.ResourcePersistence.EPHEMERAL
    assert verifier(ctx, revoked, store).verify() is R.REVOKED
    device = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
    assert verifier(ctx, device, store).verify() is R.VALID


def test_revocation_status_unknown_without_a_crl(ctx: cs.CryptoContext, pki: Pki) -> None:
    cm = ctx.create_certificate_management_context()
    store = cm.create_trust_store(cm.import_certificate(pem(pki.root.cert)))  # one anchor
    device = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
    ver = verifier(ctx, device, store)
    assert ver.verify() is R.REVOCATION_STATUS_UNKNOWN
    assert "no CRL issued by 'CN=Root CA'" in ver.explain()
    ver.set_revocation_check_policy(Policy.NONE)
    assert ver.verify() is R.VALID
    # A CRL outside its validity window is no CRL at all.
    stale = make_crl(pki.root, this_update=NOW - 30 * DAY, next_update=NOW - DAY)
    ver.set_revocation_check_policy(Policy.CRL_ONLY)
    ver.add_crl(cm.import_crl(pem(stale)))
    assert ver.verify() is R.REVOCATION_STATUS_UNKNOWN
    assert "no usable CRL" in ver.explain()


def test_validity_period_via_set_validation_time(ctx: cs.CryptoContext, pki: Pki) -> None:
    device = ctx.resolve_resource("DeviceCertDer", cs.ResourceType.CERT_SLOT)
    anchor = ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
    ver = verifier(ctx, device, anchor, Policy.NONE)
    ver.set_validation_time(NOT_AFTER + DAY)
    assert ver.verify() is R.EXPIRED
    assert "CN=Device 0001" in ver.explain()
    ver.set_validation_time((NOT_BEFORE - DAY).replace(tzinfo=None))  # naive means UTC
    assert ver.verify() is R.NOT_YET_VALID
    ver.set_validation_time(NOT_AFTER)  # inclusive end
    assert ver.verify() is R.VALID
    ver.set_validation_time(NOW)
    ver.set_revocation_check_policy(Policy.CRL_ONLY)
    assert ver.verify() is R.VALID
    # Expiry is judged before revocation: a CRL is not even needed to say EXPIRED.
    ver.set_validation_time(NOT_AFTER + YEAR)
    assert ver.verify() is R.EXPIRED
    fails(E.INVALID_ARGUMENT, ver.set_validation_time, "2030-01-01")


def test_untrusted_intermediates_and_forged_signature(ctx: cs.CryptoContext, pki: Pki) -> None:
    cm = ctx.create_certificate_management_context()
    anchor = ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
    leaf = cm.import_certificate(pem(pki.via_inter.cert))
    ver = verifier(ctx, leaf, anchor)
    assert ver.verify() is R.UNTRUSTED
    assert "no path to a trust anchor" in ver.explain()
    # The context keeps the temporary guard alive until it is closed.
    ver.add_untrusted_intermediate(cm.import_certificate(pem(pki.inter.cert)))
    # The path is found now, but the intermediate's CRL is missing.
    assert ver.verify() is R.REVOCATION_STATUS_UNKNOWN
    assert "CN=Intermediate CA" in ver.explain()
    ver.add_crl(cm.import_crl(pem(pki.inter_crl)))
    assert ver.verify() is R.VALID
    assert ver.validated_chain() == [der(pki.via_inter.cert), der(pki.inter.cert), der(pki.root.cert)]
    assert ver.explain() == (
        "VALID: chain of 3 certificates: CN=Device Behind Intermediate -> CN=Intermediate CA -> CN=Root CA"
    )
    # A leaf of another hierarchy, and a leaf whose signature is not the root's.
    other = verifier(ctx, cm.import_certificate(pem(pki.other_leaf.cert)), anchor, Policy.NONE)
    assert other.verify() is R.UNTRUSTED
    assert other.validated_chain() == []
    forged = verifier(ctx, cm.import_certificate(pem(pki.forged.cert)), anchor, Policy.NONE)
    assert forged.verify() is R.INVALID_SIGNATURE
    assert "signature" in forged.explain()


def test_export_certificate_pem_der_round_trip(ctx: cs.CryptoContext, pki: Pki) -> None:
    cm = ctx.create_certificate_management_context()
    slot = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
    exported_pem = cm.export_certificate(slot)
    assert exported_pem == pem(pki.device.cert)
    assert exported_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    exported_der = cm.export_certificate(slot, "DER")
    assert exported_der == der(pki.device.cert)
    # DER in, PEM out and back; the str form of PEM is accepted too.
    from_der = cm.import_certificate(exported_der)
    assert cm.export_certificate(from_der, "pem") == exported_pem
    from_pem = cm.import_certificate(exported_pem.decode())
    assert cm.export_certificate(from_pem, cs.KeyFormat.PEM) == exported_pem
    assert cm.export_certificate(from_pem, "DER") == exported_der
    assert x509.load_der_x509_certificate(cm.export_certificate(from_pem, "DER")) == pki.device.cert
    fails(E.INVALID_ARGUMENT, cm.export_certificate, slot, "PKCS12")
    fails(E.INVALID_ARGUMENT, cm.export_certificate, slot, 7)


# --- 4. bad input ------------------------------------------------------------------------------
def test_bad_input_is_invalid_argument_and_stores_nothing(cert_daemon: DaemonProcess, pki: Pki) -> None:
    with cert_daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        cm = ctx.create_certificate_management_context()
        held = my_guards(stack)
        cert_der = der(pki.device.cert)
        cases: list[tuple[Any, object, str]] = [
            (cm.import_certificate, b"\x00garbage\xff" * 8, "not a valid X.509 certificate"),
            (cm.import_certificate, b"", "empty"),
            (cm.import_certificate, cert_der[: len(cert_der) // 2], "truncated or malformed"),
            (cm.import_certificate, cert_der + b"\x00", "ExtraData"),
            (cm.import_certificate, der(pki.root_crl), "CRL, not a certificate"),
            (cm.import_certificate, pem(pki.root_crl), "CRL"),
            (cm.import_certificate, pem(pki.device.cert) + pem(pki.root.cert), "exactly one PEM"),
            (cm.import_certificate, "-----BEGIN CERTIFICATE-----\n\u00e9\n", "ASCII"),
            (cm.import_certificate, 42, "int"),
            (cm.import_crl, b"garbage", "not a valid X.509 CRL"),
            (cm.import_crl, der(pki.root_crl)[:-20], "truncated or malformed"),
            (cm.import_crl, cert_der, "certificate, not a CRL"),
            (cm.import_crl, pem(pki.device.cert), "'CERTIFICATE'"),
        ]
        for fn, data, words in cases:
            message = fails(E.INVALID_ARGUMENT, fn, data)
            assert words in message, (data, message)
        assert my_guards(stack) == held, "a rejected import left something behind"

        # Wrong resource types where a certificate, CRL or trust store is expected.
        key = ctx.create_key_management_context().generate_key(
            cs.GenerateKeyParams().set_algorithm("Ed25519")
        )
        cert = cm.import_certificate(cert_der)
        crl = cm.import_crl(der(pki.root_crl))
        anchor = ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
        held = my_guards(stack)
        assert "expected a certificate" in fails(E.INVALID_ARGUMENT, verifier(ctx, key, anchor).verify)
        assert "KEY" in fails(E.INVALID_ARGUMENT, cm.load_certificate_public_key, key)
        fails(E.INVALID_ARGUMENT, cm.export_certificate, crl)
        fails(E.INVALID_ARGUMENT, verifier(ctx, cert, cert).verify)
        ver = verifier(ctx, cert, anchor)
        ver.add_crl(cert)
        assert "expected a CRL" in fails(E.INVALID_ARGUMENT, ver.verify)
        ver = verifier(ctx, cert, anchor)
        ver.add_untrusted_intermediate(crl)
        fails(E.INVALID_ARGUMENT, ver.verify)
        fails(E.INVALID_ARGUMENT, cm.create_trust_store, [crl])
        fails(E.INVALID_ARGUMENT, cm.create_trust_store, [cert], crls=[cert])
        assert "at least one anchor" in fails(E.INVALID_ARGUMENT, cm.create_trust_store, [])
        fails(E.INVALID_ARGUMENT, cm.create_trust_store, "RootCA")
        fails(
            E.INVALID_ARGUMENT,
            ctx.create_certificate_verification_context().set_revocation_check_policy,
            "OCSP",
        )
        # Persisting needs a named slot/store, not an imported object.
        fails(E.INVALID_ARGUMENT, cm.persist_certificate, cert, cert)
        # (Kept in a variable: a temporary guard would be released whenever the garbage
        # collector frees the failed call's traceback, which makes counts racy.)
        ephemeral_store = cm.create_trust_store([cert])
        fails(E.INVALID_ARGUMENT, cm.persist_trust_store, ephemeral_store, [cert])
        held += 1  # that trust store
        assert my_guards(stack) == held

        # Wrong call order.
        ver = ctx.create_certificate_verification_context()
        assert "set_certificate" in fails(E.INVALID_STATE, ver.verify)
        fails(E.INVALID_STATE, ver.explain)
        ver.set_certificate(cert)
        assert "set_verification_trust_store" in fails(E.INVALID_STATE, ver.verify)

        # Released guards are gone.
        ver = verifier(ctx, cert, anchor, Policy.NONE)
        assert ver.verify() is R.VALID
        cert.release()
        cert.release()  # idempotent
        fails(E.RESOURCE_NOT_FOUND, ver.verify)
        fails(E.RESOURCE_NOT_FOUND, cm.export_certificate, cert)
        fails(E.RESOURCE_NOT_FOUND, cm.load_certificate_public_key, cert)
        crl.release()
        fails(
            E.RESOURCE_NOT_FOUND,
            cm.create_trust_store,
            [ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)],
            crls=[crl],
        )
        assert my_guards(stack) == held - 2
        ephemeral_store.release()

        # An unknown name, an empty slot, and a slot this uid may not use.
        fails(E.RESOURCE_NOT_FOUND, ctx.resolve_resource, "NoSuchCert", cs.ResourceType.CERT_SLOT)
        empty = ctx.resolve_resource("EmptyCert", cs.ResourceType.CERT_SLOT)
        assert "empty" in fails(E.SLOT_EMPTY, verifier(ctx, empty, anchor).verify)
        fails(E.SLOT_EMPTY, cm.export_certificate, empty)
        restricted = ctx.resolve_resource("RestrictedCert", cs.ResourceType.CERT_SLOT)
        assert f"uid {UID}" in fails(E.ACCESS_DENIED, cm.export_certificate, restricted)
        store = ctx.resolve_resource("RestrictedCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
        device = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
        fails(E.ACCESS_DENIED, verifier(ctx, device, store).verify)
        status = {s["name"]: s for s in stack.status()["cert_slots"]}
        assert status["EmptyCert"] == {"name": "EmptyCert", "occupied": False, "subject": ""}
        assert status["DeviceCert"]["subject"] == "CN=Device 0001"


def test_malformed_wire_arguments_are_invalid_argument(cert_daemon: DaemonProcess) -> None:
    """What a hand-written client could send: the daemon answers each with an error."""
    from cryptostack_core.wire.protocol import rid_to_wire

    with cert_daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        cert = rid_to_wire(ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT))
        store = rid_to_wire(ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE))
        verify = {"certificate": cert, "trust_store": store}
        requests: list[tuple[str, dict[str, Any]]] = [
            ("cert.verify", {**verify, "time": float("nan")}),
            ("cert.verify", {**verify, "time": 1e300}),
            ("cert.verify", {**verify, "time": "now"}),
            ("cert.verify", {**verify, "policy": "OCSP"}),
            ("cert.verify", {**verify, "intermediates": "DeviceCert"}),
            ("cert.verify", {**verify, "crls": [7]}),
            ("cert.verify", {"certificate": "DeviceCert", "trust_store": store}),
            ("cert.public_key", {"cert": cert, "provider": "mock"}),
            ("cert.export", {"cert": cert, "format": None}),
            ("cert.import", {"data": "text, not bytes"}),
            ("truststore.create", {"anchors": cert}),
        ]
        for op, args in requests:
            with pytest.raises(cs.CryptoError) as err:
                stack._channel.call(op, args, 5)
            assert err.value.code is E.INVALID_ARGUMENT, (op, args, err.value)
        assert (
            stack._channel.call("cert.verify", {**verify, "time": NOW.timestamp(), "policy": "CRL_ONLY"}, 5)[
                "result"
            ]
            == "VALID"
        )


@pytest.mark.needs_plugins
def test_certificate_keys_the_mock_cannot_hold_go_to_openssl(pki: Pki, tmp_path: Path) -> None:
    config = {
        "daemon": {"allow_test_providers": True},
        "providers": [{"name": "mock", "id": 1}, {"name": "openssl", "id": 2}],
        "cert_slots": [{"name": "DeviceCert", "file": pki.file("device.pem")}],
    }
    with DaemonProcess(tmp_path / "d", config) as daemon, daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        cm = ctx.create_certificate_management_context()
        device = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
        key, alg = cm.load_certificate_public_key(device)
        assert (alg, key.provider) == ("ECDSA-P256", 1)  # preference order: mock first
        key, alg = cm.load_certificate_public_key(device, provider=2)
        assert (alg, key.provider, key.permitted_operations) == ("ECDSA-P256", 2, P.VERIFY)
        check = ctx.create_verify_context(cs.VerifyContextConfig().set_algorithm(alg).set_key(key))
        assert check.verify(MESSAGE, ecdsa_sign(pki.device, MESSAGE)) is True
        key, alg = cm.load_certificate_public_key(cm.import_certificate(pem(pki.p384_leaf.cert)))
        assert (alg, key.provider) == ("ECDSA-P384", 2)
        assert isinstance(pki.p384_leaf.key, ec.EllipticCurvePrivateKey)
        signature = pki.p384_leaf.key.sign(MESSAGE, ec.ECDSA(hashes.SHA384()))
        check = ctx.create_verify_context(cs.VerifyContextConfig().set_algorithm(alg).set_key(key))
        assert check.verify(MESSAGE, signature) is True
        assert check.verify(MESSAGE[1:], signature) is False
        fails(
            E.KEY_OPERATION_NOT_PERMITTED,
            ctx.create_sign_context,
            cs.SignContextConfig().set_algorithm(alg).set_key(key),
        )


# --- 3. management and access rules --------------------------------------------------------
def test_persist_is_default_deny_allowed_by_write_uids_and_survives_restart(pki: Pki, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    config = {
        "daemon": {"audit_log": str(audit), "allow_test_providers": True},
        "providers": [{"name": "mock", "id": 1}],
        "cert_slots": [
            {"name": "DeviceCert", "file": pki.file("device.pem")},
            {"name": "ManagedCert", "file": pki.file("device.pem"), "write_uids": [UID]},
            {"name": "OthersCert", "file": pki.file("device.pem"), "write_uids": [UID + 4242]},
        ],
        "trust_stores": [
            {"name": "RootCA", "anchors": [pki.file("root.pem")], "crls": [pki.file("root.crl.pem")]},
            {
                "name": "ManagedCA",
                "anchors": [pki.file("root.pem")],
                "crls": [pki.file("root.crl.pem")],
                "write_uids": [UID],
            },
        ],
    }
    files_before = {p.name: p.read_bytes() for p in pki.directory.iterdir()}
    daemon = DaemonProcess(tmp_path / "d", config)
    with daemon:
        with daemon.stack() as stack:
            ctx = stack.create_crypto_context()
            cm = ctx.create_certificate_management_context()
            new = cm.import_certificate(pem(pki.device2.cert))
            other_root = cm.import_certificate(pem(pki.other_root.cert))
            other_crl = cm.import_crl(pem(pki.other_crl))
            slot = {
                n: ctx.resolve_resource(n, cs.ResourceType.CERT_SLOT)
                for n in ("DeviceCert", "ManagedCert", "OthersCert")
            }
            store = {
                n: ctx.resolve_resource(n, cs.ResourceType.VERIFICATION_TRUST_STORE)
                for n in ("RootCA", "ManagedCA")
            }

            # No write_uids: nobody may mutate, root included; a list without us: same.
            for name in ("DeviceCert", "OthersCert"):
                message = fails(E.ACCESS_DENIED, cm.persist_certificate, slot[name], new)
                assert f"uid {UID}" in message and name in message
            fails(E.ACCESS_DENIED, cm.persist_trust_store, store["RootCA"], [other_root], [other_crl])
            assert cm.export_certificate(slot["DeviceCert"], "DER") == der(pki.device.cert)
            root_ca = verifier(ctx, slot["DeviceCert"], store["RootCA"])
            assert root_ca.verify() is R.VALID  # the store is unchanged

            # Listed in write_uids: allowed, versioned, visible at once.
            assert cm.persist_certificate(slot["ManagedCert"], new) == 2
            assert cm.export_certificate(slot["ManagedCert"], "DER") == der(pki.device2.cert)
            assert cm.persist_trust_store(store["ManagedCA"], [other_root], [other_crl]) == 2
            other_leaf = cm.import_certificate(pem(pki.other_leaf.cert))
            assert verifier(ctx, other_leaf, store["ManagedCA"]).verify() is R.VALID
            assert verifier(ctx, slot["ManagedCert"], store["ManagedCA"]).verify() is R.UNTRUSTED
            subjects = {s["name"]: s["subject"] for s in stack.status()["cert_slots"]}
            assert subjects == {
                "DeviceCert": "CN=Device 0001",
                "ManagedCert": "CN=Device 0002",
                "OthersCert": "CN=Device 0001",
            }

        events = [json.loads(line) for line in audit.read_text().splitlines()]
        denied = [(e["action"], e["resource"]) for e in events if e["result"] == "ACCESS_DENIED"]
        assert denied == [
            ("access.mutate", "DeviceCert"),
            ("access.mutate", "OthersCert"),
            ("access.mutate", "RootCA"),
        ]
        assert all(e["client"]["uid"] == UID and e["client"]["pid"] == os.getpid() for e in events)
        done = {(e["action"], e["resource"]) for e in events if e["result"] == "ok"}
        assert {("cert.persist", "ManagedCert"), ("truststore.persist", "ManagedCA")} <= done

        # A restart on the same directory serves what was persisted, not the config files.
        assert daemon.stop() == 0
        daemon.start()
        with daemon.stack() as stack:
            ctx = stack.create_crypto_context()
            cm = ctx.create_certificate_management_context()
            managed = ctx.resolve_resource("ManagedCert", cs.ResourceType.CERT_SLOT)
            assert cm.export_certificate(managed, "DER") == der(pki.device2.cert)
            device = ctx.resolve_resource("DeviceCert", cs.ResourceType.CERT_SLOT)
            assert cm.export_certificate(device, "DER") == der(pki.device.cert)
            subjects = {s["name"]: s["subject"] for s in stack.status()["cert_slots"]}
            assert subjects["ManagedCert"] == "CN=Device 0002"
            managed_ca = ctx.resolve_resource("ManagedCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
            other_leaf = cm.import_certificate(der(pki.other_leaf.cert))
            assert verifier(ctx, other_leaf, managed_ca).verify() is R.VALID
            root_ca = ctx.resolve_resource("RootCA", cs.ResourceType.VERIFICATION_TRUST_STORE)
            assert verifier(ctx, managed, root_ca).verify() is R.VALID
            # The public key of the replaced certificate is the new device's.
            key, _ = cm.load_certificate_public_key(managed)
            signature = ecdsa_sign(pki.device2, MESSAGE)
            check = ctx.create_verify_context(
                cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(key)
            )
            assert check.verify(MESSAGE, signature) is True
    assert {p.name: p.read_bytes() for p in pki.directory.iterdir()} == files_before


# --- 5. a bad certificate file in the config ----------------------------------------------------
BAD_FILES = {
    "garbage-cert": (
        "cert_slots",
        "DeviceCert",
        "file",
        b"this is no certificate\n",
        "not a valid X.509 certificate",
    ),
    "crl-as-cert": ("cert_slots", "DeviceCert", "file", None, "CRL"),
    "missing-cert": ("cert_slots", "DeviceCert", "file", "missing", "cannot read"),
    "truncated-anchor": ("trust_stores", "RootCA", "anchors", "truncated", "truncated or malformed"),
    "cert-as-crl": ("trust_stores", "RootCA", "crls", "cert", "certificate"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_certificate_file_in_config_refuses_start(case: str, pki: Pki, tmp_path: Path) -> None:
    section, entry, key, content, words = BAD_FILES[case]
    bad = tmp_path / f"{case}.pem"
    if content is None:
        bad.write_bytes(pem(pki.root_crl))
    elif content == "truncated":
        bad.write_bytes(der(pki.root.cert)[:100])
    elif content == "cert":
        bad.write_bytes(pem(pki.device.cert))
    elif content != "missing":
        assert isinstance(content, bytes)
        bad.write_bytes(content)
    config: dict[str, Any] = {
        "daemon": {
            "socket": str(tmp_path / "d.sock"),
            "keystore": str(tmp_path / "keystore.sqlite3"),
            "allow_test_providers": True,
            "allow_root": True,
        },
        "providers": [{"name": "mock", "id": 1}],
        "cert_slots": [{"name": "DeviceCert", "file": pki.file("device.pem")}],
        "trust_stores": [
            {"name": "RootCA", "anchors": [pki.file("root.pem")], "crls": [pki.file("root.crl.pem")]}
        ],
    }
    target = config[section][0]
    target[key] = str(bad) if key == "file" else [*target[key], str(bad)]
    config_path = tmp_path / "daemon.toml"
    config_path.write_text(to_toml(config))
    proc = subprocess.run(
        [sys.executable, "-m", "cryptostack_core", "daemon", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    err = proc.stderr
    assert "cannot start" in err, err
    assert str(config_path) in err and f"[[{section}]] '{entry}'" in err, err
    assert str(bad) in err and words in err, err
    assert not (tmp_path / "d.sock").exists()
