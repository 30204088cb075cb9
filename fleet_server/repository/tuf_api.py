"""The python-tuf and securesystemslib names the repository uses, imported in one place.

Both packages re-export these names without ``__all__`` or ``import X as X``, which mypy (2.x,
no implicit re-export for installed packages) refuses; importing them from the modules that
define them keeps mypy honest, and this file is the one place to change if those move.
"""

from __future__ import annotations

from securesystemslib.signer._crypto_signer import CryptoSigner
from securesystemslib.signer._key import Key, SSlibKey
from securesystemslib.signer._signer import Signer
from tuf.api._payload import (
    DelegatedRole,
    Delegations,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata

__all__ = [
    "CryptoSigner",
    "DelegatedRole",
    "Delegations",
    "Key",
    "MetaFile",
    "Metadata",
    "Role",
    "Root",
    "SSlibKey",
    "Signed",
    "Signer",
    "Snapshot",
    "SuccinctRoles",
    "TargetFile",
    "Targets",
    "Timestamp",
    "UnsignedMetadataError",
]
