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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pluggy

PROJECT = "cryptostack"
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
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)


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
        self._file: Any = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if group is None else 0o640
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW, mode)
            try:
                before = os.fstat(fd)
                if group is not None and before.st_gid != group:
                    os.fchown(fd, -1, group)
                if stat.S_IMODE(before.st_mode) != mode:  # the umask, or an older daemon
                    os.fchmod(fd, mode)
                    if before.st_size:
                        self._log.warning("audit log %s was mode %o; now %o", path,
                                          stat.S_IMODE(before.st_mode), mode)
            except BaseException:
                os.close(fd)
                raise
            self._file = open(fd, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    @hookimpl
    def cryptostack_audit(self, event: AuditEvent) -> None:
        self._log.info("%s %s uid=%d pid=%d provider=%s result=%s", event.action,
                       event.resource, event.client.uid, event.client.pid, event.provider,
                       event.result)
        if self._file is not None:
            with self._lock:
                self._file.write(event.to_json() + "\n")

    def close(self) -> None:
        """Close the audit file."""
        if self._file is not None:
            self._file.close()
            self._file = None

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
            old.close()


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the specs, the default policy and installed hook plugins."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    pm.register(DefaultAccessPolicy(), name="default-access-policy")
    if load_entry_points:
        pm.load_setuptools_entrypoints("cryptostack.hooks")
    return pm
