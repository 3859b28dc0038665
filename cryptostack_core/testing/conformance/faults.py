"""How the kit reports what it found: every fault of a check, each named, in one failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from cryptostack_core.wire.errors import CryptoError, ErrorCode

__all__ = ["ConformanceError", "Faults", "expect_error"]

T = TypeVar("T")


class ConformanceError(AssertionError):
    """The provider does not meet the contract; the message names each fault."""


class Faults:
    """Collects the faults of one check, so a failure lists all of them, not the first."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.found: list[str] = []
        self.checked = 0

    def check(self, condition: object, fault: str) -> bool:
        """Record ``fault`` unless ``condition`` holds; returns the condition."""
        self.checked += 1
        if not condition:
            self.found.append(fault)
        return bool(condition)

    def add(self, fault: str) -> None:
        """Record a fault."""
        self.checked += 1
        self.found.append(fault)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Run a step; an exception from it becomes a fault naming ``what`` (and stops it)."""
        self.checked += 1
        try:
            yield
        except ConformanceError as exc:
            self.found.append(f"{what}: {exc}")
        except CryptoError as exc:
            self.found.append(f"{what}: unexpected {exc.code.value}: {exc.message}")
        except Exception as exc:  # a provider raising something else breaks the contract
            self.found.append(f"{what}: raised {type(exc).__name__}: {exc} (providers raise CryptoError)")

    def close(self) -> None:
        """Raise :class:`ConformanceError` listing every fault, if any."""
        if self.found:
            lines = "\n".join(f"  - {fault}" for fault in self.found)
            raise ConformanceError(f"{self.subject}: {len(self.found)} fault(s)\n{lines}")

    def __enter__(self) -> Faults:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if exc is None:
            self.close()


def expect_error(call: Callable[[], T], codes: ErrorCode | tuple[ErrorCode, ...], what: str) -> str:
    """ "" when ``call`` raises CryptoError with one of ``codes``; otherwise the fault."""
    wanted = codes if isinstance(codes, tuple) else (codes,)
    names = " or ".join(c.value for c in wanted)
    try:
        call()
    except CryptoError as exc:
        if exc.code in wanted:
            return ""
        return f"{what}: expected {names}, got {exc.code.value} ({exc.message})"
    except Exception as exc:
        return f"{what}: expected CryptoError {names}, got {type(exc).__name__}: {exc}"
    return f"{what}: expected {names}, but the call succeeded"
