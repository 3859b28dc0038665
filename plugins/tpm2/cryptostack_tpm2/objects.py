"""The worker's table of TPM objects: a small resource manager for a TPM with few slots.

A TPM holds only a handful of transient objects at once (swtpm: three, "out of memory for
object contexts" beyond), and with a bare TPM (swtpm socket, /dev/tpm0) nobody swaps them
for us. Every object the worker uses -- the storage primary, keys, hash/HMAC sequences --
is an entry here, keyed by an id: keys by the provider's key id (positive), sequences by a
worker-made id (negative), the primary by 0.

* An entry is loaded just in time and stays loaded while the slots suffice (LRU cache).
* To make room, the least recently used entry that the current request does not use is
  evicted: ContextSave (once for keys and the primary, every time for sequences, whose
  state changes) then FlushContext. A saved context reloads with one ContextLoad, without
  the parent; if that fails (the TPM was reset) keys reload from their blobs and the
  primary is recreated, while a sequence is lost.
* Persistent objects (pre-deployed keys, a persistent primary) take no slot while idle, but
  the TPM loads them into a free slot for each command, so the current request reserves one.
* A TPM reset behind the worker's back (swtpm restarted: its TCTI reconnects silently) shows
  up as a stale handle: a command naming an object the TPM no longer has, or a new object
  receiving the handle of one we believe loaded. Either raises :class:`StaleHandles`; the
  worker then forgets every loaded object and retries the request once.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_RC
from tpm2_pytss.types import TPM2B_PRIVATE, TPM2B_PUBLIC

from cryptostack_core.sdk import CryptoError, ErrorCode

from .keys import BLOB, EXTERNAL, PERSISTENT, KeyRef

log = logging.getLogger("cryptostack.tpm2.worker")

PRIMARY = 0
_MAX_ENTRIES = 4096  # saved contexts kept in worker memory; beyond, the oldest go

_REFERENCE_ERRORS = frozenset(int(getattr(TPM2_RC, f"REFERENCE_H{i}")) for i in range(7))


class StaleHandles(Exception):
    """The TPM no longer holds objects the table believed loaded (it was reset)."""


def is_stale_error(exc: TSS2_Exception) -> bool:
    """True for TPM errors that mean "that handle names no loaded object"."""
    error = int(exc.error)
    return error in _REFERENCE_ERRORS or (error == int(TPM2_RC.HANDLE) and exc.handle != 0)


@dataclass
class _Entry:
    kind: str  # "primary", "key" or "sequence"
    handle: Any = None  # ESYS_TR while loaded (or, for persistent objects, always)
    tpm_handle: int = 0  # TPM handle value while loaded (reset detection)
    saved: Any = None  # TPMS_CONTEXT of an evicted transient object
    ref: KeyRef | None = None
    persistent: bool = False
    lost: bool = False  # a sequence whose state the TPM dropped


class ObjectTable:
    """Loaded and evicted TPM objects of one worker (single-threaded)."""

    def __init__(
        self, ectx: Any, capacity: int, create_primary: Callable[[], Any], persistent_primary: int | None
    ) -> None:
        self._ectx = ectx
        self.capacity = max(1, capacity)
        self._create_primary = create_primary
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # every entry, LRU order
        self._loaded: OrderedDict[int, None] = OrderedDict()  # loaded transient ones, LRU
        self._in_use: set[int] = set()
        self._seq_ids = itertools.count(-1, -1)
        self._entries[PRIMARY] = _Entry("primary")
        self._persistent_primary = persistent_primary
        self.loads = 0  # TPM2_Load/LoadExternal/ContextLoad/CreatePrimary issued
        self.evictions = 0

    # --- accounting ------------------------------------------------------------------
    def _slots_used(self) -> int:
        # Persistent objects in use count too: the TPM loads them for the command.
        persistent = sum(1 for i in self._in_use if i in self._entries and self._entries[i].persistent)
        return len(self._loaded) + persistent

    def make_room(self, needed: int) -> None:
        """Evict until ``needed`` more transient objects fit."""
        while self._slots_used() + needed > self.capacity:
            victim = next((i for i in self._loaded if i not in self._in_use), None)
            if victim is None:
                raise CryptoError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"TPM has too few object slots ({self.capacity}) for this command",
                )
            self._evict(victim, self._entries[victim])

    def _evict(self, entry_id: int, e: _Entry) -> None:
        if e.saved is None or e.kind == "sequence":
            e.saved = self._ectx.context_save(e.handle)
        self._ectx.flush_context(e.handle)
        self._unloaded(entry_id, e)
        self.evictions += 1

    def _unloaded(self, entry_id: int, e: _Entry) -> None:
        e.handle, e.tpm_handle = None, 0
        self._loaded.pop(entry_id, None)

    def evict_idle(self) -> None:
        """Evict everything the current request does not use (after OBJECT_MEMORY)."""
        for entry_id in [i for i in self._loaded if i not in self._in_use]:
            self._evict(entry_id, self._entries[entry_id])

    def _register(self, entry_id: int, e: _Entry, handle: Any) -> Any:
        """Record a newly loaded object; detect a TPM that silently lost our objects."""
        tpm_handle = int(self._ectx.tr_get_tpm_handle(handle))
        clash = any(self._entries[i].tpm_handle == tpm_handle for i in self._loaded if i != entry_id)
        self.loads += 1
        if clash:
            # Only a reset TPM reissues a handle we hold: everything else we hold is gone.
            try:
                self._ectx.flush_context(handle)
            except TSS2_Exception:
                pass
            raise StaleHandles(f"TPM handle 0x{tpm_handle:08x} was reissued")
        e.handle, e.tpm_handle = handle, tpm_handle
        self._loaded[entry_id] = None
        return handle

    # --- use -------------------------------------------------------------------------
    def _touch(self, entry_id: int) -> _Entry:
        e = self._entries[entry_id]
        self._entries.move_to_end(entry_id)
        if entry_id in self._loaded:
            self._loaded.move_to_end(entry_id)
        self._in_use.add(entry_id)
        return e

    def primary(self) -> Any:
        """ESYS_TR of the storage primary key, loaded."""
        e = self._touch(PRIMARY)
        if e.handle is not None:
            return e.handle
        if self._persistent_primary is not None:
            e.persistent = True
            e.handle = self._ectx.tr_from_tpmpublic(self._persistent_primary)
            return e.handle
        self.make_room(1)
        if e.saved is not None:
            try:
                return self._register(PRIMARY, e, self._ectx.context_load(e.saved))
            except TSS2_Exception:
                e.saved = None  # TPM reset since: recreate
        return self._register(PRIMARY, e, self._create_primary())

    def release_primary(self) -> None:
        """The current request no longer needs the primary: it may be evicted."""
        self._in_use.discard(PRIMARY)

    def key(self, ref: KeyRef) -> Any:
        """ESYS_TR of the key ``ref`` names, loaded (from cache, saved context or blobs)."""
        e = self._entries.get(ref.key_id)
        if e is None:
            e = _Entry("key", ref=ref)
            self._entries[ref.key_id] = e
            self._trim()
        self._touch(ref.key_id)
        if e.handle is not None:
            return e.handle
        if ref.source == PERSISTENT:
            return self._persistent(ref, e)
        if e.saved is not None:
            self.make_room(1)
            try:
                return self._register(ref.key_id, e, self._ectx.context_load(e.saved))
            except TSS2_Exception as exc:
                if is_stale_error(exc):
                    raise
                e.saved = None
        public = TPM2B_PUBLIC.unmarshal(ref.public)[0]
        if ref.source == BLOB:
            assert ref.private is not None
            parent_was_in_use = PRIMARY in self._in_use
            parent = self.primary()
            self.make_room(1)
            private = TPM2B_PRIVATE.unmarshal(ref.private)[0]
            handle = self._register(ref.key_id, e, self._ectx.load(parent, private, public))
            if not parent_was_in_use:
                self.release_primary()  # only needed for the Load
            return handle
        if ref.source == EXTERNAL:
            self.make_room(1)
            return self._register(ref.key_id, e, self._ectx.load_external(public, None, ESYS_TR.NULL))
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"unknown key source {ref.source!r}")

    def _persistent(self, ref: KeyRef, e: _Entry) -> Any:
        assert ref.handle is not None
        try:
            handle = self._ectx.tr_from_tpmpublic(ref.handle)
        except TSS2_Exception as exc:
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND, f"no key at TPM persistent handle 0x{ref.handle:08x}: {exc}"
            ) from None
        expected = bytes(TPM2B_PUBLIC.unmarshal(ref.public)[0].get_name())
        if bytes(self._ectx.tr_get_name(handle)) != expected:
            self._ectx.tr_close(handle)
            raise CryptoError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"TPM persistent handle 0x{ref.handle:08x} now holds another key",
            )
        e.handle, e.persistent = handle, True
        self.make_room(0)  # the TPM loads it into a slot for the command
        return handle

    def new_sequence(self, start: Callable[[], Any]) -> int:
        """Start a sequence object with ``start()`` in a free slot; return its entry id."""
        self.make_room(1)
        seq_id = next(self._seq_ids)
        e = _Entry("sequence")
        self._entries[seq_id] = e
        self._in_use.add(seq_id)
        self._register(seq_id, e, start())
        self._trim()
        return seq_id

    def sequence(self, seq_id: int) -> Any:
        """ESYS_TR of an open sequence, reloaded from its saved context if evicted."""
        e = self._entries.get(seq_id)
        if e is None or e.lost:
            raise CryptoError(
                ErrorCode.CONTEXT_IN_ERROR_STATE,
                "the TPM lost this hash/MAC sequence (TPM reset or too many "
                "open sequences); reset the context",
            )
        self._touch(seq_id)
        if e.handle is None:
            self.make_room(1)
            try:
                handle = self._ectx.context_load(e.saved)
            except TSS2_Exception as exc:
                e.lost = True
                raise CryptoError(
                    ErrorCode.CONTEXT_IN_ERROR_STATE, f"the TPM refused this sequence's saved state: {exc}"
                ) from None
            e.saved = None
            self._register(seq_id, e, handle)
        return e.handle

    def sequence_finished(self, seq_id: int) -> None:
        """Forget a sequence that SequenceComplete consumed (the TPM flushed it, and ESAPI
        freed its ESYS_TR)."""
        self._entries.pop(seq_id, None)
        self._loaded.pop(seq_id, None)
        self._in_use.discard(seq_id)

    # --- cleanup ---------------------------------------------------------------------
    def end_request(self) -> None:
        """Unpin what the finished request used."""
        self._in_use.clear()

    def drop(self, entry_id: int) -> None:
        """Flush and forget one key or sequence (released by the provider)."""
        if entry_id == PRIMARY:
            return
        e = self._entries.pop(entry_id, None)
        self._loaded.pop(entry_id, None)
        if e is None or e.handle is None:
            return
        if e.persistent:
            self._close_tr(e.handle)
            return
        try:
            self._ectx.flush_context(e.handle)
        except TSS2_Exception as exc:
            # Already gone (TPM reset) or the TPM is failing: either way, forget it.
            log.debug("flush of entry %d failed: %s", entry_id, exc)

    def invalidate(self) -> None:
        """The TPM lost its transient objects: forget handles and saved contexts (they
        belong to the previous TPM epoch). Sequences are marked lost."""
        for e in self._entries.values():
            if e.handle is not None:
                self._close_tr(e.handle)
            e.handle, e.tpm_handle, e.saved = None, 0, None
            if e.kind == "sequence":
                e.lost = True
        self._loaded.clear()
        self._in_use.clear()

    def flush_all(self) -> None:
        """Flush every loaded transient object (worker shutdown)."""
        for entry_id in list(self._entries):
            try:
                self.drop(entry_id)
            except TSS2_Exception:
                pass
        e = self._entries[PRIMARY]
        if e.handle is not None and not e.persistent:
            try:
                self._ectx.flush_context(e.handle)
            except TSS2_Exception:
                pass
            self._unloaded(PRIMARY, e)

    def _close_tr(self, handle: Any) -> None:
        try:
            self._ectx.tr_close(handle)
        except TSS2_Exception:
            pass

    def _trim(self) -> None:
        """Bound the table: drop the least recently used idle entries beyond the limit."""
        while len(self._entries) > _MAX_ENTRIES:
            victim = next((i for i in self._entries if i != PRIMARY and i not in self._in_use), None)
            if victim is None:
                return
            self.drop(victim)
