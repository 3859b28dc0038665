"""tpm2 provider latency on a private swtpm, one run: a 64-byte SHA-256 (computed by the TPM)
and an ECDSA-P256 signature of a 64-byte message (hashed in software, signed by the TPM),
through tpm2-pytss ESAPI in this process (the direct library), the provider SDK (calls go to
its worker process: awaited on the worker host's loop, as the daemon does, and from a thread),
and the public API (``inproc://`` and a daemon over its unix socket). The last lines compare
the daemon with the target: direct library + 2.5 x IPC floor.

swtpm serves one client at a time, so the paths take turns on the same simulator, each
closing its connection before the next opens one. Run by ``make bench`` (or
``.venv/bin/python bench/tpm2_latency.py [-n 300]``). Prints medians and p99 in µs with
ratios to the direct library and to the IPC floor.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from cryptostack_tpm2.provider import TPM2Provider
from cryptostack_tpm2.templates import key_template, primary_template
from cryptostack_tpm2.testing import Swtpm, direct_esapi
from latency import LatencyTable, ipc_floor, measure, measure_async

import cryptostack_core as cs
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.sdk import ProviderEnvironment
from cryptostack_core.testing.daemon import DaemonProcess

MESSAGE = b"m" * 64
SHA = "SHA-256 64 B"
SIGN = "ECDSA-P256 sign 64 B"
DIRECT = "tpm2-pytss ESAPI in-process (direct)"
SDK_AWAITED = "provider SDK, awaited on the host's loop"
DAEMON = "API daemon (unix socket)"
TPM2_ID = 4


def direct_rows(table: LatencyTable, sim: Swtpm, n: int) -> None:
    """tpm2-pytss ESAPI on the simulator from this process."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RH, TPM2_ST
    from tpm2_pytss.types import TPMT_SIG_SCHEME, TPMT_TK_HASHCHECK

    with direct_esapi(sim) as ectx:
        table.add(SHA, DIRECT, measure(lambda: ectx.hash(MESSAGE, TPM2_ALG.SHA256, ESYS_TR.NULL), n))
        primary, *_ = ectx.create_primary(None, primary_template("ecc"), ESYS_TR.OWNER)
        private, public, *_ = ectx.create(primary, None, key_template("ECDSA-P256", P.SIGN))
        key = ectx.load(primary, private, public)
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        # An unrestricted key signs any digest with a NULL ticket, as the provider does.
        ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        table.add(
            SIGN, DIRECT, measure(lambda: ectx.sign(key, hashlib.sha256(MESSAGE).digest(), scheme, ticket), n)
        )
        ectx.flush_context(key)
        ectx.flush_context(primary)


def sdk_rows(table: LatencyTable, options: dict[str, Any], state: Path, n: int) -> None:
    """The provider SDK: every call is a round trip to the provider's worker process."""
    state.mkdir()
    provider = TPM2Provider(TPM2_ID, options, ProviderEnvironment(state, state))
    provider.start()
    try:
        key = provider.generate_key("ECDSA-P256", P.SIGN)

        def sha() -> bytes:
            op = provider.create_hash("SHA-256")
            op.update(MESSAGE)
            return op.finalize()

        def sign() -> bytes:
            op = provider.create_signer("ECDSA-P256", key, b"")
            op.update(MESSAGE)
            return op.finalize()

        async def sha_awaited() -> bytes:
            op = provider.create_hash("SHA-256")
            await op.update_async(MESSAGE)
            return await op.finalize_async()

        async def sign_awaited() -> bytes:
            op = provider.create_signer("ECDSA-P256", key, b"")
            await op.update_async(MESSAGE)
            return await op.finalize_async()

        loop = provider.host.loop
        table.add(SHA, SDK_AWAITED, measure_async(sha_awaited, loop, n))
        table.add(SHA, "provider SDK, from a thread", measure(sha, n))
        table.add(SIGN, SDK_AWAITED, measure_async(sign_awaited, loop, n))
        table.add(SIGN, "provider SDK, from a thread", measure(sign, n))
    finally:
        provider.close()  # the simulator's one connection is the next path's


def api_rows(table: LatencyTable, where: str, stack: cs.CryptoStack, n: int) -> None:
    """The public API on the tpm2 provider."""
    with stack.create_crypto_context() as ctx:
        hasher = ctx.create_hash_context(
            cs.HashContextConfig().set_algorithm("SHA-256").set_provider(TPM2_ID)
        )
        key = ctx.create_key_management_context().generate_key(
            cs.GenerateKeyParams().set_algorithm("ECDSA-P256").set_permissions(P.SIGN).set_provider(TPM2_ID)
        )
        signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(key))
        table.add(SHA, where, measure(lambda: hasher.single_shot(MESSAGE), n))
        table.add(SIGN, where, measure(lambda: signer.sign(MESSAGE), n))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=300, help="timed calls per measurement")
    args = parser.parse_args()
    n = args.n
    table = LatencyTable("tpm2 provider on swtpm (private simulator), µs", DIRECT, ipc_floor())
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        sim = Swtpm(base / "swtpm").start()
        try:
            # reset_lockout: a run killed half-way (no orderly shutdown) cannot lock out the
            # next path's start.
            options = {"tcti": sim.tcti, "reset_lockout": True}
            direct_rows(table, sim, n)
            sdk_rows(table, options, base / "sdk", n)
            config = {"providers": [{"name": "tpm2", "id": TPM2_ID, "options": options}]}
            inproc_config = {
                **config,
                "daemon": {"keystore": str(base / "inproc.sqlite3"), "state_dir": str(base / "inproc-state")},
            }
            with cs.create_crypto_stack(
                cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(inproc_config)
            ) as stack:
                api_rows(table, "API inproc://", stack, n)
            # As deployed (examples/daemon.toml): the audit trail is a file.
            daemon_config = {**config, "daemon": {"audit_log": str(base / "audit.jsonl")}}
            with DaemonProcess(base / "daemon", daemon_config) as daemon, daemon.stack() as stack:
                api_rows(table, DAEMON, stack, n)
        finally:
            sim.stop()
    table.target(SHA, DAEMON, "single_shot: one client round trip")
    table.target(SIGN, DAEMON, "sign(): one client round trip")
    print(table.render())


if __name__ == "__main__":
    main()
