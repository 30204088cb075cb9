"""Token security, pure: generating API tokens, hashing them for storage, checking them.

Tokens are 32 random bytes (URL-safe text); at rest only their SHA-256 is kept. A fast hash is
right here: the token has 256 bits of entropy, so there is nothing to brute-force, and checking
must stay cheap on every API call. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

Role = Literal["admin", "reader"]
TOKEN_PREFIX = "rsf_"  # noqa: S105 - a marker that makes leaked tokens findable, not a secret


def generate_token() -> str:
    """A new API token (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Whether `token` is the one `stored_hash` was made from (constant-time)."""
    return hmac.compare_digest(hash_token(token), stored_hash)


def role_allows(role: Role, needed: Role) -> bool:
    """Whether a token of `role` may do what `needed` guards: admins may do everything."""
    return role == "admin" or role == needed
