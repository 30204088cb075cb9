"""Broker credentials, pure: password hashes and the text of Mosquitto's password and ACL files.

Hashes use Mosquitto 2's ``$7$`` format (PBKDF2-HMAC-SHA512, iterations and salt inside), so the
broker checks them itself. Its dynamic-security plugin stores the same PBKDF2-SHA512 digest as
separate fields, so one stored hash serves both backends (`dynsec_password_fields`). The TUF
routes check a device's broker password against the same hash (`mosquitto_hash_matches`), and
`CheckedPasswords` remembers a good check for a while: PBKDF2 is slow on purpose, and a device
refreshing its metadata sends its password with each of a handful of requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping

from fleet_protocol.topics import BrokerRules, validate_device_id

ITERATIONS = 10_000
SALT_BYTES = 12  # what mosquitto_passwd writes, and the only salt size the dynsec plugin loads


def new_password() -> str:
    """A device password: 24 random bytes as URL-safe text."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS
) -> str:
    """The ``$7$`` hash Mosquitto 2 checks `password` against."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


MAX_CHECKED_ITERATIONS = 1_000_000
"""A stored hash asking for more PBKDF2 rounds than this is refused, not computed."""


def mosquitto_hash_matches(password: str, digest: str) -> bool:
    """Whether `password` is the one the ``$7$`` hash `digest` was made from (constant-time).

    A malformed hash matches nothing: it never raises, so a damaged row refuses its device
    instead of failing the request.
    """
    parts = digest.split("$")
    if len(parts) != 5 or parts[:2] != ["", "7"] or not parts[2].isdigit():
        return False
    iterations = int(parts[2])
    if not 1 <= iterations <= MAX_CHECKED_ITERATIONS:
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        return False
    computed = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(computed, expected)


class CheckedPasswords:
    """Recently verified (user, stored hash, password) triples, for `ttl_s` seconds each.

    Only a keyed digest of the password is kept (under a key made per process), and the stored
    hash is part of the key: a new password or a reset credential misses the cache at once.
    Bounded: beyond `max_entries` the least recently used entry goes. Thread-safe, since sync
    routes run on a thread pool. Callers pass the clock.
    """

    def __init__(self, *, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[tuple[str, str, bytes], float] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, user: str, digest: str, password: str) -> tuple[str, str, bytes]:
        keyed = hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()
        return user, digest, keyed

    def matches(self, user: str, password: str, digest: str, *, now: float) -> bool:
        """Whether `password` matches `digest`: from the cache when checked lately, else PBKDF2."""
        entry = self._entry(user, digest, password)
        with self._lock:
            checked_at = self._entries.get(entry)
            if checked_at is not None and now - checked_at < self.ttl_s:
                self._entries.move_to_end(entry)
                return True
        if not mosquitto_hash_matches(password, digest):  # slow: outside the lock
            return False
        if self.ttl_s > 0:
            with self._lock:
                self._entries[entry] = now
                self._entries.move_to_end(entry)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return True


def dynsec_password_fields(digest: str) -> dict[str, str | int]:
    """A ``$7$`` hash as the dynamic-security plugin's password, salt and iterations fields."""
    parts = digest.split("$")
    try:
        if len(parts) != 5 or parts[:2] != ["", "7"]:
            raise ValueError("not a $7$ hash")
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        hashed = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error) as e:
        raise ValueError(f"refusing a malformed password hash: {e}") from e
    if len(salt) != SALT_BYTES or len(hashed) != hashlib.sha512().digest_size or iterations < 1:
        raise ValueError("refusing a password hash the dynamic-security plugin cannot load")
    return {"password": parts[4], "salt": parts[3], "iterations": iterations}


def password_file(users: Mapping[str, str]) -> str:
    """Mosquitto's password file for `users` (name -> ``$7$`` hash), sorted."""
    lines = []
    for user, digest in sorted(users.items()):
        if ":" in user or "\n" in user or not digest.startswith("$7$"):
            raise ValueError(f"refusing a malformed password entry for {user!r}")
        lines.append(f"{user}:{digest}")
    return "\n".join(lines) + "\n"


def acl_file(rules: Mapping[str, BrokerRules]) -> str:
    """Mosquitto's ACL file: per user, ``write`` what it may publish, ``read`` what it may receive.

    The file has no subscribe rules: Mosquitto 2.0 never checks a SUBSCRIBE against it, which is
    why this backend cannot keep a device out of the server's shared subscription group.
    """
    blocks = []
    for user, rule in sorted(rules.items()):
        validate_device_id(user)  # same rules: one word, no wildcards, no line breaks
        lines = [f"user {user}"]
        lines += [f"topic write {topic}" for topic in rule.publish]
        lines += [f"topic read {topic}" for topic in rule.receive]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
