"""Benchmark: one model rollout to a simulated fleet through the real server's TUF repository.

The bench starts its own PostgreSQL (`tests.postgres`), initialises the TUF repository in it,
publishes a copy of ``models/default`` under a new version (the whole shipped bundle, about
6 MB packed) and assigns it to ``--devices`` enrolled devices. The fleet server runs as its own
process (``roadsign-fleet serve``: uvicorn, one worker), so its memory and CPU are its own.

The simulated devices run the agent's real `edge_agent.ota.client.OtaClient`: each one has its
own state folder and trusted root, and does what the updater does before installing: a TUF
refresh (root, timestamp, snapshot, targets, director, its bin), its signed assignment, the
model target's signed info, and the resumable download checked against the signed length and
sha256. Every device is enrolled with a broker password and reads the repository with it (HTTP
Basic, as the agent does), so the server pays its password checks. ``--concurrency`` devices
download at a time, spread over ``--processes`` worker processes each running threads: a fleet
is many small clients, and on a 2-core machine one process per core keeps the clients' Python
(JSON, signatures, hashing) from queueing behind one GIL while leaving the server its share of
the CPU.

Measured, in one run:

- ``raw_seconds``: N plain HTTP GETs of the same consistent-snapshot target from
  ``/tuf/targets/`` at the same concurrency, saved to a file as a device saves a download, each
  by a device of its own with its own password (so the server checks as many passwords as in
  the OTA phase, none of them remembered from it);
- ``seconds_to_verified``: every device refreshed, found its assignment and downloaded and
  verified the target;
- ``ratio``: the first over the second (the cost of TUF over a bare download);
- ``seconds_to_active``: ``seconds_to_verified`` plus the agent's install path on every device:
  `edge_agent.ota.slots.Slots` extract into the inactive slot, verify every artifact against
  its sidecar, and the atomic switch of the slot record. The smoke test (ONNX inference on the
  golden set) is not in it: it loads both models and runs the golden images, seconds of CPU per
  device, which 2 cores cannot afford for 200 devices;
- ``failed``: devices that did not get to active;
- ``server_peak_rss_mb``: the server process's peak resident set, ``VmHWM`` of
  ``/proc/<pid>/status`` read at the end of the run.

    python bench/rollout.py --devices 200 --concurrency 20 --processes 2 \\
        --output bench/results/rollout.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.bundle import load_bundle, load_metadata  # noqa: E402
from edge_agent.ota.client import OtaClient, basic_authorization  # noqa: E402
from edge_agent.ota.slots import Slots  # noqa: E402
from edge_agent.ota.state import SlotInfo  # noqa: E402
from fleet_server import crud  # noqa: E402
from fleet_server.credentials import mosquitto_hash  # noqa: E402
from fleet_server.db import make_engine, session_scope  # noqa: E402
from fleet_server.migrate import upgrade  # noqa: E402
from fleet_server.models import DeviceCreate  # noqa: E402
from fleet_server.repository import service  # noqa: E402
from fleet_server.repository.keys import generate_signer, write_key_file  # noqa: E402
from fleet_server.settings import (  # noqa: E402
    AuthSettings,
    DatabaseSettings,
    RepositorySettings,
    ServerSettings,
)
from tests.mosquitto import free_port  # noqa: E402 - the tests' helpers: a free port,
from tests.postgres import Postgres  # noqa: E402 - and a private PostgreSQL server

ADMIN = "rsf_bench-rollout-admin"
PASSPHRASE = "bench-rollout-online-key"  # noqa: S105 - a throwaway repository's key
SOURCE_BUNDLE = ROOT / "models" / "default"
VERSION = "bench-rollout-2"


@dataclass(frozen=True)
class Job:
    """What one worker process needs: the server, its devices and how many at a time."""

    base_url: str
    trusted_root: bytes
    work: Path
    device_ids: list[str]
    threads: int
    logins: dict[str, str]
    """Device id -> its ``Authorization`` value (``warm``: the admin token)."""
    raw_path: str | None = None
    """Set: plain GETs of this URL path instead of the OTA client."""


def device_download(job: Job, device_id: str) -> dict[str, Any]:
    """One device: TUF refresh, its assignment, the model's info and the verified download."""
    started = time.monotonic()
    try:
        client = OtaClient(
            repository_url=job.base_url,
            trusted_root=job.trusted_root,
            state_dir=job.work / device_id,
            authorization=job.logins[device_id],
        )
        client.refresh()
        signed = client.assignment(device_id)
        if signed is None:
            raise RuntimeError(f"no signed assignment for {device_id}")
        found = client.model_info(signed.target)
        if found is None:
            raise RuntimeError(f"no signed model target {signed.target}")
        target, info = found
        tar = client.download(info)
    except Exception as e:  # noqa: BLE001 - a failed device is counted and named, not fatal
        return {"device": device_id, "error": f"{type(e).__name__}: {e}"}
    return {
        "device": device_id,
        "tar": str(tar),
        "length": info.length,
        "version": target.version,
        "release": target.release,
        "sha256": target.sha256,
        "done": time.monotonic(),
        "took": time.monotonic() - started,
    }


def raw_get(job: Job, device_id: str) -> dict[str, Any]:
    """One plain GET of the target saved to a file, as a device without TUF would store the
    model it downloads (no metadata, no hash check)."""
    assert job.raw_path is not None
    parts = urlsplit(job.base_url)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.netloc, timeout=60)
    folder = job.work / "raw" / device_id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        connection.request(
            "GET",
            job.raw_path,
            headers={"Connection": "close", "Authorization": job.logins[device_id]},
        )
        response = connection.getresponse()
        size = 0
        with (folder / "bundle.tar").open("wb") as out:
            while chunk := response.read1(1 << 16):
                size += len(chunk)
                out.write(chunk)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
    except Exception as e:  # noqa: BLE001 - counted, not fatal
        return {"device": device_id, "error": f"{type(e).__name__}: {e}"}
    finally:
        connection.close()
    return {"device": device_id, "bytes": size, "took": time.monotonic() - started}


def device_install(job: Job, done: dict[str, Any]) -> dict[str, Any]:
    """The agent's install path on one device: extract, verify, switch the slot record."""
    try:
        slots = Slots(job.work / done["device"])
        slot, bundle = slots.stage(Path(done["tar"]), max_bytes=int(done["length"]))
        index = load_bundle(bundle)
        detector = load_metadata(bundle / next(iter(index.detector.values())), verify=False)
        slots.activate(
            slot,
            SlotInfo(
                version=done["version"],
                release=done["release"],
                sha256=done["sha256"],
                detector_sha256=detector.sha256,
            ),
            now=time.time(),
        )
    except Exception as e:  # noqa: BLE001 - counted, not fatal
        return {"device": done["device"], "error": f"{type(e).__name__}: {e}"}
    return {"device": done["device"], "done": time.monotonic()}


def run_job(job: Job, phase: str, items: list[Any]) -> list[dict[str, Any]]:
    """A worker process: `items` through `phase` on `job.threads` threads."""
    steps: dict[str, Callable[[Job, Any], dict[str, Any]]] = {
        "download": device_download,
        "raw": raw_get,
        "install": device_install,
    }
    step = steps[phase]
    with ThreadPoolExecutor(job.threads) as pool:
        return list(pool.map(lambda item: step(job, item), items))


def fleet(
    pools: ProcessPoolExecutor, job: Job, phase: str, items: list[Any], processes: int
) -> tuple[float, list[dict[str, Any]]]:
    """Run `phase` on every item, split over the worker processes; (seconds, results)."""
    shares = [items[i::processes] for i in range(processes)]
    started = time.monotonic()
    futures = [pools.submit(run_job, job, phase, share) for share in shares if share]
    results = [result for future in futures for result in future.result()]
    return time.monotonic() - started, results


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a running process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for process {pid}")


def password_of(device_id: str) -> str:
    """A simulated device's broker password."""
    return f"bench-password-of-{device_id}"


def prepare(
    url: str, work: Path, devices: list[str], raw_devices: list[str]
) -> tuple[bytes, str, int]:
    """Repository initialised, the model published and assigned to every device; the raw
    phase's devices enrolled too, each with its password.

    Returns the trusted root, the target's consistent-snapshot URL path and its length.
    """
    database = DatabaseSettings(url=url)
    upgrade(database)
    keys = work / "keys"
    keys.mkdir()
    online = generate_signer()
    write_key_file(online, keys / "online.pem", PASSPHRASE)
    settings = ServerSettings(
        database=database,
        auth=AuthSettings(bootstrap_admin_token=SecretStr(ADMIN)),
        tuf=RepositorySettings(
            online_key_file=keys / "online.pem", online_key_passphrase=SecretStr(PASSPHRASE)
        ),
    )
    bundle = work / "bundle"
    shutil.copytree(SOURCE_BUNDLE, bundle, ignore=shutil.ignore_patterns("training"))
    index = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**index, "version": VERSION}, indent=2))
    targets = [generate_signer()]
    engine = make_engine(database)
    try:
        with session_scope(engine) as session:
            service.initialise(
                session,
                settings,
                root_keys=[generate_signer()],
                root_threshold=1,
                targets_keys=targets,
                online=online,
            )
        with session_scope(engine) as session:
            model = service.publish_bundle(
                session,
                settings,
                bundle_dir=bundle,
                targets_keys=targets,
                online=online,
                min_agent_version="0.1.0",
            )
            target_path = model.target_path
        with session_scope(engine) as session:
            for device_id in devices + raw_devices:
                device = crud.create_device(session, device=DeviceCreate(device_id=device_id))
                device.broker_password_hash = mosquitto_hash(password_of(device_id))
        with session_scope(engine) as session:
            service.assign(session, settings, devices, target_path, False, "bench-rollout")
        with session_scope(engine) as session:
            root = crud.role_metadata(session, role="root", version=1)
            head = crud.target_head(session, path=target_path)
            assert root is not None
            assert head is not None
            _, sha256, length = head
            trusted_root = root.content
    finally:
        engine.dispose()
    directory, _, basename = target_path.rpartition("/")
    return trusted_root, f"/tuf/targets/{directory}/{sha256}.{basename}", length


def serve(url: str, work: Path, port: int) -> subprocess.Popen[bytes]:
    """The fleet server as its own process, as production runs it."""
    config = work / "fleet.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"url": url},
                "auth": {"bootstrap_admin_token": ADMIN},
                "http": {"host": "127.0.0.1", "port": port},
                "telemetry": {"log_level": "WARNING"},
                "tuf": {
                    "online_key_file": str(work / "keys" / "online.pem"),
                    "online_key_passphrase": PASSPHRASE,
                },
            }
        )
    )
    return subprocess.Popen(
        [sys.executable, "-m", "fleet_server.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(work / "server.log").open("wb"),
    )


def wait_for_server(base_url: str, server: subprocess.Popen[bytes], work: Path) -> None:
    """Until the server answers /tuf/metadata/timestamp.json."""
    parts = urlsplit(base_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {(work / 'server.log').read_text()[-2000:]}")
        connection = http.client.HTTPConnection(parts.netloc, timeout=5)
        try:
            connection.request(
                "GET", "/tuf/metadata/timestamp.json", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            if connection.getresponse().status == 200:
                return
        except OSError:
            threading.Event().wait(0.2)  # not listening yet
        finally:
            connection.close()
    raise RuntimeError("the server did not answer within 60 s")


def failures(results: list[dict[str, Any]]) -> list[str]:
    """`device: error` of each failed result."""
    return [f"{r['device']}: {r['error']}" for r in results if "error" in r]


def main() -> int:
    """Prepare, serve, run the raw and OTA phases and the installs; print and write results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20, help="devices at a time")
    parser.add_argument("--processes", type=int, default=2, help="client worker processes")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    processes = max(1, min(args.processes, args.concurrency))
    threads = max(1, args.concurrency // processes)
    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    postgres = Postgres()
    server: subprocess.Popen[bytes] | None = None
    devices = [f"sim-{i:05d}" for i in range(args.devices)]
    raw_devices = [f"raw-{i:05d}" for i in range(args.devices)]
    logins = {d: basic_authorization(d, password_of(d)) for d in devices + raw_devices}
    logins["warm"] = f"Bearer {ADMIN}"
    try:
        postgres.start()
        postgres.create_database("bench")
        url = postgres.url("bench")
        trusted_root, raw_path, length = prepare(url, work, devices, raw_devices)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = serve(url, work, port)
        wait_for_server(base_url, server, work)
        job = Job(base_url, trusted_root, work / "devices", devices, threads, logins)
        with ProcessPoolExecutor(processes) as pools:
            # Workers started and the target's pages read once before anything is timed.
            fleet(pools, Job(**{**job.__dict__, "raw_path": raw_path}), "raw", ["warm"], 1)
            raw_seconds, raw = fleet(
                pools, Job(**{**job.__dict__, "raw_path": raw_path}), "raw", raw_devices, processes
            )
            print(f"raw: {len(raw)} GETs in {raw_seconds:.2f}s", flush=True)
            seconds_to_verified, downloads = fleet(pools, job, "download", devices, processes)
            print(f"ota: {len(downloads)} verified in {seconds_to_verified:.2f}s", flush=True)
            verified = [d for d in downloads if "error" not in d]
            install_seconds, installs = fleet(pools, job, "install", verified, processes)
            print(f"install: {len(installs)} active in {install_seconds:.2f}s", flush=True)
        server_rss = peak_rss_mb(server.pid)
        failed = failures(downloads) + failures(installs)
        raw_failed = failures(raw)
        took = sorted(d["took"] for d in verified)
        result = {
            "devices": args.devices,
            "concurrency": processes * threads,
            "processes": processes,
            "threads_per_process": threads,
            "bundle_bytes": length,
            "seconds_to_verified": round(seconds_to_verified, 2),
            "raw_seconds": round(raw_seconds, 2),
            "ratio": round(seconds_to_verified / raw_seconds, 3) if raw_seconds else None,
            "seconds_to_active": round(seconds_to_verified + install_seconds, 2),
            "install_seconds": round(install_seconds, 2),
            "install_measured": "slots extract + sidecar verify + record switch, every device; "
            "smoke test not included",
            "device_p50_s": round(took[len(took) // 2], 3) if took else None,
            "device_max_s": round(took[-1], 3) if took else None,
            "failed": len(failed),
            "failures": failed[:10],
            "raw_failed": len(raw_failed),
            "server_peak_rss_mb": server_rss,
            "server_rss_source": "/proc/<server pid>/status VmHWM (the serve process)",
        }
        print(json.dumps(result, indent=2))
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
