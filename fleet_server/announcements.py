"""Announcements of new readings on PostgreSQL's NOTIFY channel: the channel and the payload.

`crud.insert_readings` announces the ids of the readings each transaction stores; PostgreSQL
delivers an announcement to every listener when (and only if) its transaction commits, in commit
order; the live feed (`live_feed.postgresql`) listens.
"""

from __future__ import annotations

from collections.abc import Sequence

READINGS_CHANNEL = "roadsign_readings"
"""The NOTIFY channel on which each transaction that stores readings lists their ids."""
NOTIFY_PAYLOAD_CHARS = 7000  # PostgreSQL refuses payloads of 8000 bytes or more


def announcement_payloads(ids: Sequence[int]) -> list[str]:
    """Sorted `ids` as NOTIFY payloads: runs as "first-last", joined by commas, each short enough.

    A batch's ids are mostly consecutive, so a thousand readings are usually a few runs.
    """
    runs: list[list[int]] = []
    for row_id in ids:
        if runs and row_id == runs[-1][1] + 1:
            runs[-1][1] = row_id
        else:
            runs.append([row_id, row_id])
    payloads = [""]
    for first, last in runs:
        run = str(first) if first == last else f"{first}-{last}"
        if payloads[-1] and len(payloads[-1]) + 1 + len(run) > NOTIFY_PAYLOAD_CHARS:
            payloads.append("")
        payloads[-1] = f"{payloads[-1]},{run}" if payloads[-1] else run
    return [payload for payload in payloads if payload]


def announced_ids(payload: str) -> list[int]:
    """The reading ids of one `READINGS_CHANNEL` payload (see `announcement_payloads`)."""
    ids: list[int] = []
    for run in payload.split(","):
        first, _, last = run.partition("-")
        ids.extend(range(int(first), int(last or first) + 1))
    return ids
