"""PostgreSQL for the server's tests: one private server per session, a fresh database per test.

The server is `tests.postgres.Postgres`, started the first time a test asks for a database and
stopped at the end of the session; nothing touches the machine's own PostgreSQL. The schema is
migrated once into a template, and each test's database is a copy of it. Beside it, an engine on
that database and a client of the HTTP API whose admin token is `ADMIN`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import Engine

from fleet_server.api.main import create_app
from fleet_server.db import make_engine
from fleet_server.migrate import upgrade
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.auth_support import settings_for
from tests.postgres import Postgres

TEMPLATE = "fleet_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """This session's PostgreSQL server."""
    with Postgres() as server:
        yield server


@pytest.fixture(scope="session")
def migrated_template(postgres: Postgres) -> str:
    """The name of a database migrated to head, for `database` to copy."""
    postgres.create_database(TEMPLATE)
    upgrade(DatabaseSettings(url=postgres.url(TEMPLATE)))
    # A template must have no sessions while it is copied: refuse any, so none can linger.
    postgres.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(TEMPLATE))
    )
    return TEMPLATE


@pytest.fixture
def database(postgres: Postgres, migrated_template: str) -> Iterator[DatabaseSettings]:
    """A fresh database migrated to head, dropped after the test."""
    name = f"fleet_test_{uuid.uuid4().hex[:10]}"
    postgres.create_database(name, template=migrated_template)
    yield DatabaseSettings(url=postgres.url(name))
    postgres.drop_database(name)


@pytest.fixture
def engine(database: DatabaseSettings) -> Iterator[Engine]:
    engine = make_engine(database)
    yield engine
    engine.dispose()


@pytest.fixture
def client(database: DatabaseSettings, engine: Engine) -> Iterator[TestClient]:
    """The API and dashboard on the test database, started (lifespan run), admin token `ADMIN`
    (`tests.fleet_server.auth_support`)."""
    with TestClient(create_app(settings_for(database), engine)) as test_client:
        yield test_client
