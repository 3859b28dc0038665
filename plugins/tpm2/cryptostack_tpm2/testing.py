"""Test support for the TPM2 provider: real swtpm simulators.

:class:`Swtpm` runs one ``swtpm socket --tpm2`` on free loopback ports with a private
state directory. Readiness and the orderly shutdown talk raw TPM commands over the server
socket (with timeouts), so nothing hangs on a simulator that is busy with another client:
swtpm serves one connection at a time, hence one provider (or daemon) per simulator at a
time. Stopping sends TPM2_Shutdown(CLEAR) first, so the simulator's dictionary-attack logic
sees an orderly shutdown.

:func:`direct_esapi` opens a tpm2-pytss ESAPI connection of the caller's own (provisioning
steps in tests; no provider may be connected meanwhile).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["SWTPM", "Swtpm", "direct_esapi", "free_port_pair"]

SWTPM = shutil.which("swtpm")
_GET_RANDOM_8 = struct.pack(">HIIH", 0x8001, 12, 0x17B, 8)
_SHUTDOWN_CLEAR = struct.pack(">HIIH", 0x8001, 12, 0x145, 0)


def free_port_pair() -> int:
    """A free port P with P+1 free too: the swtpm TCTI finds the control port at P+1."""
    while True:
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port


class Swtpm:
    """One ``swtpm socket --tpm2`` process on loopback ports with its own state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state_dir = directory / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port_pair()
        self.ctrl_port = self.port + 1
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        """TCTI string for tpm2-pytss / the provider."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def _command(self, command: bytes, timeout: float = 2.0) -> int:
        """Send one raw TPM command; return its response code."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(command)
            header = b""
            while len(header) < 10:
                chunk = s.recv(10 - len(header))
                if not chunk:
                    raise ConnectionError("swtpm closed the connection")
                header += chunk
            _tag, size, rc = struct.unpack(">HII", header)
            left = size - 10
            while left > 0:
                left -= len(s.recv(left))
            return int(rc)

    def start(self, timeout: float = 10.0) -> Swtpm:
        """Start and wait until a TPM command is answered."""
        assert SWTPM, "swtpm is not installed"
        for _attempt in range(5):
            log = open(self.directory / "swtpm.log", "ab")  # noqa: SIM115 - owned by Popen
            self.proc = subprocess.Popen(
                [
                    SWTPM,
                    "socket",
                    "--tpm2",
                    "--server",
                    f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                    "--ctrl",
                    f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1",
                    "--tpmstate",
                    f"dir={self.state_dir}",
                    "--flags",
                    "not-need-init,startup-clear",
                ],
                stdout=log,
                stderr=log,
            )
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if self._command(_GET_RANDOM_8, timeout=1.0) == 0:
                        return self
                except OSError:
                    time.sleep(0.01)
            if self.proc.poll() is None:
                self.proc.kill()
                raise RuntimeError(f"swtpm on port {self.port} did not answer")
            # Exited at once: a port was taken meanwhile; retry on new ports.
            self.port = free_port_pair()
            self.ctrl_port = self.port + 1
        raise RuntimeError("swtpm would not start")

    def stop(self, orderly: bool = True) -> None:
        """TPM2_Shutdown(CLEAR) (when ``orderly``), then SIGTERM."""
        if self.proc is None:
            return
        if orderly and self.proc.poll() is None:
            try:
                self._command(_SHUTDOWN_CLEAR)
            except OSError:
                pass  # busy with another client or gone: the lockout reset covers it
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, no orderly shutdown."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def restart(self, orderly: bool = True) -> None:
        """Stop and start again on the same ports and state directory."""
        if orderly:
            self.stop()
        else:
            self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the TPM stops answering mid-command (a wedged device)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def direct_esapi(sim: Swtpm) -> Iterator[Any]:
    """A tpm2-pytss ESAPI connection of the test itself (no provider may be connected)."""
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    from tpm2_pytss import ESAPI

    ectx = ESAPI(sim.tcti)
    try:
        yield ectx
    finally:
        ectx.close()
