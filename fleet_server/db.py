"""Database engines and sessions, made from the settings object (nothing at import time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlmodel import Session

from fleet_server.exceptions import StorageError, UnstorableError
from fleet_server.settings import DatabaseSettings

REFUSED_DATA = (DataError, IntegrityError, psycopg.DataError, psycopg.IntegrityError)
"""Errors about the rows themselves, not the database's availability: retrying cannot help."""


def make_engine(settings: DatabaseSettings) -> Engine:
    """An engine for the configured database (PostgreSQL through psycopg 3, or SQLite)."""
    url = settings.url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        if url.startswith("sqlite"):
            return create_engine(url, connect_args={"check_same_thread": False})
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except SQLAlchemyError as e:
        raise StorageError(f"cannot create a database engine for {settings.url}: {e}") from e


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success and rolled back on any error (wrapped)."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    # psycopg's own errors reach here from the COPY path, which bypasses SQLAlchemy.
    except (SQLAlchemyError, psycopg.Error) as e:
        session.rollback()
        if isinstance(e, REFUSED_DATA):
            raise UnstorableError(f"the database refused the data: {e}") from e
        raise StorageError(f"database operation failed: {e}") from e
    finally:
        session.close()
