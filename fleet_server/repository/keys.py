"""Signing keys of the TUF repository: ed25519, private halves in passphrase-encrypted files.

A key file is PKCS#8 PEM encrypted with cryptography's BestAvailableEncryption; its public half
is a TUF `Key` (securesystemslib `SSlibKey`), whose keyid is what metadata names. Offline keys
(root, targets) are read only by the CLI commands that sign with them; the server reads only
the online key.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)

from fleet_server.exceptions import SigningKeyError
from fleet_server.repository.tuf_api import CryptoSigner, SSlibKey

MIN_PASSPHRASE_CHARS = 8
MAX_KEY_FILE_BYTES = 64 * 1024
"""A PEM ed25519 key is a few hundred bytes: anything far larger is not a key file."""


def generate_signer() -> CryptoSigner:
    """A new ed25519 key pair as a signer (keyid: TUF's default, the hash of the public key)."""
    return CryptoSigner.generate_ed25519()


def _private_key(signer: CryptoSigner) -> Ed25519PrivateKey:
    # CryptoSigner hands out its key only as unencrypted PEM; it never touches a disk.
    key = load_pem_private_key(signer.private_bytes, None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"key {signer.public_key.keyid} is not ed25519")
    return key


def write_key_file(signer: CryptoSigner, path: Path, passphrase: str) -> None:
    """Write the signer's private key to `path`, encrypted with `passphrase`, owner-only.

    Refuses to replace an existing file: a lost private key cannot be recovered.
    """
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise SigningKeyError(f"a key passphrase needs at least {MIN_PASSPHRASE_CHARS} characters")
    pem = _private_key(signer).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(passphrase.encode())
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise SigningKeyError(f"{path} exists; refusing to overwrite a key file") from e
    except OSError as e:
        raise SigningKeyError(f"cannot write key file {path}: {e}") from e
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def load_signer(path: Path, passphrase: str) -> CryptoSigner:
    """The signer of the encrypted key file at `path`; a clear SigningKeyError otherwise."""
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise SigningKeyError(f"{path} is too large to be a key file")
        pem = path.read_bytes()
    except OSError as e:
        raise SigningKeyError(f"cannot read key file {path}: {e}") from e
    try:
        key = load_pem_private_key(pem, passphrase.encode())
    except TypeError as e:  # the file is not encrypted, or a passphrase is missing
        raise SigningKeyError(f"{path} is not an encrypted key file: {e}") from e
    except ValueError as e:  # cryptography says "Bad decrypt" for a wrong passphrase
        raise SigningKeyError(
            f"cannot decrypt {path}: wrong passphrase, or not a PEM private key"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an ed25519 key")
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))
