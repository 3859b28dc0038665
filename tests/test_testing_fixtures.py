"""The fixtures the ``cryptostack`` pytest plugin gives application tests, and the client's
clean-up of contexts an application drops without closing them."""

from __future__ import annotations

import pytest

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.plugin import DaemonFactory


def _random(stack: cs.CryptoStack) -> bytes:
    with stack.create_crypto_context() as ctx:
        return ctx.create_key_management_context().generate_random(16)


@pytest.mark.cryptostack_mock(seed="application-test")
def test_the_stack_fixture_is_the_seeded_mock(
    cryptostack_stack: cs.CryptoStack, cryptostack_mock_config: object
) -> None:
    providers = cryptostack_stack.status()["providers"]
    assert [(p["id"], p["name"]) for p in providers] == [(1, "mock")]
    first = _random(cryptostack_stack)
    config = cryptostack_mock_config(seed="application-test")  # type: ignore[operator]
    again = cs.create_crypto_stack(
        cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
    )
    with again:
        assert _random(again) == first  # the same seed, the same bytes
    other = cs.create_crypto_stack(
        cs.CryptoStackConfig()
        .set_connection_endpoint("inproc://")
        .set_daemon_config(cryptostack_mock_config(seed="other"))
    )  # type: ignore[operator]
    with other:
        assert _random(other) != first


def test_the_daemon_factory_starts_typed_daemons_and_stops_them(
    cryptostack_daemon_factory: DaemonFactory, cryptostack_mock_config: object
) -> None:
    slots = [{"name": "AppKey", "algorithm": "AES-256", "provider": 1, "provision": "generate"}]
    daemon = cryptostack_daemon_factory(
        cryptostack_mock_config(key_slots=slots),  # type: ignore[operator]
        name="app",
    )
    assert isinstance(daemon, DaemonProcess)
    with daemon.stack() as stack:
        assert isinstance(stack, cs.CryptoStack)
        ctx = stack.create_crypto_context()
        info = ctx.create_key_management_context().get_key_slot_info(
            ctx.resolve_resource("AppKey", cs.ResourceType.KEY_SLOT)
        )
        assert info.status is cs.KeySlotStatus.OCCUPIED
    second = cryptostack_daemon_factory(name="second")
    cryptostack_daemon_factory.stop_all()
    assert daemon.process is None and second.process is None
    assert not daemon.socket_path.exists()


def test_the_daemon_fixture(cryptostack_daemon: DaemonProcess) -> None:
    with cryptostack_daemon.stack() as stack:
        stack.ping()
