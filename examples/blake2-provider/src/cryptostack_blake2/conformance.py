"""What the cryptostack conformance kit needs to know about this provider: its id, and known
answers for the two algorithms the kit has no data for.

The known answers are the ``blake2b`` entries of ``testvectors/blake2-kat.json`` from the
BLAKE2 reference implementation (https://github.com/BLAKE2/BLAKE2, commit ed1974ea, CC0;
``kat/COPYING``), unchanged: 256 unkeyed digests (inputs of 0..255 bytes) and 256 keyed
ones (key ``00 01 .. 3f``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from cryptostack_blake2.provider import BLAKE2B_512, BLAKE2B_512_MAC
from cryptostack_core.testing.conformance import Backend, Profile, static_setup
from cryptostack_core.testing.known_answers import HashCase, KnownAnswerSet, MacCase

PROVIDER_ID = 1042
"""This provider's default id (third-party ids start at 1000)."""

KAT = Path(__file__).resolve().parent / "kat" / "blake2b-kat.json"


def _cases() -> Iterator[HashCase | MacCase]:
    for number, entry in enumerate(json.loads(KAT.read_text(encoding="utf-8"))):
        message, out = bytes.fromhex(entry["in"]), bytes.fromhex(entry["out"])
        if entry["key"]:
            yield MacCase(BLAKE2B_512_MAC.name, bytes.fromhex(entry["key"]), message, out, f"entry {number}")
        else:
            yield HashCase(BLAKE2B_512.name, message, out, f"entry {number}")


KNOWN_ANSWERS = KnownAnswerSet(
    "blake2b-kat.json",
    (BLAKE2B_512.name, BLAKE2B_512_MAC.name),
    "BLAKE2 reference implementation testvectors/blake2-kat.json (commit ed1974ea, CC0)",
    _cases,
)


def profile() -> Profile:
    """No backend to start; the known answers above."""
    return Profile(
        name="blake2", provider_id=PROVIDER_ID, setup=static_setup(Backend()), known_answers=(KNOWN_ANSWERS,)
    )
