"""Benchmark: fleet ingestion, simulated devices through Mosquitto into PostgreSQL.

Two phases on a private Mosquitto, side by side in one run:

1. baseline: a bare paho subscriber counts what N simulated devices publish (``raw_rate``);
2. ingest: the same load with ingestion workers storing into a fresh PostgreSQL database
   (``rate``: rows per second while devices publish; lost and duplicated rows counted after).

Then a readings query (device and time range, newest 100) is timed on a table grown to
``--query-rows`` rows. Writes ``bench/results/ingest.json``.

    python bench/ingest.py --devices 1000 --rate 5 --duration 60 --workers 2 \\
        --query-rows 5000000 --output bench/results/ingest.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.mosquitto import Broker  # noqa: E402 - the private broker helper of the tests

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def simulate(
    broker: Broker, devices: int, rate: float, duration: float, prefix: str, outboxes: Path
) -> dict[str, object]:
    """Run ``roadsign-agent simulate``; its summary."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "simulate",
            "--devices",
            str(devices),
            "--broker",
            broker.url,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--health-interval",
            "30",
            "--outbox-dir",
            str(outboxes),
            "--prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    summary: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def baseline(broker: Broker, args: argparse.Namespace, work: Path) -> float:
    """Messages per second a bare subscriber receives from the simulated fleet."""
    received = 0
    first: list[float] = []
    last = [0.0]
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        with lock:
            received += 1
            now = time.monotonic()
            if not first:
                first.append(now)
            last[0] = now

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.subscribe("roadsign/v1/devices/+/readings", qos=1)
    client.loop_start()
    summary = simulate(broker, args.devices, args.rate, args.duration, "base", work / "base")
    time.sleep(2)
    client.loop_stop()
    client.disconnect()
    elapsed = max(last[0] - first[0], 1e-9) if first else 1.0
    print(f"baseline: {received} of {summary['readings_sent']} in {elapsed:.1f}s", flush=True)
    return received / elapsed


def main() -> int:
    """Run both phases and the query timing; print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0, help="readings/s per device")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--query-rows", type=int, default=5_000_000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = Broker(
        work / "broker", extra_config="max_queued_messages 1000000\nmax_inflight_messages 1000\n"
    ).start()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    workers: list[subprocess.Popen[bytes]] = []
    try:
        raw_rate = baseline(broker, args, work)
        config = work / "fleet.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "database": {"url": url},
                    "broker": {"url": broker.url},
                    "ingest": {"batch_size": 1000, "batch_interval_s": 0.2, "metrics_port": 0},
                }
            )
        )
        subprocess.run(
            [sys.executable, "-m", "fleet_server.cli", "migrate", "--config", str(config)],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        with (
            psycopg.connect(url, autocommit=True) as db,
            db.cursor().copy(
                "COPY device (device_id, tags, status, created_at) FROM STDIN"
            ) as copy,
        ):
            for i in range(args.devices):
                copy.write_row((f"sim-{i:05d}", "[]", "unknown", "2026-11-27T00:00:00Z"))
        for i in range(args.workers):
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "fleet_server.cli",
                        "ingest",
                        "--config",
                        str(config),
                        "--client-id",
                        f"bench-ingest-{i}",
                    ],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=(work / f"worker{i}.log").open("wb"),
                )
            )
        time.sleep(3)
        started = time.monotonic()
        summary = simulate(broker, args.devices, args.rate, args.duration, "sim", work / "sim")
        sent = int(str(summary["readings_sent"]))
        with psycopg.connect(url) as db:
            deadline = time.monotonic() + 120
            stored = 0
            while time.monotonic() < deadline:
                stored = int(db.execute("SELECT count(*) FROM reading").fetchone()[0])  # type: ignore[index]
                if stored >= sent:
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            rows, distinct = db.execute(
                "SELECT count(*), count(DISTINCT (device_id, seq)) FROM reading"
            ).fetchone()  # type: ignore[misc]
            window = db.execute(
                "SELECT extract(epoch from max(received_at) - min(received_at)) FROM reading"
            ).fetchone()[0]  # type: ignore[index]
            latency = db.execute(
                "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY "
                "extract(epoch from received_at - observed_at)) FROM reading"
            ).fetchone()[0]  # type: ignore[index]
        rate = rows / max(float(window or elapsed), 1e-9)
        print(f"ingest: {rows} rows of {sent} sent, {rate:.0f}/s", flush=True)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        workers.clear()
        query_p95 = time_queries(url, args.query_rows, args.devices)
        result = {
            "devices": args.devices,
            "rate": round(rate, 1),
            "raw_rate": round(raw_rate, 1),
            "ratio": round(rate / raw_rate, 3) if raw_rate else None,
            "lost": max(sent - int(distinct), 0),
            "duplicated": int(rows) - int(distinct),
            "p95_latency_ms": round(float(latency or 0) * 1000, 1),
            "query_p95_ms": round(query_p95, 2),
            "sent": sent,
            "duration_s": args.duration,
            "workers": args.workers,
            "query_rows": args.query_rows,
        }
        print(json.dumps(result, indent=2))
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for worker in workers:
            worker.kill()
        broker.stop()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    return 0


def time_queries(url: str, total_rows: int, devices: int, queries: int = 200) -> float:
    """Grow the readings table to `total_rows` with COPY, then time typical queries; p95 ms.

    The rows added spread over `total_rows / devices` minutes, one per device per minute.
    """
    base = datetime(2026, 10, 1, tzinfo=UTC)
    columns = (
        "device_id, seq, observed_at, sign_type, value, unit, confidence, "
        "sources_disagree, x1, y1, x2, y2, track_id, frames_seen, model_version, "
        "model_sha256, received_at"
    )
    with psycopg.connect(url, autocommit=True) as db:
        have = int(db.execute("SELECT count(*) FROM reading").fetchone()[0])  # type: ignore[index]
        with db.cursor().copy(f"COPY reading ({columns}) FROM STDIN") as copy:
            for i in range(max(total_rows - have, 0)):
                observed = base + timedelta(minutes=i // devices)
                copy.write_row(
                    (
                        f"sim-{i % devices:05d}",
                        10_000_000 + i,
                        observed,
                        "speed_limit",
                        50.0,
                        "km/h",
                        0.9,
                        False,
                        1.0,
                        1.0,
                        30.0,
                        30.0,
                        i,
                        5,
                        "bench",
                        "0" * 64,
                        observed,
                    )
                )
        db.execute("ANALYZE reading")
        span = max(total_rows // devices, 1)
        times = []
        for q in range(queries):
            since = base + timedelta(minutes=(q * 37) % span)
            started = time.perf_counter()
            db.execute(
                "SELECT * FROM reading WHERE device_id = %s AND observed_at >= %s "
                "AND observed_at < %s ORDER BY observed_at DESC, id DESC LIMIT 100",
                (f"sim-{q % devices:05d}", since, since + timedelta(days=1)),
            ).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.quantiles(times, n=20)[18]


if __name__ == "__main__":
    raise SystemExit(main())
