"""Loading of strict YAML config files plus environment overrides, shared by every process.

Each process (agent, fleet server, trainer) builds its one settings object in ``main()`` with
`load_config`: the YAML file, then environment variables ``<PREFIX>SECTION__FIELD=value`` on top,
validated by a strict pydantic model. An invalid file is refused with every offending field named,
with its line in the YAML (or the variable it came from), so ``validate-config`` can point at it.
It lives here because the protocol package is the one every side may import.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fleet_protocol.exceptions import ConfigFileError

C = TypeVar("C", bound=BaseModel)


class StrictConfigModel(BaseModel):
    """Base of every config section of every process: unknown fields are errors, values are
    immutable, and defaults are validated too (a bad default is a bug caught at once)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


ENV_NESTING = "__"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config: the field's dotted path, where it came from, and why."""

    field: str
    message: str
    origin: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.field}: {self.message}"


class InvalidConfigError(ConfigFileError):
    """A config that parsed but does not validate; `problems` lists each offending field."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


def _check_unique_keys(node: yaml.Node, source: str) -> None:
    # PyYAML keeps the last of two equal keys without a word; in a config that hides a mistake.
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigFileError(
                    f"{source}:{line}: key {key!r} repeats the one on line {seen[key]}"
                )
            seen[key] = line
            _check_unique_keys(value_node, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, source)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Line (1-based) of the deepest YAML node along `loc`: the field, or its closest parent."""
    if root is None:
        return None
    node: yaml.Node = root
    line: int = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    # Keys name the field best: an unknown field has no value node worth citing.
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"cannot read config {source}: {e}") from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigFileError(f"config {source} is not valid YAML: {e}") from e
    if root is not None:
        _check_unique_keys(root, source)
    if data is None:
        return {}, root
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"config {source} must be a mapping of settings, not a {type(data).__name__}"
        )
    return data, root


def _apply_env(
    data: dict[str, Any], env: Mapping[str, str], prefix: str
) -> dict[tuple[str, ...], str]:
    """Set ``PREFIX`` + ``A__B=v`` as ``data[a][b] = v`` (v parsed as a YAML scalar or list)."""
    applied: dict[tuple[str, ...], str] = {}
    for name in sorted(env):
        if not name.startswith(prefix) or len(name) == len(prefix):
            continue
        path = tuple(part.lower() for part in name[len(prefix) :].split(ENV_NESTING))
        if any(not part for part in path):
            raise ConfigFileError(f"environment variable {name} has an empty section name")
        try:
            value = yaml.safe_load(env[name]) if env[name] else ""
        except yaml.YAMLError as e:
            raise ConfigFileError(f"environment variable {name} is not a valid value: {e}") from e
        target = data
        for part in path[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigFileError(
                    f"environment variable {name} sets a field inside {part!r}, which is not "
                    "a section"
                )
            target = child
        target[path[-1]] = value
        applied[path] = name
    return applied


def load_config(
    model: type[C],
    path: Path | str | None,
    *,
    env: Mapping[str, str] | None = None,
    env_prefix: str | None = None,
) -> C:
    """Build `model` from the YAML at `path` (or defaults alone), then `env` overrides on top.

    Raises `ConfigFileError` for an unreadable or unparsable file, and its subclass
    `InvalidConfigError`, naming every bad field with its line, for a config that does not validate.
    """
    source = str(path) if path is not None else "(defaults)"
    data, root = _read_yaml(Path(path)) if path is not None else ({}, None)
    from_env = _apply_env(data, env or {}, env_prefix) if env_prefix else {}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for item in e.errors(include_url=False):
            loc = tuple(item["loc"])
            field = ".".join(str(part) for part in loc) or "(top level)"
            # A variable explains an error at its own path, below it or above it.
            env_name = next(
                (
                    name
                    for key, name in from_env.items()
                    if loc[: len(key)] == key or key[: len(loc)] == loc
                ),
                None,
            )
            if env_name is not None:
                origin = f"environment {env_name}"
            else:
                line = _line_of(root, loc)
                origin = f"{source}:{line}" if line is not None else source
            problems.append(ConfigProblem(field, item["msg"], origin))
        raise InvalidConfigError(source, problems) from e


def validate_config_file(
    model: type[BaseModel],
    path: Path | str,
    *,
    env: Mapping[str, str],
    env_prefix: str,
    out: TextIO,
) -> int:
    """The ``validate-config FILE`` command of every process: 0 if valid, else 1 with each error.

    The environment is applied as ``main()`` would, so what is checked is what would run.
    """
    try:
        load_config(model, path, env=env, env_prefix=env_prefix)
    except InvalidConfigError as e:
        out.write(f"{e.source}: INVALID {model.__name__}\n")
        for problem in e.problems:
            out.write(f"{problem}\n")
        return 1
    except ConfigFileError as e:
        out.write(f"{e}\n")
        return 1
    out.write(f"{path}: OK ({model.__name__})\n")
    return 0


SettingsSchema = Callable[[], tuple[type[BaseModel], str]]
"""Returns (settings model, env prefix); called only when the command runs: the CLI starts fast."""


def add_validate_config_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    schema: SettingsSchema,
    *,
    what: str,
    example: str,
) -> argparse.ArgumentParser:
    """Add the ``validate-config FILE`` subcommand every process's CLI has."""
    text = (
        f"Check {what} as the process would load it (environment overrides applied); exit 1 "
        "naming each bad field and its line."
    )
    sub = commands.add_parser("validate-config", help=text, description=text)
    sub.add_argument("file", help=f"YAML file, e.g. {example}")

    def run(args: argparse.Namespace) -> int:
        model, env_prefix = schema()
        return validate_config_file(
            model, args.file, env=os.environ, env_prefix=env_prefix, out=sys.stdout
        )

    sub.set_defaults(handler=run)
    return sub


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse `argv` and run the chosen subcommand's handler; its return is the exit status."""
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
