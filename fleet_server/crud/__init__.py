"""Every query of the fleet server, as keyword-only functions on a session.

Inserts of device messages (readings, health, OTA status, config reports) ignore (device_id, seq)
pairs already stored and return only what was new, so redeliveries are neither counted nor
republished twice. On PostgreSQL new readings are also announced (NOTIFY) for the live feed.

One module per subject (`devices`, `telemetry`, `readings`, `tokens`; `_bulk` holds the shared
insert machinery); callers use them through this package: ``crud.insert_readings(...)``.
"""

from __future__ import annotations

from fleet_server.crud.devices import (
    StatusChange,
    broker_users,
    count_devices_by_status,
    create_device,
    decommission,
    delete_device,
    device_statuses,
    get_device,
    list_devices,
    lock_broker_accounts,
    mark_seen,
    set_statuses,
    set_tags,
)
from fleet_server.crud.readings import (
    ReadingFilter,
    count_readings,
    feed_readings,
    max_reading_id,
    query_readings,
    reading_crop,
    reading_ids_after,
    readings_with_crops,
    stream_readings,
)
from fleet_server.crud.telemetry import (
    health_series,
    insert_config_reports,
    insert_health,
    insert_ota_statuses,
    insert_readings,
    latest_config_report,
    latest_health,
    ota_status_history,
)
from fleet_server.crud.tokens import (
    create_dashboard_session,
    create_token,
    end_dashboard_session,
    find_dashboard_session,
    find_token,
    list_tokens,
    lock_token,
    revoke_issued_by,
    revoke_token,
    revoke_tokens_of_kind,
)

__all__ = [
    "ReadingFilter",
    "StatusChange",
    "broker_users",
    "count_devices_by_status",
    "count_readings",
    "create_dashboard_session",
    "create_device",
    "create_token",
    "decommission",
    "delete_device",
    "device_statuses",
    "end_dashboard_session",
    "feed_readings",
    "find_dashboard_session",
    "find_token",
    "get_device",
    "health_series",
    "insert_config_reports",
    "insert_health",
    "insert_ota_statuses",
    "insert_readings",
    "latest_config_report",
    "latest_health",
    "list_devices",
    "list_tokens",
    "lock_broker_accounts",
    "lock_token",
    "mark_seen",
    "max_reading_id",
    "ota_status_history",
    "query_readings",
    "reading_crop",
    "reading_ids_after",
    "readings_with_crops",
    "revoke_issued_by",
    "revoke_token",
    "revoke_tokens_of_kind",
    "set_statuses",
    "set_tags",
    "stream_readings",
]
