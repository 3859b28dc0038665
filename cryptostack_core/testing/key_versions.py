"""Key-version scenarios every provider must pass the same way (issue 11, build 1).

Each plugin's suite runs them on its own backend (openssl in memory, pkcs11 on SoftHSM2,
tpm2 on swtpm) through a real daemon, so "one rule on every provider" is one piece of
test code:

* :func:`check_rotation` -- a message encrypted under a slot still decrypts after the slot
  is re-persisted (with the old version, loaded by number), and a retired version is named
  (``KEY_VERSION_RETIRED``), not reported as a failed tag.
* :func:`check_holders_survive` -- a context another client opened on the slot, and a key it
  loaded, keep working across a re-persist, a retirement and a clear, until released.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cryptostack_core.client.contexts.cipher import CipherContextConfig
from cryptostack_core.client.contexts.keys import KeyManagementContext
from cryptostack_core.client.guards import CryptoResourceGuard
from cryptostack_core.client.stack import CryptoContext, CryptoStack
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.resources import CipherDirection, ResourceType

NewKey = Callable[[KeyManagementContext], CryptoResourceGuard]
"""Makes a key to persist into the slot (on the slot's provider)."""
Use = Callable[[CryptoContext, Any], tuple[Callable[[], None], Callable[[], None]]]
"""Opens a context on a key (slot or guard): returns (use it once, close it)."""

__all__ = ["check_holders_survive", "check_rotation", "cipher_user", "crypt"]


def crypt(
    ctx: CryptoContext, key: Any, algorithm: str, direction: CipherDirection, iv: bytes, data: bytes
) -> bytes:
    """One message through a cipher context."""
    with ctx.create_cipher_context(
        CipherContextConfig().set_algorithm(algorithm).set_key(key).set_direction(direction)
    ) as cipher:
        cipher.init(iv)
        out: bytes = cipher.update(data)
        tail: bytes = cipher.finalize()
        return out + tail


def check_rotation(
    stack: CryptoStack, slot_name: str, algorithm: str, new_key: NewKey, *, iv_size: int = 12
) -> None:
    """Old ciphertext decrypts after the slot moves to a new version; the retired old
    version then fails naming itself."""
    ctx = stack.create_crypto_context()
    km = ctx.create_key_management_context()
    slot = ctx.resolve_resource(slot_name, ResourceType.KEY_SLOT)
    before = km.get_key_slot_info(slot).version
    assert before >= 1, f"slot {slot_name} must hold a key"
    iv, message = os.urandom(iv_size), b"made under the old version of the key"
    old = crypt(ctx, slot, algorithm, CipherDirection.ENCRYPT, iv, message)
    info = km.persist_key(slot, new_key(km))
    assert info.version == before + 1, info
    new = crypt(ctx, slot, algorithm, CipherDirection.ENCRYPT, iv, message)
    assert new != old, "the slot still encrypts with the old key"
    with km.load_key(slot, version=before) as previous:
        assert crypt(ctx, previous, algorithm, CipherDirection.DECRYPT, iv, old) == message
    assert crypt(ctx, slot, algorithm, CipherDirection.DECRYPT, iv, new) == message
    km.retire_key_version(slot, before)
    try:
        km.load_key(slot, version=before)
    except CryptoError as exc:
        assert exc.code is ErrorCode.KEY_VERSION_RETIRED, exc
        assert f"version {before}" in exc.message, exc.message
    else:
        raise AssertionError(f"version {before} of {slot_name} loaded after it was retired")


def cipher_user(algorithm: str, iv_size: int = 12) -> Use:
    """A :data:`Use` that encrypts one message per call with ``algorithm``."""

    def use(ctx: CryptoContext, key: Any) -> tuple[Callable[[], None], Callable[[], None]]:
        cipher = ctx.create_cipher_context(
            CipherContextConfig().set_algorithm(algorithm).set_key(key).set_direction(CipherDirection.ENCRYPT)
        )

        def once() -> None:
            cipher.init(os.urandom(iv_size))
            out = cipher.update(b"still working") + cipher.finalize()
            assert out

        return once, cipher.close

    return use


def check_holders_survive(
    connect: Callable[[], CryptoStack],
    slot_name: str,
    new_key: NewKey,
    use: Use,
    *,
    after_clear: Callable[[], None] | None = None,
) -> None:
    """Client A holds a context on the slot and a key loaded from it; client B re-persists
    the slot, retires A's version and clears the slot. A's context and key work throughout;
    ``after_clear`` (e.g. "the token object still exists") runs while A still holds them."""
    with connect() as a, connect() as b:
        ctx_a = a.create_crypto_context()
        km_a = ctx_a.create_key_management_context()
        slot_a = ctx_a.resolve_resource(slot_name, ResourceType.KEY_SLOT)
        run_context, close_context = use(ctx_a, slot_a)
        loaded = km_a.load_key(slot_a)
        run_key, close_key = use(ctx_a, loaded)
        run_context()
        run_key()
        held = loaded.version
        ctx_b = b.create_crypto_context()
        km_b = ctx_b.create_key_management_context()
        slot_b = ctx_b.resolve_resource(slot_name, ResourceType.KEY_SLOT)
        assert km_b.persist_key(slot_b, new_key(km_b)).version == (held or 0) + 1
        run_context()
        run_key()
        assert held is not None
        km_b.retire_key_version(slot_b, held)
        run_context()
        run_key()
        km_b.clear_key_slot(slot_b)
        run_context()
        run_key()
        if after_clear is not None:
            after_clear()
        run_context()
        close_context()
        close_key()
        loaded.release()
        ctx_a.close()
