"""Every public client method answers a wrong argument type with CryptoError(INVALID_ARGUMENT)
naming the argument and the type it got, before it sends anything or changes any state.

The cases are derived from the methods' own annotations: for each public method of each
public client class and each of its parameters, every value from a pool of candidates that
the annotation does not admit is passed (the other arguments valid), so a method added later
is covered without listing it here.
"""

from __future__ import annotations

import collections.abc as abc
import datetime as dt
import enum
import inspect
import io
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core import ErrorCode as E
from cryptostack_core.client.contexts.kem import KemContext, KeyAgreementContext

# The classes of the public client API (cryptostack_core's exports that a client calls).
PUBLIC_CLASSES: list[type] = [
    cs.CryptoStackConfig,
    cs.CryptoStack,
    cs.CryptoContext,
    cs.HashContextConfig,
    cs.CipherContextConfig,
    cs.SignContextConfig,
    cs.VerifyContextConfig,
    cs.StreamingAeadContextConfig,
    cs.KemContextConfig,
    cs.KeyAgreementContextConfig,
    cs.KeyManagementContextConfig,
    cs.CertificateVerificationContextConfig,
    cs.CertificateManagementContextConfig,
    cs.GenerateKeyParams,
    cs.ImportKeyParams,
    cs.DeriveKeyParams,
    cs.HashContext,
    cs.CipherContext,
    cs.SignContext,
    cs.VerifyContext,
    cs.StreamingAeadContext,
    cs.KemContext,
    cs.KeyAgreementContext,
    cs.KeyManagementContext,
    cs.CertificateVerificationContext,
    cs.CertificateManagementContext,
    cs.CryptoResourceGuard,
    cs.KeySlotObject,
    cs.VerificationReport,
    cs.SealContextConfig,
    cs.SealContext,
]
FUNCTIONS: list[Callable[..., Any]] = [cs.create_crypto_stack]


class _Opaque:
    """A value of no type any method takes."""

    def __repr__(self) -> str:
        return "<opaque>"


CANDIDATES: list[object] = [_Opaque(), "text", b"bytes", 7, 2.5, True]


def _accepted(hint: Any) -> list[Any]:
    """The runtime types (or predicates) an annotation admits."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(hint) for t in _accepted(arg)]
    if hint is type(None) or hint is None:
        return [type(None)]
    if hint is typing.Any:
        return [object]
    if origin is typing.IO or hint is typing.IO or origin is typing.BinaryIO:
        return [lambda v: hasattr(v, "read") or hasattr(v, "write")]
    if origin is not None:
        return [origin]
    if isinstance(hint, type) and issubclass(hint, enum.IntFlag):
        return [hint, lambda v: isinstance(v, int) and not isinstance(v, bool)]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        # The member's value is accepted too ("ENCRYPT"): only valid values are.
        return [hint, lambda v: any(v == m.value for m in hint)]
    if hint is int:
        return [lambda v: isinstance(v, int) and not isinstance(v, bool)]
    if hint is float:
        return [lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [hint]


def _admits(accepted: list[Any], value: object) -> bool:
    for t in accepted:
        if isinstance(t, type):
            if t is abc.Iterable and isinstance(value, (str, bytes)):
                continue  # a lone str or bytes is refused where a list is meant
            if isinstance(value, t):
                return True
        elif callable(t) and t(value):
            return True
    return False


class Valid:
    """Valid values by annotation (and a few by parameter name), from live resources."""

    def __init__(self, stack: cs.CryptoStack, ctx: cs.CryptoContext) -> None:
        self.ctx = ctx
        self.slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        self.stack = stack

    def for_param(self, name: str, hint: Any) -> object:
        by_name: dict[str, object] = {
            "algorithm": "SHA-256",
            "operation": "hash",
            "name": "PreDeployedSlot",
            "endpoint": "inproc://",
            "profile": "rfc5280",
            "policies": ["2.5.29.32.0"],
            "source": io.BytesIO(b""),
            "sink": io.BytesIO(),
            "out": bytearray(64),
        }
        if name in by_name:
            return by_name[name]
        for t in _accepted(hint):
            if t in (bytes, bytearray, memoryview):
                return b"\x00" * 16
            if isinstance(t, type) and issubclass(t, enum.Enum):
                return next(iter(t))
            if t is dt.datetime:
                return dt.datetime.now(dt.timezone.utc)
            if t is dt.timedelta:
                return 1.0
            if t is str:
                return "x"
            if t is bool:
                return True
            if t in (cs.CryptoResourceId, cs.CryptoResourceGuard, abc.Iterable):
                return self.slot
            if isinstance(t, type) and t.__module__.startswith("cryptostack_core"):
                return t()  # a config or parameter object
            if t is abc.Mapping:
                return {}
            if t is Path:
                return Path("daemon.toml")
            if callable(t) and not isinstance(t, type) and t(1):
                return 1
        raise AssertionError(f"no valid value for {name}: {hint}")


def _public_methods(cls: type) -> Iterator[tuple[str, Callable[..., Any]]]:
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or isinstance(inspect.getattr_static(cls, name), property):
            continue
        if inspect.isfunction(member) and len(inspect.signature(member).parameters) > 1:
            yield name, member


def _cases() -> Iterator[Any]:
    for cls in PUBLIC_CLASSES:
        for method_name, method in _public_methods(cls):
            hints = typing.get_type_hints(method)
            params = list(inspect.signature(method).parameters.values())[1:]
            for param in params:
                accepted = _accepted(hints[param.name])
                for wrong in CANDIDATES:
                    if not _admits(accepted, wrong):
                        yield pytest.param(
                            cls,
                            method_name,
                            param.name,
                            wrong,
                            id=f"{cls.__name__}.{method_name}({param.name}={type(wrong).__name__})",
                        )


CASES = list(_cases())


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[cs.CryptoStack, cs.CryptoContext, dict[type, object]]]:
    """A stack on the mock provider and one live instance of each public class."""
    config = {
        "daemon": {"allow_test_providers": True},
        "providers": [{"name": "mock", "id": 1}],
        "key_slots": [
            {"name": "PreDeployedSlot", "algorithm": "AES-256", "provider": 1, "provision": "generate"},
            {"name": "SigningKey", "algorithm": "HMAC-SHA-256", "provider": 1, "provision": "generate"},
        ],
    }
    stack = cs.create_crypto_stack(
        cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
    )
    ctx = stack.create_crypto_context()
    slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
    hmac = ctx.resolve_resource("SigningKey", cs.ResourceType.KEY_SLOT)
    km = ctx.create_key_management_context()
    guard = km.generate_key(cs.GenerateKeyParams().set_algorithm("AES-256"))
    instances: dict[type, object] = {
        cs.CryptoStack: stack,
        cs.CryptoContext: ctx,
        cs.HashContext: ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256")),
        cs.CipherContext: ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm("AES-256-GCM")
            .set_key(slot)
            .set_direction(cs.CipherDirection.ENCRYPT)
        ),
        cs.SignContext: ctx.create_sign_context(
            cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(hmac)
        ),
        cs.VerifyContext: ctx.create_verify_context(
            cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(hmac)
        ),
        cs.StreamingAeadContext: ctx.create_streaming_aead_context(
            cs.StreamingAeadContextConfig()
            .set_algorithm("AES-256-GCM-HKDF-4KB")
            .set_key(slot)
            .set_direction(cs.CipherDirection.ENCRYPT)
        ),
        # The mock has no KEM or key agreement: bare instances, whose arguments are checked
        # before any state of theirs is touched (which this also shows).
        cs.KemContext: object.__new__(KemContext),
        cs.KeyAgreementContext: object.__new__(KeyAgreementContext),
        cs.KeyManagementContext: km,
        cs.SealContext: ctx.create_seal_context(cs.SealContextConfig().set_key(slot)),
        cs.CertificateVerificationContext: ctx.create_certificate_verification_context(),
        cs.CertificateManagementContext: ctx.create_certificate_management_context(),
        cs.CryptoResourceGuard: guard,
        cs.KeySlotObject: ctx.get_key_slot_object(slot),
    }
    yield stack, ctx, instances
    stack.close()


def test_the_cases_cover_every_public_method() -> None:
    covered = {(c.values[0], c.values[1]) for c in CASES}
    for cls in PUBLIC_CLASSES:
        for name, _ in _public_methods(cls):
            assert (cls, name) in covered, f"{cls.__name__}.{name} takes no checked argument"
    assert len(CASES) > 300


@pytest.mark.parametrize(("cls", "method_name", "param", "wrong"), CASES)
def test_a_wrong_argument_type_is_invalid_argument(
    live: tuple[cs.CryptoStack, cs.CryptoContext, dict[type, object]],
    cls: type,
    method_name: str,
    param: str,
    wrong: object,
) -> None:
    stack, ctx, instances = live
    instance = instances[cls] if cls in instances else cls()
    valid = Valid(stack, ctx)
    method = getattr(instance, method_name)
    hints = typing.get_type_hints(getattr(cls, method_name))
    kwargs = {
        p.name: (wrong if p.name == param else valid.for_param(p.name, hints[p.name]))
        for p in list(inspect.signature(method).parameters.values())
    }
    with pytest.raises(cs.CryptoError) as err:
        method(**kwargs)
    assert err.value.code is E.INVALID_ARGUMENT, err.value
    assert param in err.value.message and type(wrong).__name__ in err.value.message, err.value.message
    # Nothing was started: a context in the middle of a message would say so now.
    if isinstance(instance, (cs.HashContext, cs.SignContext, cs.CipherContext)) and not isinstance(
        instance, cs.VerifyContext
    ):
        assert instance._state != "active"


@pytest.mark.parametrize("wrong", [_Opaque(), "inproc://", {"daemon": {}}])
def test_create_crypto_stack_checks_its_config(wrong: object) -> None:
    with pytest.raises(cs.CryptoError) as err:
        cs.create_crypto_stack(wrong)  # type: ignore[arg-type]
    assert err.value.code is E.INVALID_ARGUMENT
    assert "config" in err.value.message and type(wrong).__name__ in err.value.message


def test_the_reported_cases(inproc_stack: cs.CryptoStack) -> None:
    """The defects as reported: a str digested, an int taken for bytes, a float for an int."""
    ctx = inproc_stack.create_crypto_context()
    with ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256")) as h:
        with pytest.raises(cs.CryptoError) as err:
            h.single_shot("hello")  # type: ignore[arg-type]
        assert err.value.code is E.INVALID_ARGUMENT
        assert err.value.message.startswith("data must be bytes-like") and "got str" in err.value.message
        assert h.single_shot(b"hello").hex().startswith("2cf24dba")
    with pytest.raises(cs.CryptoError) as err:
        cs.SignContextConfig().set_context(5)  # type: ignore[arg-type]
    assert "context" in err.value.message and "int" in err.value.message  # not 5 zero bytes
    with pytest.raises(cs.CryptoError) as err:
        cs.CipherContextConfig().set_tag_length(15.9)  # type: ignore[arg-type]
    assert "length" in err.value.message and "float" in err.value.message  # not 15
