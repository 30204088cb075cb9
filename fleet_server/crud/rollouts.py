"""The staged rollouts' rows, and what the rollout driver reads about their devices.

The driver's lock is a transaction-level advisory lock: it goes with the transaction (and with
the connection of a replica that was killed), so no stale lock can outlive its holder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select, text, update
from sqlmodel import Session, col

from fleet_server.models import (
    HealthSample,
    OtaStatusEvent,
    Reading,
    Rollout,
    RolloutAction,
    RolloutEventRow,
)

DRIVER_LOCK_KEY = 0x524F_4C4C_4F55_5401
"""pg_try_advisory_xact_lock key of the rollout driver ("ROLLOUT" + 1): one driver at a time."""

CREATE_LOCK_KEY = DRIVER_LOCK_KEY + 1
"""pg_advisory_xact_lock key that serialises creating rollouts."""

ACTIVE_STATUSES = ("running", "paused")
"""Rollout statuses the driver steps; the others are finished."""


def try_lock_driver(session: Session) -> bool:
    """Take the driver's lock for this transaction; False when another replica holds it.

    On SQLite (the demo: one process) there is nothing to lock against: always True.
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    taken = session.execute(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": DRIVER_LOCK_KEY}
    ).scalar_one()
    return bool(taken)


def lock_rollout_creation(session: Session) -> None:
    """Wait for, then hold until the transaction ends, the lock that serialises creating
    rollouts, so two requests over the same devices cannot both find them free (PostgreSQL;
    SQLite serialises writers itself)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK_KEY})


def add_rollout(session: Session, *, rollout: Rollout) -> Rollout:
    """Store a new rollout."""
    session.add(rollout)
    session.flush()
    return rollout


def get_rollout(session: Session, *, rollout_id: str, for_update: bool = False) -> Rollout | None:
    """The rollout `rollout_id`; with `for_update`, its row locked until the transaction ends
    (SQLite ignores FOR UPDATE: it serialises writers itself)."""
    statement = select(Rollout).where(col(Rollout.id) == rollout_id)
    if for_update:
        statement = statement.with_for_update()
    return session.execute(statement).scalar_one_or_none()


def list_rollouts(session: Session, *, statuses: Sequence[str] | None = None) -> list[Rollout]:
    """Rollouts, newest first; only those of `statuses` where given."""
    statement = select(Rollout).order_by(col(Rollout.created_at).desc(), col(Rollout.id))
    if statuses is not None:
        statement = statement.where(col(Rollout.status).in_(list(statuses)))
    return list(session.execute(statement).scalars())


def count_rollouts_by_status(session: Session) -> dict[str, int]:
    """How many rollouts are in each status."""
    rows = session.execute(select(Rollout.status, func.count()).group_by(Rollout.status))  # type: ignore[call-overload]
    return {str(status): int(count) for status, count in rows}


def active_rollout_ids(session: Session) -> list[str]:
    """Ids of the rollouts the driver steps (running or paused), oldest first."""
    statement = (
        select(col(Rollout.id))
        .where(col(Rollout.status).in_(ACTIVE_STATUSES))
        .order_by(col(Rollout.created_at), col(Rollout.id))
    )
    return list(session.execute(statement).scalars())


def add_rollout_events(session: Session, *, rows: Sequence[RolloutEventRow]) -> None:
    """Append lines to rollouts' audit logs."""
    session.add_all(rows)
    session.flush()


def rollout_events(
    session: Session, *, rollout_id: str, after_id: int = 0, limit: int = 1000
) -> list[RolloutEventRow]:
    """A rollout's audit log in order, from after `after_id`."""
    statement = (
        select(RolloutEventRow)
        .where(col(RolloutEventRow.rollout_id) == rollout_id, col(RolloutEventRow.id) > after_id)
        .order_by(col(RolloutEventRow.id))
        .limit(limit)
    )
    return list(session.execute(statement).scalars())


def add_rollout_actions(session: Session, *, rows: Sequence[RolloutAction]) -> None:
    """Put actions in the outbox."""
    session.add_all(rows)
    session.flush()


def pending_actions(session: Session, *, rollout_id: str | None = None) -> list[RolloutAction]:
    """Outbox actions not carried out yet, in the order they were stored."""
    statement = select(RolloutAction).where(col(RolloutAction.done_at).is_(None))
    if rollout_id is not None:
        statement = statement.where(col(RolloutAction.rollout_id) == rollout_id)
    return list(session.execute(statement.order_by(col(RolloutAction.id))).scalars())


def mark_actions_done(session: Session, *, action_ids: Sequence[int], at: datetime) -> None:
    """Record that the actions were carried out."""
    if action_ids:
        session.execute(
            update(RolloutAction)
            .where(col(RolloutAction.id).in_(list(action_ids)))
            .values(done_at=at)
        )


def rollout_reports(
    session: Session, *, rollout_id: str, received_after: datetime | None
) -> list[OtaStatusEvent]:
    """OTA status reports about `rollout_id` received after `received_after` (None: all)."""
    statement = select(OtaStatusEvent).where(col(OtaStatusEvent.rollout_id) == rollout_id)
    if received_after is not None:
        statement = statement.where(col(OtaStatusEvent.received_at) > received_after)
    # A device's reports of one batch share a received_at: its seq keeps them in order.
    ordered = statement.order_by(col(OtaStatusEvent.received_at), col(OtaStatusEvent.seq))
    return list(session.execute(ordered).scalars())


def activated_at(
    session: Session,
    *,
    device_id: str,
    rollout_id: str,
    model_version: str,
    received_after: datetime,
) -> datetime | None:
    """When (the device's clock, as its readings and health are stamped) the device first said
    it runs `model_version` for `rollout_id` (active or probation passed) after `received_after`;
    None before it did."""
    statement = select(func.min(col(OtaStatusEvent.observed_at))).where(
        col(OtaStatusEvent.device_id) == device_id,
        col(OtaStatusEvent.rollout_id) == rollout_id,
        col(OtaStatusEvent.model_version) == model_version,
        col(OtaStatusEvent.state).in_(("active", "probation_passed")),
        col(OtaStatusEvent.received_at) > received_after,
    )
    found: datetime | None = session.execute(statement).scalar_one()
    return found


def health_between(
    session: Session, *, device_id: str, start: datetime, end: datetime
) -> list[HealthSample]:
    """A device's health samples observed in [start, end), in time order."""
    statement = (
        select(HealthSample)
        .where(
            col(HealthSample.device_id) == device_id,
            col(HealthSample.observed_at) >= start,
            col(HealthSample.observed_at) < end,
        )
        .order_by(col(HealthSample.observed_at), col(HealthSample.seq))
    )
    return list(session.execute(statement).scalars())


@dataclass(frozen=True, slots=True)
class ReadingStats:
    """A device's readings over a window: how many, their mean confidence, disagreements."""

    count: int
    mean_confidence: float | None
    disagreements: int


def reading_stats(
    session: Session, *, device_id: str, start: datetime, end: datetime
) -> ReadingStats:
    """Count, mean confidence and classifier/OCR disagreements of a device's readings observed
    in [start, end), aggregated in the database (a window can hold thousands)."""
    disagree = func.sum(case((col(Reading.sources_disagree), 1), else_=0))
    statement = select(func.count(), func.avg(col(Reading.confidence)), disagree).where(
        col(Reading.device_id) == device_id,
        col(Reading.observed_at) >= start,
        col(Reading.observed_at) < end,
    )
    count, mean, disagreements = session.execute(statement).one()
    return ReadingStats(
        count=int(count or 0),
        mean_confidence=None if mean is None else float(mean),
        disagreements=int(disagreements or 0),
    )


def latest_shadow(session: Session, *, device_id: str, since: datetime) -> HealthSample | None:
    """The device's newest health sample since `since` that carries shadow numbers."""
    statement = (
        select(HealthSample)
        .where(
            col(HealthSample.device_id) == device_id,
            col(HealthSample.observed_at) >= since,
            col(HealthSample.shadow_tracks_compared).is_not(None),
        )
        .order_by(col(HealthSample.observed_at).desc(), col(HealthSample.seq).desc())
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()
