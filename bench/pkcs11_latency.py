"""pkcs11 provider latency on a private SoftHSM2 token, one run: a 64-byte AES-256-GCM
encryption (one-shot ``encrypt``) and a 64-byte SHA-256 through python-pkcs11 in this
process (the direct library), the provider SDK (calls go to the token worker process:
awaited on the worker host's event loop, as the daemon does, and from a thread), and the
public API (``inproc://`` and a daemon over its unix socket), with the software provider
through the API as reference. The last lines compare the daemon with the target: direct
library + 2.5 x IPC floor.

Run by ``make bench`` (or ``.venv/bin/python bench/pkcs11_latency.py [-n 3000]``). Prints
medians and p99 in µs with ratios to the direct library and to the IPC floor. The token is
made here (``cryptostack_pkcs11.testing.create_token``) under a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from cryptostack_pkcs11.provider import PKCS11Provider
from cryptostack_pkcs11.testing import create_token
from latency import LatencyTable, ipc_floor, measure, measure_async

import cryptostack_core as cs
from cryptostack_core.sdk import CipherDirection, ProviderEnvironment
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_core.testing.daemon import DaemonProcess

DATA = bytes(range(64))
IV = bytes(12)
GCM = "AES-256-GCM 64 B"
SHA = "SHA-256 64 B"
DIRECT = "python-pkcs11 in-process (direct)"
SDK_AWAITED = "provider SDK, awaited on the host's loop"
DAEMON = "API daemon (unix socket)"
PKCS11_ID = 5
OPENSSL_ID = 2


def direct_rows(table: LatencyTable, module: str, label: str, pin: str, n: int) -> None:
    """python-pkcs11 on the token in this process."""
    import pkcs11
    from pkcs11 import GCMParams, KeyType, Mechanism, MechanismFlag

    session = pkcs11.lib(module).get_token(token_label=label).open(user_pin=pin)
    try:
        key = session.generate_key(
            KeyType.AES, 256, capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
        )
        table.add(
            GCM,
            DIRECT,
            measure(lambda: key.encrypt(DATA, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(IV)), n),
        )
        table.add(SHA, DIRECT, measure(lambda: session.digest(DATA, mechanism=Mechanism.SHA256), n))
    finally:
        session.close()


def sdk_rows(table: LatencyTable, options: dict[str, object], state: Path, n: int) -> None:
    """The provider SDK: every call is a round trip to the token worker process."""
    state.mkdir()
    provider = PKCS11Provider(PKCS11_ID, options, ProviderEnvironment(state, state))
    provider.start()
    try:
        key = provider.generate_key("AES-256", P.ENCRYPT | P.DECRYPT)

        def gcm() -> bytes:
            op = provider.create_cipher("AES-256-GCM", key, CipherDirection.ENCRYPT, IV, 16)
            return op.update(DATA) + op.finalize()

        def sha() -> bytes:
            op = provider.create_hash("SHA-256")
            op.update(DATA)
            return op.finalize()

        async def gcm_awaited() -> bytes:
            op = provider.create_cipher("AES-256-GCM", key, CipherDirection.ENCRYPT, IV, 16)
            return await op.update_async(DATA) + await op.finalize_async()

        async def sha_awaited() -> bytes:
            op = provider.create_hash("SHA-256")
            await op.update_async(DATA)
            return await op.finalize_async()

        async def echo() -> object:
            return await provider.host.call_async("_echo", DATA)

        loop = provider.host.loop
        table.add(GCM, SDK_AWAITED, measure_async(gcm_awaited, loop, n))
        table.add(GCM, "provider SDK, from a thread", measure(gcm, n))
        table.add(GCM, "worker host round trip (no token call)", measure_async(echo, loop, n))
        table.add(SHA, SDK_AWAITED, measure_async(sha_awaited, loop, n))
        table.add(SHA, "provider SDK, from a thread", measure(sha, n))
    finally:
        provider.close()


def api_rows(table: LatencyTable, where: str, stack: cs.CryptoStack, n: int) -> None:
    """The public API on the pkcs11 provider, then on the software provider (reference)."""
    with stack.create_crypto_context() as ctx:
        km = ctx.create_key_management_context()
        for provider_id, suffix in ((PKCS11_ID, ""), (OPENSSL_ID, ", openssl (reference)")):
            key = km.generate_key(
                cs.GenerateKeyParams()
                .set_algorithm("AES-256")
                .set_permissions(P.ENCRYPT | P.DECRYPT)
                .set_provider(provider_id)
            )
            enc = ctx.create_cipher_context(
                cs.CipherContextConfig()
                .set_algorithm("AES-256-GCM")
                .set_key(key)
                .set_direction(cs.CipherDirection.ENCRYPT)
            )
            hasher = ctx.create_hash_context(
                cs.HashContextConfig().set_algorithm("SHA-256").set_provider(provider_id)
            )

            def gcm(enc: cs.CipherContext = enc) -> bytes:
                return enc.encrypt(IV, DATA)

            table.add(GCM, where + suffix, measure(gcm, n))
            table.add(SHA, where + suffix, measure(lambda h=hasher: h.single_shot(DATA), n))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=3000, help="timed calls per measurement")
    args = parser.parse_args()
    n = args.n
    table = LatencyTable("pkcs11 provider on SoftHSM2 (private token), µs", DIRECT, ipc_floor())
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        token = create_token(base / "token")
        # SoftHSM2 (here, in the token worker and in the daemon) reads the private
        # configuration; the provider reads the PIN from its variable.
        os.environ.update(token.environment())
        options = token.options()
        direct_rows(table, token.module, token.label, token.pin, n)
        sdk_rows(table, options, base / "sdk", n)
        config = {
            "providers": [
                {"name": "pkcs11", "id": PKCS11_ID, "options": options},
                {"name": "openssl", "id": OPENSSL_ID, "options": {}},
            ]
        }
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
    table.target(SHA, DAEMON, "single_shot: one client round trip")
    table.target(GCM, DAEMON, "encrypt: one client round trip")
    print(table.render())


if __name__ == "__main__":
    main()
