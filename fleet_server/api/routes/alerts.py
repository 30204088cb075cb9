"""Alerts: what needs attention in the fleet now, as JSON (the dashboard shows the same)."""

from __future__ import annotations

from fastapi import APIRouter

from fleet_server.alerts import alerts_of
from fleet_server.api.deps import ReaderDep, SessionDep

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@router.get("", summary="Current alerts")
def list_alerts(session: SessionDep, _: ReaderDep) -> list[dict[str, str]]:
    """Offline devices, outbox drops and health thresholds crossed."""
    return [{"device_id": d, "severity": s, "message": m} for d, s, m in alerts_of(session)]
