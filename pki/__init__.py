"""The Crossroads network CA: identities, CSR flow, signing, revocation, verification.

See :mod:`pki.identity` (identity strings) and :mod:`pki.ca` (the CA); ``pki.cli`` is the
``crossroads pki`` command.
"""

from pki.ca import (
    PkiError,
    create_request,
    fingerprint_sha256,
    generate_crl,
    identity_of_certificate,
    init_ca,
    issue,
    load_revoked_serials,
    network_of_ca,
    revoke,
    sign_request,
    verify_certificate,
)
from pki.identity import Identity, admin, hub, institution, parse_spiffe_id, spiffe_id, tls_name

__all__ = [
    "Identity",
    "PkiError",
    "admin",
    "create_request",
    "fingerprint_sha256",
    "generate_crl",
    "hub",
    "identity_of_certificate",
    "init_ca",
    "institution",
    "issue",
    "load_revoked_serials",
    "network_of_ca",
    "parse_spiffe_id",
    "revoke",
    "sign_request",
    "spiffe_id",
    "tls_name",
    "verify_certificate",
]
