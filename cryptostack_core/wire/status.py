"""The shapes of the daemon's answers about itself: ``status`` and ``explain``.

They are ``TypedDict``\\ s, not classes: the answers stay plain dicts (``status["providers"]``,
``json.dumps(status)`` as before) while a type checker knows every key and its type. The
daemon may add keys in a later version; these are the ones every client may rely on.
"""

from typing import NotRequired, TypedDict


class ProviderStatus(TypedDict):
    """One provider in ``status()["providers"]``. Admins also see ``optional`` and the
    provider's own description (``describe()``, merged into this dict)."""

    id: int
    name: str
    state: str
    """``ready``, ``degraded`` or ``unavailable``."""
    reason: str
    optional: NotRequired[bool]
    describe_error: NotRequired[str]


class KeySlotSummary(TypedDict):
    """One key slot in ``status()["key_slots"]`` (``get_key_slot_info`` has the details)."""

    name: str
    status: str
    """``OCCUPIED`` or ``EMPTY`` (the values of :class:`~cryptostack_core.KeySlotStatus`)."""
    algorithm: str | None
    provider: int | None
    version: int


class CertSlotSummary(TypedDict):
    """One certificate slot in ``status()["cert_slots"]``."""

    name: str
    occupied: bool
    subject: str


class ClientSummary(TypedDict):
    """One connected client in ``status()["clients"]`` (admins see all, others their uid's)."""

    session: int
    pid: int
    uid: int
    gid: int
    contexts: int
    resources: int
    guards: int


class KeystoreStatus(TypedDict, total=False):
    """``status()["keystore"]``: the key store's engine (``sqlite``/``postgresql``) and
    whether it is reachable; admins also get its location, manifest generation, schema,
    whether change notifications flow, and why it is unreachable."""

    engine: str
    available: bool
    location: str
    generation: int
    schema: int
    notifications: bool
    reason: str


class DaemonStatus(TypedDict):
    """What ``CryptoStack.status()`` returns. ``warnings`` and ``memory`` are for admins
    (``admin_uids``, root, the daemon's uid)."""

    version: str
    pid: int
    uptime: float
    providers: list[ProviderStatus]
    preference: list[int]
    key_slots: list[KeySlotSummary]
    cert_slots: list[CertSlotSummary]
    trust_stores: list[str]
    clients: list[ClientSummary]
    keystore: KeystoreStatus
    warnings: NotRequired[list[str]]
    memory: NotRequired[dict[str, int]]


class ProviderCandidate(TypedDict):
    """One candidate of ``CryptoStack.explain()``: the provider, whether selection took it,
    and why (or why not)."""

    provider: int
    name: str
    taken: bool
    reason: str
    role: NotRequired[str]
    """Hybrid algorithms: ``native`` (one provider for both halves), ``pq``/``classical``
    (a half's provider when they are split), ``combiner`` (the daemon, provider 0) or
    ``split`` (why the algorithm cannot be split)."""


class SplitComponent(TypedDict):
    """One half of a hybrid algorithm that may be split across providers."""

    role: str
    key_algorithm: str
    algorithm: str


class SplitPlan(TypedDict):
    """Whether a hybrid algorithm's halves may live on two providers: its halves, or why
    not (``AlgorithmEntry.split``)."""

    splittable: bool
    components: NotRequired[list[SplitComponent]]
    reason: NotRequired[str]


class AlgorithmEntry(TypedDict):
    """One entry of ``CryptoStack.algorithms()``. Size facts (``key_size``, ``digest_size``,
    ``tag_size`` ...) appear only where they apply."""

    name: str
    kind: str
    aliases: list[str]
    key_class: str | None
    default_permissions: int
    key_algorithms: list[str]
    registered_by: list[int]
    """Provider ids that registered this name (empty for the built-in ones)."""
    providers: dict[str, list[int]]
    """Per operation (``"sign"`` ...), the providers that can run it, in preference order."""
    key_size: NotRequired[int]
    digest_size: NotRequired[int]
    block_size: NotRequired[int]
    iv_size: NotRequired[int]
    tag_size: NotRequired[int]
    signature_size: NotRequired[int]
    public_key_size: NotRequired[int]
    ciphertext_size: NotRequired[int]
    shared_secret_size: NotRequired[int]
    hash_algorithm: NotRequired[str]
    supports_context_string: NotRequired[bool]
    split: NotRequired[SplitPlan]
    """Hybrid algorithms only (docs/hybrid.md, "Halves on two providers")."""
