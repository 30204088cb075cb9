"""Database migrations with Alembic, configured from the settings object (no alembic.ini)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import SQLAlchemyError

from fleet_server.exceptions import StorageError
from fleet_server.settings import DatabaseSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(settings: DatabaseSettings) -> Config:
    """Alembic's config for our migrations and the configured database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    url = settings.url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    """Bring the database schema to `revision`."""
    try:
        command.upgrade(alembic_config(settings), revision)
    except SQLAlchemyError as e:
        raise StorageError(f"migration to {revision} failed: {e}") from e
