"""The certificate engine: parsing and RFC 5280 certification-path validation with CRLs.

Standalone: it imports nothing of the daemon; the service's certificate operations call it.
"""

from cryptostack_core.x509.validation import (
    ValidationOutcome,
    ValidationRequest,
    parse_certificate,
    parse_crl,
    public_key_algorithm,
    spki_der,
    validate_path,
)

__all__ = ["ValidationOutcome", "ValidationRequest", "parse_certificate", "parse_crl",
           "public_key_algorithm", "spki_der", "validate_path"]
