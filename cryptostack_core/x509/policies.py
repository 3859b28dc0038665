"""Certificate policy processing: the valid_policy_tree of RFC 5280 6.1.

Implements 6.1.2 (a), (d)-(f) initial state, 6.1.3 (d)-(f), 6.1.4 (a)-(b), (h)-(j) and
6.1.5 (a)-(b), (g) exactly as written, with one addition: the tree is bounded
(:data:`MAX_POLICY_NODES`), because policy mappings can make it grow exponentially with
the path length (the "policy tree DoS" several validators fixed). Qualifiers are carried
but never interpreted (RFC 5280 4.2.1.4 lets a relying party ignore them).
"""

from __future__ import annotations

import dataclasses

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from .parsing import der_children

__all__ = [
    "ANY_POLICY",
    "MAX_POLICY_NODES",
    "PolicyError",
    "PolicySettings",
    "PolicyState",
]

ANY_POLICY = x509.ObjectIdentifier("2.5.29.32.0")
#: At most this many nodes in the valid_policy_tree of one path; more makes it INVALID.
MAX_POLICY_NODES = 4096


class PolicyError(Exception):
    """A policy rule of RFC 5280 6.1 fails; the message names the rule."""


@dataclasses.dataclass(frozen=True)
class PolicySettings:
    """The four policy inputs of RFC 5280 6.1.1 (c), (e), (f), (g)."""

    initial_policy_set: frozenset[x509.ObjectIdentifier] = frozenset({ANY_POLICY})
    initial_explicit_policy: bool = False
    initial_policy_mapping_inhibit: bool = False
    initial_any_policy_inhibit: bool = False


@dataclasses.dataclass(eq=False)
class _Node:
    valid_policy: x509.ObjectIdentifier
    expected: set[x509.ObjectIdentifier]
    parent: _Node | None
    depth: int
    children: list[_Node] = dataclasses.field(default_factory=list)
    alive: bool = True


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _oid(element: bytes) -> x509.ObjectIdentifier:
    """An OBJECT IDENTIFIER from its complete DER encoding."""
    if len(element) < 3 or element[0] != 0x06 or element[1] != len(element) - 2:
        raise ValueError("not a short-form OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in element[2:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if element[-1] & 0x80 or not arcs:
        raise ValueError("truncated OBJECT IDENTIFIER")
    first = min(arcs[0] // 40, 2)
    dotted = [first, arcs[0] - 40 * first, *arcs[1:]]
    return x509.ObjectIdentifier(".".join(str(a) for a in dotted))


def _policy_mappings(
    value: x509.ExtensionType, who: str
) -> list[tuple[x509.ObjectIdentifier, x509.ObjectIdentifier]]:
    """(issuerDomainPolicy, subjectDomainPolicy) pairs; pyca leaves the extension raw."""
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
    try:
        pairs = []
        for mapping in der_children(raw):
            issuer_policy, subject_policy = der_children(mapping)
            pairs.append((_oid(issuer_policy), _oid(subject_policy)))
    except ValueError as exc:
        raise PolicyError(f"policyMappings of {who} is malformed: {exc}") from None
    if not pairs:
        raise PolicyError(f"policyMappings of {who} is empty (RFC 5280 4.2.1.5)")
    return pairs


def _anchor_domain_policy(leaf: _Node) -> x509.ObjectIdentifier:
    """The policy a leaf node stands for in the trust anchor's domain.

    Mapped policies keep the issuer-domain policy in the node whose parent is anyPolicy
    (the valid_policy_node_set of 6.1.5 (g)); that is what the user-initial-policy-set, and
    so the user-constrained-policy-set, are expressed in.
    """
    chain = []
    node: _Node | None = leaf
    while node is not None:
        chain.append(node)
        node = node.parent
    for node in reversed(chain):
        if node.valid_policy != ANY_POLICY:
            return node.valid_policy
    return ANY_POLICY


class PolicyState:
    """The policy variables of one path (n = number of certificates after the anchor)."""

    def __init__(self, settings: PolicySettings, n: int) -> None:
        self.settings = settings
        self.n = n
        root = _Node(ANY_POLICY, {ANY_POLICY}, None, 0)
        # levels[d] = nodes of depth d; None once the tree is NULL.
        self.levels: list[list[_Node]] | None = [[root]]
        self.nodes = 1
        self.explicit_policy = 0 if settings.initial_explicit_policy else n + 1
        self.inhibit_any_policy = 0 if settings.initial_any_policy_inhibit else n + 1
        self.policy_mapping = 0 if settings.initial_policy_mapping_inhibit else n + 1

    # ------------------------------------------------------------------ tree helpers

    def _add(
        self, parent: _Node, policy: x509.ObjectIdentifier, expected: set[x509.ObjectIdentifier], depth: int
    ) -> None:
        assert self.levels is not None
        self.nodes += 1
        if self.nodes > MAX_POLICY_NODES:
            raise PolicyError(f"the policy tree exceeds {MAX_POLICY_NODES} nodes (policy processing limit)")
        node = _Node(policy, expected, parent, depth)
        parent.children.append(node)
        while len(self.levels) <= depth:
            self.levels.append([])
        self.levels[depth].append(node)

    def _delete(self, node: _Node) -> None:
        assert self.levels is not None
        stack = [node]
        while stack:
            current = stack.pop()
            self.levels[current.depth].remove(current)
            current.alive = False
            self.nodes -= 1
            stack.extend(current.children)
        if node.parent is not None:
            node.parent.children.remove(node)

    def _prune(self, depth: int) -> None:
        """Delete childless nodes of depth < ``depth``, repeatedly (6.1.3 (d)(3))."""
        assert self.levels is not None
        for d in range(min(depth, len(self.levels)) - 1, -1, -1):
            for node in [x for x in self.levels[d] if not x.children]:
                self._delete(node)
        if not self.levels[0]:
            self.levels = None

    # ------------------------------------------------------------------ 6.1.3 (d)-(f)

    def process_certificate(self, cert: x509.Certificate, i: int, self_issued: bool, who: str) -> None:
        """Certificate i (1..n) of the path."""
        policies = _ext(cert, ExtensionOID.CERTIFICATE_POLICIES)
        if isinstance(policies, x509.CertificatePolicies) and self.levels is not None:
            ids = [p.policy_identifier for p in policies]
            if len(set(ids)) != len(ids):
                raise PolicyError(f"certificatePolicies of {who} lists a policy twice (RFC 5280 4.2.1.4)")
            previous = self.levels[i - 1]
            for policy in ids:
                if policy == ANY_POLICY:
                    continue
                parents = [p for p in previous if policy in p.expected]
                if not parents:
                    parents = [p for p in previous if p.valid_policy == ANY_POLICY]
                for parent in parents:
                    self._add(parent, policy, {policy}, i)
            if ANY_POLICY in ids and (self.inhibit_any_policy > 0 or (i < self.n and self_issued)):
                for parent in list(previous):
                    present = {c.valid_policy for c in parent.children}
                    for value in sorted(parent.expected - present, key=lambda o: o.dotted_string):
                        self._add(parent, value, {value}, i)
            self._prune(i)
            if self.levels is not None and (len(self.levels) <= i or not self.levels[i]):
                self.levels = None
        elif not isinstance(policies, x509.CertificatePolicies):
            self.levels = None  # (e)
        if self.explicit_policy <= 0 and self.levels is None:  # (f)
            raise PolicyError(
                f"no valid policy remains at {who} and an explicit policy is required (RFC 5280 6.1.3 (f))"
            )

    # ------------------------------------------------------------------ 6.1.4 (a)-(b), (h)-(j)

    def prepare_next(self, cert: x509.Certificate, i: int, self_issued: bool, who: str) -> None:
        """Preparation for certificate i+1, after certificate i (a CA)."""
        mappings = _ext(cert, ExtensionOID.POLICY_MAPPINGS)
        if mappings is not None:
            pairs = _policy_mappings(mappings, who)
            if any(ANY_POLICY in pair for pair in pairs):
                raise PolicyError(f"policyMappings of {who} maps to or from anyPolicy (RFC 5280 6.1.4 (a))")
            self._map(pairs, i)
        if not self_issued:  # (h)
            self.explicit_policy = max(self.explicit_policy - 1, 0)
            self.policy_mapping = max(self.policy_mapping - 1, 0)
            self.inhibit_any_policy = max(self.inhibit_any_policy - 1, 0)
        constraints = _ext(cert, ExtensionOID.POLICY_CONSTRAINTS)
        if isinstance(constraints, x509.PolicyConstraints):  # (i)
            if constraints.require_explicit_policy is not None:
                self.explicit_policy = min(self.explicit_policy, constraints.require_explicit_policy)
            if constraints.inhibit_policy_mapping is not None:
                self.policy_mapping = min(self.policy_mapping, constraints.inhibit_policy_mapping)
        inhibit = _ext(cert, ExtensionOID.INHIBIT_ANY_POLICY)
        if isinstance(inhibit, x509.InhibitAnyPolicy):  # (j)
            self.inhibit_any_policy = min(self.inhibit_any_policy, inhibit.skip_certs)

    def _map(self, pairs: list[tuple[x509.ObjectIdentifier, x509.ObjectIdentifier]], i: int) -> None:
        if self.levels is None or len(self.levels) <= i:
            return
        mapped: dict[x509.ObjectIdentifier, list[x509.ObjectIdentifier]] = {}
        for issuer_policy, subject_policy in pairs:
            targets = mapped.setdefault(issuer_policy, [])
            if subject_policy not in targets:
                targets.append(subject_policy)
        for issuer_policy, targets in mapped.items():
            level = self.levels[i] if self.levels is not None and len(self.levels) > i else []
            nodes = [node for node in level if node.valid_policy == issuer_policy]
            if self.policy_mapping > 0:
                if nodes:
                    for node in nodes:
                        node.expected = set(targets)
                else:
                    for any_node in [n for n in level if n.valid_policy == ANY_POLICY]:
                        assert any_node.parent is not None
                        self._add(any_node.parent, issuer_policy, set(targets), i)
            else:
                for node in nodes:
                    self._delete(node)
                if self.levels is not None:
                    self._prune(i)
                if self.levels is None:
                    return

    # ------------------------------------------------------------------ 6.1.5

    def wrap_up(self, cert: x509.Certificate, who: str) -> frozenset[x509.ObjectIdentifier]:
        """6.1.5 (a), (b), (g); the user-constrained policy set, or PolicyError."""
        if self.explicit_policy > 0:  # (a)
            self.explicit_policy -= 1
        constraints = _ext(cert, ExtensionOID.POLICY_CONSTRAINTS)
        if (
            isinstance(constraints, x509.PolicyConstraints) and constraints.require_explicit_policy == 0
        ):  # (b)
            self.explicit_policy = 0
        result = self._intersect()
        if self.explicit_policy <= 0 and not result:
            raise PolicyError(
                f"no acceptable policy remains for {who} and an explicit policy is required "
                "(RFC 5280 6.1.5 (g))"
            )
        return result

    def _intersect(self) -> frozenset[x509.ObjectIdentifier]:
        n = self.n
        if self.levels is None or len(self.levels) <= n or not self.levels[n]:
            self.levels = None
            return frozenset()
        initial = self.settings.initial_policy_set
        if ANY_POLICY not in initial:
            # (g)(iii): nodes whose parent is anyPolicy, outside the initial set, go.
            node_set = [
                node
                for level in self.levels[1:]
                for node in level
                if node.parent is not None and node.parent.valid_policy == ANY_POLICY
            ]
            for node in node_set:
                if node.valid_policy not in initial and node.valid_policy != ANY_POLICY:
                    if node.alive:
                        self._delete(node)
            leaves_any = [node for node in self.levels[n] if node.valid_policy == ANY_POLICY]
            if leaves_any:
                any_leaf = leaves_any[0]
                present = {node.valid_policy for node in node_set if node.alive}
                assert any_leaf.parent is not None
                for policy in sorted(initial - present, key=lambda o: o.dotted_string):
                    self._add(any_leaf.parent, policy, {policy}, n)
                self._delete(any_leaf)
            self._prune(n)
            if self.levels is None or len(self.levels) <= n:
                return frozenset()
        return frozenset(_anchor_domain_policy(node) for node in self.levels[n])
