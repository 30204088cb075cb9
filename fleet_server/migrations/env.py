"""Alembic environment: the URL comes from the settings object the command built."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from fleet_server import models  # noqa: F401 - the tables must be registered on the metadata

url = context.config.get_main_option("sqlalchemy.url")
assert url, "roadsign-fleet migrate sets sqlalchemy.url"
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=SQLModel.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
