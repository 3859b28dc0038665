"""The certificate engine: parsing, RFC 5280 path validation and CRL checking.

Standalone (it imports only ``cryptography`` and the wire vocabulary, never client or
server code). The daemon's certificate service calls :func:`parse_certificate`,
:func:`parse_crl`, :func:`validate_path`, :func:`public_key_algorithm` and :func:`spki_der`.

One module per concern:

* :mod:`.parsing` -- PEM/DER framing, eager extension decoding, raw DER slices;
* :mod:`.signatures` -- signature verification under the algorithm allowlist;
* :mod:`.names` -- RFC 5280 7.1 name comparison and name constraints (bounded);
* :mod:`.policies` -- the certificate policy tree (bounded);
* :mod:`.profile` -- understood extensions and the ``rfc5280`` / ``lenient`` profiles;
* :mod:`.building` -- bounded candidate-path building;
* :mod:`.revocation` -- RFC 5280 6.3 CRL processing;
* :mod:`.validation` -- RFC 5280 6.1 per path, result precedence, the entry point.

docs/certificates.md says which library does which part and what is not supported.
"""

from .building import MAX_BUILD_STEPS, MAX_CANDIDATE_PATHS
from .names import MAX_NAME_CONSTRAINT_CHECKS, MAX_SUBTREES
from .parsing import parse_certificate, parse_crl, public_key_algorithm, spki_der
from .policies import ANY_POLICY, MAX_POLICY_NODES
from .profile import PROFILES
from .validation import (
    DEFAULT_MAX_CHAIN_DEPTH,
    KEY_USAGE_NAMES,
    MAX_CHAIN_DEPTH_LIMIT,
    ValidationOutcome,
    ValidationRequest,
    validate_path,
)

__all__ = [
    "ANY_POLICY",
    "DEFAULT_MAX_CHAIN_DEPTH",
    "KEY_USAGE_NAMES",
    "MAX_BUILD_STEPS",
    "MAX_CANDIDATE_PATHS",
    "MAX_CHAIN_DEPTH_LIMIT",
    "MAX_NAME_CONSTRAINT_CHECKS",
    "MAX_POLICY_NODES",
    "MAX_SUBTREES",
    "PROFILES",
    "ValidationOutcome",
    "ValidationRequest",
    "parse_certificate",
    "parse_crl",
    "public_key_algorithm",
    "spki_der",
    "validate_path",
]
