"""The fleet's current alerts: rules over each device's status and newest health report.

Shown by the dashboard's alerts page and served as JSON by ``/api/v1/alerts``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from fleet_server import crud

OFFLINE_AFTER = timedelta(minutes=5)
LOW_FPS = 5.0
HOT_C = 85.0


def ago(moment: datetime | None) -> str:
    """How long ago `moment` was, in the largest whole unit ("3 min ago"); "never" for None."""
    if moment is None:
        return "never"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def alerts_of(session: Session) -> list[tuple[str, str, str]]:
    """(device, severity, message) of every current alert."""
    found = []
    now = datetime.now(UTC)
    for device in crud.list_devices(session):
        if device.status == "decommissioned":
            continue
        stale = device.last_seen_at is None or now - device.last_seen_at > OFFLINE_AFTER
        if device.status == "offline" or (device.status == "online" and stale):
            found.append(
                (device.device_id, "critical", f"offline, last seen {ago(device.last_seen_at)}")
            )
        health = crud.latest_health(session, device_id=device.device_id)
        if health is None:
            continue
        if health.outbox_dropped > 0:
            found.append(
                (device.device_id, "warning", f"outbox dropped {health.outbox_dropped} messages")
            )
        if health.fps < LOW_FPS and health.camera_state == "ok":
            found.append((device.device_id, "warning", f"low frame rate {health.fps:.1f} fps"))
        if health.camera_state in {"failed", "reconnecting"}:
            found.append((device.device_id, "critical", f"camera {health.camera_state}"))
        if health.temperature_c is not None and health.temperature_c > HOT_C:
            found.append((device.device_id, "warning", f"hot: {health.temperature_c:.0f} °C"))
    return found
