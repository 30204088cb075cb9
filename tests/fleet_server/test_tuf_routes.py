"""The /tuf routes serve a repository a real python-tuf ngclient trusts, over real HTTP.

The client bootstraps from root v1 as a device does, finds a published model in top-level
targets and a device's assignment through director -> its hash bin, downloads the bundle at its
consistent-snapshot path and verifies it; a target resumes from a byte (206); names outside the
repository's shapes are 404 before any query.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import tracemalloc
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from fleet_server import crud
from fleet_server.api.main import create_app
from fleet_server.api.routes.tuf import VersionedMetadataCache
from fleet_server.db import session_scope
from fleet_server.repository import service
from fleet_server.repository.builder import BIN_PREFIX
from fleet_server.settings import DatabaseSettings, ServerSettings
from tests.fleet_server.auth_support import ADMIN, bearer
from tests.fleet_server.repository.support import (
    Keys,
    enrol,
    initialised_repository,
    make_bundle,
    publish,
    stored_root,
    updater,
    write_artifact,
)
from tests.serving import serving


@pytest.fixture
def repo(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> tuple[ServerSettings, Keys]:
    """An initialised repository (root threshold 2 of 2) on the test database."""
    return initialised_repository(database, engine, tmp_path / "keys")


def test_ngclient_finds_an_assignment_through_director_and_its_bin_and_downloads_the_model(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    target_path = publish(engine, settings, keys, make_bundle(tmp_path / "bundle"))
    logins = enrol(engine, "cam-1", "cam-2")
    with session_scope(engine) as session:
        signed = service.assign(session, settings, ["cam-1"], target_path, False, "rollout-7")
    assert len(signed.bins) == 1  # one device: one bin re-signed
    assert signed.bins[0].startswith(BIN_PREFIX + "-")
    with serving(create_app(settings, engine)) as base:
        other = updater(
            base, tmp_path / "cam-2", stored_root(engine), authorization=logins["cam-2"]
        )
        other.refresh()
        assert other.get_targetinfo("assignments/cam-2") is None  # keeps what it runs
        client = updater(
            base, tmp_path / "device", stored_root(engine), authorization=logins["cam-1"]
        )
        client.refresh()
        assignment = client.get_targetinfo("assignments/cam-1")
        assert assignment is not None
        custom = assignment.custom["roadsign"]
        assert custom["device_id"] == "cam-1"
        assert custom["target"] == target_path
        assert custom["rollout_id"] == "rollout-7"
        assert custom["rollback"] is False
        model = client.get_targetinfo(custom["target"])
        assert model is not None
        assert (model.length, model.hashes) == (assignment.length, assignment.hashes)
        assert model.custom["roadsign"]["release"] == custom["release"] == 1
        assert model.custom["roadsign"]["formats"] == ["onnx_int8"]
        downloaded = Path(client.download_target(model))
    data = downloaded.read_bytes()
    assert hashlib.sha256(data).hexdigest() == model.hashes["sha256"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert "bundle.json" in names
    assert "detector/onnx_int8/model.onnx" in names
    assert not any(name.startswith("training") for name in names)


def test_targets_are_served_only_at_their_consistent_snapshot_path(
    repo: tuple[ServerSettings, Keys],
    engine: Engine,
    tmp_path: Path,
) -> None:
    settings, keys = repo
    target_path = publish(engine, settings, keys, make_bundle(tmp_path / "bundle"))
    with session_scope(engine) as session:
        head = crud.target_head(session, path=target_path)
    assert head is not None
    _, sha256, length = head
    folder, name = target_path.rsplit("/", 1)
    with (
        serving(create_app(settings, engine)) as base,
        httpx.Client(base_url=base, headers=bearer(ADMIN)) as http,
    ):
        whole = http.get(f"/tuf/targets/{folder}/{sha256}.{name}")
        assert whole.status_code == 200
        assert int(whole.headers["content-length"]) == length == len(whole.content)
        assert hashlib.sha256(whole.content).hexdigest() == sha256
        assert http.get(f"/tuf/targets/{target_path}").status_code == 404  # no hash prefix
        assert http.get(f"/tuf/targets/{folder}/{'0' * 64}.{name}").status_code == 404
        # Interrupted after 1000 bytes: the rest, from there.
        rest = http.get(f"/tuf/targets/{folder}/{sha256}.{name}", headers={"Range": "bytes=1000-"})
        assert rest.status_code == 206
        assert rest.headers["content-range"] == f"bytes 1000-{length - 1}/{length}"
        assert int(rest.headers["content-length"]) == length - 1000
        assert whole.content[:1000] + rest.content == whole.content
        middle = http.get(
            f"/tuf/targets/{folder}/{sha256}.{name}", headers={"Range": "bytes=10-19"}
        )
        assert (middle.status_code, middle.content) == (206, whole.content[10:20])
        for bad in (f"bytes={length}-", "bytes=5-2", "bytes=0-1,5-6", "lines=1-"):
            refused = http.get(f"/tuf/targets/{folder}/{sha256}.{name}", headers={"Range": bad})
            assert refused.status_code == 416, bad
            assert refused.headers["content-range"] == f"bytes */{length}"


@pytest.mark.parametrize(
    "path",
    [
        "/tuf/metadata/..%2F..%2Fetc%2Fpasswd",
        "/tuf/metadata/snapshot.json",  # consistent snapshots: only versioned
        "/tuf/metadata/7.timestamp.json",
        "/tuf/metadata/1.secrets.json",
        "/tuf/metadata/99999999999999999999.root.json",  # would overflow the column
        "/tuf/metadata/42.root.json",
        "/tuf/targets/models/../../etc/passwd",
        "/tuf/targets/models/%2e%2e/x/" + "a" * 64 + ".bundle.tar",
        "/tuf/targets/.hidden/" + "a" * 64 + ".x",
        "/tuf/targets/" + "a/" * 200 + "b",
        "/tuf/targets/models/x/1.0/" + "a" * 64 + ".bundle.tar",
    ],
)
def test_names_outside_the_repository_are_404_without_a_database_error(
    repo: tuple[ServerSettings, Keys], engine: Engine, path: str
) -> None:
    settings, _ = repo
    with (
        serving(create_app(settings, engine)) as base,
        httpx.Client(base_url=base, headers=bearer(ADMIN)) as http,
    ):
        response = http.get(path)
        assert response.status_code == 404, response.text
        assert http.get("/tuf/metadata/timestamp.json").status_code == 200  # still serving


def test_metadata_is_served_by_version_and_timestamp_and_root_by_name(
    repo: tuple[ServerSettings, Keys], engine: Engine
) -> None:
    settings, _ = repo
    with (
        serving(create_app(settings, engine)) as base,
        httpx.Client(base_url=base, headers=bearer(ADMIN)) as http,
    ):
        root = http.get("/tuf/metadata/1.root.json")
        assert root.status_code == 200
        assert root.content == stored_root(engine)
        assert "immutable" in root.headers["cache-control"]
        latest = http.get("/tuf/metadata/root.json")
        assert latest.content == root.content
        assert latest.headers["cache-control"] == "no-cache"
        for name in ("timestamp.json", "1.snapshot.json", "1.targets.json", "1.director.json"):
            assert http.get(f"/tuf/metadata/{name}").status_code == 200, name
        assert http.get(f"/tuf/metadata/1.{BIN_PREFIX}-f.json").status_code == 200
        assert http.get(f"/tuf/metadata/1.{BIN_PREFIX}-10.json").status_code == 404  # 16 bins


def _big_target(
    engine: Engine, settings: ServerSettings, keys: Keys, tmp_path: Path, *, mib: int
) -> tuple[str, str, int]:
    """Publish a bundle of over `mib` MiB; (its consistent-snapshot URL path, sha256, length)."""
    bundle = make_bundle(tmp_path / "bundle")
    write_artifact(bundle / "golden", "frames.bin", os.urandom(mib * 1024 * 1024))
    target_path = publish(engine, settings, keys, bundle)
    with session_scope(engine) as session:
        head = crud.target_head(session, path=target_path)
    assert head is not None
    _, sha256, length = head
    folder, name = target_path.rsplit("/", 1)
    return f"/tuf/targets/{folder}/{sha256}.{name}", sha256, length


def test_a_4_mb_target_streams_in_slices_without_holding_it_in_memory(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    url, sha256, length = _big_target(engine, settings, keys, tmp_path, mib=4)
    assert length > 4 * 1024 * 1024
    digest = hashlib.sha256()
    with (
        serving(create_app(settings, engine)) as base,
        httpx.Client(base_url=base, headers=bearer(ADMIN)) as http,
    ):
        tracemalloc.start()
        try:
            with http.stream("GET", url) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    digest.update(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert digest.hexdigest() == sha256
    assert peak < length / 2, f"serving {length} bytes peaked at {peak} bytes allocated"


def test_more_open_downloads_than_pooled_connections_all_proceed(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    # Larger than loopback's socket buffers, so a paused download really stays open.
    url, sha256, _ = _big_target(engine, settings, keys, tmp_path, mib=32)
    downloads = engine.pool.size() + 10  # type: ignore[attr-defined]
    with (
        serving(create_app(settings, engine)) as base,
        httpx.Client(base_url=base, timeout=10, headers=bearer(ADMIN)) as http,
        contextlib.ExitStack() as open_downloads,
    ):
        streams = [open_downloads.enter_context(http.stream("GET", url)) for _ in range(downloads)]
        readers = [stream.iter_bytes() for stream in streams]
        digests = [hashlib.sha256(next(reader)) for reader in readers]  # each started, paused
        assert http.get("/tuf/metadata/timestamp.json").status_code == 200
        for reader, digest in zip(readers, digests, strict=True):
            for chunk in reader:
                digest.update(chunk)
    assert {digest.hexdigest() for digest in digests} == {sha256}


def test_a_versioned_metadata_file_is_read_from_the_database_once_and_a_missing_one_later_found(
    repo: tuple[ServerSettings, Keys], engine: Engine, tmp_path: Path
) -> None:
    settings, keys = repo
    with (
        serving(create_app(settings, engine)) as base,
        httpx.Client(headers=bearer(ADMIN)) as http,
    ):
        # Not stored yet: a 404 that is not remembered.
        assert http.get(f"{base}/tuf/metadata/2.targets.json").status_code == 404
        publish(engine, settings, keys, make_bundle(tmp_path / "bundle"))
        first = http.get(f"{base}/tuf/metadata/2.targets.json")
        assert first.status_code == 200
        assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
        # Served from memory now: gone from the database, the same bytes still come back.
        with session_scope(engine) as session:
            row = crud.role_metadata(session, role="targets", version=2)
            assert row is not None
            session.delete(row)
        again = http.get(f"{base}/tuf/metadata/2.targets.json")
        assert (again.status_code, again.content) == (200, first.content)
        assert http.get(f"{base}/tuf/metadata/timestamp.json").headers["cache-control"] == (
            "no-cache"
        )


def test_the_metadata_cache_drops_the_least_recently_used_beyond_its_byte_bound() -> None:
    cache = VersionedMetadataCache(max_bytes=10)
    cache.put("snapshot", 1, b"aaaa")
    cache.put("snapshot", 2, b"bbbb")
    assert cache.get("snapshot", 1) == b"aaaa"  # now the most recently used
    cache.put("snapshot", 3, b"cccc")
    assert cache.get("snapshot", 2) is None
    assert (cache.get("snapshot", 1), cache.get("snapshot", 3)) == (b"aaaa", b"cccc")
    cache.put("targets", 9, b"x" * 11)  # larger than the bound: never kept
    assert cache.get("targets", 9) is None
