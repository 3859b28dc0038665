"""An application that has only ``cryptostack-core`` installed uses this provider's
algorithms and key slot through a daemon that has the provider: the names come from the
daemon."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptostack_blake2.conformance import PROVIDER_ID

from cryptostack_core.testing.daemon import DaemonProcess

REPOSITORY = Path(__file__).resolve().parents[3]
KEY = bytes(range(32))


def core_only_python() -> str:
    """The interpreter of a venv with cryptostack-core alone (``make test-core-only`` makes
    ``.venv-core``; ``CRYPTOSTACK_CORE_PYTHON`` names another)."""
    path = os.environ.get("CRYPTOSTACK_CORE_PYTHON") or str(REPOSITORY / ".venv-core" / "bin" / "python")
    if not Path(path).exists():
        pytest.skip(f"no core-only interpreter at {path} (run `make test-core-only`)")
    return path


CLIENT = textwrap.dedent("""
    import importlib.util, json, sys
    import cryptostack_core as cs
    assert importlib.util.find_spec("cryptostack_blake2") is None, "the provider is installed"
    P = cs.KeyOperationPermission
    stack = cs.create_crypto_stack(cs.CryptoStackConfig().set_connection_endpoint(sys.argv[1]))
    ctx = stack.create_crypto_context()
    digest = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("blake2b512")) \\
        .single_shot(b"abc")
    km = ctx.create_key_management_context()
    key = km.import_key(cs.ImportKeyParams().set_algorithm("BLAKE2b-512-MAC")
                        .set_material(bytes(range(32)), cs.KeyFormat.RAW)
                        .set_permissions(P.MAC | P.SIGN | P.VERIFY))
    spare = ctx.resolve_resource("Spare", cs.ResourceType.KEY_SLOT)
    km.persist_key(spare, key)
    tag = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("BLAKE2b-512-MAC")
                                  .set_key(spare)).sign(b"message")
    slot = ctx.resolve_resource("MacKey", cs.ResourceType.KEY_SLOT)
    info = km.get_key_slot_info(slot)
    signed = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("BLAKE2b-512-MAC")
                                     .set_key(slot)).sign(b"message")
    verifier = ctx.create_verify_context(cs.VerifyContextConfig()
                                         .set_algorithm("keyed-blake2b-512").set_key(slot))
    names = {a["name"]: a for a in stack.algorithms()}
    print(json.dumps({"digest": digest.hex(), "tag": tag.hex(), "slot_algorithm": info.algorithm,
                      "slot_provider": info.provider, "verified": verifier.verify(b"message", signed),
                      "forged": verifier.verify(b"massage", signed),
                      "registered_by": names["BLAKE2b-512"]["registered_by"]}))
""")


def test_a_core_only_client_uses_the_provider_slot(tmp_path: Path) -> None:
    python = core_only_python()
    slots = [
        {
            "name": "MacKey",
            "algorithm": "BLAKE2b-512-MAC",
            "provider": PROVIDER_ID,
            "permissions": ["mac", "sign", "verify"],
            "provision": "generate",
        },
        {"name": "Spare", "algorithm": "BLAKE2b-512-MAC", "provider": PROVIDER_ID},
    ]
    config = {"providers": [{"name": "blake2", "id": PROVIDER_ID}], "key_slots": slots}
    with DaemonProcess(tmp_path / "daemon", config) as daemon:  # this venv has the provider
        done = subprocess.run(
            [python, "-c", CLIENT, daemon.endpoint],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": ""},
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["digest"] == hashlib.blake2b(b"abc").hexdigest()
    assert result["tag"] == hashlib.blake2b(b"message", key=KEY).hexdigest()
    assert (result["slot_algorithm"], result["slot_provider"]) == ("BLAKE2b-512-MAC", PROVIDER_ID)
    assert result["verified"] is True and result["forged"] is False
    assert result["registered_by"] == [PROVIDER_ID]
    assert sys.executable != python
