"""docs/asyncapi.yaml is what the generator makes of the code; a real AsyncAPI parser accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from fleet_protocol.asyncapi import build_document, main, render
from fleet_protocol.messages import MESSAGE_MODELS
from fleet_protocol.topics import MessageKind
from tests.conftest import REPO_ROOT
from tests.node_tools import run_node

COMMITTED = REPO_ROOT / "docs" / "asyncapi.yaml"
VALIDATOR = REPO_ROOT / "tools" / "validate-asyncapi.mjs"


def test_committed_document_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        "docs/asyncapi.yaml is stale: run `make asyncapi`"
    )


def test_every_message_kind_has_a_channel_operation_and_schema() -> None:
    doc = build_document()
    addresses = {c["address"] for c in doc["channels"].values()}
    for kind, model in MESSAGE_MODELS.items():
        assert f"roadsign/v1/devices/{{device_id}}/{kind.value}" in addresses
        assert model.__name__ in doc["components"]["schemas"]
    assert "roadsign/v1/fleet/readings" in addresses
    assert len(doc["operations"]) == len(MessageKind) + 1


def test_schemas_use_draft07_tuples() -> None:
    text = render()
    assert "prefixItems" not in text
    bbox = build_document()["components"]["schemas"]["Reading"]["properties"]["bbox"]
    assert bbox["additionalItems"] is False
    assert len(bbox["items"]) == 4


def test_main_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    assert main(["--output", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["asyncapi"] == "3.0.0"


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return run_node(VALIDATOR, str(path), needs=REPO_ROOT / "node_modules" / "@asyncapi" / "parser")


def test_reference_parser_accepts_the_document() -> None:
    result = _validate(COMMITTED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout


def test_reference_parser_rejects_a_broken_document(tmp_path: Path) -> None:
    doc = build_document()
    first = next(iter(doc["operations"].values()))
    first["action"] = "consume"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = _validate(broken)
    assert result.returncode == 1
    assert '"action" property must be equal to one of the allowed values' in result.stdout
