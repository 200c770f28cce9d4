"""Signed directory updates: the hub signs each serialized ``DirectoryUpdate`` with its
Ed25519 directory key; nodes verify with the hub's public key before applying anything.

The signature covers the exact bytes carried in ``SignedDirectoryUpdate.update``, so there is
no canonicalisation question: a node verifies, then parses those bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node.wire.gen.crossroads.v1 import directory_pb2 as pb

__all__ = [
    "SignatureError",
    "ensure_signing_key",
    "key_id",
    "load_public_key",
    "sign_update",
    "verify_update",
]


class SignatureError(ValueError):
    pass


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def ensure_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the hub's directory key; create it (mode 0600) and its ``.pub`` on first use."""
    if path.exists():
        if path.stat().st_mode & 0o077:  # left readable by others (an older version, a copy)
            os.chmod(path, 0o600)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public_path(path).write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    os.chmod(public_path(path), 0o644)  # readable, writable by its owner only, whatever the umask
    return key


def public_path(private_path: Path) -> Path:
    return private_path.with_suffix(".pub")


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def sign_update(update: pb.DirectoryUpdate, key: Ed25519PrivateKey) -> pb.SignedDirectoryUpdate:
    body = update.SerializeToString()
    return pb.SignedDirectoryUpdate(update=body, signature=key.sign(body),
                                    key_id=key_id(key.public_key()))


def verify_update(signed: pb.SignedDirectoryUpdate, key: Ed25519PublicKey) -> pb.DirectoryUpdate:
    """The update, if the signature holds; raises :class:`SignatureError` otherwise."""
    try:
        key.verify(signed.signature, signed.update)
    except InvalidSignature:
        raise SignatureError("directory update signature does not verify") from None
    update = pb.DirectoryUpdate()
    update.ParseFromString(signed.update)
    return update
