"""File commands: ``hash``, ``encrypt``, ``decrypt``, ``sign``, ``verify``.

Each streams its input (a file, or stdin for ``-``) through a daemon context in pieces, so
a file of any size goes through in bounded memory; keys stay in the daemon. Encryption is
the streaming AEAD (docs/streaming-aead.md: Tink's AES-GCM-HKDF format, so Tink opens it);
signing and verifying feed a sign or verify context.
"""

from __future__ import annotations

import binascii
import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import click

from cryptostack_core.cli.connection import connect, endpoint_options
from cryptostack_core.cli.output import Output, explained, fail, json_option
from cryptostack_core.cli.streams import FileProgress, Sink, Source, progress_for
from cryptostack_core.client.contexts.hash import HashContextConfig
from cryptostack_core.client.contexts.sign import SignContextConfig, VerifyContextConfig
from cryptostack_core.client.contexts.streaming import StreamingAeadContextConfig
from cryptostack_core.client.stack import CryptoContext
from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmKind
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CipherDirection, CryptoResourceId, ResourceType

P = ParamSpec("P")
R = TypeVar("R")

STREAMING_DEFAULT_SEGMENT = "1MB"
SIGNATURE_LIMIT = 1024 * 1024
"""Larger than any signature or tag (SLH-DSA's largest is under 50 KB)."""


def progress_option(command: Callable[P, R]) -> Callable[P, R]:
    """``--progress/--no-progress`` (default: a bar when stderr is a terminal and the input
    is large or stdin)."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Show a progress bar on stderr (default: for inputs of 16 MiB "
        "or more, or stdin, when stderr is a terminal).",
    )(command)


def key_option(command: Callable[P, R]) -> Callable[P, R]:
    """``--key SLOT``."""
    return click.option(
        "--key",
        "-k",
        "slot",
        required=True,
        metavar="SLOT",
        help="The key slot whose key is used ('cryptostack key list').",
    )(command)


def _file_argument(command: Callable[P, R]) -> Callable[P, R]:
    return click.argument("file", metavar="FILE")(command)


def _output_options(command: Callable[P, R]) -> Callable[P, R]:
    command = click.option("--force", "-f", is_flag=True, help="Replace the output file if it exists.")(
        command
    )
    return click.option(
        "--output",
        "-o",
        default="-",
        show_default=True,
        metavar="FILE",
        help="Where to write; - is stdout (not a terminal).",
    )(command)


@contextlib.contextmanager
def _maybe(progress: FileProgress | None) -> Iterator[FileProgress | None]:
    if progress is None:
        yield None
        return
    with progress:
        yield progress


def _slot(ctx: CryptoContext, name: str) -> tuple[CryptoResourceId, str]:
    """The slot's id and the type of the key it holds (or is declared for)."""
    slot = ctx.resolve_resource(name, ResourceType.KEY_SLOT)
    info = ctx.create_key_management_context().get_key_slot_info(slot)
    if info.algorithm is None:
        fail(f"key slot {name!r} declares no key type", "give --algorithm")
    return slot, info.algorithm


def _pick(
    key_type: str,
    kinds: tuple[AlgorithmKind, ...],
    what: str,
    prefer: Callable[[str], bool] = lambda name: False,
) -> str:
    """The algorithm of ``kinds`` for a key of ``key_type``: the key type itself when it
    names one (Ed25519, HMAC-SHA-256), else the only (or the preferred) one taking it."""
    spec = REGISTRY.find(key_type)
    if spec is not None and spec.kind in kinds:
        return spec.name
    names = sorted(s.name for s in REGISTRY.specs() if s.kind in kinds and key_type in s.key_algorithms)
    preferred = [n for n in names if prefer(n)]
    if len(preferred) == 1:
        return preferred[0]
    if len(names) == 1:
        return names[0]
    if not names:
        fail(
            f"no {what} algorithm takes {key_type} keys",
            "give --algorithm; 'cryptostack algorithms' lists what the daemon runs",
        )
    fail(
        f"{key_type} keys work with several {what} algorithms: {', '.join(names)}",
        "choose one with --algorithm",
    )


@click.command(name="hash", short_help="Digest of a file, like sha256sum.")
@_file_argument
@click.option(
    "--algorithm",
    "-a",
    default="SHA-256",
    show_default=True,
    help="Hash algorithm (SHA-256, SHA-384, SHA3-256 ...).",
)
@progress_option
@endpoint_options
@json_option
@explained
def hash_command(
    file: str, algorithm: str, progress: bool | None, endpoint: str, timeout: float, json: bool
) -> None:
    """Print the digest of FILE (- for stdin) as 'HEX  FILE', like sha256sum."""
    out = Output(json)
    with connect(endpoint, timeout) as stack, Source(file) as source:
        ctx = stack.create_crypto_context()
        with (
            ctx.create_hash_context(HashContextConfig().set_algorithm(algorithm)) as h,
            _maybe(progress_for("hash", source, progress)) as bar,
        ):
            h.init()
            size = 0
            for block in source.chunks(bar):
                h.update(block)
                size += len(block)
            digest = h.finalize()
            name = h.algorithm
    out.result(
        {"file": file, "algorithm": name, "digest": digest.hex(), "size": size},
        lambda: out.line(f"{digest.hex()}  {file}"),
    )


def _crypt(
    direction: CipherDirection,
    file: str,
    slot_name: str,
    output: str,
    force: bool,
    algorithm: str | None,
    aad: str,
    progress: bool | None,
    endpoint: str,
    timeout: float,
    json: bool,
) -> None:
    out = Output(json)
    if json and output == "-":
        raise click.UsageError("--json prints the result on stdout: give -o FILE for the data")
    verb = "encrypt" if direction is CipherDirection.ENCRYPT else "decrypt"
    with connect(endpoint, timeout) as stack, Source(file) as source:
        ctx = stack.create_crypto_context()
        slot, key_type = _slot(ctx, slot_name)
        if algorithm is None:
            algorithm = _pick(
                key_type,
                (AlgorithmKind.STREAMING_AEAD,),
                "streaming AEAD",
                lambda n: n.endswith(STREAMING_DEFAULT_SEGMENT),
            )
        config = StreamingAeadContextConfig().set_algorithm(algorithm).set_key(slot).set_direction(direction)
        with (
            ctx.create_streaming_aead_context(config) as stream,
            Sink(output, force) as sink,
            _maybe(progress_for(verb, source, progress)) as bar,
        ):
            read = 0
            try:
                stream.init(aad.encode())
                for block in source.chunks(bar):
                    read += len(block)
                    sink.write(stream.update(block))
                sink.write(stream.finalize())
            except CryptoError as exc:
                if (
                    exc.code is not ErrorCode.AUTHENTICATION_FAILED
                    or direction is not CipherDirection.DECRYPT
                ):
                    raise
                sink.discard()
                fail(
                    f"{file} does not decrypt: it was altered or truncated, or made with "
                    f"another key, algorithm or --aad ({exc.message})",
                    "the plaintext already written to stdout is NOT authentic: discard it"
                    if sink.is_stdout
                    else f"nothing was written to {output}",
                )
            sink.commit()
            name = stream.algorithm
            written = sink.written
    summary = {
        "file": file,
        "output": output,
        "key": slot_name,
        "algorithm": name,
        "bytes_in": read,
        "bytes_out": written,
    }

    def text() -> None:
        if output != "-":
            out.line(f"{verb}ed {file} to {output} ({written} bytes) with {slot_name} ({name})")

    out.result(summary, text)


@click.command(short_help="Encrypt a file of any size with a slot's AES key.")
@_file_argument
@key_option
@_output_options
@click.option(
    "--algorithm", "-a", help="Streaming AEAD (default: AES-128/256-GCM-HKDF-1MB for the slot's AES key)."
)
@click.option(
    "--aad", default="", help="Associated data bound to the whole stream (the same must be given to decrypt)."
)
@progress_option
@endpoint_options
@json_option
@explained
def encrypt(
    file: str,
    slot: str,
    output: str,
    force: bool,
    algorithm: str | None,
    aad: str,
    progress: bool | None,
    endpoint: str,
    timeout: float,
    json: bool,
) -> None:
    """Encrypt FILE (- for stdin) with a slot's AES key, streaming: any size in bounded
    memory. The output is Tink's AES-GCM-HKDF streaming format (docs/streaming-aead.md)."""
    _crypt(
        CipherDirection.ENCRYPT, file, slot, output, force, algorithm, aad, progress, endpoint, timeout, json
    )


@click.command(short_help="Decrypt and authenticate what encrypt wrote.")
@_file_argument
@key_option
@_output_options
@click.option(
    "--algorithm",
    "-a",
    help="The streaming AEAD it was encrypted with (default: "
    "AES-128/256-GCM-HKDF-1MB for the slot's AES key).",
)
@click.option("--aad", default="", help="The associated data given to encrypt.")
@progress_option
@endpoint_options
@json_option
@explained
def decrypt(
    file: str,
    slot: str,
    output: str,
    force: bool,
    algorithm: str | None,
    aad: str,
    progress: bool | None,
    endpoint: str,
    timeout: float,
    json: bool,
) -> None:
    """Decrypt FILE (- for stdin), verifying every segment. An output file appears only
    once the whole stream verified; on stdout, a failure at the end means the output
    already written must be discarded (exit 1)."""
    _crypt(
        CipherDirection.DECRYPT, file, slot, output, force, algorithm, aad, progress, endpoint, timeout, json
    )


def _signature_algorithm(key_type: str, given: str | None) -> str:
    if given is not None:
        return given
    return _pick(key_type, (AlgorithmKind.SIGNATURE, AlgorithmKind.MAC), "signature or MAC")


def _context_option(command: Callable[P, R]) -> Callable[P, R]:
    return click.option("--context", default="", help="ML-DSA / SLH-DSA context string (default empty).")(
        command
    )


@click.command(short_help="Sign or MAC a file with a slot's key.")
@_file_argument
@key_option
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    help="Write the raw signature here (- for stdout); default: print it in hex.",
)
@click.option("--force", "-f", is_flag=True, help="Replace the output file if it exists.")
@click.option(
    "--algorithm", "-a", help="Signature or MAC algorithm (default: the one the slot's key type implies)."
)
@_context_option
@progress_option
@endpoint_options
@json_option
@explained
def sign(
    file: str,
    slot: str,
    output: str | None,
    force: bool,
    algorithm: str | None,
    context: str,
    progress: bool | None,
    endpoint: str,
    timeout: float,
    json: bool,
) -> None:
    """Sign (or MAC) FILE (- for stdin) with a slot's key."""
    out = Output(json)
    if json and output == "-":
        raise click.UsageError("--json prints the result on stdout: give -o FILE")
    with connect(endpoint, timeout) as stack, Source(file) as source:
        ctx = stack.create_crypto_context()
        slot_id, key_type = _slot(ctx, slot)
        config = (
            SignContextConfig()
            .set_algorithm(_signature_algorithm(key_type, algorithm))
            .set_key(slot_id)
            .set_context(context.encode())
        )
        with ctx.create_sign_context(config) as signer, _maybe(progress_for("sign", source, progress)) as bar:
            signer.init()
            for block in source.chunks(bar):
                signer.update(block)
            signature = signer.sign_finalize()
            name = signer.algorithm
    if output is not None:
        with Sink(output, force) as sink:
            sink.write(signature)
            sink.commit()

    def text() -> None:
        if output is None:
            out.line(signature.hex())
        elif output != "-":
            out.note(f"signed {file} with {slot} ({name}): {len(signature)} bytes in {output}")

    out.result(
        {"file": file, "key": slot, "algorithm": name, "signature": signature.hex(), "output": output}, text
    )


@click.command(short_help="Check a file's signature or MAC (exit 1 if bad).")
@_file_argument
@key_option
@click.option("--signature", "-s", "signature_file", metavar="FILE", help="File holding the raw signature.")
@click.option("--signature-hex", metavar="HEX", help="The signature in hex.")
@click.option(
    "--algorithm", "-a", help="Signature or MAC algorithm (default: the one the slot's key type implies)."
)
@_context_option
@progress_option
@endpoint_options
@json_option
@explained
def verify(
    file: str,
    slot: str,
    signature_file: str | None,
    signature_hex: str | None,
    algorithm: str | None,
    context: str,
    progress: bool | None,
    endpoint: str,
    timeout: float,
    json: bool,
) -> None:
    """Verify the signature (or MAC) of FILE (- for stdin) with a slot's key. Exit 0 when
    it is valid, 1 when it is not."""
    out = Output(json)
    if (signature_file is None) == (signature_hex is None):
        raise click.UsageError("give the signature with one of --signature FILE or --signature-hex HEX")
    if signature_hex is not None:
        try:
            signature = binascii.unhexlify(signature_hex.strip())
        except (binascii.Error, ValueError):
            raise click.BadParameter("not hex", param_hint="--signature-hex") from None
    else:
        assert signature_file is not None
        if signature_file == "-" and file == "-":
            raise click.UsageError("FILE and --signature cannot both be stdin")
        with Source(signature_file) as sig_source:
            signature = sig_source.read_all(SIGNATURE_LIMIT, "signature")
    with connect(endpoint, timeout) as stack, Source(file) as source:
        ctx = stack.create_crypto_context()
        slot_id, key_type = _slot(ctx, slot)
        config = (
            VerifyContextConfig()
            .set_algorithm(_signature_algorithm(key_type, algorithm))
            .set_key(slot_id)
            .set_context(context.encode())
        )
        with (
            ctx.create_verify_context(config) as verifier,
            _maybe(progress_for("verify", source, progress)) as bar,
        ):
            verifier.init()
            for block in source.chunks(bar):
                verifier.update(block)
            valid = verifier.verify_finalize(signature)
            name = verifier.algorithm
    result: dict[str, Any] = {"file": file, "key": slot, "algorithm": name, "valid": valid}
    if not valid:
        if json:
            out.result(result)
            raise click.exceptions.Exit(1)
        fail(
            f"{file}: the {name} signature does NOT verify with {slot}",
            "the file or the signature was altered, or it was made with another key, algorithm or --context",
        )
    out.result(result, lambda: out.line(f"{file}: signature OK ({name}, key {slot})"))
