"""Cross-cutting hooks (pluggy): audit, access decisions, metrics.

This is the one documented extension seam besides providers. A hook plugin is a plain
module or object with functions marked ``@cryptostack_core.hooks.hookimpl``, registered
through the entry-point group ``cryptostack.hooks`` (or ``Service.plugin_manager.register``)::

    from cryptostack_core.server.hooks import hookimpl

    @hookimpl
    def cryptostack_audit(event):
        print(event.action, event.client.uid, event.result)
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

PROJECT = "cryptostack"
_JSON = json.JSONEncoder().encode
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a connection (from SO_PEERCRED; the process itself in-process)."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class AuditEvent:
    """One key use or key-management change. Never carries secret bytes."""

    action: str  # "key.generate", "key.use", "key.transfer", "key.persist", "key.export" ...
    client: PeerIdentity
    resource: str  # slot name, "key#<handle>", certificate subject ...
    result: str  # "ok" or an ErrorCode name
    provider: int | None = None
    algorithm: str | None = None
    operation: str | None = None
    detail: str = ""
    time: float = field(default_factory=time.time)
    providers: tuple[int, ...] = ()
    """Every provider involved when there are several: both halves of a hybrid key split
    across providers (``provider`` is then the pq half's); empty otherwise."""

    def to_json(self) -> str:
        """One JSON line (keys sorted, as ``json.dumps(asdict(event), sort_keys=True)``)."""
        client = self.client
        # Built by hand in sorted key order: asdict() deep-copies and sorting costs more than
        # the rest of an audited request.
        return _JSON(
            {
                "action": self.action,
                "algorithm": self.algorithm,
                "client": {"gid": client.gid, "pid": client.pid, "uid": client.uid},
                "detail": self.detail,
                "operation": self.operation,
                "provider": self.provider,
                "providers": list(self.providers),
                "resource": self.resource,
                "result": self.result,
                "time": self.time,
            }
        )


@dataclass(frozen=True)
class AccessRequest:
    """A question to the access policy: may ``client`` do ``action`` on ``resource``?

    ``action`` is ``"use"`` (create a context / load), ``"mutate"`` (persist, replace, clear)
    or ``"export"``.
    """

    client: PeerIdentity
    action: str
    resource_type: str
    resource_name: str
    daemon_uid: int
    allowed_uids: tuple[int, ...] | None = None
    """The config's allow-list for this resource and action (None: not configured)."""


class HookSpecs:
    """The hook specifications."""

    @hookspec
    def cryptostack_audit(self, event: AuditEvent) -> None:
        """Record an audit event (every key use and key-management change)."""

    @hookspec(firstresult=True)
    def cryptostack_access_decision(self, request: AccessRequest) -> bool | None:
        """Allow (True) or deny (False); None defers to the next implementation."""

    @hookspec
    def cryptostack_metric(self, name: str, value: float, labels: dict[str, str]) -> None:
        """Observe a measurement (request latency, provider restarts...)."""


class DefaultAccessPolicy:
    """The built-in policy, consulted last.

    ``use``: allowed unless the resource has an allow-list that excludes the uid.
    ``mutate``/``export`` of a configured resource: the allow-list if configured, else only
    the daemon's own uid (and root) may do it.
    """

    @hookimpl(trylast=True)
    def cryptostack_access_decision(self, request: AccessRequest) -> bool:
        uid = request.client.uid
        if request.allowed_uids is not None:
            return uid in request.allowed_uids
        if request.action == "use":
            return True
        return uid in (0, request.daemon_uid)


class AuditLogger:
    """Writes audit events to the ``cryptostack.audit`` logger and optionally a JSON-lines file.

    The file is the daemon's own: mode 0600, or 0640 with group ``group`` (a gid) when an
    auditors' group should read it. A file left with looser permissions is tightened.
    """

    def __init__(self, path: Path | None = None, group: int | None = None) -> None:
        self._log = logging.getLogger("cryptostack.audit")
        self._path = path
        self._group = group
        self._lock = threading.Lock()
        self._file: int | None = None
        """The audit file's descriptor: one ``write(2)`` per event (no user-space buffer, so
        a daemon that crashes loses no event it has answered for)."""
        self._heads: dict[tuple[Any, ...], str] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if group is None else 0o640
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
            try:
                before = os.fstat(fd)
                if group is not None and before.st_gid != group:
                    os.fchown(fd, -1, group)
                if stat.S_IMODE(before.st_mode) != mode:  # the umask, or an older daemon
                    os.fchmod(fd, mode)
                    if before.st_size:
                        self._log.warning(
                            "audit log %s was mode %o; now %o", path, stat.S_IMODE(before.st_mode), mode
                        )
            except BaseException:
                os.close(fd)
                raise
            self._file = fd

    @hookimpl
    def cryptostack_audit(self, event: AuditEvent) -> None:
        self.record(
            event.action,
            event.client,
            event.resource,
            event.result,
            event.provider,
            event.algorithm,
            event.operation,
            event.detail,
            event.time,
            event.providers,
        )

    def record(
        self,
        action: str,
        client: PeerIdentity,
        resource: str,
        result: str,
        provider: int | None = None,
        algorithm: str | None = None,
        operation: str | None = None,
        detail: str = "",
        when: float | None = None,
        providers: tuple[int, ...] = (),
    ) -> None:
        """Write one event (what the hook does; the service calls it directly when this
        logger is the only audit hook, without building an :class:`AuditEvent`)."""
        fd = self._file
        # With an audit file, that file is the trail: a successful key use is only a debug
        # line in the daemon's log (formatting a log line costs more than the operation).
        # Without one, the log is the trail and every event is logged at INFO.
        level = logging.DEBUG if fd is not None and result == "ok" and action == "key.use" else logging.INFO
        if self._log.isEnabledFor(level):
            self._log.log(
                level,
                "%s %s uid=%d pid=%d provider=%s result=%s",
                action,
                resource,
                client.uid,
                client.pid,
                provider,
                result,
            )
        if fd is None:
            return
        # Everything but the time repeats from one use of a context to the next: the JSON
        # before it is kept (the keys are sorted, so "time" comes last).
        key = (action, client, resource, result, provider, algorithm, operation, detail, providers)
        head = self._heads.get(key)
        if head is None:
            line = AuditEvent(
                action, client, resource, result, provider, algorithm, operation, detail, 0.0, providers
            ).to_json()
            head = line[: line.rindex('"time": ') + 8]
            if len(self._heads) >= 4096:
                self._heads.clear()
            self._heads[key] = head
        data = f"{head}{time.time() if when is None else when!r}}}\n".encode()
        with self._lock:
            fd = self._file
            if fd is not None:
                _write_all(fd, data)

    def close(self) -> None:
        """Close the audit file."""
        with self._lock:
            fd, self._file = self._file, None
        if fd is not None:
            os.close(fd)

    def reopen(self, path: Path | None) -> None:
        """Switch to a freshly opened file at ``path`` (the same path after log rotation).

        The new file is opened exactly as at start (a fresh logger's ``__init__``); events
        written meanwhile go to the old file until the switch.
        """
        fresh = type(self)(path, self._group)
        with self._lock:
            old, self._file, self._path = self._file, fresh._file, path
            fresh._file = None
        if old is not None:
            os.close(old)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the specs, the default policy and installed hook plugins."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    pm.register(DefaultAccessPolicy(), name="default-access-policy")
    if load_entry_points:
        pm.load_setuptools_entrypoints("cryptostack.hooks")
    return pm
