"""``roadsign-agent`` starts light: its help needs neither torch nor the server stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_agent.cli import agent_version, main

HEAVY = ("torch", "ultralytics", "fastapi", "sqlmodel", "openvino", "onnxruntime", "cv2")


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "validate-config" in out
    assert "config-schema" in out


def test_help_imports_no_heavy_module() -> None:
    probe = (
        "import sys\n"
        "from edge_agent.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_version_is_the_installed_distribution() -> None:
    assert agent_version()[0].isdigit()
