"""The ``cryptostack`` command line end to end, as a user runs it: real processes against a
real daemon (the mock provider), results checked against hashlib and pyca ``cryptography``.

The big-file test sends 100 MiB through every file command; the Tink-format ciphertext is
opened with pyca's HKDF and AES-GCM following docs/streaming-aead.md, and the ECDSA signature
checked with pyca against the exported public key.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import cryptostack_core as cs
from cryptostack_core.cli import cli
from cryptostack_core.cli.app import COMMANDS
from cryptostack_core.testing.daemon import DaemonProcess

CLI = [sys.executable, "-m", "cryptostack_core"]
MIB = 1024 * 1024
BIG = 100 * MIB

CONFIG: dict[str, Any] = {
    "daemon": {"allow_test_providers": True},
    "providers": [{"name": "mock", "id": 1}],
    "key_slots": [
        {
            "name": "Files",
            "algorithm": "AES-256",
            "provider": 1,
            "permissions": ["encrypt", "decrypt"],
            "provision": "generate",
        },
        {"name": "Imported", "algorithm": "AES-256", "provider": 1, "permissions": ["encrypt", "decrypt"]},
        {"name": "Signer", "algorithm": "ECDSA-P256", "provider": 1},
        {"name": "Lifecycle", "algorithm": "ECDSA-P256", "provider": 1},
        {"name": "Mac", "algorithm": "HMAC-SHA-256", "provider": 1, "provision": "generate"},
    ],
}


def run(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """``cryptostack ARGS`` in a subprocess; with ``check``, a failure shows its stderr."""
    done = subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, timeout=300, env={**os.environ, **(env or {})}
    )
    if check:
        assert done.returncode == 0, (args, done.returncode, done.stderr.decode())
    return done


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path_factory.mktemp("cli") / "d", CONFIG) as d:
        yield d


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """100 MiB that no two MiB repeat, made from one random MiB; and its SHA-256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    block = bytearray(os.urandom(MIB))
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(BIG // MIB):
            block[:8] = i.to_bytes(8, "big")
            f.write(block)
            digest.update(block)
    return path, digest.digest()


def sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            digest.update(chunk)
    return digest.digest()


def tink_open_with_pyca(ciphertext: Path, key: bytes, aad: bytes, segment: int = MIB) -> bytes:
    """SHA-256 of the plaintext of a Tink AES-GCM-HKDF stream, opened with pyca alone
    (docs/streaming-aead.md: header = size || salt || nonce prefix; per-stream key by HKDF;
    segment i under nonce prefix || i || last)."""
    digest = hashlib.sha256()
    with open(ciphertext, "rb") as f:
        header_size = f.read(1)[0]
        assert header_size == 1 + len(key) + 7
        salt = f.read(len(key))
        prefix = f.read(7)
        aead = AESGCM(HKDF(hashes.SHA256(), len(key), salt, aad).derive(key))
        index = 0
        pending = f.read(segment - header_size)
        while True:
            following = f.read(segment)
            last = not following
            nonce = prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
            digest.update(aead.decrypt(nonce, pending, None))
            if last:
                return digest.digest()
            pending, index = following, index + 1


def test_a_100_mib_file_hashed_encrypted_decrypted_signed_verified(
    daemon: DaemonProcess, big_file: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, expected = big_file
    e = ("--endpoint", daemon.endpoint)
    # hash: the sha256sum line, and the JSON form
    line = run("hash", str(path), *e).stdout.decode()
    assert line == f"{expected.hex()}  {path}\n"
    result = json.loads(run("hash", str(path), "--json", *e).stdout)
    assert result == {"file": str(path), "algorithm": "SHA-256", "digest": expected.hex(), "size": BIG}
    assert (
        run("hash", str(path), "-a", "sha384", *e).stdout.decode().split()[0]
        == hashlib.sha384(path.read_bytes()).hexdigest()
    )
    # encrypt with a known key imported into a slot; pyca opens the stream
    key = os.urandom(32)
    (tmp_path / "aes.key").write_bytes(key)
    run("key", "import", "Imported", str(tmp_path / "aes.key"), *e)
    encrypted = tmp_path / "big.enc"
    summary = json.loads(
        run(
            "encrypt", str(path), "--key", "Imported", "--aad", "backup-7", "-o", str(encrypted), "--json", *e
        ).stdout
    )
    assert summary["algorithm"] == "AES-256-GCM-HKDF-1MB" and summary["bytes_in"] == BIG
    assert summary["bytes_out"] == encrypted.stat().st_size > BIG
    assert tink_open_with_pyca(encrypted, key, b"backup-7") == expected
    # decrypt through the daemon
    decrypted = tmp_path / "big.dec"
    run("decrypt", str(encrypted), "--key", "Imported", "--aad", "backup-7", "-o", str(decrypted), *e)
    assert sha256_file(decrypted) == expected
    decrypted.unlink()
    # sign with a key generated in the daemon; pyca verifies with the exported public key
    run("key", "generate", "Signer", *e)
    signature_file = tmp_path / "big.sig"
    run("sign", str(path), "--key", "Signer", "-o", str(signature_file), *e)
    signature = signature_file.read_bytes()
    pem = run("key", "export-public", "Signer", *e).stdout
    public = serialization.load_pem_public_key(pem)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, expected, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    # verify through the daemon: the good signature, then an altered one
    ok = run("verify", str(path), "--key", "Signer", "--signature", str(signature_file), *e)
    assert b"signature OK" in ok.stdout
    bad = bytearray(signature)
    bad[-1] ^= 1
    refused = run("verify", str(path), "--key", "Signer", "--signature-hex", bad.hex(), *e, check=False)
    assert refused.returncode == 1 and b"does NOT verify" in refused.stderr


def test_stdin_and_stdout_with_dash(daemon: DaemonProcess, tmp_path: Path) -> None:
    e = ("--endpoint", daemon.endpoint)
    data = os.urandom(3 * MIB + 17)
    assert run("hash", "-", *e, stdin=data).stdout.decode() == f"{hashlib.sha256(data).hexdigest()}  -\n"
    sealed = run("encrypt", "-", "--key", "Files", *e, stdin=data).stdout
    assert len(sealed) > len(data)
    assert run("decrypt", "-", "--key", "Files", "-o", "-", *e, stdin=sealed).stdout == data
    signature = run("sign", "-", "--key", "Mac", "-o", "-", *e, stdin=data).stdout
    assert len(signature) == 32  # the raw HMAC-SHA-256 tag on stdout
    (tmp_path / "tag").write_bytes(signature)
    run("verify", "-", "--key", "Mac", "--signature", str(tmp_path / "tag"), *e, stdin=data)
    hex_tag = run("sign", "-", "--key", "Mac", *e, stdin=data).stdout.decode().strip()
    assert bytes.fromhex(hex_tag) == signature
    refused = run("verify", "-", "--key", "Mac", "--signature", "-", *e, stdin=data, check=False)
    assert refused.returncode == 2 and b"cannot both be stdin" in refused.stderr


def test_json_everywhere(daemon: DaemonProcess, tmp_path: Path) -> None:
    e = ("--endpoint", daemon.endpoint)
    (tmp_path / "f").write_bytes(b"some data")
    status = json.loads(run("status", "--json", *e).stdout)
    assert {s["name"] for s in status["key_slots"]} == {s["name"] for s in CONFIG["key_slots"]}
    slots = json.loads(run("key", "list", "--json", *e).stdout)
    assert {s["name"]: s["status"] for s in slots}["Files"] == "OCCUPIED"
    info = json.loads(run("key", "info", "Files", "--json", *e).stdout)
    assert info["algorithm"] == "AES-256" and info["permissions"] == ["encrypt", "decrypt"]
    assert info["version"] >= 1 and isinstance(info["created"], float)
    algorithms = json.loads(run("algorithms", "--json", *e).stdout)
    assert "AES-256-GCM-HKDF-1MB" in {a["name"] for a in algorithms}
    explained = json.loads(
        run("explain", "--algorithm", "sha256", "--operation", "hash", "--json", *e).stdout
    )
    assert [c["taken"] for c in explained] == [True]
    assert json.loads(run("health", "--json", *e).stdout)["healthy"] is True
    check = json.loads(run("check", "--config", str(daemon.config_path), "--json").stdout)
    assert check["ok"] is True and check["problems"] == []
    sealed = tmp_path / "f.enc"
    assert (
        json.loads(
            run("encrypt", str(tmp_path / "f"), "-k", "Files", "-o", str(sealed), "--json", *e).stdout
        )["bytes_in"]
        == 9
    )
    assert (
        json.loads(
            run("decrypt", str(sealed), "-k", "Files", "-o", str(tmp_path / "g"), "--json", *e).stdout
        )["bytes_out"]
        == 9
    )
    signed = json.loads(run("sign", str(tmp_path / "f"), "-k", "Mac", "--json", *e).stdout)
    assert signed["algorithm"] == "HMAC-SHA-256"
    verified = json.loads(
        run(
            "verify", str(tmp_path / "f"), "-k", "Mac", "--signature-hex", signed["signature"], "--json", *e
        ).stdout
    )
    assert verified["valid"] is True
    wrong = run(
        "verify", str(sealed), "-k", "Mac", "--signature-hex", signed["signature"], "--json", *e, check=False
    )
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["valid"] is False
    public = json.loads(run("key", "export-public", "Signer", "--json", *e, check=False).stdout or b"{}")
    assert "public_key" in public or "error" in public  # (Signer may be empty here)
    failed = run("key", "info", "NoSuchSlot", "--json", *e, check=False)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["code"] == "RESOURCE_NOT_FOUND"


def test_key_lifecycle(daemon: DaemonProcess, tmp_path: Path) -> None:
    e = ("--endpoint", daemon.endpoint)
    listed = run("key", "list", *e).stdout.decode()
    row = next(line for line in listed.splitlines() if line.startswith("Lifecycle "))
    assert "EMPTY" in row and "ECDSA-P256" in row
    made = run("key", "generate", "Lifecycle", "--permissions", "sign,verify", *e)
    assert b"generated Lifecycle: ECDSA-P256" in made.stdout and b"version 1" in made.stdout
    again = run("key", "generate", "Lifecycle", *e, check=False)
    assert again.returncode == 1
    assert b"occupied" in again.stderr and b"cryptostack key rotate Lifecycle" in again.stderr
    first = run("key", "export-public", "Lifecycle", "--format", "DER", "-o", str(tmp_path / "v1.der"), *e)
    assert first.stdout == b""
    rotated = json.loads(run("key", "rotate", "Lifecycle", "--json", *e).stdout)
    assert rotated["before"]["version"] == 1 and rotated["after"]["version"] == 2
    assert rotated["after"]["permissions"] == ["sign", "verify", "agree", "derive"]
    second = serialization.load_pem_public_key(run("key", "export-public", "Lifecycle", *e).stdout)
    first_key = serialization.load_der_public_key((tmp_path / "v1.der").read_bytes())
    assert second.public_numbers() != first_key.public_numbers()  # type: ignore[union-attr]
    exists = run(
        "key",
        "export-public",
        "Lifecycle",
        "--format",
        "DER",
        "-o",
        str(tmp_path / "v1.der"),
        *e,
        check=False,
    )
    assert exists.returncode == 1 and b"--force" in exists.stderr
    # import a key pair from PEM (PKCS#8), replacing the generated one
    private = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    refused = run("key", "import", "Lifecycle", str(tmp_path / "k.pem"), *e, check=False)
    assert refused.returncode == 1 and b"--replace" in refused.stderr
    run("key", "import", "Lifecycle", str(tmp_path / "k.pem"), "--replace", *e)
    exported = serialization.load_pem_public_key(run("key", "export-public", "Lifecycle", *e).stdout)
    assert exported.public_numbers() == private.public_key().public_numbers()  # type: ignore[union-attr]
    (tmp_path / "m").write_bytes(b"signed by an imported key")
    signature = bytes.fromhex(run("sign", str(tmp_path / "m"), "-k", "Lifecycle", *e).stdout.decode())
    private.public_key().verify(signature, b"signed by an imported key", ec.ECDSA(hashes.SHA256()))
    info = run("key", "info", "Lifecycle", *e).stdout.decode()
    assert "OCCUPIED" in info and "version" in info and "PRIMARY" in info
    # versions: the rotation kept version 1; retire it (with --yes), then a minimum
    versions = json.loads(run("key", "info", "Lifecycle", "--json", *e).stdout)["versions"]
    assert [(v["version"], v["state"]) for v in versions] == [(1, "ACTIVE"), (2, "ACTIVE"), (3, "PRIMARY")]
    unsure = run("key", "retire", "Lifecycle", "1", *e, check=False)
    assert unsure.returncode == 1 and b"--yes" in unsure.stderr
    retired = json.loads(run("key", "retire", "Lifecycle", "1", "--yes", "--json", *e).stdout)
    assert [v["state"] for v in retired["versions"]] == ["RETIRED", "ACTIVE", "PRIMARY"]
    primary = run("key", "retire", "Lifecycle", "3", "--yes", *e, check=False)
    assert primary.returncode == 1 and b"primary" in primary.stderr
    floor = json.loads(run("key", "minimum", "Lifecycle", "3", "--json", *e).stdout)
    assert floor["min_version"] == 3 and floor["versions"][1]["state"] == "DISABLED"
    # clear: only with --yes
    no = run("key", "clear", "Lifecycle", *e, check=False)
    assert no.returncode == 1 and b"--yes" in no.stderr
    run("key", "clear", "Lifecycle", "--yes", *e)
    empty = json.loads(run("key", "info", "Lifecycle", "--json", *e).stdout)
    assert empty["status"] == "EMPTY"
    rotate_empty = run("key", "rotate", "Lifecycle", *e, check=False)
    assert rotate_empty.returncode == 1 and b"key generate Lifecycle" in rotate_empty.stderr
    bad = run("key", "generate", "Lifecycle", "--permissions", "sign,teleport", *e, check=False)
    assert bad.returncode == 2 and b"teleport" in bad.stderr


def test_a_missing_daemon_says_how_to_reach_one(tmp_path: Path) -> None:
    nowhere = f"unix://{tmp_path}/none.sock"
    for args, env in [
        (("status", "--endpoint", nowhere), {}),
        (("hash", "-", "--endpoint", nowhere), {}),
        (("key", "list"), {"CRYPTOSTACK_ENDPOINT": nowhere}),
    ]:
        done = run(*args, env=env, stdin=b"", check=False)
        err = done.stderr.decode()
        assert done.returncode == 1, err
        assert "CONNECTION_FAILED" in err and nowhere in err
        assert "--endpoint" in err and "CRYPTOSTACK_ENDPOINT" in err
        assert "cryptostack daemon --config" in err
        assert "Traceback" not in err
    assert "came from CRYPTOSTACK_ENDPOINT" in err
    env = {k: v for k, v in os.environ.items() if k != "CRYPTOSTACK_ENDPOINT"}
    default = subprocess.run([*CLI, "status"], capture_output=True, text=True, env=env, timeout=60)
    assert "/run/cryptostack/daemon.sock" in default.stderr
    assert "neither --endpoint nor CRYPTOSTACK_ENDPOINT was given" in default.stderr
    as_json = run("status", "--endpoint", nowhere, "--json", check=False)
    assert json.loads(as_json.stdout)["error"]["code"] == "CONNECTION_FAILED"


def test_bad_arguments_and_failures_are_explained(daemon: DaemonProcess, tmp_path: Path) -> None:
    e = ("--endpoint", daemon.endpoint)
    (tmp_path / "f").write_bytes(b"data")
    cases: list[tuple[tuple[str, ...], int, bytes]] = [
        (("hash",), 2, b"Missing argument 'FILE'"),
        (("hash", str(tmp_path / "nothing"), *e), 1, b"cannot read"),
        (("hash", str(tmp_path / "f"), "-a", "MD5", *e), 1, b"unknown algorithm 'MD5'"),
        (("status", "--timeout", "-1", *e), 2, b"--timeout"),
        (("encrypt", str(tmp_path / "f"), "--key", "NoSuchSlot", *e), 1, b"'cryptostack key list'"),
        (
            ("encrypt", str(tmp_path / "f"), "--key", "Mac", "-o", str(tmp_path / "x"), *e),
            1,
            b"no streaming AEAD algorithm takes HMAC-SHA-256 keys",
        ),
        (
            ("encrypt", str(tmp_path / "f"), "--key", "Files", "-o", str(tmp_path / "f"), *e),
            1,
            b"give --force",
        ),
        (("verify", str(tmp_path / "f"), "--key", "Mac", *e), 2, b"--signature"),
        (("verify", str(tmp_path / "f"), "--key", "Mac", "--signature-hex", "zz", *e), 2, b"not hex"),
        (("encrypt", str(tmp_path / "f"), "--key", "Files", "--json", *e), 2, b"-o FILE"),
        (("frobnicate",), 2, b"No such command"),
        (("key", "info"), 2, b"Missing argument 'SLOT'"),
    ]
    for args, status, phrase in cases:
        done = run(*args, check=False)
        assert done.returncode == status, (args, done.stderr)
        assert phrase in done.stderr, (args, done.stderr)
        assert b"Traceback" not in done.stderr
    # A ciphertext altered near its end: the decryption fails and leaves no output file.
    sealed = run("encrypt", str(tmp_path / "f"), "-k", "Files", *e).stdout
    altered = bytearray(sealed)
    altered[-3] ^= 1
    (tmp_path / "altered").write_bytes(altered)
    out = tmp_path / "plain"
    done = run("decrypt", str(tmp_path / "altered"), "-k", "Files", "-o", str(out), *e, check=False)
    assert done.returncode == 1 and b"does not decrypt" in done.stderr
    assert b"nothing was written" in done.stderr
    assert not out.exists() and not list(tmp_path.glob(".plain.*"))
    wrong_aad = run("decrypt", "-", "-k", "Files", "--aad", "other", *e, stdin=sealed, check=False)
    assert wrong_aad.returncode == 1 and b"NOT authentic" in wrong_aad.stderr


def test_binary_output_is_never_written_to_a_terminal(daemon: DaemonProcess, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [*CLI, "encrypt", str(tmp_path / "f"), "--key", "Files", "--endpoint", daemon.endpoint],
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 1
    assert b"refusing to write binary output to a terminal" in done.stderr
    assert b"-o FILE" in done.stderr


def test_a_forced_progress_bar_reports_the_bytes(daemon: DaemonProcess, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(5 * MIB))
    done = run("hash", str(tmp_path / "f"), "--progress", "--endpoint", daemon.endpoint)
    assert b"hash f " in done.stderr and b"5.2/5.2 MB" in done.stderr
    quiet = run("hash", str(tmp_path / "f"), "--endpoint", daemon.endpoint)
    assert quiet.stderr == b""  # not a terminal: no bar unless asked


def test_the_commands_of_before_keep_their_names_and_options() -> None:
    """Every command and option of the argparse command line still parses."""
    runner = CliRunner()
    for args in (
        ["daemon", "--config", "c.toml", "--log-level", "debug"],
        ["status", "--endpoint", "unix:///x", "--json"],
        ["health", "--endpoint", "unix:///x"],
        ["check", "--config", "c.toml"],
        ["keystore", "backup", "--config", "c.toml", "out"],
        ["keystore", "backup", "--keystore", "k.sqlite3", "out"],
        ["keystore", "verify", "--config", "c.toml"],
        ["keystore", "migrate", "--config", "c.toml", "--drop-invalid"],
        ["keystore", "repair", "--config", "c.toml", "--yes"],
        ["keystore", "reset", "--config", "c.toml", "--yes"],
        [
            "explain",
            "--endpoint",
            "unix:///x",
            "--algorithm",
            "a",
            "--operation",
            "o",
            "--key-slot",
            "s",
            "--provider",
            "1",
            "--json",
        ],
        ["algorithms", "--endpoint", "unix:///x", "--json"],
    ):
        command: click.Command = cli
        context = command.make_context("cryptostack", list(args), resilient_parsing=True)
        name = args[0]
        assert name in COMMANDS
        group = context.command
        assert isinstance(group, click.Group)
        sub = group.get_command(context, name)
        assert sub is not None
        rest = args[1:]
        if isinstance(sub, click.Group):
            sub_ctx = sub.make_context(name, list(rest), parent=context)
            sub = sub.get_command(sub_ctx, rest[0])
            assert sub is not None
            rest = rest[1:]
        sub.make_context(name, list(rest), parent=context)  # raises on an unknown option
    assert (
        runner.invoke(cli, ["--version"], prog_name="cryptostack").output == f"cryptostack {cs.__version__}\n"
    )


def _all_commands() -> Iterator[list[str]]:
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        yield [name]
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                yield [name, sub]


@pytest.mark.parametrize("path", list(_all_commands()), ids=" ".join)
def test_help_is_plain_text_and_names_the_endpoint(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=100, prog_name="cryptostack")
    assert result.exit_code == 0, result.output
    assert "`" not in result.output
    assert "Usage: cryptostack " + " ".join(path) in result.output
    ctx = click.Context(cli)
    command = cli.get_command(ctx, path[0])
    if len(path) == 2:
        assert isinstance(command, click.Group)
        command = command.get_command(ctx, path[1])
    assert command is not None
    if any(p.name == "endpoint" for p in command.params):
        assert "CRYPTOSTACK_ENDPOINT" in result.output and "--endpoint" in result.output


def test_the_top_level_help_names_the_endpoint_and_exit_statuses() -> None:
    text = CliRunner().invoke(cli, ["--help"], terminal_width=100, prog_name="cryptostack").output
    assert "`" not in text and "CRYPTOSTACK_ENDPOINT" in text and "--endpoint" in text
    assert "Exit status" in text
    for name in (
        "hash",
        "encrypt",
        "decrypt",
        "sign",
        "verify",
        "key",
        "algorithms",
        "status",
        "explain",
        "health",
        "check",
        "keystore",
        "daemon",
    ):
        assert f"  {name} " in text


def test_version_and_client_commands_do_not_load_the_server() -> None:
    """Start-up: a command imports only what it needs (the server side is ~100 ms more)."""
    probe = (
        "import sys\n"
        "from cryptostack_core.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "loaded = [m for m in sys.modules if m.startswith(('cryptostack_core.server', "
        "'rich.progress'))]\n"
        "print(code, ' '.join(sorted(loaded)))\n"
    )
    version = subprocess.run(
        [sys.executable, "-c", probe, "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout.splitlines()[-1].strip() == "0", version.stdout
    hashing = subprocess.run(
        [sys.executable, "-c", probe, "hash", "-", "--endpoint", "unix:///nonexistent.sock"],
        capture_output=True,
        text=True,
        input="",
        timeout=60,
    )
    loaded = hashing.stdout.split()
    assert loaded[0] == "1" and not any(m.startswith("cryptostack_core.server") for m in loaded)
