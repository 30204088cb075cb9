"""Broker credentials, pure: Mosquitto password hashes and the password and ACL files' text.

Hashes use Mosquitto 2's ``$7$`` format (PBKDF2-HMAC-SHA512, iterations and salt inside), so the
broker checks them itself. The ACL confines every device to its own subtree through ``pattern``
rules (``%u`` is the user name, which is the device id) and lets the server user read all devices
and write only what servers send.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping

from fleet_protocol.topics import (
    DEVICES_PREFIX,
    FLEET_READINGS_TOPIC,
    KIND_SPECS,
    Direction,
    device_acl_patterns,
    validate_device_id,
)

ITERATIONS = 10_000
SALT_BYTES = 12


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


def password_file(users: Mapping[str, str]) -> str:
    """Mosquitto's password file for `users` (name -> ``$7$`` hash), sorted."""
    lines = []
    for user, digest in sorted(users.items()):
        if ":" in user or "\n" in user or not digest.startswith("$7$"):
            raise ValueError(f"refusing a malformed password entry for {user!r}")
        lines.append(f"{user}:{digest}")
    return "\n".join(lines) + "\n"


def acl_file(server_user: str) -> str:
    """Mosquitto's ACL file: the server reads every device and writes its downlinks."""
    validate_device_id(server_user)  # same rules: one topic level, no wildcards
    lines = [f"user {server_user}", f"topic read {DEVICES_PREFIX}/#"]
    lines += [
        f"topic write {DEVICES_PREFIX}/+/{kind.value}"
        for kind, spec in KIND_SPECS.items()
        if spec.direction is Direction.SERVER_TO_DEVICE
    ]
    lines += [f"topic readwrite {FLEET_READINGS_TOPIC}", ""]
    lines += [f"pattern {access} {topic}" for access, topic in device_acl_patterns()]
    return "\n".join(lines) + "\n"
