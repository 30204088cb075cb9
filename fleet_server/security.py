"""Token and session security, pure: tokens, hashes, expiry, signed cookies, CSRF, secret strength.

Tokens are 32 random bytes (URL-safe text); at rest only their SHA-256 is kept. A fast hash is
right here: the token has 256 bits of entropy, so there is nothing to brute-force, and checking
must stay cheap on every API call. Comparison is constant-time.

The dashboard cookie holds a random session id signed with HMAC-SHA256 under ``auth.secret_key``:
a forged cookie is refused before the database is asked, and the session itself lives (and ends)
on the server. The CSRF token of a session is derived from its id with the same key, so it needs
no storage and cannot be guessed without the key. Nothing here does I/O or reads the clock:
callers pass ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from collections import Counter
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

Role = Literal["admin", "reader"]
TOKEN_PREFIX = "rsf_"  # noqa: S105 - a marker that makes leaked tokens findable, not a secret
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing: they need no CSRF token."""

MIN_SECRET_LENGTH = 32
MIN_SECRET_BITS = 128.0
"""A production secret has at least 32 characters and an estimated 128 bits (see `secret_bits`)."""


def generate_token() -> str:
    """A new API token (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the database keeps of a token (or of a session id)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Whether `token` is the one `stored_hash` was made from (constant-time)."""
    return hmac.compare_digest(hash_token(token), stored_hash)


MAX_AUTHORIZATION_CHARS = 1024
"""Longest ``Authorization`` header decoded; a device id and a 32-character password fit easily."""


def basic_credentials(value: str) -> tuple[str, str] | None:
    """(user, password) of the value of an HTTP Basic header (after ``Basic``); None if malformed.

    The length is checked before anything is decoded.
    """
    value = value.strip()
    if not value or len(value) > MAX_AUTHORIZATION_CHARS:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        return None
    return user, password


def role_allows(role: Role, needed: Role) -> bool:
    """Whether a token of `role` may do what `needed` guards: admins may do everything."""
    return role == "admin" or role == needed


def is_live(*, ended_at: datetime | None, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a token or session still holds at `now`: not revoked/ended and not expired."""
    return ended_at is None and (expires_at is None or now < expires_at)


def bounded_expiry(requested: datetime | None, issuer: datetime | None) -> datetime | None:
    """When a new token expires: as `requested`, but never after its `issuer` (None: never).

    A token can do what its issuer can, so a longer life would let a short-lived admin token
    mint a lasting one; no expiry asked for means the issuer's.
    """
    if requested is None or issuer is None:
        return issuer if requested is None else requested
    return min(requested, issuer)


def _mac(key: str, purpose: str, value: str) -> str:
    # The purpose keeps a cookie signature from ever serving as a CSRF token, and the reverse.
    digest = hmac.new(key.encode(), f"{purpose}|{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_session_id() -> str:
    """A new dashboard session id (256 random bits)."""
    return secrets.token_urlsafe(32)


def sign_session(session_id: str, key: str) -> str:
    """The cookie value for `session_id`: ``<id>.<HMAC-SHA256 of the id>``."""
    return f"{session_id}.{_mac(key, 'session', session_id)}"


def verified_session_id(cookie: str, key: str) -> str | None:
    """The session id in a cookie `sign_session` made with `key`; None when forged or malformed."""
    session_id, dot, signature = cookie.rpartition(".")
    if not dot or not session_id:
        return None
    if not hmac.compare_digest(signature.encode(), _mac(key, "session", session_id).encode()):
        return None
    return session_id


def csrf_token(session_id: str, key: str) -> str:
    """The CSRF token that state-changing requests of this session must carry."""
    return _mac(key, "csrf", session_id)


def csrf_matches(presented: str | None, session_id: str, key: str) -> bool:
    """Whether `presented` is the session's CSRF token (constant-time)."""
    if not presented:
        return False
    return hmac.compare_digest(presented.encode(), csrf_token(session_id, key).encode())


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower-case, default ports dropped; None if not http(s)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def cross_origin(*, origin: str | None, referer: str | None, own_origin: str) -> bool:
    """Whether a request names a sender other than the server itself.

    Browsers send ``Origin`` with every cross-site POST; ``Referer`` stands in where it is
    missing. A request with neither names no sender and is not refused here (the CSRF token
    still must match).
    """
    sender = origin if origin is not None else referer
    if sender is None:
        return False
    return origin_of(sender) != origin_of(own_origin)


def secret_bits(value: str) -> float:
    """An estimate of a secret's entropy: its length times the Shannon entropy of its characters.

    It is an upper bound for text a person typed (a dictionary phrase scores well), but it
    catches what matters in configuration: short values, one repeated character, a small
    alphabet. 32 random bytes in base64 score about 200 bits, ``"a" * 40`` scores 0.
    """
    if not value:
        return 0.0
    counts = Counter(value)
    total = len(value)
    per_char = -sum(n / total * math.log2(n / total) for n in counts.values())
    return per_char * total


def weak_secret_problem(value: str) -> str | None:
    """Why `value` is too weak for production, or None when it is strong enough."""
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    bits = secret_bits(value)
    if bits < MIN_SECRET_BITS:
        return f"has too little entropy (about {bits:.0f} bits, needs {MIN_SECRET_BITS:.0f})"
    return None
