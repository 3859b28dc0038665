"""Helpers for the trust-boundary tests: raw wire clients, fd passing, other uids, daemon memory.

``tests/`` is not a package: test modules put this directory on ``sys.path`` and import it
as ``secutil`` (the scripts run as another uid do the same).
"""

from __future__ import annotations

import array
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import cbor2

HEADER = struct.Struct(">I")


class RawClient:
    """Speaks the wire protocol by hand, to send what a real client never would."""

    def __init__(self, path: str | Path, hello: bool = True, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self.hello_reply: dict[str, Any] | None = None
        if hello:
            self.send({"hello": {"versions": [1], "client": "raw-test"}})
            self.hello_reply = self.recv()
            assert self.hello_reply["hello"]["version"] == 1, self.hello_reply

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def frame(message: Any) -> bytes:
        body = cbor2.dumps(message)
        return HEADER.pack(len(body)) + body

    def send(self, message: Any) -> None:
        self.send_raw(self.frame(message))

    def send_body(self, body: bytes) -> None:
        self.send_raw(HEADER.pack(len(body)) + body)

    def send_with_fds(self, message: Any, fds: list[int]) -> None:
        """One frame whose first byte carries ``fds`` (SCM_RIGHTS)."""
        data = self.frame(message)
        sent = self.sock.sendmsg(
            [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        )
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def recv(self, max_frame: int = 1 << 31) -> dict[str, Any]:
        while True:
            if len(self.buf) >= 4:
                (size,) = HEADER.unpack(self.buf[:4])
                assert size <= max_frame, f"reply of {size} bytes"
                if len(self.buf) >= 4 + size:
                    body, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
                    result: dict[str, Any] = cbor2.loads(body)
                    return result
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def request(self, op: str, args: Any, request_id: int = 1, **extra: Any) -> dict[str, Any]:
        self.send({"id": request_id, "op": op, "args": args, **extra})
        return self.recv()

    def closed(self, timeout: float = 10.0) -> bool:
        """True once the daemon closed the connection (reads and drops anything before)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sealed_memfd(data: bytes, size: int | None = None, seal: bool = True) -> int:
    """A memfd holding ``data`` (zero-padded to ``size``), sealed against writes and resizing."""
    fd = os.memfd_create("cryptostack-shm", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size if size is not None else len(data))
    os.pwrite(fd, data, 0)
    if seal:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def attach_and_send(raw: RawClient, fd: int, size: int, message: dict[str, Any]) -> dict[str, Any]:
    """Offer ``fd`` as this connection's shared memory and send ``message`` with it.

    Speaks both generations of the protocol: the fd-number ``shm.attach`` of protocol
    revisions that opened ``/proc/<pid>/fd/<n>`` (its answer is the attach result; then
    ``message`` is sent plainly), and the SCM_RIGHTS attach step (the answer is
    ``{"ready": true}``; ``message`` then travels with the fd).
    """
    reply = raw.request("shm.attach", {"fd": fd, "size": size}, 900)
    if reply.get("ok") and isinstance(reply.get("result"), dict) and reply["result"].get("ready"):
        raw.send_with_fds(message, [fd])
        return raw.recv()
    if not reply.get("ok"):
        return reply
    raw.send(message)
    return raw.recv()


def daemon_pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def peak_rss(pid: int) -> int:
    """Peak resident set size of a process (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def current_rss(pid: int) -> int:
    """Resident set size of a process (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def timed_ping(path: str | Path, timeout: float = 30.0) -> float:
    """Seconds a fresh connection needs for hello and one ping."""
    started = time.monotonic()
    with RawClient(path, timeout=timeout) as raw:
        reply = raw.request("ping", {})
        assert reply.get("result") == "pong", reply
    return time.monotonic() - started
