"""The pure security functions: liveness, signed session cookies, CSRF tokens, origins, strength."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from fleet_server.security import (
    MAX_AUTHORIZATION_CHARS,
    MIN_SECRET_BITS,
    basic_credentials,
    bounded_expiry,
    cross_origin,
    csrf_matches,
    csrf_token,
    generate_token,
    is_live,
    new_session_id,
    origin_of,
    secret_bits,
    sign_session,
    verified_session_id,
    weak_secret_problem,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
KEY = "k" * 8 + secrets.token_urlsafe(32)


def test_a_token_or_session_is_live_until_it_ends_or_expires() -> None:
    assert is_live(ended_at=None, expires_at=None, now=NOW)
    assert is_live(ended_at=None, expires_at=NOW + timedelta(seconds=1), now=NOW)
    assert not is_live(ended_at=None, expires_at=NOW, now=NOW)  # the expiry moment is past it
    assert not is_live(ended_at=NOW - timedelta(days=1), expires_at=None, now=NOW)


def test_a_new_token_expires_as_asked_but_never_after_the_token_that_issued_it() -> None:
    hour, day = NOW + timedelta(hours=1), NOW + timedelta(days=1)
    assert bounded_expiry(day, hour) == hour
    assert bounded_expiry(hour, day) == hour
    assert bounded_expiry(None, hour) == hour  # asking for no expiry gets the issuer's
    assert bounded_expiry(day, None) == day
    assert bounded_expiry(None, None) is None


def test_only_a_cookie_signed_with_the_key_yields_its_session_id() -> None:
    session_id = new_session_id()
    cookie = sign_session(session_id, KEY)
    assert verified_session_id(cookie, KEY) == session_id
    head, _, signature = cookie.rpartition(".")
    for forged in (
        sign_session(session_id, KEY + "x"),
        f"{head}.{signature[::-1]}",
        f"{new_session_id()}.{signature}",
        head,
        f".{signature}",
        "",
    ):
        assert verified_session_id(forged, KEY) is None, forged


def test_a_csrf_token_belongs_to_one_session_and_key_and_is_no_cookie_signature() -> None:
    session_id = new_session_id()
    token = csrf_token(session_id, KEY)
    assert csrf_matches(token, session_id, KEY)
    assert not csrf_matches(token, new_session_id(), KEY)
    assert not csrf_matches(token, session_id, KEY + "x")
    assert not csrf_matches(None, session_id, KEY)
    assert not csrf_matches("", session_id, KEY)
    assert sign_session(session_id, KEY).rpartition(".")[2] != token


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Fleet.Example.com/devices?x=1", "https://fleet.example.com"),
        ("https://fleet.example.com:443", "https://fleet.example.com"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://[::1]:8000/x", "http://[::1]:8000"),
        ("null", None),
        ("ftp://fleet.example.com", None),
        ("http://fleet.example.com:99999", None),
    ],
)
def test_origin_of_a_url(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_a_request_is_cross_origin_when_it_names_another_sender() -> None:
    own = "https://fleet.example.com"
    assert not cross_origin(origin=own, referer=None, own_origin=own)
    assert not cross_origin(origin=None, referer=f"{own}/devices/veh-1", own_origin=own)
    assert not cross_origin(origin=None, referer=None, own_origin=own)
    assert cross_origin(origin="https://evil.example", referer=None, own_origin=own)
    assert cross_origin(origin="null", referer=None, own_origin=own)
    assert cross_origin(origin="http://fleet.example.com", referer=None, own_origin=own)
    assert cross_origin(origin=None, referer="https://evil.example/x", own_origin=own)
    # Origin, where sent, is what counts.
    assert cross_origin(origin="https://evil.example", referer=f"{own}/", own_origin=own)


def test_secret_strength_needs_length_and_entropy() -> None:
    assert secret_bits("a" * 64) == 0
    assert secret_bits(generate_token()) > MIN_SECRET_BITS
    assert weak_secret_problem(generate_token()) is None
    assert weak_secret_problem(secrets.token_hex(32)) is None
    assert weak_secret_problem("Xk3-9fQz") == "is shorter than 32 characters"
    problem = weak_secret_problem("ab" * 20)
    assert problem is not None
    assert problem.startswith("has too little entropy (about 40 bits")


def _basic(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_basic_credentials_split_at_the_first_colon_so_a_password_may_hold_colons() -> None:
    assert basic_credentials(_basic("cam-1:pass:word")) == ("cam-1", "pass:word")
    assert basic_credentials(" " + _basic("cam-1:pw") + " ") == ("cam-1", "pw")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64 at all!",
        _basic("no-colon"),
        _basic(":password-without-user"),
        _basic("user-without-password:"),
        base64.b64encode(b"cam-1:\xff\xfe").decode(),  # not UTF-8
        _basic("cam-1:" + "p" * MAX_AUTHORIZATION_CHARS),  # refused before decoding
    ],
)
def test_malformed_or_oversized_basic_credentials_are_none(value: str) -> None:
    assert basic_credentials(value) is None
