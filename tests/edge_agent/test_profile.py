"""Device profiles: the shipped ones are valid, wrong fields are refused by name and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edge_agent.cli import main
from edge_agent.profile import DeviceProfile
from fleet_protocol.config_files import ConfigProblem, InvalidConfigError, load_config
from tests.conftest import REPO_ROOT

PROFILES = sorted((REPO_ROOT / "firmware_configs").glob("*.yaml"))
SCHEMA_FILE = REPO_ROOT / "firmware_configs" / "device-profile.schema.json"


def _profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def _only_problem(path: Path) -> ConfigProblem:
    with pytest.raises(InvalidConfigError) as caught:
        load_config(DeviceProfile, path)
    [problem] = caught.value.problems
    return problem


def test_the_four_device_classes_have_profiles() -> None:
    names = {p.stem for p in PROFILES}
    assert {"dev-x86", "roadside-intel", "vehicle-rpi", "vehicle-jetson"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_shipped_profile_is_valid_and_named_after_its_file(path: Path) -> None:
    profile = load_config(DeviceProfile, path)
    assert profile.profile == path.stem
    assert profile.description


def test_profiles_differ_where_their_hardware_does() -> None:
    by_name = {p.stem: load_config(DeviceProfile, p) for p in PROFILES}
    rsu, rpi = by_name["roadside-intel"], by_name["vehicle-rpi"]
    jetson = by_name["vehicle-jetson"]
    assert (rsu.detector.backend, rsu.detector.model_format) == ("openvino", "openvino_int8")
    placed = yaml.safe_load((REPO_ROOT / "firmware_configs" / "roadside-intel.yaml").read_text())
    assert rsu.location is not None  # a roadside unit stands somewhere: here, where it says
    assert (rsu.location.lat, rsu.location.lon) == (
        placed["location"]["lat"],
        placed["location"]["lon"],
    )
    assert rsu.camera.kind == "stream"
    assert (rpi.detector.backend, rpi.detector.model_format) == ("onnxruntime", "onnx_int8")
    assert rpi.detector.input_size == 416
    assert rsu.detector.input_size is None
    assert rpi.detector.threads < rsu.detector.threads
    assert jetson.detector.execution_providers[0] == "TensorrtExecutionProvider"
    assert all(p.broker.url.startswith("mqtts://") for p in (rsu, rpi, jetson))


def test_every_field_has_a_description() -> None:
    def walk(schema: dict[str, object], defs: dict[str, dict[str, object]]) -> list[str]:
        missing = []
        props = schema.get("properties", {})
        assert isinstance(props, dict)
        for name, prop in props.items():
            if "description" not in prop:
                missing.append(name)
        return missing

    schema = DeviceProfile.model_json_schema()
    defs = schema["$defs"]
    missing = walk(schema, defs)
    for name, sub in defs.items():
        missing += [f"{name}.{field}" for field in walk(sub, defs)]
    assert missing == []


def test_committed_json_schema_is_current() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == DeviceProfile.model_json_schema(), (
        "run `make schemas`"
    )


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ("detector:\n  threads: 2\n  thread: 4\n", "detector.thread", 3),
        ("camera:\n  fps_cap: 0\n", "camera.fps_cap", 2),
        ("detector:\n  input_size: 500\n", "detector.input_size", 2),
        ("broker:\n  url: http://x:1883\n", "broker.url", 2),
        ("reading:\n  ocr_languages: [eng, German]\n", "reading.ocr_languages", 2),
        ("colour: red\n", "colour", 1),
        ("identity:\n  device_id: veh/1\n", "identity.device_id", 2),
    ],
)
def test_wrong_field_is_refused_with_its_name_and_line(
    tmp_path: Path, text: str, field: str, line: int
) -> None:
    problem = _only_problem(_profile(tmp_path, text))
    assert (problem.field, problem.origin) == (field, f"{tmp_path / 'profile.yaml'}:{line}")


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ("ota:\n  check_interval_s: 60\n  auto_install: true\n", "ota.auto_install", 3),
        ("location:\n  lat: 48.1\n  heading_deg: 270\n", "location.heading_deg", 3),
    ],
)
def test_fields_that_did_nothing_are_gone_and_refused(
    tmp_path: Path, text: str, field: str, line: int
) -> None:
    problem = _only_problem(_profile(tmp_path, text))
    assert (problem.field, problem.origin) == (field, f"{tmp_path / 'profile.yaml'}:{line}")
    assert problem.message == "Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("detector:\n  backend: onnxruntime\n  model_format: openvino_int8\n", "cannot load"),
        ("mounting: roadside\n", "needs a fixed location"),
        ("broker:\n  url: mqtt://h:1883\n  tls:\n    ca_file: /ca.pem\n", "plaintext"),
        ("broker:\n  tls:\n    cert_file: /c.pem\n", "come together"),
        ("camera:\n  kind: device\n  source: rtsp://cam/1\n", "camera index"),
        ("camera:\n  kind: stream\n  source: /videos/a.mp4\n", "rtsp/http"),
        ("broker:\n  url: mqtt://:1883\n", "no host"),
        ("broker:\n  url: mqtt://h:99999\n", "bad port"),
        ("ota:\n  repository_url: ftp://fleet\n", "must be an http"),
        ("ota:\n  repository_url: http://fleet:8000\n  ca_file: /ca.pem\n", "not https"),
    ],
)
def test_contradictory_settings_are_refused(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(InvalidConfigError, match=says):
        load_config(DeviceProfile, _profile(tmp_path, text))


OTA_WITH_PASSWORD = "broker:\n  password_file: /etc/roadsign/pw\nota:\n  enabled: true\n"


def test_a_password_is_never_sent_to_a_repository_over_plain_http_to_another_host(
    tmp_path: Path,
) -> None:
    clear = OTA_WITH_PASSWORD + "  repository_url: http://fleet.example:8000\n"
    with pytest.raises(InvalidConfigError, match="plaintext http:// to another host"):
        load_config(DeviceProfile, _profile(tmp_path, clear))
    for url in ("https://fleet.example", "http://127.0.0.1:8000", "http://localhost:8000"):
        good = OTA_WITH_PASSWORD + f"  repository_url: {url}\n"
        assert load_config(DeviceProfile, _profile(tmp_path, good)).ota.repository_url == url
    no_password = "ota:\n  enabled: true\n  repository_url: http://fleet.example:8000\n"
    assert load_config(DeviceProfile, _profile(tmp_path, no_password)).ota.enabled


def test_validate_config_command_exits_0_for_a_good_profile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate-config", str(REPO_ROOT / "firmware_configs" / "vehicle-rpi.yaml")]) == 0
    assert "OK (DeviceProfile)" in capsys.readouterr().out


def test_validate_config_command_exits_1_naming_field_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _profile(tmp_path, "profile: lab\ndetector:\n  thredas: 4\n")
    assert main(["validate-config", str(path)]) == 1
    assert f"{path}:3: detector.thredas: Extra inputs are not permitted" in capsys.readouterr().out


def test_validate_config_applies_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROADSIGN_AGENT__DETECTOR__THREADS", "0")
    assert main(["validate-config", str(PROFILES[0])]) == 1
    out = capsys.readouterr().out
    assert "environment ROADSIGN_AGENT__DETECTOR__THREADS: detector.threads" in out


def test_config_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "DeviceProfile"
