"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import fleet_server.models  # noqa: F401 - registers the tables on SQLModel.metadata
from fleet_server.db import make_engine
from fleet_server.settings import DatabaseSettings


def test_a_migrated_database_has_no_difference_from_the_models(
    database: DatabaseSettings,
) -> None:
    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            differences = compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()
    assert differences == []
