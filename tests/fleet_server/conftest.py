"""A fresh PostgreSQL database per test, migrated, on the machine's server (127.0.0.1:5432)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from fleet_server.migrate import upgrade
from fleet_server.settings import DatabaseSettings

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
