"""Hard-to-misuse typing of the client: context managers give their own type (``Self``), so a
typo fails ``mypy --strict``; ``status()``/``explain()``/``algorithms()`` are typed dicts
whose keys match what the daemon sends; ``verify_or_raise`` raises like pyca and Tink."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

import cryptostack_core as cs
from cryptostack_core import ErrorCode as E

SNIPPET = """
import cryptostack_core as cs

def flows(stack: cs.CryptoStack, slot: cs.CryptoResourceId) -> None:
    with stack as s, s.create_crypto_context() as ctx:
        reveal_type(s)
        reveal_type(ctx)
        with ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256")) as h:
            reveal_type(h)
            h.updat(b"typo")
            h.single_shot("not bytes")
        with ctx.create_cipher_context(cs.CipherContextConfig()) as c:
            reveal_type(c)
        with ctx.create_sign_context(cs.SignContextConfig()) as sg:
            reveal_type(sg)
        with ctx.create_verify_context(cs.VerifyContextConfig()) as v:
            reveal_type(v)
            reveal_type(v.verify_or_raise(b"m", b"s"))
        with ctx.create_streaming_aead_context(cs.StreamingAeadContextConfig()) as st:
            reveal_type(st)
        with ctx.create_kem_context(cs.KemContextConfig()) as kem:
            reveal_type(kem)
        with ctx.create_key_agreement_context(cs.KeyAgreementContextConfig()) as ag:
            reveal_type(ag)
        with ctx.create_key_management_context() as km:
            reveal_type(km)
            with km.load_key(slot) as guard:
                reveal_type(guard)
            reveal_type(km.get_key_slot_info(slot))
        with ctx.create_certificate_verification_context() as cv:
            reveal_type(cv)
        with ctx.create_certificate_management_context() as cm:
            reveal_type(cm)
        reveal_type(ctx.get_key_slot_object(slot).info)
    status = stack.status()
    reveal_type(status)
    reveal_type(status["providers"][0]["state"])
    reveal_type(status["key_slots"][0]["version"])
    status["provders"]
    reveal_type(stack.explain("SHA-256", "hash")[0]["taken"])
    reveal_type(stack.algorithms()[0]["providers"])
"""

EXPECTED_REVEALS = [
    "cryptostack_core.client.stack.CryptoStack",
    "cryptostack_core.client.stack.CryptoContext",
    "cryptostack_core.client.contexts.hash.HashContext",
    "cryptostack_core.client.contexts.cipher.CipherContext",
    "cryptostack_core.client.contexts.sign.SignContext",
    "cryptostack_core.client.contexts.sign.VerifyContext",
    "None",
    "cryptostack_core.client.contexts.streaming.StreamingAeadContext",
    "cryptostack_core.client.contexts.kem.KemContext",
    "cryptostack_core.client.contexts.kem.KeyAgreementContext",
    "cryptostack_core.client.contexts.keys.KeyManagementContext",
    "cryptostack_core.client.guards.CryptoResourceGuard",
    "cryptostack_core.wire.resources.KeySlotInfo",
    "cryptostack_core.client.contexts.certificates.CertificateVerificationContext",
    "cryptostack_core.client.contexts.certificates.CertificateManagementContext",
    "cryptostack_core.wire.resources.KeySlotInfo",
    "TypedDict(cryptostack_core.wire.status.DaemonStatus, {",
    "str",
    "int",
    "bool",
    "dict[str, list[int]]",
]


def _mypy(tmp_path: Path, source: str) -> str:
    """``mypy --strict`` on ``source`` against the installed cryptostack_core."""
    (tmp_path / "snippet.py").write_text(textwrap.dedent(source))
    env = dict(os.environ)
    package_root = Path(cs.__file__).resolve().parent.parent
    if package_root.name != "site-packages":  # an editable install: show mypy the source
        env["MYPYPATH"] = str(package_root)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--hide-error-context",
            "--no-pretty",
            "snippet.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "import-not-found" not in done.stdout, done.stdout
    return done.stdout


def test_context_managers_and_results_are_typed_for_mypy(tmp_path: Path) -> None:
    out = _mypy(tmp_path, SNIPPET)
    # (mypy versions differ in spelling builtins: "builtins.str" or "str")
    reveals = [r.replace("builtins.", "") for r in re.findall(r'Revealed type is "(.*)"', out)]
    assert len(reveals) == len(EXPECTED_REVEALS), out
    for got, expected in zip(reveals, EXPECTED_REVEALS):
        assert got == expected or (expected.endswith("{") and got.startswith(expected)), (got, expected)
    errors = [line for line in out.splitlines() if ": error:" in line]
    # Exactly the three mistakes of the snippet are caught: a typo in a method name, a str
    # for bytes, a misspelt status key.
    assert len(errors) == 3, out
    assert '"HashContext" has no attribute "updat"' in errors[0]
    assert 'incompatible type "str"' in errors[1] and "single_shot" in errors[1]
    assert '"provders"' in errors[2] and "DaemonStatus" in errors[2]


def _check_keys(name: str, data: dict[str, object], shape: typing.Any, extra_allowed: bool = False) -> None:
    required, optional = set(shape.__required_keys__), set(shape.__optional_keys__)
    assert required <= set(data), (name, required - set(data))
    if not extra_allowed:
        assert set(data) <= required | optional, (name, set(data) - required - optional)


def test_status_explain_and_algorithms_match_their_typed_dicts(any_stack: cs.CryptoStack) -> None:
    status = any_stack.status()
    _check_keys("status", dict(status), cs.DaemonStatus)
    assert "warnings" in status  # this test's uid is the daemon's: an admin
    for provider in status["providers"]:  # admins also see the provider's own description
        _check_keys("provider", dict(provider), cs.ProviderStatus, extra_allowed=True)
    assert status["key_slots"] and status["clients"]
    for slot in status["key_slots"]:
        _check_keys("key slot", dict(slot), cs.KeySlotSummary)
    for client in status["clients"]:
        _check_keys("client", dict(client), cs.ClientSummary)
    for candidate in any_stack.explain("SHA-256", "hash"):
        _check_keys("candidate", dict(candidate), cs.ProviderCandidate)
    for entry in any_stack.algorithms():
        _check_keys("algorithm", dict(entry), cs.AlgorithmEntry)


def test_verify_or_raise(inproc_stack: cs.CryptoStack) -> None:
    ctx = inproc_stack.create_crypto_context()
    slot = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
    with ctx.create_sign_context(
        cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(slot)
    ) as signer:
        tag = signer.sign(b"message")
    with ctx.create_verify_context(
        cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(slot)
    ) as verifier:
        assert verifier.verify_or_raise(b"message", tag) is None  # type: ignore[func-returns-value]
        with pytest.raises(cs.CryptoError) as err:
            verifier.verify_or_raise(b"messagE", tag)
        assert err.value.code is E.AUTHENTICATION_FAILED and "HMAC-SHA-256" in err.value.message
        assert verifier.verify(b"messagE", tag) is False  # the bool form is unchanged
        verifier.init()
        verifier.update(b"mess")
        verifier.update(b"age")
        verifier.verify_finalize_or_raise(tag)
        verifier.init()
        verifier.update(b"message")
        with pytest.raises(cs.CryptoError) as err:
            verifier.verify_finalize_or_raise(bytes(len(tag)))
        assert err.value.code is E.AUTHENTICATION_FAILED
        # The context is reusable after a refused signature.
        verifier.verify_or_raise(b"message", tag)
