"""Bundle folders: checked against their own index before packing, packed the same way on
every machine, never reaching outside the folder."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from fleet_server.exceptions import BundleError
from fleet_server.repository.bundles import check_bundle, pack_bundle
from tests.conftest import REPO_ROOT
from tests.fleet_server.repository.support import make_bundle, write_artifact

LIMIT = 10 * 1024 * 1024


def test_a_bundle_packs_to_the_same_bytes_whatever_its_file_times(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    first = pack_bundle(bundle)
    for path in bundle.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert pack_bundle(bundle) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}


def test_check_reads_the_lineage_from_the_index_and_sidecars(tmp_path: Path) -> None:
    info = check_bundle(make_bundle(tmp_path / "bundle", version="3.1.4"), max_bytes=LIMIT)
    assert (info.name, info.version, info.formats) == ("roadsign-test", "3.1.4", ["onnx_int8"])
    assert (info.input_size, info.source_run_id, info.metrics) == (416, "run-3.1.4", {"map50": 0.7})


def test_a_missing_companion_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    write_artifact(
        bundle / "detector" / "openvino_int8",
        "model.xml",
        b"<xml/>",
        companions={"model.bin": "0" * 64},
        input_size=416,
    )
    index = json.loads((bundle / "bundle.json").read_text())
    index["detector"]["openvino_int8"] = "detector/openvino_int8/model.xml"
    (bundle / "bundle.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=r"model\.bin is missing"):
        check_bundle(bundle, max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("classifier", "../outside/classifier.onnx", "leaves the bundle folder"),
        ("classifier", "/etc/passwd", "leaves the bundle folder"),
        ("version", "../1", "must match"),
        ("name", "", "must match"),
        ("detector", {}, "names no detector"),
    ],
)
def test_an_index_that_points_outside_or_names_badly_is_refused(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    index = json.loads((bundle / "bundle.json").read_text())
    index[field] = value
    (bundle / "bundle.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=message):
        check_bundle(bundle, max_bytes=LIMIT)


def test_a_link_out_of_the_folder_is_not_packed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for devices")
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "golden").mkdir()
    (bundle / "golden" / "leak.txt").symlink_to(secret)
    with tarfile.open(fileobj=io.BytesIO(pack_bundle(bundle))) as tar:
        assert "golden/leak.txt" not in tar.getnames()


def test_the_shipped_default_bundle_checks_with_both_detector_formats() -> None:
    info = check_bundle(REPO_ROOT / "models" / "default", max_bytes=64 * 1024 * 1024)
    assert info.formats == ["onnx_int8", "openvino_int8"]
    assert info.input_size == 416
    assert info.metrics["gtsrb_test32_top1"] == pytest.approx(0.9907)
