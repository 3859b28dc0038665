"""A request parsed once, at the front end, into what every later stage needs.

The daemon and the in-process transport turn each ``(op, args)`` into a :class:`Request`
before anything else looks at it. Scheduling (inline or on which provider's pool), the
shared-memory path, abandoning a call at its deadline and batches all read the parsed
fields instead of taking the raw arguments apart again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.shm import SHM_ARGUMENTS, is_reference, reference_length

DATA_ARGUMENTS = ("data", "peer", "ciphertext")
"""Arguments whose size decides whether a call is cheap enough to run inline."""


def _protocol_error(message: str) -> CryptoError:
    return CryptoError(ErrorCode.PROTOCOL_ERROR, message)


@dataclass(frozen=True, slots=True)
class Request:
    """One operation with its arguments, and for ``batch`` its members (each a Request)."""

    op: str
    args: Mapping[str, Any]
    context: int | None = None
    """The context number the request targets (``args["ctx"]``), if it is an integer."""
    provider: int | None = None
    """A provider the caller pinned (``args["provider"]``), if any."""
    data_size: int = 0
    """Bytes of the request's data argument (inline or a shared-memory reference)."""
    members: tuple[Request, ...] = ()
    contexts: tuple[int, ...] = ()
    """Every context the request touches: its own, or its members' (in order, no repeats)."""
    references: bool = False
    """Whether a data argument is a shared-memory reference (the request's or a member's)."""
    region: Any = None
    """The shared-memory region the references name (:meth:`bind`), if any."""

    @classmethod
    def parse(cls, op: object, args: object, max_batch: int | None = None) -> Request:
        """Check the request's shape (PROTOCOL_ERROR otherwise) and extract its facts.

        A batch longer than ``max_batch`` is RESOURCE_EXHAUSTED, before any member is read.
        """
        if type(op) is not str:
            raise _protocol_error(f"'op' must be a string, got {type(op).__name__}")
        if type(args) is not dict and not isinstance(args, Mapping):
            raise _protocol_error(f"'args' of {op} must be a map, got {type(args).__name__}")
        if op == "batch":
            calls = args.get("calls")
            if not isinstance(calls, list):
                raise _protocol_error("a batch needs 'calls': a list of {op, args} maps")
            if max_batch is not None and len(calls) > max_batch:
                raise CryptoError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"a batch of {len(calls)} calls exceeds max_batch_length ({max_batch}); split it",
                )
            members = []
            for item in calls:
                if not isinstance(item, Mapping):
                    raise _protocol_error("each batch entry must be a map with 'op' and 'args'")
                member_op, member_args = item.get("op"), item.get("args", {})
                if member_op == "batch":
                    raise _protocol_error("batches do not nest")
                members.append(cls.parse(member_op, member_args))
            contexts = tuple(dict.fromkeys(m.context for m in members if m.context is not None))
            return cls(
                op,
                args,
                members=tuple(members),
                contexts=contexts,
                references=any(m.references for m in members),
            )
        size = 0
        references = False
        for name in DATA_ARGUMENTS:
            value = args.get(name)
            if value is None:
                continue
            if isinstance(value, (bytes, bytearray, memoryview)):
                size = len(value)
                break
            if is_reference(value):
                size = reference_length(value)
                references = True
                break
        ctx = args.get("ctx")
        context = ctx if type(ctx) is int else None
        provider = args.get("provider")
        return cls(
            op,
            args,
            context,
            provider if type(provider) is int else None,
            size,
            contexts=() if context is None else (context,),
            references=references,
        )

    def bind(self, region: Any) -> Request:
        """This request with its shared-memory data references replaced by views of
        ``region`` (the connection's region when the request arrived: a region attached
        later does not change what an earlier request reads). A malformed or out-of-range
        reference is INVALID_ARGUMENT."""
        if not self.references:
            return self
        if self.op == "batch":
            return replace(self, members=tuple(m.bind(region) for m in self.members), region=region)
        args = {
            k: region.resolve(v) if k in SHM_ARGUMENTS and is_reference(v) else v
            for k, v in self.args.items()
        }
        return replace(self, args=args, region=region)

    @property
    def family(self) -> str:
        """The part of ``op`` before the dot (``hash`` for ``hash.update``)."""
        return self.op.partition(".")[0]

    @property
    def verb(self) -> str:
        """The part of ``op`` after the dot (``update`` for ``hash.update``)."""
        return self.op.partition(".")[2]

    def leaves(self) -> Iterator[Request]:
        """The request itself, or a batch's members."""
        if self.op == "batch":
            yield from self.members
        else:
            yield self
