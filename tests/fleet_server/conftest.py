"""A fresh PostgreSQL database per test, migrated, on the machine's server (127.0.0.1:5432).

Beside it, an engine on that database and a client of the HTTP API whose admin token is `ADMIN`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from fleet_server.api.main import create_app
from fleet_server.db import make_engine
from fleet_server.migrate import upgrade
from fleet_server.settings import AuthSettings, DatabaseSettings, ServerSettings

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def database() -> Iterator[DatabaseSettings]:
    name = f"fleet_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    settings = DatabaseSettings(url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    upgrade(settings)
    yield settings
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


ADMIN = "rsf_test-admin-token"
"""The bootstrap admin token of the `client` fixture's app."""


@pytest.fixture
def engine(database: DatabaseSettings) -> Iterator[Engine]:
    engine = make_engine(database)
    yield engine
    engine.dispose()


@pytest.fixture
def client(database: DatabaseSettings, engine: Engine) -> Iterator[TestClient]:
    """The API and dashboard on the test database, started (lifespan run), admin token `ADMIN`."""
    settings = ServerSettings(
        database=database, auth=AuthSettings(bootstrap_admin_token=SecretStr(ADMIN))
    )
    with TestClient(create_app(settings, engine)) as test_client:
        yield test_client
