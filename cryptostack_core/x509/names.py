"""Distinguished-name comparison (RFC 5280 7.1) and name constraints (4.2.1.10, 6.1.3 (b)-(c)).

Names are compared after the normalisation RFC 5280 7.1 asks for (the LDAP StringPrep of
RFC 4518, as implementations apply it in practice): every string attribute value is
Unicode-NFKC-normalised, case-folded and its insignificant whitespace (leading, trailing,
runs) collapsed, whatever its ASN.1 string type -- a PrintableString and a UTF8String with
the same text are the same name. RDNs keep their order; the attributes inside one
multi-valued RDN are a set. Non-string values (bit strings) compare byte for byte.

Name-constraint checking is bounded: see :data:`MAX_SUBTREES` and :class:`Budget`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import unicodedata
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = [
    "MAX_NAME_CONSTRAINT_CHECKS",
    "MAX_SUBTREES",
    "Budget",
    "BudgetExceeded",
    "NameConstraintsState",
    "name_key",
    "names_equal",
]

#: At most this many subtrees (permitted + excluded) in one nameConstraints extension; a CA
#: certificate with more makes its paths INVALID before any comparison is made.
MAX_SUBTREES = 1024
#: At most this many name/subtree comparisons while validating one path (all certificates
#: together); beyond it the path is INVALID ("name constraint work limit").
MAX_NAME_CONSTRAINT_CHECKS = 1 << 16

NameKey = tuple[frozenset[tuple[str, object]], ...]


def _normalise(value: str | bytes) -> object:
    if isinstance(value, bytes):
        return value
    text = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(text.split())


def name_key(name: x509.Name) -> NameKey:
    """A hashable form of ``name`` under which RFC 5280 7.1-equal names are equal."""
    return tuple(
        frozenset((attr.oid.dotted_string, _normalise(attr.value)) for attr in rdn) for rdn in name.rdns
    )


def names_equal(a: x509.Name, b: x509.Name) -> bool:
    """RFC 5280 7.1 name equality."""
    return name_key(a) == name_key(b)


class BudgetExceeded(Exception):
    """More name-constraint comparisons than the path's budget allows."""


@dataclasses.dataclass
class Budget:
    """Counts name/subtree comparisons for one path."""

    left: int = MAX_NAME_CONSTRAINT_CHECKS

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise BudgetExceeded


# ----------------------------------------------------------------------- matching one form


def _dns_matches(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _host_matches(host: str, base: str) -> bool:
    """URI and rfc822 host rule: a leading period means "any subdomain of"."""
    host, base = host.lower(), base.lower()
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _email_matches(address: str, base: str) -> bool | None:
    local, at, host = address.rpartition("@")
    if not at or not local or not host:
        return None  # not a mailbox: cannot be shown to be inside (or outside) a subtree
    if "@" in base:
        base_local, _, base_host = base.rpartition("@")
        return local == base_local and host.lower() == base_host.lower()
    return _host_matches(host, base)


def _uri_matches(uri: str, base: str) -> bool | None:
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        host = None
    if not host:
        return None  # RFC 5280 4.2.1.10: the constraint applies to the host part
    return _host_matches(host, base)


def _ip_matches(address: object, network: object) -> bool:
    if isinstance(address, ipaddress.IPv4Network | ipaddress.IPv6Network):
        # An IP-address SAN never holds a network; treat a malformed one as its address.
        address = address.network_address
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return False
    if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return False
    return address.version == network.version and address in network


def _dn_matches(name: x509.Name, base: x509.Name) -> bool:
    subject, prefix = name_key(name), name_key(base)
    return len(prefix) <= len(subject) and subject[: len(prefix)] == prefix


def _matches(name: x509.GeneralName, base: x509.GeneralName) -> bool | None:
    """Whether ``name`` lies in the subtree ``base`` (same form); None: cannot tell."""
    if isinstance(name, x509.DNSName) and isinstance(base, x509.DNSName):
        return _dns_matches(name.value, base.value)
    if isinstance(name, x509.RFC822Name) and isinstance(base, x509.RFC822Name):
        return _email_matches(name.value, base.value)
    if isinstance(name, x509.UniformResourceIdentifier) and isinstance(base, x509.UniformResourceIdentifier):
        return _uri_matches(name.value, base.value)
    if isinstance(name, x509.IPAddress) and isinstance(base, x509.IPAddress):
        return _ip_matches(name.value, base.value)
    if isinstance(name, x509.DirectoryName) and isinstance(base, x509.DirectoryName):
        return _dn_matches(name.value, base.value)
    return None  # otherName, registeredID: no matching rule is implemented


_FORM_NAMES = {
    x509.DNSName: "dNSName",
    x509.RFC822Name: "rfc822Name",
    x509.UniformResourceIdentifier: "uniformResourceIdentifier",
    x509.IPAddress: "iPAddress",
    x509.DirectoryName: "directoryName",
    x509.OtherName: "otherName",
    x509.RegisteredID: "registeredID",
}


def _form(name: x509.GeneralName) -> type:
    return type(name)


def _show(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DirectoryName):
        return f"directoryName '{name.value.rfc4514_string()}'"
    return f"{_FORM_NAMES.get(type(name), type(name).__name__)} '{name.value}'"


# ----------------------------------------------------------------------- the path state


@dataclasses.dataclass
class _Permitted:
    """The permitted subtrees one CA imposed; a name of a form it constrains must be in one."""

    owner: str
    by_form: dict[type, list[x509.GeneralName]]


@dataclasses.dataclass
class NameConstraintsState:
    """permitted_subtrees / excluded_subtrees of RFC 5280 6.1.2 (b)-(c).

    The intersection of permitted subtrees is kept as the list of every CA's own permitted
    set (a name must satisfy each); the union of excluded subtrees as one list.
    """

    permitted: list[_Permitted] = dataclasses.field(default_factory=list)
    excluded: list[tuple[str, x509.GeneralName]] = dataclasses.field(default_factory=list)
    budget: Budget = dataclasses.field(default_factory=Budget)

    def add(self, owner: str, constraints: x509.NameConstraints) -> str | None:
        """Take in a CA's nameConstraints (6.1.4 (g)); a problem text if it is refused."""
        permitted = list(constraints.permitted_subtrees or ())
        excluded = list(constraints.excluded_subtrees or ())
        if len(permitted) + len(excluded) > MAX_SUBTREES:
            return (
                f"nameConstraints of {owner} has {len(permitted) + len(excluded)} subtrees, "
                f"more than the limit of {MAX_SUBTREES}"
            )
        if constraints.permitted_subtrees is not None:
            by_form: dict[type, list[x509.GeneralName]] = {}
            for base in permitted:
                by_form.setdefault(_form(base), []).append(base)
            self.permitted.append(_Permitted(owner, by_form))
        self.excluded.extend((owner, base) for base in excluded)
        return None

    def copy(self) -> NameConstraintsState:
        return NameConstraintsState(list(self.permitted), list(self.excluded), self.budget)

    def check(self, subject: str, names: Iterable[x509.GeneralName]) -> str | None:
        """The first name-constraint violation of a certificate's names, or None.

        Raises:
            BudgetExceeded: when the path's comparison budget runs out.
        """
        for name in names:
            form = _form(name)
            for permitted in self.permitted:
                bases = permitted.by_form.get(form)
                if not bases:
                    continue
                inside = False
                for base in bases:
                    self.budget.spend()
                    verdict = _matches(name, base)
                    if verdict is None:
                        return (
                            f"{_show(name)} of {subject} cannot be checked against the "
                            f"permitted subtrees of {permitted.owner} (name constraint)"
                        )
                    if verdict:
                        inside = True
                        break
                if not inside:
                    return (
                        f"{_show(name)} of {subject} is outside the permitted subtrees of "
                        f"{permitted.owner} (name constraint)"
                    )
            for owner, base in self.excluded:
                if _form(base) is not form:
                    continue
                self.budget.spend()
                verdict = _matches(name, base)
                if verdict is None:
                    return (
                        f"{_show(name)} of {subject} cannot be checked against the excluded "
                        f"subtree {_show(base)} of {owner} (name constraint)"
                    )
                if verdict:
                    return (
                        f"{_show(name)} of {subject} is inside the excluded subtree "
                        f"{_show(base)} of {owner} (name constraint)"
                    )
        return None


def constrained_names(cert: x509.Certificate) -> Sequence[x509.GeneralName]:
    """The names of ``cert`` that name constraints apply to (RFC 5280 6.1.3 (b)-(c)).

    The subject (when not empty), every subjectAltName entry, and every emailAddress
    attribute of the subject as an rfc822Name.
    """
    names: list[x509.GeneralName] = []
    if cert.subject.rdns:
        names.append(x509.DirectoryName(cert.subject))
    for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attr.value, str):
            names.append(x509.RFC822Name(attr.value))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    names.extend(san)
    return names
