"""Schemathesis against the API's own OpenAPI document: no generated request gets a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from sqlalchemy import update

from fleet_server.api.main import create_app, ensure_bootstrap_token
from fleet_server.db import make_engine, session_scope
from fleet_server.models import ApiToken
from fleet_server.settings import AuthSettings, DatabaseSettings, ServerSettings

ADMIN = "rsf_fuzz-admin-token"
# The live feed answers for as long as its client stays: each case would wait out the
# transport's timeout. test_live_feed.py and test_dashboard_sessions.py cover it instead.
ENDLESS = {"/api/v1/readings/stream"}


@pytest.mark.slow
def test_no_generated_request_makes_the_server_fail(database: DatabaseSettings) -> None:
    engine = make_engine(database)
    server = ServerSettings(
        database=database, auth=AuthSettings(bootstrap_admin_token=SecretStr(ADMIN))
    )
    ensure_bootstrap_token(engine, server)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(server, engine))
    failures: list[str] = []
    operations = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]
            if operation.path in ENDLESS:
                continue
            operations += 1

            @settings(
                max_examples=60,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def call(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
                for headers in ({"Authorization": f"Bearer {ADMIN}"}, {}):
                    response = case.call(headers=headers)
                    # DELETE /api/v1/tokens/{id} may revoke the fuzzer's own token: revive it,
                    # or every later case would only meet the 401 of a dead token.
                    with session_scope(engine) as session:
                        session.execute(update(ApiToken).values(revoked_at=None))
                    if response.status_code >= 500:
                        failures.append(
                            f"{case.method} {case.formatted_path} -> "
                            f"{response.status_code}: {response.text[:200]}"
                        )

            call()
    finally:
        engine.dispose()
    assert operations >= 8
    assert failures == []
