"""Shared column machinery of the fleet's tables: UTC timestamps, row ids, text checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Dialect, Integer
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field

ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
"""Row ids of the big tables: BIGINT, except on SQLite, which numbers rows itself only for an
INTEGER PRIMARY KEY (64-bit there anyway)."""


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    PostgreSQL keeps the zone itself; SQLite (the demo's store) keeps none and would hand back
    naive datetimes, so values are converted to UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The value in UTC; naive values are refused rather than guessed."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must carry a timezone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The stored value, marked UTC where the database kept no zone."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


TextInput = str | list[str] | None
MAX_TOKEN_LIFETIME_S = 10 * 365 * 86400


def without_nul(value: TextInput) -> TextInput:
    """`value`, unless a string in it holds NUL, which PostgreSQL text cannot store.

    Refused in the API's input models (a 422 naming the field) rather than failing the INSERT.
    """
    texts = value if isinstance(value, list) else [value or ""]
    if any("\x00" in text for text in texts):
        raise ValueError("must not contain NUL characters")
    return value


def timestamp_field(*, nullable: bool, now: bool = False) -> Any:
    """A UTC timestamp column: set to now when `now`, else required (or None where nullable)."""
    column: Column[datetime] = Column(UtcDateTime(), nullable=nullable)
    if now:
        return Field(default_factory=utcnow, sa_column=column)
    return Field(default=None, sa_column=column) if nullable else Field(sa_column=column)
