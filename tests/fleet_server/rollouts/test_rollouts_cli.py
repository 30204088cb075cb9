"""``roadsign-fleet rollouts`` against the real PostgreSQL: create, list, show and commands
change the stored rollout as the API does; what they decide waits in the outbox for the driver;
refusals exit 1 naming the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from fleet_server.cli import main
from fleet_server.rollouts.driver import drive_once
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.rollouts.driver_support import (
    NEW_VERSION,
    Fleet,
    RecordingPublisher,
    make_fleet,
    pending_action_count,
    signed_assignments,
)


@pytest.fixture
def fleet(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> Fleet:
    return make_fleet(database, engine, tmp_path)


@pytest.fixture
def config(fleet: Fleet, tmp_path: Path) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(f"database:\n  url: {fleet.settings.database.url}\n")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_rollouts_are_created_shown_and_commanded_from_the_command_line(
    fleet: Fleet, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, created, _ = run(
        capsys,
        "rollouts", "create", "--config", config, "--model", "roadsign-test",
        "--version", NEW_VERSION, "--tag", "depot-a", "--stages", "2,100%",
        "--soak-s", "60", "--id", "r-cli",
    )  # fmt: skip
    assert code == 0
    assert created["status"] == "running"
    assert created["stages"] == 2
    assert pending_action_count(fleet.engine) == 2  # assign and nudge stage 1, for the driver
    code, listed, _ = run(capsys, "rollouts", "list", "--config", config)
    assert [r["rollout_id"] for r in listed] == ["r-cli"]
    code, paused, _ = run(capsys, "rollouts", "pause", "r-cli", "--config", config)
    assert paused["status"] == "paused"
    code, resumed, _ = run(capsys, "rollouts", "resume", "r-cli", "--config", config)
    assert resumed["status"] == "running"
    code, rolled, _ = run(capsys, "rollouts", "rollback", "r-cli", "--config", config)
    assert rolled["status"] == "rolled_back"
    # The driver carries out, in order, the assignments and then the rollbacks.
    drive_once(fleet.engine, fleet.settings, RecordingPublisher())
    assignments = signed_assignments(fleet.engine)
    assert len(assignments) == 2
    assert all(c["rollback"] and c["target"] == fleet.old_target for c in assignments.values())
    code, shown, _ = run(capsys, "rollouts", "show", "r-cli", "--config", config)
    assert shown["progress"]["desired_previous"] == 2
    code, _, err = run(capsys, "rollouts", "resume", "r-cli", "--config", config)
    assert code == 1
    assert "rolled_back: it cannot resume" in err


def test_a_bad_rollout_request_on_the_command_line_exits_1_naming_it(
    fleet: Fleet, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "rollouts", "create", "--config", config, "--model", "roadsign-test",
        "--version", "9.9.9", "--all",
    )  # fmt: skip
    assert code == 1
    assert "no published model version roadsign-test 9.9.9" in err
    code, _, err = run(capsys, "rollouts", "show", "nope", "--config", config)
    assert code == 1
    assert "no rollout 'nope'" in err
    code, _, err = run(
        capsys, "rollouts", "create", "--config", config, "--model", "roadsign-test",
        "--version", NEW_VERSION, "--all", "--stages", "0%",
    )  # fmt: skip
    assert code == 1
    assert "stage '0%'" in err
