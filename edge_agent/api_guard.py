"""What the local API decides before it reads a request body: who may call it, and how much.

Pure rules, no sockets: whether a listen address stays on the device (loopback needs no token;
anything else does), whether a request carries the bearer token (compared in constant time),
and whether its declared body may be read at all (Content-Length present, a plain non-negative
integer, within the route's limit; no Transfer-Encoding, which the standard library's server
cannot bound).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Sequence
from http import HTTPStatus

from edge_agent.exceptions import AgentError, ApiError

MIN_TOKEN_CHARS = 16
"""Shortest bearer token accepted: a guessable token on a network-facing device is no lock."""

_DIGITS = re.compile(r"[0-9]+")
_MAX_LENGTH_DIGITS = 18  # beyond any limit, and short of Python's int-from-str digit cap


def is_loopback_host(host: str) -> bool:
    """Whether listening on `host` keeps the API on this device (127.0.0.0/8, ::1, localhost).

    Any other name may resolve to a network address, and "" or 0.0.0.0 mean every interface.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: str) -> str:
    """`token` if it is usable as the API's bearer token, else AgentError saying why."""
    if len(token) < MIN_TOKEN_CHARS:
        raise AgentError(f"holds {len(token)} characters; a token needs at least {MIN_TOKEN_CHARS}")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise AgentError("holds spaces or unprintable characters; a token is one printable word")
    return token


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <token>``, compared in constant time."""
    if authorization is None:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def unauthorized() -> ApiError:
    """The 401 for a request without the right token, with the challenge RFC 6750 asks for."""
    return ApiError(
        HTTPStatus.UNAUTHORIZED,
        "this route needs the device's API token: Authorization: Bearer <token>",
        headers={"WWW-Authenticate": 'Bearer realm="roadsign-agent"'},
    )


def declared_length(
    content_lengths: Sequence[str], transfer_encodings: Sequence[str], *, limit: int
) -> int:
    """The body size a request declares, or the 4xx that refuses it before a byte is read."""
    if transfer_encodings:
        raise ApiError(
            HTTPStatus.LENGTH_REQUIRED,
            "Transfer-Encoding is not accepted; send the body with a Content-Length",
        )
    if not content_lengths:
        raise ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
    values = {value.strip() for value in content_lengths}
    if len(values) > 1:
        raise ApiError(HTTPStatus.BAD_REQUEST, "conflicting Content-Length headers")
    [value] = values
    if _DIGITS.fullmatch(value) is None:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"Content-Length must be a non-negative integer, not {value!r}"
        )
    if len(value) > _MAX_LENGTH_DIGITS or int(value) > limit:
        raise ApiError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"a body of {value} bytes is over the limit of {limit}",
        )
    return int(value)
