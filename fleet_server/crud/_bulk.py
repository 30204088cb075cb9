"""Bulk inserts that skip (device_id, seq) pairs already stored: COPY on PostgreSQL, one
statement on SQLite. Shared by every kind of device message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.types.json import Json
from sqlalchemy import JSON, Table
from sqlalchemy.dialects import sqlite
from sqlmodel import Session, SQLModel


def table_of(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def insert_ignoring_duplicates(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int, int]]:
    """Insert `rows`, skipping (device_id, seq) already stored; the new (device_id, seq, id)."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        return _insert_staged(session, table, rows)
    statement = (
        sqlite.insert(table)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        .returning(table.c.device_id, table.c.seq, table.c.id)
    )
    return [(row[0], int(row[1]), int(row[2])) for row in session.execute(statement)]


@lru_cache(maxsize=16)
def _staged_insert_sql(table: Table, names: tuple[str, ...]) -> tuple[str, str, str]:
    # Table and column names come from our own metadata, never from input.
    listed = ", ".join(names)
    staging = f"staged_{table.name}"
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS "  # noqa: S608
        f"AS SELECT {listed} FROM {table.name} WITH NO DATA",
        f"COPY {staging} ({listed}) FROM STDIN",
        f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {staging} "  # noqa: S608
        "ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq, id",
    )


def _insert_staged(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int, int]]:
    # COPY into a per-connection temporary table, then one INSERT ... SELECT that skips what is
    # stored. COPY costs the worker a third of the CPU of binding the rows as parameters (a
    # multi-row VALUES statement, compiled anew for every batch, was half the ingest time).
    names = tuple(rows[0])
    create, copy, insert = _staged_insert_sql(table, names)
    json_columns = [i for i, name in enumerate(names) if isinstance(table.c[name].type, JSON)]
    connection = session.connection().connection.driver_connection
    assert isinstance(connection, psycopg.Connection), "PostgreSQL is reached through psycopg"
    with connection.cursor() as cursor:
        cursor.execute(create)
        with cursor.copy(copy) as staged:
            for row in rows:
                values = [row[name] for name in names]
                for i in json_columns:
                    values[i] = Json(values[i])
                staged.write_row(values)
        cursor.execute(insert)
        return [(device_id, int(seq), int(row_id)) for device_id, seq, row_id in cursor.fetchall()]


def new_pairs(inserted: Sequence[tuple[str, int, int]]) -> list[tuple[str, int]]:
    return [(device_id, seq) for device_id, seq, _ in inserted]
