"""The SDK's strict DER/PEM module and ECDSA signature encodings, and its typed options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from cryptostack_core.sdk import CryptoError, ErrorCode, der, ecdsa
from cryptostack_core.sdk.options import OptionError, describe_options, option, parse_options

N256 = ecdsa.CURVE_ORDERS["ECDSA-P256"]


# --- DER ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoded, problem",
    [
        (b"\x04\x81\x05hello", "non-minimal length"),  # long form for a short length
        (b"\x04\x82\x00\x05hello", "non-minimal length"),
        (b"\x04\x80hello\x00\x00", "indefinite"),
        (b"\x04\x06hello", "past the end"),
        (b"\x1f\x01\x00", "multi-byte tags"),
        (b"\x04", "truncated"),
    ],
)
def test_der_reader_refuses_non_canonical_encodings(encoded: bytes, problem: str) -> None:
    with pytest.raises(der.DerError, match=problem):
        der.read(encoded)


def test_der_elements_and_values_round_trip() -> None:
    long = bytes(300)
    assert der.read(der.tlv(der.OCTET_STRING, long)) == (der.OCTET_STRING, long, 304)
    assert der.unwrap_octet_string(der.tlv(der.OCTET_STRING, b"pt")) == b"pt"
    with pytest.raises(der.DerError, match="trailing"):
        der.expect(der.tlv(der.OCTET_STRING, b"pt") + b"\x00", der.OCTET_STRING, "x")
    padded = der.tlv(der.SEQUENCE, der.tlv(der.NULL, b"")) + bytes(6)  # a token's padding
    assert der.first_element(padded) == b"\x30\x02\x05\x00"
    for oid in ("1.2.840.10045.3.1.7", "2.16.840.1.101.3.4.3.17", "1.3.6.1.5.5.7.6.37"):
        assert der.decode_oid(der.encode_oid(oid)) == oid
    with pytest.raises(der.DerError, match="non-minimal"):
        der.decode_oid(b"\x2a\x80\x01")
    for value in (0, 1, 127, 128, 255, 256, -1, -128, -129, N256):
        _tag, content, _end = der.read(der.encode_integer(value))
        assert der.decode_integer(content) == value
    for bad in (b"", b"\x00\x01", b"\xff\x80"):
        with pytest.raises(der.DerError):
            der.decode_integer(bad)
    with pytest.raises(der.DerError, match="negative"):
        der.decode_integer(b"\x80", non_negative=True)


def test_key_shells_and_pem() -> None:
    spki = der.encode_spki("2.16.840.1.101.3.4.3.17", b"\x01\x02")
    assert der.decode_spki(spki) == ("2.16.840.1.101.3.4.3.17", b"\x01\x02")
    pkcs8 = der.encode_pkcs8("2.16.840.1.101.3.4.4.2", b"seed")
    info = der.decode_pkcs8(pkcs8)
    assert (info.oid, info.private_key, info.public_key) == ("2.16.840.1.101.3.4.4.2", b"seed", None)
    twice = der.tlv(der.SEQUENCE, der.read(pkcs8)[1] + der.tlv(0xA0, b"") + der.tlv(0xA0, b""))
    with pytest.raises(der.DerError, match="repeated"):
        der.decode_pkcs8(twice)
    with_params = der.tlv(
        der.SEQUENCE,
        der.tlv(der.SEQUENCE, der.tlv(der.OID, b"\x2a") + der.tlv(der.NULL, b""))
        + der.tlv(der.BIT_STRING, b"\x00\x01"),
    )
    with pytest.raises(der.DerError, match="parameters must be absent"):
        der.decode_spki(with_params)
    text = der.pem_encode("PUBLIC KEY", spki)
    assert der.pem_decode(b"junk before\n" + text) == ("PUBLIC KEY", spki)
    with pytest.raises(der.DerError):
        der.pem_decode(text.replace(b"-----END PUBLIC KEY", b"-----END PRIVATE KEY"))
    with pytest.raises(der.DerError, match="base64"):
        der.pem_decode(b"-----BEGIN X-----\n!!!!\n-----END X-----\n")


# --- ECDSA ----------------------------------------------------------------------------------


def test_ecdsa_encodings_agree_with_pyca() -> None:
    for r, s in ((1, 1), (N256 - 1, 2), (2**255, 2**200 + 7)):
        encoded = ecdsa.encode_der(r, s)
        assert encoded == encode_dss_signature(r, s)
        raw = ecdsa.der_to_raw(encoded, "ECDSA-P256")
        assert raw == r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert ecdsa.raw_to_der(raw) == encoded
        assert decode_dss_signature(ecdsa.raw_to_der(raw)) == (r, s)
    assert ecdsa.coordinate_size("ECDSA-P521") == 66
    assert len(ecdsa.der_to_raw(ecdsa.encode_der(5, 6), "ECDSA-P384") or b"") == 96


@pytest.mark.parametrize(
    "signature",
    [
        ecdsa.encode_der(0, 1),  # r = 0
        ecdsa.encode_der(1, N256),  # s = n: outside [1, n-1] (the old pkcs11 check
        ecdsa.encode_der(N256 + 1, 1),  # only bounded the bit length)
        ecdsa.encode_der(-1, 1),  # negative
        b"\x30\x06\x02\x01\x01\x02\x01\x01\x00",  # trailing byte inside
        ecdsa.encode_der(1, 1) + b"\x00",  # trailing byte after
        b"\x30\x07\x02\x02\x00\x01\x02\x01\x01",  # non-minimal INTEGER
        b"\x30\x81\x06\x02\x01\x01\x02\x01\x01",  # BER long-form length
        b"\x30\x03\x02\x01\x01",  # one INTEGER
        b"",
    ],
)
def test_ecdsa_signatures_outside_the_one_rule_are_invalid(signature: bytes) -> None:
    assert ecdsa.der_to_raw(signature, "ECDSA-P256") is None
    assert ecdsa.decode_der(signature, "ECDSA-P256") is None


# --- options ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExampleOptions:
    library: Path = option(doc="the vendor library")
    sessions: int = option(4, minimum=1, maximum=64, doc="sessions")
    timeout: float = option(30.0, positive=True, doc="seconds")
    strict: bool = option(True, doc="be strict")
    mode: str = option("fast", choices=("fast", "safe"), doc="mode")
    names: list[str] = option([], doc="names")
    label: str | None = option(None, doc="optional label")
    level: int = option(1, parse=lambda v: int(str(v), 0), doc="parsed")

    def __post_init__(self) -> None:
        if self.mode == "safe" and not self.strict:
            raise OptionError("mode safe needs strict")


def test_options_are_typed_and_unknown_keys_name_the_provider(tmp_path: Path) -> None:
    opts = parse_options(
        ExampleOptions,
        {"library": "lib.so", "sessions": 8, "timeout": 2, "names": ["a"], "level": "0x10"},
        provider="example",
        config_dir=tmp_path,
    )
    assert opts.library == tmp_path / "lib.so" and opts.sessions == 8 and opts.level == 16
    assert opts.timeout == 2.0 and isinstance(opts.timeout, float) and opts.names == ["a"]
    assert parse_options(ExampleOptions, {"library": "/abs.so"}, provider="example").names == []
    bad = {
        "colour": ({"library": "x", "colour": "blue"}, "unknown option(s) colour (known:"),
        "required": ({}, "library is required"),
        "bool is no int": ({"library": "x", "sessions": True}, "sessions must be an integer"),
        "minimum": ({"library": "x", "sessions": 0}, "sessions must be >= 1"),
        "maximum": ({"library": "x", "sessions": 65}, "sessions must be <= 64"),
        "positive": ({"library": "x", "timeout": 0}, "timeout must be positive"),
        "bool": ({"library": "x", "strict": 1}, "strict must be true or false"),
        "choices": ({"library": "x", "mode": "slow"}, "mode must be one of fast, safe"),
        "list": ({"library": "x", "names": "a"}, "names must be a list of strings"),
        "cross-field": ({"library": "x", "mode": "safe", "strict": False}, "mode safe needs strict"),
        "parse": ({"library": "x", "level": "eleven"}, "invalid literal"),
    }
    for what, (raw, message) in bad.items():
        with pytest.raises(CryptoError) as err:
            parse_options(ExampleOptions, raw, provider="example")
        assert err.value.code is ErrorCode.INVALID_ARGUMENT, what
        assert err.value.message.startswith("example provider options: "), what
        assert message in err.value.message, (what, err.value.message)
    with pytest.raises(CryptoError, match="must not be in the configuration"):
        parse_options(
            ExampleOptions,
            {"library": "x", "pin": "1234"},
            provider="example",
            refuse={"pin": "the PIN must not be in the configuration"},
        )
    rows = dict((name, default) for name, _doc, default in describe_options(ExampleOptions))
    assert rows["library"] == "required" and rows["sessions"] == "4" and rows["names"] == "[]"


def test_curve_orders_are_the_curves_orders() -> None:
    """pyca accepts n - 1 as a private value and refuses n: the table holds each order."""
    from cryptography.hazmat.primitives.asymmetric import ec

    for name, curve in (
        ("ECDSA-P256", ec.SECP256R1()),
        ("ECDSA-P384", ec.SECP384R1()),
        ("ECDSA-P521", ec.SECP521R1()),
    ):
        order = ecdsa.CURVE_ORDERS[name]
        ec.derive_private_key(order - 1, curve)
        with pytest.raises(ValueError):
            ec.derive_private_key(order, curve)
