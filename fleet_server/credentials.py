"""Broker credentials, pure: password hashes and the text of Mosquitto's password and ACL files.

Hashes use Mosquitto 2's ``$7$`` format (PBKDF2-HMAC-SHA512, iterations and salt inside), so the
broker checks them itself. Its dynamic-security plugin stores the same PBKDF2-SHA512 digest as
separate fields, so one stored hash serves both backends (`dynsec_password_fields`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
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
