"""Hybrid keys whose halves live on two providers: creating, importing and exporting them.

A split key is a :class:`~cryptostack_core.server.session.KeyEntry` whose ``components``
hold one internal entry per role (``pq``, ``classical``). The halves are keys of their
standalone algorithms (``ML-DSA-65`` and ``ECDSA-P256``; ``ML-KEM-768`` and ``X25519``),
generated afresh for the hybrid key (the composite draft forbids reusing component keys)
and never handed out as handles of their own. Each half gets only the permissions the
whole needs of it, EXPORT only when the whole carries EXPORT.

Encodings are the specifications' (:mod:`cryptostack_core.sdk.hybrid`), the same as a
provider holding both halves produces: a split key imports and exports byte for byte like
a native one. Material the caller hands in (or is allowed to take out) passes through the
daemon's memory on its way, as for any import or export; nothing else does.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import x25519

from cryptostack_core.sdk import hybrid
from cryptostack_core.sdk.provider import Provider, ProviderKey, ProviderState
from cryptostack_core.server.discovery import LoadedProvider
from cryptostack_core.server.keystore.parts import StoredPart
from cryptostack_core.server.session import KeyEntry
from cryptostack_core.server.split.plan import CLASSICAL, PQ, SplitPlan
from cryptostack_core.wire.errors import CryptoError, ErrorCode, invalid_argument
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.resources import KeyFormat, ResourcePersistence

_DER = ser.Encoding.DER
_PUBLIC_USE = P.VERIFY | P.ENCAPSULATE
"""What a public key alone may do: the permissions its halves are imported with."""

Material = dict[str, tuple[KeyFormat, bytes]]
"""Per role, the half's material in the format its provider imports."""


class SplitStandIn(ProviderKey):
    """``KeyEntry.pkey`` of a split key: no material. A provider handed it by mistake
    refuses it as a key that is not its own."""

    extractable = False

    def __init__(self, algorithm: str, has_private: bool) -> None:
        self.algorithm = algorithm
        self.has_private = has_private

    def __repr__(self) -> str:
        return f"SplitStandIn({self.algorithm})"


def instance(loaded: LoadedProvider) -> Provider:
    """The provider's instance, or PROVIDER_UNAVAILABLE."""
    if loaded.instance is None:
        raise CryptoError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"provider {loaded.name} ({loaded.id}) is unavailable: {loaded.load_error}",
        )
    return loaded.instance


def half_error(role: str, algorithm: str, loaded: LoadedProvider, exc: CryptoError) -> CryptoError:
    """A half that failed because its provider is down is PROVIDER_UNAVAILABLE for the
    whole key, naming the half, whatever the provider said about the lost call (a session
    key gone with a dead worker, say); any other failure is passed on as it is."""
    state, why = loaded.state()
    if exc.code is ErrorCode.OPERATION_TIMED_OUT or (
        state is not ProviderState.UNAVAILABLE and exc.code is not ErrorCode.PROVIDER_UNAVAILABLE
    ):
        return exc
    return CryptoError(
        ErrorCode.PROVIDER_UNAVAILABLE,
        f"the {role} half ({algorithm}) of the split key is on provider "
        f"{loaded.name} ({loaded.id}), which is unavailable: {why or exc.message}"
        f" ({exc.code.value}: {exc.message}); a hybrid key never runs on one half "
        "alone",
    )


# --- assembling a split key ---------------------------------------------------------------


def assemble(
    plan: SplitPlan,
    permissions: P,
    halves: Mapping[str, KeyEntry],
    persistence: ResourcePersistence,
    *,
    slot: str | None = None,
    export_uids: frozenset[int] | None = None,
    version: int | None = None,
    claimed_public: bytes | None = None,
) -> KeyEntry:
    """The split key over ``halves`` (whose references it takes over). ``claimed_public``:
    the public key the caller's material named, which the halves must match."""
    public = public_key(plan, halves)
    if claimed_public is not None and not hmac.compare_digest(public, claimed_public):
        raise invalid_argument(
            f"the public key in the material does not match the {plan.algorithm} private key"
        )
    private = {role: half.has_private for role, half in halves.items()}
    if len(set(private.values())) != 1:
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR,
            f"the halves of the {plan.algorithm} key disagree on holding a private key: {private}",
        )
    pq = halves[PQ]
    return KeyEntry(
        algorithm=plan.algorithm,
        permissions=permissions,
        home=pq.home,
        pkey=SplitStandIn(plan.algorithm, pq.has_private),
        persistence=persistence,
        slot=slot,
        export_uids=export_uids,
        version=version,
        components=dict(halves),
        public_key=public,
    )


def _release(made: Mapping[str, KeyEntry]) -> None:
    for half in made.values():
        half.release()


def generate(
    plan: SplitPlan,
    permissions: P,
    providers: Mapping[str, LoadedProvider],
    lists: Mapping[str, tuple[int, ...]],
) -> KeyEntry:
    """A fresh split key: each half generated on its provider. ``lists``: per role, the
    providers the half may later move to (if it is extractable)."""
    made: dict[str, KeyEntry] = {}
    try:
        for component in plan.components:
            loaded = providers[component.role]
            perms = component.component_permissions(permissions)
            try:
                pkey = instance(loaded).generate_key(component.key_algorithm, perms)
            except CryptoError as exc:
                raise half_error(component.role, component.key_algorithm, loaded, exc) from None
            made[component.role] = _half(
                component.key_algorithm, perms, loaded, pkey, lists.get(component.role, ())
            )
        return assemble(plan, permissions, made, ResourcePersistence.EPHEMERAL)
    except BaseException:
        _release(made)
        raise


def import_key(
    plan: SplitPlan,
    material: bytes,
    fmt: KeyFormat,
    permissions: P,
    providers: Mapping[str, LoadedProvider],
    lists: Mapping[str, tuple[int, ...]],
) -> KeyEntry:
    """A split key from the caller's material in one of the algorithm's formats, each half
    imported on its provider. A public key alone keeps only the permissions a public key
    serves."""
    private, parts, claimed = decode(plan, material, fmt)
    made: dict[str, KeyEntry] = {}
    try:
        for component in plan.components:
            loaded = providers[component.role]
            perms = component.component_permissions(permissions if private else permissions & _PUBLIC_USE)
            part_fmt, data = parts[component.role]
            try:
                pkey = instance(loaded).import_key(component.key_algorithm, data, part_fmt, perms)
            except CryptoError as exc:
                raise half_error(component.role, component.key_algorithm, loaded, exc) from None
            made[component.role] = _half(
                component.key_algorithm, perms, loaded, pkey, lists.get(component.role, ())
            )
        whole = permissions if private else permissions & _PUBLIC_USE
        return assemble(plan, whole, made, ResourcePersistence.EPHEMERAL, claimed_public=claimed)
    except BaseException:
        _release(made)
        raise


def _half(
    algorithm: str, permissions: P, loaded: LoadedProvider, pkey: ProviderKey, compatible: tuple[int, ...]
) -> KeyEntry:
    return KeyEntry(
        algorithm=algorithm,
        permissions=permissions,
        home=loaded,
        pkey=pkey,
        persistence=ResourcePersistence.EPHEMERAL,
        compatible=compatible,
    )


# --- key slots --------------------------------------------------------------------------------


def persist(
    entry: KeyEntry,
    slot_name: str,
    targets: Mapping[str, LoadedProvider],
    key_on: Callable[[KeyEntry, LoadedProvider], ProviderKey],
) -> list[StoredPart]:
    """Each half of split ``entry`` persisted by the provider ``targets`` names for its role
    (``key_on`` moves it there first when it lives elsewhere), for one slot version
    (:mod:`cryptostack_core.server.keystore.parts`). A failure destroys the halves already
    persisted, so nothing is left behind without a slot."""
    assert entry.components is not None
    done: list[StoredPart] = []
    try:
        for role, half in entry.components.items():
            target = targets[role]
            try:
                pkey = key_on(half, target)
                stored = instance(target).persist_key(pkey, slot_name)
            except CryptoError as exc:
                raise half_error(role, half.algorithm, target, exc) from None
            done.append(StoredPart(role, target.id, half.algorithm, stored))
    except BaseException:
        by_id = {target.id: target for target in targets.values()}
        for made in done:
            discard(made, by_id[made.provider])
        raise
    return done


def discard(part: StoredPart, loaded: LoadedProvider) -> None:
    """Destroy a persisted half's backend object (best effort: a provider's reconciliation
    at the next start destroys what this misses)."""
    try:
        instance(loaded).delete_stored_key(part.stored)
    except Exception:  # noqa: BLE001
        pass


def load(
    plan: SplitPlan,
    parts: list[StoredPart],
    permissions: P,
    provider: Callable[[int], LoadedProvider],
    *,
    slot: str,
    version: int,
    export_uids: frozenset[int] | None,
    lists: Mapping[str, tuple[int, ...]],
    on_free: Callable[[StoredPart], Callable[[], None] | None],
) -> KeyEntry:
    """A split key from a slot version's parts, each loaded by its own provider (a half
    whose provider is down: PROVIDER_UNAVAILABLE naming it). ``on_free`` gives each half's
    release callback (the daemon tracks who uses a token object)."""
    if sorted(part.role for part in parts) != sorted(c.role for c in plan.components) or any(
        part.algorithm != plan.component(part.role).key_algorithm for part in parts
    ):
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR,
            f"key slot {slot!r} v{version} does not hold the halves of "
            f"{plan.algorithm}: {[(p.role, p.algorithm) for p in parts]}",
        )
    made: dict[str, KeyEntry] = {}
    try:
        for part in parts:
            component = plan.component(part.role)
            loaded = provider(part.provider)
            perms = component.component_permissions(permissions)
            try:
                pkey = instance(loaded).load_stored_key(part.stored, part.algorithm, perms)
            except CryptoError as exc:
                raise half_error(part.role, part.algorithm, loaded, exc) from None
            made[part.role] = KeyEntry(
                algorithm=part.algorithm,
                permissions=perms,
                home=loaded,
                pkey=pkey,
                persistence=ResourcePersistence.PERSISTENT,
                compatible=lists.get(part.role, ()),
                slot=slot,
                export_uids=export_uids,
                version=version,
                on_free=on_free(part),
            )
        return assemble(
            plan,
            permissions,
            made,
            ResourcePersistence.PERSISTENT,
            slot=slot,
            export_uids=export_uids,
            version=version,
        )
    except BaseException:
        _release(made)
        raise


# --- public keys ----------------------------------------------------------------------------


def _spki_of(half: KeyEntry) -> object:
    spki = instance(half.home).export_public_key(half.pkey, KeyFormat.SPKI_DER)
    return ser.load_der_public_key(spki)


def public_key(plan: SplitPlan, halves: Mapping[str, KeyEntry]) -> bytes:
    """The whole public key in the specification's encoding, from the halves' providers."""
    pq, classical = halves[PQ], halves[CLASSICAL]
    pq_public = instance(pq.home).export_public_key(pq.pkey, KeyFormat.RAW)
    theirs = _spki_of(classical)
    if plan.composite is not None:
        trad = plan.composite.traditional
        if not trad.is_public(theirs):
            raise CryptoError(
                ErrorCode.PROVIDER_ERROR,
                f"provider {classical.home.id} returned no {trad.description} public key",
            )
        return plan.composite.join_public_key(pq_public, trad.encode_public(theirs))  # type: ignore[arg-type]
    assert plan.kem is not None
    if not isinstance(theirs, x25519.X25519PublicKey):
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR, f"provider {classical.home.id} returned no X25519 public key"
        )
    return plan.kem.join_public_key(pq_public, theirs.public_bytes_raw())


def export_public(plan: SplitPlan, entry: KeyEntry, fmt: KeyFormat) -> bytes:
    """The public key of split ``entry``: RAW, SPKI_DER or PEM (where an OID exists)."""
    assert entry.public_key is not None
    oid = plan.composite.oid if plan.composite is not None else plan.kem.oid if plan.kem is not None else None
    if fmt is KeyFormat.RAW:
        return entry.public_key
    if oid is None:
        raise invalid_argument(
            f"{plan.algorithm} has no SubjectPublicKeyInfo encoding (no OID is defined); use RAW"
        )
    if fmt is KeyFormat.SPKI_DER:
        return hybrid.encode_spki(oid, entry.public_key)
    if fmt is KeyFormat.PEM:
        return hybrid.pem_encode("PUBLIC KEY", hybrid.encode_spki(oid, entry.public_key))
    raise invalid_argument(f"public keys are exported as SPKI_DER, PEM or RAW, not {fmt.value}")


# --- private keys (the caller holds EXPORT) ---------------------------------------------------


def export_private(plan: SplitPlan, entry: KeyEntry, fmt: KeyFormat) -> bytes:
    """The private key of split ``entry`` in ``fmt``: each half exported by its provider (a
    hardware provider lets it out only when it was created with EXPORT), joined here."""
    assert entry.components is not None
    pq, classical = entry.components[PQ], entry.components[CLASSICAL]
    if not entry.has_private:
        raise invalid_argument("this is a public key; use export_public_key")
    if plan.composite is not None:
        spec = plan.composite
        if fmt is KeyFormat.SEED:
            raise invalid_argument(f"{spec.name} keys have no SEED form (RAW is mldsaSeed || tradSK)")
        if fmt not in (KeyFormat.RAW, KeyFormat.PKCS8_DER, KeyFormat.PEM):
            raise invalid_argument(
                f"{spec.name} private keys are exported as RAW, PKCS8_DER or PEM, not {fmt.value}"
            )
        seed = instance(pq.home).export_key(pq.pkey, KeyFormat.SEED)
        trad = _private_of(classical)
        if not spec.traditional.is_public(trad.public_key()):  # type: ignore[attr-defined]
            raise CryptoError(
                ErrorCode.PROVIDER_ERROR,
                f"provider {classical.home.id} returned no {spec.traditional.description} key",
            )
        joined = spec.join_private_key(seed, spec.traditional.encode_private(trad))  # type: ignore[arg-type]
        if fmt is KeyFormat.RAW:
            return joined
        encoded = hybrid.encode_pkcs8(spec.oid, joined)
        return encoded if fmt is KeyFormat.PKCS8_DER else hybrid.pem_encode("PRIVATE KEY", encoded)
    assert plan.kem is not None
    if fmt not in (KeyFormat.SEED, KeyFormat.RAW):
        raise invalid_argument(
            f"{plan.algorithm} private keys are exported as SEED or RAW (no OID is defined for PKCS#8)"
        )
    seed = instance(pq.home).export_key(pq.pkey, KeyFormat.SEED)
    scalar = _private_of(classical)
    if not isinstance(scalar, x25519.X25519PrivateKey):
        raise CryptoError(
            ErrorCode.PROVIDER_ERROR, f"provider {classical.home.id} returned no X25519 private key"
        )
    return bytes(seed) + scalar.private_bytes_raw()


def _private_of(half: KeyEntry) -> object:
    der = instance(half.home).export_key(half.pkey, KeyFormat.PKCS8_DER)
    return ser.load_der_private_key(der, password=None)


# --- decoding the caller's material ------------------------------------------------------------


def decode(plan: SplitPlan, material: bytes, fmt: KeyFormat) -> tuple[bool, Material, bytes | None]:
    """(private?, each half's material, the public key the material names or None) from an
    import in one of the algorithm's formats; INVALID_ARGUMENT when it is none of them."""
    material = bytes(material)
    if plan.composite is not None:
        return _decode_composite(plan.composite, material, fmt)
    assert plan.kem is not None
    return _decode_kem(plan.kem, material, fmt)


def _decode_composite(
    spec: hybrid.CompositeSignatureSpec, material: bytes, fmt: KeyFormat
) -> tuple[bool, Material, bytes | None]:
    if fmt is KeyFormat.PEM:
        label, material = hybrid.pem_decode(material)
        if label == "PUBLIC KEY":
            fmt = KeyFormat.SPKI_DER
        elif label == "PRIVATE KEY":
            fmt = KeyFormat.PKCS8_DER
        else:
            raise invalid_argument(f"a PEM {spec.name} key is a PUBLIC KEY or PRIVATE KEY, not {label}")
    if fmt is KeyFormat.SPKI_DER:
        oid, public = hybrid.decode_spki(material)
        _check_oid(spec.name, spec.oid, oid)
        return False, _composite_public(spec, public), public
    if fmt is KeyFormat.PKCS8_DER:
        oid, private, claimed = hybrid.decode_pkcs8(material)
        _check_oid(spec.name, spec.oid, oid)
        return True, _composite_private(spec, private), claimed
    if fmt is KeyFormat.RAW:
        try:
            return False, _composite_public(spec, material), material
        except CryptoError:
            pass
        try:
            return True, _composite_private(spec, material), None
        except CryptoError as exc:
            raise invalid_argument(
                f"RAW material is neither an {spec.name} public key nor a private key ({exc.message})"
            ) from None
    raise invalid_argument(f"{spec.name} keys have no {fmt.value} form; use RAW, SPKI_DER, PKCS8_DER or PEM")


def _composite_public(spec: hybrid.CompositeSignatureSpec, public: bytes) -> Material:
    mldsa_public, trad_public = spec.split_public_key(public)
    trad = spec.traditional.decode_public(trad_public)
    return {
        PQ: (KeyFormat.RAW, mldsa_public),
        CLASSICAL: (KeyFormat.SPKI_DER, trad.public_bytes(_DER, ser.PublicFormat.SubjectPublicKeyInfo)),
    }


def _composite_private(spec: hybrid.CompositeSignatureSpec, private: bytes) -> Material:
    seed, trad_private = spec.split_private_key(private)
    if len(seed) != hybrid.MLDSA_SEED_SIZE:
        raise invalid_argument(f"an {spec.mldsa} seed is {hybrid.MLDSA_SEED_SIZE} bytes")
    trad = spec.traditional.decode_private(trad_private)
    return {
        PQ: (KeyFormat.SEED, seed),
        CLASSICAL: (
            KeyFormat.PKCS8_DER,
            trad.private_bytes(_DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()),
        ),
    }


def _decode_kem(
    spec: hybrid.HybridKemSpec, material: bytes, fmt: KeyFormat
) -> tuple[bool, Material, bytes | None]:
    if fmt in (KeyFormat.SEED, KeyFormat.RAW) and len(material) == spec.private_key_size:
        seed, scalar = spec.expand_private_key(material)
        private = x25519.X25519PrivateKey.from_private_bytes(scalar)
        return (
            True,
            {
                PQ: (KeyFormat.SEED, seed),
                CLASSICAL: (
                    KeyFormat.PKCS8_DER,
                    private.private_bytes(_DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()),
                ),
            },
            None,
        )
    if fmt is KeyFormat.RAW and len(material) == spec.public_key_size:
        mlkem_public, x25519_public = spec.split_public_key(material)
        public = x25519.X25519PublicKey.from_public_bytes(x25519_public)
        if low_order(public):
            raise invalid_argument(f"the X25519 half of the {spec.name} public key is a low-order point")
        return (
            False,
            {
                PQ: (KeyFormat.RAW, mlkem_public),
                CLASSICAL: (
                    KeyFormat.SPKI_DER,
                    public.public_bytes(_DER, ser.PublicFormat.SubjectPublicKeyInfo),
                ),
            },
            material,
        )
    if fmt in (KeyFormat.SEED, KeyFormat.RAW):
        sizes = f"{spec.private_key_size} bytes (private)"
        if fmt is KeyFormat.RAW:
            sizes += f" or {spec.public_key_size} bytes (public)"
        raise invalid_argument(f"a {fmt.value} {spec.name} key is {sizes}, got {len(material)}")
    raise invalid_argument(
        f"{spec.name} keys are imported as SEED or RAW (no OID is defined for {fmt.value})"
    )


def low_order(public: x25519.X25519PublicKey) -> bool:
    """Whether an X25519 public key is a low-order point (every agreement with it gives
    the all-zero secret, which OpenSSL refuses)."""
    try:
        x25519.X25519PrivateKey.generate().exchange(public)
    except ValueError:
        return True
    return False


def _check_oid(name: str, expected: str, found: str) -> None:
    if found != expected:
        raise invalid_argument(f"the key's algorithm identifier is {found}, not {name} ({expected})")
