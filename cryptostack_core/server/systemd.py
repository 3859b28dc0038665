"""systemd integration without a new dependency: readiness notification and socket
activation, the two small protocols of sd_notify(3) and sd_listen_fds(3).

* **Notification**: when ``$NOTIFY_SOCKET`` names a unix datagram socket (a path, or an
  abstract name written ``@name``), the daemon sends newline-separated ``KEY=value``
  assignments there: ``READY=1`` once its socket serves, ``RELOADING=1`` /``READY=1``
  around a SIGHUP reload, ``STOPPING=1`` at shutdown, ``STATUS=...`` for humans.
* **Socket activation**: when ``$LISTEN_PID`` is our pid and ``$LISTEN_FDS`` is N, file
  descriptors 3 .. 3+N-1 are sockets systemd (or ``systemd-socket-activate``) already
  bound and listens on; the daemon serves the first unix stream socket among them.

Both sets of variables are removed from the environment once read, so worker processes the
providers start do not inherit them (a worker must not notify or take over the socket).
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

LISTEN_FDS_START = 3
"""The first file descriptor systemd passes (SD_LISTEN_FDS_START)."""


class Notifier:
    """Sends sd_notify messages; does nothing when the daemon was not started by systemd."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Take ``$NOTIFY_SOCKET`` (and remove it, so child processes do not see it)."""
        env = os.environ if environ is None else environ
        return cls(env.pop("NOTIFY_SOCKET", None) or None)

    @property
    def enabled(self) -> bool:
        """True when there is a notification socket."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines; False (never an exception) when it could not be sent."""
        address = self.address
        if not address or address[0] not in "/@":
            return False  # vsock and other address families are not supported
        target = "\0" + address[1:] if address[0] == "@" else address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall("\n".join(assignments).encode())
        except OSError:
            return False
        return True


def listen_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets passed by socket activation (empty when there are none, or when they were
    meant for another process), made non-inheritable; the variables are removed."""
    env = os.environ if environ is None else environ
    pid, count = env.pop("LISTEN_PID", ""), env.pop("LISTEN_FDS", "")
    env.pop("LISTEN_FDNAMES", None)
    if not (pid.isdigit() and count.isdigit()) or int(pid) != os.getpid():
        return []
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def unix_stream_listener(sockets: list[socket.socket]) -> socket.socket | None:
    """The first listening unix stream socket among ``sockets``."""
    for sock in sockets:
        if (
            sock.family == socket.AF_UNIX
            and sock.type == socket.SOCK_STREAM
            and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        ):
            return sock
    return None
