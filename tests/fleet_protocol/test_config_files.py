"""Config files load strictly: each bad field is named with its line; env overrides apply on top."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from fleet_protocol.config_files import InvalidConfigError, load_config, validate_config_file
from fleet_protocol.exceptions import ConfigFileError


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = Field(default=1, ge=1)
    tags: list[int] = Field(default_factory=list)


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "x"
    inner: Inner = Field(default_factory=Inner)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_valid_file_loads_with_defaults_for_what_it_leaves_out(tmp_path: Path) -> None:
    loaded = load_config(Sample, _write(tmp_path, "inner:\n  port: 8\n"))
    assert loaded == Sample(inner=Inner(port=8))
    assert load_config(Sample, None) == Sample()
    assert load_config(Sample, _write(tmp_path, "# only a comment\n")) == Sample()


def test_each_bad_field_is_named_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: ok\ninner:\n  port: 0\n  tags: [1, two]\n  colour: red\n")
    with pytest.raises(InvalidConfigError) as caught:
        load_config(Sample, path)
    found = {(p.field, p.origin) for p in caught.value.problems}
    assert found == {
        ("inner.port", f"{path}:3"),
        ("inner.tags.1", f"{path}:4"),
        ("inner.colour", f"{path}:5"),
    }
    assert f"{path}:5: inner.colour: Extra inputs are not permitted" in str(caught.value)


def test_env_overrides_the_file_and_errors_name_the_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, "inner:\n  port: 8\n")
    env = {"APP__INNER__PORT": "9", "APP__INNER__TAGS": "[3, 4]", "OTHER": "x"}
    assert load_config(Sample, path, env=env, env_prefix="APP__").inner == Inner(
        port=9, tags=[3, 4]
    )
    with pytest.raises(InvalidConfigError) as caught:
        load_config(Sample, path, env={"APP__INNER__PORT": "-3"}, env_prefix="APP__")
    assert caught.value.problems[0].origin == "environment APP__INNER__PORT"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"APP__NAME__DEEP": "1"}, "which is not a section"),
        ({"APP__INNER____PORT": "1"}, "empty section name"),
        ({"APP__NAME": "[unclosed"}, "not a valid value"),
    ],
)
def test_unusable_env_override_is_refused(tmp_path: Path, env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigFileError, match=says):
        load_config(Sample, _write(tmp_path, "name: a\n"), env=env, env_prefix="APP__")


def test_env_setting_a_section_inside_a_scalar_field_is_blamed_on_the_variable() -> None:
    with pytest.raises(InvalidConfigError) as caught:
        load_config(Sample, None, env={"APP__NAME__DEEP": "1"}, env_prefix="APP__")
    assert [str(p) for p in caught.value.problems] == [
        "environment APP__NAME__DEEP: name: Input should be a valid string"
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("name: a\ninner:\n  port: 2\nname: b\n", "key 'name' repeats the one on line 1"),
        ("inner:\n  port: 2\n  port: 3\n", "c.yaml:3: key 'port' repeats"),
    ],
)
def test_unparsable_file_is_refused(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigFileError, match=says):
        load_config(Sample, _write(tmp_path, text))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read config"):
        load_config(Sample, tmp_path / "absent.yaml")


def test_validate_command_reports_ok_or_every_problem(tmp_path: Path) -> None:
    out = io.StringIO()
    good = _write(tmp_path, "name: y\n")
    assert validate_config_file(Sample, good, env={}, env_prefix="APP__", out=out) == 0
    assert out.getvalue() == f"{good}: OK (Sample)\n"
    out = io.StringIO()
    bad = _write(tmp_path, "inner:\n  port: x\n")
    assert validate_config_file(Sample, bad, env={}, env_prefix="APP__", out=out) == 1
    assert out.getvalue().splitlines() == [
        f"{bad}: INVALID Sample",
        f"{bad}:2: inner.port: Input should be a valid integer, unable to parse string as an "
        "integer",
    ]
    out = io.StringIO()
    assert validate_config_file(Sample, tmp_path / "no", env={}, env_prefix="A", out=out) == 1
    assert "cannot read config" in out.getvalue()
