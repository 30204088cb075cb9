"""``roadsign-agent predict``: a JSON line per image, boxes in original pixels, bad files named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main
from tests.edge_agent.conftest import write_tiny_bundle
from tests.training.data.conftest import write_image


def test_each_image_gives_one_json_line_with_protocol_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    wide = write_image(tmp_path / "wide.jpg", 200, 100)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    code = main(
        [
            "predict",
            str(wide),
            str(junk),
            "--model",
            str(bundle),
            "--backend",
            "onnxruntime",
            "--no-tiles",  # the constant detector would find its box in every tile
        ]
    )
    assert code == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["source"] == str(wide)
    [reading] = first["readings"]
    assert reading["bbox"] == pytest.approx([25, 25, 75, 75], abs=0.1)
    assert reading["category"] == "prohibitory"
    assert {"sign_type", "value", "unit", "confidence", "gtsrb_class_id"} <= set(reading)
    assert second == {"source": str(junk), "readings": [], "error": "not a readable image"}


def test_predict_looks_at_a_still_as_the_profile_says_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle")  # its 64 px detector finds one box per view
    wide = write_image(tmp_path / "wide.jpg", 200, 100)
    args = ["predict", str(wide), "--model", str(bundle), "--backend", "onnxruntime"]
    assert main(args) == 0
    tiled = json.loads(capsys.readouterr().out)["readings"]
    # A default profile tiles: 4 x 2 tiles of the detector's 64 px, each with its box in tile
    # pixels moved to the frame, plus the coarse pass's box over the whole image.
    assert len(tiled) > 4
    assert any(r["bbox"][0] > 100 for r in tiled)
    profile = tmp_path / "profile.yaml"
    profile.write_text("detector:\n  tiling:\n    enabled: false\n")
    assert main([*args, "--config", str(profile)]) == 0
    [whole] = json.loads(capsys.readouterr().out)["readings"]
    assert whole["bbox"] == pytest.approx([25, 25, 75, 75], abs=0.1)


def test_a_profile_that_is_not_valid_is_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_image(tmp_path / "a.png", 20, 20)
    profile = tmp_path / "profile.yaml"
    profile.write_text("detector:\n  tiling:\n    interleave: 0\n")
    assert main(["predict", str(image), "--config", str(profile)]) == 1
    assert "interleave" in capsys.readouterr().err


def test_a_missing_bundle_fails_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_image(tmp_path / "a.png", 20, 20)
    assert main(["predict", str(image), "--model", str(tmp_path / "nowhere")]) == 1
    assert "no model bundle" in capsys.readouterr().err


def test_predict_reads_with_the_shipped_bundle_from_any_directory(tmp_path: Path) -> None:
    write_image(tmp_path / "photo.jpg", 200, 100)
    agent = Path(sys.executable).with_name("roadsign-agent")
    assert agent.is_file(), f"no roadsign-agent beside {sys.executable}"
    result = subprocess.run(
        [str(agent), "predict", "photo.jpg"],
        cwd=tmp_path,  # no models/ here: the bundle must come from the installed package
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    answer = json.loads(line)
    assert answer["source"] == "photo.jpg"
    assert "error" not in answer
    assert isinstance(answer["readings"], list)
