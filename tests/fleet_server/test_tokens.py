"""API tokens on a real PostgreSQL: issue, list, revoke (API, CLI), expiry, bootstrap rotation."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fleet_server.api.main import create_app
from fleet_server.cli import main
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
    deadline = time.monotonic() + 15
    while client.get("/api/v1/devices", headers=secret).status_code != 401:
        assert time.monotonic() < deadline, "the token still works long after its expiry"
        time.sleep(0.1)
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


def test_a_changed_bootstrap_token_revokes_the_previous_one(
    database: DatabaseSettings, engine: Engine
) -> None:
    first, second = "rsf_first-bootstrap-token", "rsf_second-bootstrap-token"
    with TestClient(
        create_app(settings_for(database, bootstrap_admin_token=first), engine)
    ) as client:
        assert client.get("/api/v1/tokens", headers=bearer(first)).status_code == 200
        other = issue_with(client, first)
    with TestClient(
        create_app(settings_for(database, bootstrap_admin_token=second), engine)
    ) as client:
        assert client.get("/api/v1/devices", headers=bearer(first)).status_code == 401
        assert client.get("/api/v1/devices", headers=bearer(second)).status_code == 200
        # Only bootstrap tokens rotate: a token an admin issued keeps working.
        assert client.get("/api/v1/devices", headers=bearer(other)).status_code == 200
        tokens = client.get("/api/v1/tokens", headers=bearer(second)).json()
        live = [(t["kind"], t["revoked_at"] is None) for t in tokens]
        assert live == [("bootstrap", False), ("issued", True), ("bootstrap", True)]
        # Revoking the configured bootstrap token sticks across a restart.
        revoked = client.delete(f"/api/v1/tokens/{tokens[-1]['id']}", headers=bearer(second))
        assert revoked.status_code == 200
    with TestClient(
        create_app(settings_for(database, bootstrap_admin_token=second), engine)
    ) as client:
        assert client.get("/api/v1/devices", headers=bearer(second)).status_code == 401
        assert client.get("/api/v1/devices", headers=bearer(other)).status_code == 200


def issue_with(client: TestClient, admin: str) -> str:
    response = client.post(
        "/api/v1/tokens", json={"name": "ops", "role": "admin"}, headers=bearer(admin)
    )
    assert response.status_code == 201
    return str(response.json()["token"])


def test_cli_issues_lists_and_revokes_tokens_in_the_configured_database(
    database: DatabaseSettings,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": database.url}}))
    assert (
        main(["tokens", "issue", "--config", str(config), "--name", "ci", "--role", "reader"]) == 0
    )
    issued = json.loads(capsys.readouterr().out)
    assert issued["name"] == "ci"
    assert issued["role"] == "reader"
    secret = str(issued["token"])

    with TestClient(create_app(settings_for(database), engine)) as client:
        assert client.get("/api/v1/devices", headers=bearer(secret)).status_code == 200
        assert main(["tokens", "list", "--config", str(config)]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [t["name"] for t in listed] == ["ci", "bootstrap-admin"]
        assert secret not in json.dumps(listed)
        assert main(["tokens", "revoke", "--config", str(config), str(issued["id"])]) == 0
        assert json.loads(capsys.readouterr().out)["revoked_at"] is not None
        assert client.get("/api/v1/devices", headers=bearer(secret)).status_code == 401

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
