"""API tokens on a real PostgreSQL: issue, list, revoke (API, CLI), expiry, bootstrap rotation,
and lineage: a token never outlives the token that issued it, and revoking a token revokes,
transitively, the tokens it issued."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session

from fleet_server import crud
from fleet_server.api.main import create_app
from fleet_server.cli import main
from fleet_server.exceptions import TokenError
from fleet_server.models import ApiTokenCreate, ApiTokenIssued, ApiTokenRevoked, utcnow
from fleet_server.security import hash_token
from fleet_server.services.tokens import issue_token, revoke_token_and_issued
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.auth_support import (
    ADMIN,
    api_calls,
    bearer,
    change_token,
    cookie,
    issue,
    login,
    settings_for,
)
from tests.waiting import wait_until

Token = dict[str, object]


def _secret(token: Token) -> str:
    return str(token["token"])


def _expiry(token: Token) -> datetime:
    return datetime.fromisoformat(str(token["expires_at"]))


def _status(client: TestClient, secret: str) -> int:
    return client.get("/api/v1/devices", headers=bearer(secret)).status_code


def _listed(client: TestClient) -> dict[object, Token]:
    return {t["id"]: t for t in client.get("/api/v1/tokens", headers=bearer(ADMIN)).json()}


def _cli(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[Token]:
    assert main(["tokens", *args, "--config", str(config)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_an_admin_issues_lists_and_revokes_tokens_and_the_secret_is_shown_once(
    client: TestClient,
) -> None:
    reader = issue(client, role="reader", name="grafana")
    assert str(reader["token"]).startswith("rsf_")
    assert reader["role"] == "reader"
    assert reader["expires_at"] is None
    assert reader["created_by_id"] is not None
    secret = str(reader["token"])
    assert client.get("/api/v1/devices", headers=bearer(secret)).status_code == 200
    # A reader may neither issue nor see tokens.
    assert client.get("/api/v1/tokens", headers=bearer(secret)).status_code == 403
    assert (
        client.post(
            "/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=bearer(secret)
        ).status_code
        == 403
    )
    listed = client.get("/api/v1/tokens", headers=bearer(ADMIN)).json()
    assert {t["name"] for t in listed} == {"bootstrap-admin", "grafana"}
    assert secret not in json.dumps(listed)
    assert all("token" not in t and "token_hash" not in t for t in listed)

    revoked = client.delete(f"/api/v1/tokens/{reader['id']}", headers=bearer(ADMIN))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert client.get("/api/v1/devices", headers=bearer(secret)).status_code == 401
    assert client.delete("/api/v1/tokens/999999", headers=bearer(ADMIN)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"expires_at": "2020-01-01T00:00:00Z"},
        {"expires_at": "2999-01-01T00:00:00"},
        {"expires_at": "9999-12-31T23:59:59-05:00"},
        {"expires_in_s": 0},
        {"expires_in_s": 60, "expires_at": "2999-01-01T00:00:00Z"},
        {"role": "owner"},
    ],
)
def test_issuing_refuses_a_bad_expiry_or_role_naming_the_problem(
    client: TestClient, body: dict[str, object]
) -> None:
    response = client.post(
        "/api/v1/tokens", json={"name": "ci", "role": "reader", **body}, headers=bearer(ADMIN)
    )
    assert response.status_code == 422, response.text
    assert client.get("/api/v1/tokens", headers=bearer(ADMIN)).json()[-1]["name"] != "ci"


def test_a_token_stops_working_when_it_expires(client: TestClient) -> None:
    issued = issue(client, role="reader", expires_in_s=2)
    expires = datetime.fromisoformat(str(issued["expires_at"]))
    assert timedelta(seconds=1) < expires - datetime.now(UTC) <= timedelta(seconds=2)
    secret = bearer(str(issued["token"]))
    assert client.get("/api/v1/devices", headers=secret).status_code == 200
    wait_until(
        lambda: client.get("/api/v1/devices", headers=secret).status_code == 401,
        15,
        "the token to stop working after its expiry",
        every=0.1,
    )
    assert datetime.now(UTC) >= expires


@pytest.mark.parametrize("credential", ["bearer", "session cookie"])
@pytest.mark.parametrize("death", ["revoked", "expired"])
def test_a_dead_token_gets_401_on_every_api_route(
    client: TestClient, engine: Engine, credential: str, death: str
) -> None:
    issued = issue(client, role="admin")
    secret = str(issued["token"])
    headers = bearer(secret) if credential == "bearer" else cookie(login(client, secret))
    calls = api_calls(client.app)  # type: ignore[arg-type]
    assert {("POST", "/api/v1/tokens"), ("GET", "/api/v1/readings/stream")} <= {
        (c.method, c.path) for c in calls
    }
    for method, path, streams in calls:
        if not streams:  # a stream is endless while its token lives; its own test reads it
            alive = client.request(method, path, headers=headers, json={})
            assert alive.status_code != 401, (method, path)
    if death == "revoked":
        assert client.delete(f"/api/v1/tokens/{issued['id']}", headers=bearer(ADMIN)).is_success
    else:
        change_token(engine, issued["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    for method, path, _ in calls:
        dead = client.request(method, path, headers=headers, json={})
        assert dead.status_code == 401, (method, path, dead.status_code)
        assert dead.headers["www-authenticate"] == "Bearer"


def test_a_changed_bootstrap_token_revokes_the_previous_one_and_every_token_it_issued(
    database: DatabaseSettings, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = "rsf_first-bootstrap-token", "rsf_second-bootstrap-token"
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": database.url}}))

    def app(bootstrap: str) -> TestClient:
        return TestClient(
            create_app(settings_for(database, bootstrap_admin_token=bootstrap), engine)
        )

    with app(first) as client:
        admin = issue(client, by=first)
        reader = issue(client, role="reader", by=_secret(admin))
        [root] = _cli(config, capsys, "issue", "--name", "ci", "--role", "reader")
    with app(second) as client:
        # What the rotated-out token did goes with it: rotating is how a leak is cut off.
        for secret in (first, _secret(admin), _secret(reader)):
            assert _status(client, secret) == 401
        assert _status(client, second) == 200
        assert _status(client, _secret(root)) == 200  # issued outside the API: nobody's child
        kept = issue(client, by=second)
        tokens = client.get("/api/v1/tokens", headers=bearer(second)).json()
        assert [(t["kind"], t["revoked_at"] is None) for t in tokens] == [
            ("bootstrap", False),
            ("issued", False),
            ("issued", False),
            ("issued", True),
            ("bootstrap", True),
            ("issued", True),
        ]
    with app(second) as client:  # a restart keeps the configured token and its lineage
        assert _status(client, _secret(kept)) == 200
        # Revoking the configured bootstrap token sticks across a restart.
        revoked = client.delete(f"/api/v1/tokens/{tokens[-2]['id']}", headers=bearer(second))
        assert revoked.status_code == 200
        assert revoked.json()["revoked_with_it"] == [kept["id"]]
    with app(second) as client:
        assert _status(client, second) == 401
        assert _status(client, _secret(root)) == 200


def test_cli_issues_lists_and_revokes_tokens_in_the_configured_database(
    database: DatabaseSettings,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": database.url}}))
    [issued] = _cli(config, capsys, "issue", "--name", "ci", "--role", "reader")
    assert issued["name"] == "ci"
    assert issued["role"] == "reader"
    secret = _secret(issued)

    with TestClient(create_app(settings_for(database), engine)) as client:
        assert _status(client, secret) == 200
        listed = _cli(config, capsys, "list")
        assert [t["name"] for t in listed] == ["ci", "bootstrap-admin"]
        assert secret not in json.dumps(listed)
        [revoked] = _cli(config, capsys, "revoke", str(issued["id"]))
        assert revoked["revoked_at"] is not None
        assert _status(client, secret) == 401

    assert main(["tokens", "revoke", "--config", str(config), "999999"]) == 1
    assert "no token 999999" in capsys.readouterr().err
    bad_name = ["tokens", "issue", "--config", str(config), "--name", ""]
    assert main(bad_name) == 1
    assert "name" in capsys.readouterr().err


def test_the_openapi_document_advertises_only_routes_it_serves(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes, "the API documents how to authenticate"
    for name, scheme in schemes.items():
        flows = scheme.get("flows", {}).values()
        for url in [f[key] for f in flows for key in ("tokenUrl", "authorizationUrl") if key in f]:
            assert url in spec["paths"], f"{name} points at {url}, which the API does not serve"
    assert {"type": "http", "scheme": "bearer"}.items() <= next(iter(schemes.values())).items()
    assert "/api/v1/tokens" in spec["paths"]


def test_a_token_never_outlives_the_admin_token_that_issued_it(client: TestClient) -> None:
    parent = issue(client, name="ops-for-an-hour", expires_in_s=3600)
    limit = _expiry(parent)
    later = (limit + timedelta(days=365)).isoformat()
    for fields in ({}, {"expires_in_s": 7200}, {"expires_at": later}):
        child = issue(client, by=_secret(parent), **fields)
        assert _expiry(child) == limit, fields
    shorter = issue(client, role="reader", by=_secret(parent), expires_in_s=60)
    assert _expiry(shorter) < limit
    # Through a token it issued, the first token's expiry still binds.
    child = issue(client, by=_secret(parent))
    grandchild = issue(client, by=_secret(child), expires_in_s=10 * 365 * 86400)
    assert _expiry(grandchild) == limit
    assert _expiry(_listed(client)[grandchild["id"]]) == limit
    # A token that never expires may issue one that never expires.
    assert issue(client)["expires_at"] is None


def test_revoking_a_token_revokes_every_token_it_issued_and_their_dashboard_sessions(
    client: TestClient,
) -> None:
    leaked = issue(client, name="leaked")
    minted = issue(client, name="minted", by=_secret(leaked))
    minted_reader = issue(client, role="reader", by=_secret(minted))
    direct_reader = issue(client, role="reader", by=_secret(leaked))
    unrelated = issue(client, role="reader", name="grafana")  # the bootstrap admin's
    session = cookie(login(client, _secret(minted_reader)))
    assert client.get("/api/v1/devices", headers=session).status_code == 200

    answer = client.delete(f"/api/v1/tokens/{leaked['id']}", headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    cut_off = [minted["id"], minted_reader["id"], direct_reader["id"]]
    assert answer.json()["revoked_with_it"] == sorted(cut_off)  # type: ignore[type-var]
    for token in (leaked, minted, minted_reader, direct_reader):
        assert _status(client, _secret(token)) == 401, token["name"]
    assert client.get("/api/v1/devices", headers=session).status_code == 401
    assert _status(client, _secret(unrelated)) == 200
    assert _status(client, ADMIN) == 200
    listed = _listed(client)
    assert {listed[i]["revoked_at"] for i in cut_off} == {answer.json()["revoked_at"]}
    assert listed[minted_reader["id"]]["created_by_id"] == minted["id"]
    assert listed[minted["id"]]["created_by_id"] == leaked["id"]
    assert listed[unrelated["id"]]["revoked_at"] is None


def test_revoking_a_revoked_token_again_reaches_what_it_issued_while_revocation_did_not(
    client: TestClient, engine: Engine
) -> None:
    parent = issue(client)
    child = issue(client, by=_secret(parent))
    first = datetime.now(UTC) - timedelta(days=1)
    change_token(engine, parent["id"], revoked_at=first)  # as a revocation before this fix left it
    assert _status(client, _secret(child)) == 200

    answer = client.delete(f"/api/v1/tokens/{parent['id']}", headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked_with_it"] == [child["id"]]
    assert datetime.fromisoformat(answer.json()["revoked_at"]) == first  # its first revocation
    assert _status(client, _secret(child)) == 401


def test_cli_lists_who_issued_each_token_and_its_revoke_reaches_what_the_token_issued(
    database: DatabaseSettings, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": database.url}}))
    with TestClient(create_app(settings_for(database), engine)) as client:
        admin = issue(client, name="ops")
        reader = issue(client, role="reader", by=_secret(admin))
        [root] = _cli(config, capsys, "issue", "--name", "ci", "--role", "admin")
        assert root["created_by_id"] is None  # an operator at the database issued it

        listed = {t["name"]: t for t in _cli(config, capsys, "list")}
        assert listed["ops"]["created_by_id"] == listed["bootstrap-admin"]["id"]
        assert listed["test"]["created_by_id"] == admin["id"]
        assert listed["ci"]["created_by_id"] is None

        [revoked] = _cli(config, capsys, "revoke", str(admin["id"]))
        assert revoked["id"] == admin["id"]
        assert revoked["revoked_with_it"] == [reader["id"]]
        assert _status(client, _secret(reader)) == 401
        assert _status(client, _secret(root)) == 200


def _blocked_on_a_lock(engine: Engine) -> Callable[[], bool]:
    def blocked() -> bool:
        with engine.connect() as connection:
            waiting = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        return bool(waiting)

    return blocked


@pytest.mark.parametrize("first", ["revoke", "issue"])
def test_a_token_revoked_while_it_issues_another_leaves_no_live_child(
    engine: Engine, first: str
) -> None:
    with Session(engine) as session:
        parent = crud.create_token(session, name="p", role="admin", token_hash=hash_token("p"))
        parent_id = parent.id or 0
        session.commit()
    body = ApiTokenCreate(name="child", role="admin")

    def revoke() -> ApiTokenRevoked | None:
        with Session(engine) as session:
            revoked = revoke_token_and_issued(session, token_id=parent_id, now=utcnow())
            session.commit()
            return revoked

    def issue_child() -> ApiTokenIssued:
        with Session(engine) as session:
            issued = issue_token(session, body=body, issuer_id=parent_id)
            session.commit()
            return issued

    holder = Session(engine)  # does its half first and holds it, uncommitted
    try:
        if first == "revoke":
            revoke_token_and_issued(holder, token_id=parent_id, now=utcnow())
        else:
            child_id = issue_token(holder, body=body, issuer_id=parent_id).id
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(issue_child if first == "revoke" else revoke)
            wait_until(_blocked_on_a_lock(engine), 10, "the second half waits for the first")
            holder.commit()
            if first == "revoke":
                with pytest.raises(TokenError, match="no longer live"):
                    other.result(timeout=10)
            else:
                revoked = other.result(timeout=10)
                assert isinstance(revoked, ApiTokenRevoked)
                assert revoked.revoked_with_it == [child_id]
    finally:
        holder.close()
    with Session(engine) as session:
        live = [t.name for t in crud.list_tokens(session) if t.revoked_at is None]
    assert live == []
