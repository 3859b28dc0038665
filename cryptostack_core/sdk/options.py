"""Typed provider options: a dataclass declares them, :func:`parse_options` checks them.

A provider's ``[[providers]] options`` table arrives as a mapping from TOML. Declare what it
may hold once, as a frozen keyword-only dataclass whose fields use :func:`option`::

    @dataclass(frozen=True, kw_only=True)
    class MyOptions:
        library: Path = option(doc="the vendor library (.so)")          # required
        sessions: int = option(4, minimum=1, doc="sessions kept open")
        call_timeout: float = option(30.0, positive=True, doc="seconds per call")

    opts = parse_options(MyOptions, raw, provider="myhsm", config_dir=env.config_dir)

Checks, each failure an ``INVALID_ARGUMENT`` that names the provider and the option: unknown
keys are refused (with the known ones listed: a typo never passes silently), required ones
must be present, values must have the declared type (``bool`` is not an ``int``; an ``int``
is a fine ``float``), numbers honour ``minimum``/``maximum``/``positive``, ``choices`` limit
strings, ``Path`` values are resolved against the config file's directory, ``list[str]``
takes a list of strings, a ``parse`` callable converts anything else (raising ``ValueError``
with the reason). Cross-field rules go in ``__post_init__`` (raise ``ValueError``).
:func:`describe_options` renders the table for a README or ``--help``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cryptostack_core.wire.errors import CryptoError, ErrorCode

T = TypeVar("T")
_REQUIRED: Any = dataclasses.MISSING


def option(
    default: Any = _REQUIRED,
    *,
    doc: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    choices: tuple[str, ...] | None = None,
    parse: Callable[[Any], Any] | None = None,
) -> Any:
    """A declared option (a dataclass field); no ``default`` makes it required. Mutable
    defaults (lists) are copied per instance."""
    metadata = {
        "doc": doc,
        "minimum": minimum,
        "maximum": maximum,
        "positive": positive,
        "choices": choices,
        "parse": parse,
    }
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class OptionError(ValueError):
    """A value that breaks an option's declaration (raised by ``parse`` callables too)."""


def _fail(provider: str, message: str) -> CryptoError:
    return CryptoError(ErrorCode.INVALID_ARGUMENT, f"{provider} provider options: {message}")


def _convert(name: str, kind: Any, value: Any, meta: Mapping[str, Any], config_dir: Path) -> Any:
    parse = meta.get("parse")
    if parse is not None:
        return parse(value)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        if value is None:
            return None
        if len(members) == 1:
            return _convert(name, members[0], value, meta, config_dir)
        raise OptionError(f"{name}: unsupported declaration {kind}")
    if kind is bool:
        if not isinstance(value, bool):
            raise OptionError(f"{name} must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not isinstance(value, int))
        ):
            raise OptionError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if meta.get("positive") and value <= 0:
            raise OptionError(f"{name} must be positive, got {value!r}")
        low, high = meta.get("minimum"), meta.get("maximum")
        if low is not None and value < low:
            raise OptionError(f"{name} must be >= {low:g}, got {value!r}")
        if high is not None and value > high:
            raise OptionError(f"{name} must be <= {high:g}, got {value!r}")
        return kind(value)
    if kind is str:
        if not isinstance(value, str) or not value:
            raise OptionError(f"{name} must be a non-empty string, got {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise OptionError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise OptionError(f"{name} must be a path, got {value!r}")
        path = Path(value)
        return path if path.is_absolute() else config_dir / path
    if origin in (list, tuple) and typing.get_args(kind)[:1] == (str,):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise OptionError(f"{name} must be a list of strings, got {value!r}")
        return origin(value)
    raise OptionError(f"{name}: unsupported declaration {kind}")


def parse_options(
    schema: type[T],
    raw: Mapping[str, Any],
    *,
    provider: str,
    config_dir: Path | None = None,
    refuse: Mapping[str, str] | None = None,
) -> T:
    """``raw`` checked against the dataclass ``schema``; INVALID_ARGUMENT naming the
    provider and the problem. ``refuse`` maps keys to a reason they may never appear (a PIN
    in the configuration)."""
    if not isinstance(raw, Mapping):
        raise _fail(provider, f"options must be a table, got {type(raw).__name__}")
    for key, reason in (refuse or {}).items():
        if key in raw:
            raise _fail(provider, reason)
    fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        raise _fail(provider, f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(schema)
    base = config_dir or Path.cwd()
    values: dict[str, Any] = {}
    try:
        for name, spec in fields.items():
            if name not in raw:
                if spec.default is _REQUIRED and spec.default_factory is dataclasses.MISSING:
                    raise OptionError(
                        f"{name} is required"
                        + (f" ({spec.metadata['doc']})" if spec.metadata.get("doc") else "")
                    )
                continue
            values[name] = _convert(name, hints[name], raw[name], spec.metadata, base)
        return schema(**values)
    except (OptionError, ValueError, TypeError) as exc:
        raise _fail(provider, str(exc)) from None


def describe_options(schema: type[Any]) -> list[tuple[str, str, str]]:
    """``(name, meaning, default)`` rows for documentation."""
    rows = []
    for spec in dataclasses.fields(schema):
        if spec.default is not _REQUIRED:
            default = repr(spec.default)
        elif spec.default_factory is not dataclasses.MISSING:
            default = repr(spec.default_factory())
        else:
            default = "required"
        rows.append((spec.name, str(spec.metadata.get("doc", "")), default))
    return rows
