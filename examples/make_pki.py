"""Regenerate the demo PKI in examples/pki (root CA, device certificate, root CRL).

The files are committed so `make run` needs nothing else; the private keys are thrown away
(the demo only verifies). Validity: 2025-2045.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

OUT = Path(__file__).parent / "pki"
START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
END = dt.datetime(2045, 1, 1, tzinfo=dt.timezone.utc)


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cryptostack demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def main() -> None:
    OUT.mkdir(exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    device_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(name("Demo Root CA"))
        .issuer_name(name("Demo Root CA"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(END)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    device = (
        x509.CertificateBuilder()
        .subject_name(name("device-0001"))
        .issuer_name(root.subject)
        .public_key(device_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(END)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root.subject)
        .last_update(START)
        .next_update(END)
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    (OUT / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    (OUT / "device.pem").write_bytes(device.public_bytes(Encoding.PEM))
    (OUT / "root.crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))


if __name__ == "__main__":
    main()
