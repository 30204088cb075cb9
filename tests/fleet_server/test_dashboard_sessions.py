"""Dashboard sessions on a real PostgreSQL: signed cookies, logout, expiry, CSRF, the live feed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from fleet_server.api.deps import COOKIE, CSRF_HEADER
from fleet_server.api.main import create_app
from fleet_server.db import session_scope
from fleet_server.models import DashboardSession
from fleet_server.security import hash_token, new_session_id, sign_session
from fleet_server.settings import DEV_SECRET_KEY, DatabaseSettings
from tests.fleet_server.auth_support import (
    ADMIN,
    bearer,
    cookie,
    csrf_of,
    issue,
    login,
    settings_for,
)
from tests.fleet_server.ingest_rig import enrol
from tests.serving import serving

EVIL = "https://evil.example"


def _sessions(engine: Engine) -> list[DashboardSession]:
    with session_scope(engine) as session:
        return list(session.execute(select(DashboardSession)).scalars())


def _page_sends_to_login(client: TestClient, headers: dict[str, str]) -> bool:
    page = client.get("/", headers=headers, follow_redirects=False)
    return page.status_code == 303 and page.headers["location"] == "/login"


def test_login_opens_a_server_side_session_held_by_a_signed_httponly_strict_cookie(
    client: TestClient, engine: Engine
) -> None:
    response = client.post("/login", data={"token": ADMIN}, follow_redirects=False)
    assert response.status_code == 303
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP: a Secure cookie would never come back
    value = response.cookies[COOKIE]
    assert ADMIN not in value
    session_id, _, signature = value.rpartition(".")
    assert signature
    [stored] = _sessions(engine)
    assert stored.session_hash == hash_token(session_id)
    assert stored.ended_at is None
    client.cookies.clear()
    assert client.get("/api/v1/devices", headers=cookie(value)).status_code == 200
    page = client.get("/", headers=cookie(value))
    assert page.status_code == 200
    assert "action='/logout'" in page.text


@pytest.mark.parametrize(
    ("base_url", "public_origin"),
    [("https://testserver", None), ("http://testserver", "https://fleet.example.com")],
)
def test_the_session_cookie_is_secure_when_the_dashboard_is_served_over_https(
    database: DatabaseSettings, engine: Engine, base_url: str, public_origin: str | None
) -> None:
    app = create_app(settings_for(database, public_origin=public_origin), engine)
    with TestClient(app, base_url=base_url) as client:
        response = client.post("/login", data={"token": ADMIN}, follow_redirects=False)
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


def test_a_forged_session_cookie_gets_401(client: TestClient) -> None:
    genuine = login(client, ADMIN)
    assert client.get("/api/v1/devices", headers=cookie(genuine)).status_code == 200
    session_id = genuine.rpartition(".")[0]
    forgeries = {
        "tampered signature": genuine[:-2] + ("AA" if genuine[-2:] != "AA" else "BB"),
        "signed with another key": sign_session(session_id, "not-the-server-key"),
        "signed with the development key": sign_session(session_id, DEV_SECRET_KEY + "x"),
        "unsigned id": session_id,
        "a made-up session, rightly signed": sign_session(new_session_id(), DEV_SECRET_KEY),
        "the raw API token": ADMIN,
    }
    for what, value in forgeries.items():
        assert client.get("/api/v1/devices", headers=cookie(value)).status_code == 401, what
        assert _page_sends_to_login(client, cookie(value)), what
    # The old cookie held the raw token itself: it must buy nothing now.
    old = {"Cookie": f"roadsign_token={ADMIN}"}
    assert client.get("/api/v1/devices", headers=old).status_code == 401
    assert _page_sends_to_login(client, old)


def test_a_cookie_replayed_after_logout_gets_401(client: TestClient, engine: Engine) -> None:
    value = login(client, ADMIN)
    csrf = csrf_of(client, value)
    assert client.get("/logout", headers=cookie(value)).status_code == 405  # no GET logout
    # Logging out changes state: without the CSRF token, or from another site, it is refused.
    refused = client.post("/logout", headers=cookie(value), follow_redirects=False)
    assert refused.status_code == 403
    cross = client.post(
        "/logout",
        data={"csrf_token": csrf},
        headers={**cookie(value), "Origin": EVIL},
        follow_redirects=False,
    )
    assert cross.status_code == 403
    assert client.get("/api/v1/devices", headers=cookie(value)).status_code == 200

    response = client.post(
        "/logout", data={"csrf_token": csrf}, headers=cookie(value), follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert response.headers["set-cookie"].startswith(f'{COOKIE}=""')  # the browser forgets it
    [ended] = _sessions(engine)
    assert ended.ended_at is not None
    assert client.get("/api/v1/devices", headers=cookie(value)).status_code == 401
    assert _page_sends_to_login(client, cookie(value))


def test_a_session_ends_with_its_token_and_at_its_expiry(
    client: TestClient, engine: Engine
) -> None:
    issued = issue(client, role="reader", expires_in_s=600)
    secret = str(issued["token"])
    # A session never outlives its token.
    response = client.post("/login", data={"token": secret}, follow_redirects=False)
    client.cookies.clear()
    max_age = int(response.headers["set-cookie"].split("Max-Age=")[1].split(";")[0])
    assert 590 <= max_age <= 600
    [first] = _sessions(engine)
    assert first.expires_at == datetime.fromisoformat(str(issued["expires_at"]))
    value = response.cookies[COOKIE]
    assert client.get("/api/v1/devices", headers=cookie(value)).status_code == 200
    assert client.delete(f"/api/v1/tokens/{issued['id']}", headers=bearer(ADMIN)).is_success
    assert client.get("/api/v1/devices", headers=cookie(value)).status_code == 401
    assert _page_sends_to_login(client, cookie(value))
    # Revoked, the token cannot log in again either.
    again = client.post("/login", data={"token": secret}, follow_redirects=False)
    assert again.headers["location"] == "/login?error=1"

    value = login(client, ADMIN)
    assert client.get("/api/v1/devices", headers=cookie(value)).status_code == 200
    with session_scope(engine) as session:
        session.execute(
            update(DashboardSession)
            .where(DashboardSession.session_hash == hash_token(value.rpartition(".")[0]))  # type: ignore[arg-type]
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert client.get("/api/v1/devices", headers=cookie(value)).status_code == 401


def test_a_cross_origin_post_to_decommission_gets_403(client: TestClient, engine: Engine) -> None:
    enrol(engine, "veh-1", "veh-2")
    value = login(client, ADMIN)
    csrf = csrf_of(client, value)
    decommission = "/api/v1/devices/veh-1/decommission"
    attempts = {
        "from another origin": {"Origin": EVIL, CSRF_HEADER: csrf},
        "referred by another site": {"Referer": f"{EVIL}/page", CSRF_HEADER: csrf},
        "from a sandboxed frame": {"Origin": "null", CSRF_HEADER: csrf},
        "without the CSRF token": {"Origin": "http://testserver"},
        "with a wrong CSRF token": {CSRF_HEADER: csrf[:-1] + ("A" if csrf[-1] != "A" else "B")},
    }
    for what, headers in attempts.items():
        response = client.post(decommission, headers={**cookie(value), **headers})
        assert response.status_code == 403, what
    status = client.get("/api/v1/devices/veh-1", headers=bearer(ADMIN)).json()["status"]
    assert status != "decommissioned"

    same_origin = {**cookie(value), "Origin": "http://testserver", CSRF_HEADER: csrf}
    done = client.post(decommission, headers=same_origin)
    assert done.status_code == 200
    assert done.json()["status"] == "decommissioned"
    # A bearer token is no ambient credential: no CSRF token needed, wherever the call comes from.
    by_token = client.post(
        "/api/v1/devices/veh-2/decommission", headers={**bearer(ADMIN), "Origin": EVIL}
    )
    assert by_token.status_code == 200


def test_a_cross_origin_login_is_refused(client: TestClient, engine: Engine) -> None:
    response = client.post(
        "/login", data={"token": ADMIN}, headers={"Origin": EVIL}, follow_redirects=False
    )
    assert response.status_code == 403
    assert _sessions(engine) == []


def test_a_login_is_stored_before_its_answer_reaches_the_browser(
    database: DatabaseSettings, engine: Engine
) -> None:
    # A browser follows the login's redirect at once; over a real server the session must be
    # committed by then (the test client, which waits for the whole app call, cannot see this).
    with (
        serving(create_app(settings_for(database), engine)) as base,
        httpx.Client(base_url=base, timeout=10) as http,
    ):
        for attempt in range(20):
            value = login(http, ADMIN)
            assert http.get("/api/v1/devices", headers=cookie(value)).status_code == 200, attempt


def _ends_within(lines: Iterator[str], seconds: float) -> bool:
    """Whether the event stream closes within `seconds` (comments and events may come first)."""
    deadline = time.monotonic() + seconds
    try:
        for _ in lines:
            if time.monotonic() > deadline:
                return False
    except httpx.ReadTimeout:
        return False
    return time.monotonic() <= deadline


@pytest.mark.parametrize("ending", ["token revoked", "logged out"])
def test_the_live_feed_ends_when_its_token_or_session_does(
    database: DatabaseSettings, engine: Engine, ending: str
) -> None:
    app = create_app(settings_for(database), engine)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        issued = issue(http, role="reader")
        secret = str(issued["token"])
        credential = bearer(secret) if ending == "token revoked" else cookie(login(http, secret))
        with http.stream("GET", "/api/v1/readings/stream", headers=credential) as feed:
            assert feed.status_code == 200
            lines = feed.iter_lines()
            assert next(lines) == ": connected"
            if ending == "token revoked":
                gone = http.delete(f"/api/v1/tokens/{issued['id']}", headers=bearer(ADMIN))
                assert gone.status_code == 200
            else:
                csrf = csrf_of(http, credential["Cookie"].partition("=")[2])
                gone = http.post("/logout", data={"csrf_token": csrf}, headers=credential)
                assert gone.status_code == 303
            assert _ends_within(lines, 8), "the feed went on after its credential died"
        assert http.get("/api/v1/readings/stream", headers=credential).status_code == 401
