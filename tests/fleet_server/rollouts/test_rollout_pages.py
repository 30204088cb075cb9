"""The dashboard's models and rollouts pages on the real PostgreSQL and TUF repository: versions
with their sha256, lineage and devices; a rollout paused by its reading-quality gate, showing
the failing value against its threshold; buttons that readers see disabled and that admins
press with the session's CSRF token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fleet_server import crud
from fleet_server.api.main import create_app
from fleet_server.db import session_scope
from fleet_server.models import Rollout
from fleet_server.rollouts.driver import drive_once
from fleet_server.rollouts.values import RolloutStatus
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.auth_support import ADMIN, cookie, csrf_of, issue, login
from tests.fleet_server.rollouts.driver_support import (
    DEVICES,
    NEW_VERSION,
    OLD_VERSION,
    RID,
    T0,
    TICK,
    Fleet,
    RecordingPublisher,
    install,
    make_fleet,
    newly_assigned,
    start_rollout,
    stored_state,
)

PAGE = f"/rollouts/{RID}"


@pytest.fixture
def fleet(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> Fleet:
    return make_fleet(database, engine, tmp_path)


@pytest.fixture
def dashboard(fleet: Fleet) -> Iterator[TestClient]:
    app = create_app(fleet.settings, fleet.engine, nudge_publisher=RecordingPublisher())
    with TestClient(app) as client:
        yield client


def paused_by_reading_quality(fleet: Fleet) -> list[str]:
    """Rollout RID started, its first stage installed with a model that reads far less surely:
    the driver pauses it and rolls that stage back. The stage's devices."""
    start_rollout(fleet)
    publisher = RecordingPublisher()
    drive_once(fleet.engine, fleet.settings, publisher, T0)
    first = newly_assigned(fleet, T0)
    install(fleet, first, T0, confidence=0.5)
    drive_once(fleet.engine, fleet.settings, publisher, T0 + TICK)
    assert stored_state(fleet.engine, RID).status is RolloutStatus.PAUSED
    return first


def buttons(page: str) -> dict[str, bool]:
    """Each rollout button of `page`: whether it can be pressed."""
    found = re.findall(
        r'<form method="post" action="/rollouts/[^/"]+/(\w+)">.*?<button([^>]*)>', page, re.S
    )
    return {command: "disabled" not in attributes for command, attributes in found}


def test_the_models_page_shows_each_version_with_its_sha256_lineage_and_devices(
    dashboard: TestClient, fleet: Fleet
) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    with session_scope(fleet.engine) as session:
        model = crud.find_model_version(session, name="roadsign-test", version=NEW_VERSION)
        assert model is not None
        model.lineage = {**model.lineage, "registered_model": hostile}
        session.add(model)
    page = dashboard.get("/models", headers=cookie(login(dashboard, ADMIN)))
    assert page.status_code == 200
    assert hostile not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt; version" in page.text
    with session_scope(fleet.engine) as session:
        hashes = crud.target_sha256s(session, paths=[fleet.old_target, fleet.new_target])
    for target, version in ((fleet.old_target, OLD_VERSION), (fleet.new_target, NEW_VERSION)):
        assert f"roadsign-test {version}" in page.text
        assert f'<code class="sha256">{hashes[target]}</code>' in page.text
        assert f"<code>run-{version}</code>" in page.text  # the MLflow run it came from
    assert "map50" in page.text
    # Every device runs the old version, none the new one.
    for device_id in DEVICES:
        assert f'<a href="/devices/{device_id}">{device_id}</a>' in page.text
    assert page.text.count("no device") == 1


def test_a_paused_rollout_names_its_failing_gate_with_value_and_threshold(
    dashboard: TestClient, fleet: Fleet
) -> None:
    first = paused_by_reading_quality(fleet)
    headers = cookie(login(dashboard, ADMIN))
    listing = dashboard.get("/rollouts", headers=headers).text
    assert f'<a href="{PAGE}">{RID}</a>' in listing
    assert "mean_confidence_drop" in listing  # why it is paused
    page = dashboard.get(PAGE, headers=headers)
    assert page.status_code == 200
    assert '<span class="paused" id="status">paused</span>' in page.text
    gates = page.text[page.text.index('<table class="gates">') :]
    gates = gates[: gates.index("</table>")]
    row = re.search(r"<tr><td></td><td>mean_confidence_drop</td>(.*?)</tr>", gates, re.S)
    assert row is not None, gates
    cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    assert 'class="fail"' in row.group(1)
    before, after, value, threshold = (float(c) for c in cells[1:5])
    assert (before, after) == (0.9, 0.5)
    assert value > threshold
    for device_id in first:
        assert f'<a href="/devices/{device_id}">{device_id}</a>' in page.text
    assert "stage_rolled_back" in page.text  # the audit log


def test_readers_see_the_buttons_disabled_and_cannot_press_them(
    dashboard: TestClient, fleet: Fleet
) -> None:
    paused_by_reading_quality(fleet)
    reader = cookie(login(dashboard, str(issue(dashboard, role="reader")["token"])))
    page = dashboard.get(PAGE, headers=reader).text
    assert buttons(page) == dict.fromkeys(["start", "pause", "resume", "abort", "rollback"], False)
    pressed = dashboard.post(
        f"{PAGE}/rollback",
        data={"csrf_token": csrf_of(dashboard, reader["Cookie"].partition("=")[2])},
        headers=reader,
        follow_redirects=False,
    )
    assert pressed.status_code == 403
    assert stored_state(fleet.engine, RID).status is RolloutStatus.PAUSED


def test_an_admin_presses_rollback_with_the_csrf_token_and_the_rollout_rolls_back(
    dashboard: TestClient, fleet: Fleet
) -> None:
    paused_by_reading_quality(fleet)
    value = login(dashboard, ADMIN)
    admin = cookie(value)
    page = dashboard.get(PAGE, headers=admin).text
    # Paused: it can resume, be aborted or rolled back, not started or paused again.
    assert buttons(page) == {
        "start": False,
        "pause": False,
        "resume": True,
        "abort": True,
        "rollback": True,
    }
    # The session cookie alone is not enough: a form from elsewhere has no CSRF token.
    forged = dashboard.post(f"{PAGE}/rollback", headers=admin, follow_redirects=False)
    assert forged.status_code == 403
    refused = dashboard.post(
        f"{PAGE}/start", data={"csrf_token": csrf_of(dashboard, value)}, headers=admin
    )
    assert refused.status_code == 409
    assert "Refused: rollout" in refused.text
    pressed = dashboard.post(
        f"{PAGE}/rollback",
        data={"csrf_token": csrf_of(dashboard, value)},
        headers=admin,
        follow_redirects=False,
    )
    assert (pressed.status_code, pressed.headers["location"]) == (303, PAGE)
    assert stored_state(fleet.engine, RID).status is RolloutStatus.ROLLED_BACK
    after = dashboard.get(PAGE, headers=admin).text
    assert '<span class="rolled_back" id="status">rolled_back</span>' in after
    assert "refresh.js" not in after  # nothing moves any more: no reloading


def test_a_running_rollout_page_refreshes_itself(dashboard: TestClient, fleet: Fleet) -> None:
    start_rollout(fleet)
    headers = cookie(login(dashboard, ADMIN))
    for path in ("/rollouts", PAGE):
        page = dashboard.get(path, headers=headers).text
        assert '<script src="/static/refresh.js" data-every="10"></script>' in page, path
    assert dashboard.get("/static/refresh.js").status_code == 200


def test_a_device_page_lists_its_ota_reports_linked_to_their_rollout(
    dashboard: TestClient, fleet: Fleet
) -> None:
    first = paused_by_reading_quality(fleet)
    installed = first[0]
    headers = cookie(login(dashboard, ADMIN))
    page = dashboard.get(f"/devices/{installed}", headers=headers).text
    ota = page[page.index('<table class="ota">') :]
    ota = ota[: ota.index("</table>")]
    assert f'<a href="{PAGE}">{RID}</a>' in ota
    assert f"<td>{NEW_VERSION}</td>" in ota
    assert "active" in ota
    untouched = next(d for d in DEVICES if d not in first)
    assert (
        "No OTA updates reported." in dashboard.get(f"/devices/{untouched}", headers=headers).text
    )


def test_a_damaged_rollout_is_named_on_the_list_without_hiding_the_others(
    dashboard: TestClient, fleet: Fleet
) -> None:
    start_rollout(fleet)
    with session_scope(fleet.engine) as session:
        session.add(
            Rollout(
                id="r-damaged",
                model_name="roadsign-test",
                model_version=NEW_VERSION,
                target_path=fleet.new_target,
                status="running",
                stage=0,
                state="{}",
            )
        )
    headers = cookie(login(dashboard, ADMIN))
    listing = dashboard.get("/rollouts", headers=headers)
    assert listing.status_code == 200
    assert f'<a href="{PAGE}">{RID}</a>' in listing.text
    assert "Rollout r-damaged: its stored state is unreadable" in listing.text
    assert dashboard.get("/rollouts/r-damaged", headers=headers).status_code == 500
