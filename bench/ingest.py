"""Benchmark: fleet ingestion, simulated devices through Mosquitto into PostgreSQL.

Two phases on a private Mosquitto, side by side in one run, with the same simulated fleet
(`bench.fleet_load`: one MQTT v5 connection per device, QoS 1):

1. baseline: a bare paho subscriber counts what the devices publish (``raw_rate``);
2. ingest: the same load with ingestion workers storing into a private PostgreSQL server
   (`tests.postgres`, with a production server's durable settings). ``rate``: rows stored per
   second from the first row to the last; lost and duplicated rows counted after; publish-to-row
   latency from each reading's timestamp to its ``received_at``.

Then the readings API (device, sign type and value, map area, each over a day; and the newest
page) is timed on a table grown to ``--query-rows`` rows. Writes ``--output`` as JSON.

    python bench/ingest.py --devices 1000 --rate 6 --duration 60 --workers 2 \\
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import yaml
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet_load import Load, generate  # noqa: E402
from fleet_server.api.main import create_app  # noqa: E402
from fleet_server.db import make_engine  # noqa: E402
from fleet_server.settings import AuthSettings, DatabaseSettings, ServerSettings  # noqa: E402
from tests.mosquitto import Broker  # noqa: E402 - the private broker helper of the tests
from tests.postgres import Postgres  # noqa: E402 - and its private PostgreSQL server


def run_fleet(broker: Broker, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """Run the simulated fleet (`bench.fleet_load`) against the broker; its summary."""
    summary = generate(
        Load(
            host="127.0.0.1",
            port=broker.port,
            devices=args.devices,
            rate=args.rate,
            duration_s=args.duration,
            prefix=prefix,
            processes=args.generators,
        )
    )
    print(f"{prefix}: {json.dumps(summary)}", flush=True)
    return summary


def baseline(broker: Broker, args: argparse.Namespace) -> float:
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
    summary = run_fleet(broker, args, "base")
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
    parser.add_argument("--workers", type=int, default=2, help="ingestion worker processes")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument("--query-rows", type=int, default=5_000_000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = Broker(
        work / "broker", extra_config="max_queued_messages 1000000\nmax_inflight_messages 1000\n"
    )
    # Durable settings (fsync, full-page writes, synchronous commit), as a production server has:
    # the benchmark measures real ingestion, unlike the tests' throwaway server.
    postgres = Postgres(durable=True)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        broker.start()
        postgres.start()
        postgres.create_database("bench")
        url = postgres.url("bench", driver="postgresql")
        raw_rate = baseline(broker, args)
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
        summary = run_fleet(broker, args, "sim")
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
            lags = db.execute(
                "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lag), "
                "max(lag) FROM (SELECT extract(epoch from received_at - observed_at) AS lag "
                "FROM reading) AS lags"
            ).fetchone()
            assert lags is not None
            (p50, p95_latency, p99), worst = lags
            # Rows stored in each 10 s of the run: a rate held for the whole minute, or not.
            buckets = db.execute(
                "SELECT floor(extract(epoch from received_at - first) / 10) AS bucket, count(*), "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY received_at - observed_at) "
                "FROM reading, (SELECT min(received_at) AS first FROM reading) AS start "
                "GROUP BY bucket ORDER BY bucket"
            ).fetchall()
        full = buckets[: int(float(window or 0) // 10)]  # the last, partial 10 s says nothing
        rate_by_10s = [round(int(count) / 10, 1) for _, count, _ in full]
        p95_latency_ms_by_10s = [round(lag.total_seconds() * 1000, 1) for _, _, lag in full]
        rate = rows / max(float(window or elapsed), 1e-9)
        print(f"ingest: {rows} rows of {sent} sent, {rate:.0f}/s", flush=True)
        stopped = stop_workers(workers)
        workers.clear()
        query_p95, query_kinds = time_queries(url, args.query_rows, args.devices)
        result = {
            "devices": args.devices,
            "rate": round(rate, 1),
            "raw_rate": round(raw_rate, 1),
            "ratio": round(rate / raw_rate, 3) if raw_rate else None,
            "lost": max(sent - int(distinct), 0),
            "duplicated": int(rows) - int(distinct),
            "p95_latency_ms": round(float(p95_latency) * 1000, 1),
            "latency_ms": {
                "p50": round(float(p50) * 1000, 1),
                "p99": round(float(p99) * 1000, 1),
                "max": round(float(worst) * 1000, 1),
            },
            "rate_by_10s": rate_by_10s,
            "p95_latency_ms_by_10s": p95_latency_ms_by_10s,
            "query_p95_ms": round(query_p95, 2),
            "query_p95_ms_by_kind": query_kinds,
            "sent": sent,
            "offered_rate": round(sent / float(summary["publishing_s"]), 1),
            "device_disconnects": summary["disconnects"],
            "duration_s": args.duration,
            "workers": args.workers,
            "query_rows": args.query_rows,
            "workers_stopped_cleanly": stopped,
        }
        print(json.dumps(result, indent=2))
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for worker in workers:
            worker.kill()
        broker.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def stop_workers(workers: list[subprocess.Popen[bytes]], grace_s: float = 60.0) -> bool:
    """SIGTERM every worker and wait; kill those still running after `grace_s`.

    Whether all stopped on their own (a killed worker loses nothing: it acknowledged only
    what it had committed, but a slow stop is worth knowing).
    """
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    clean = True
    for worker in workers:
        try:
            worker.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            print(f"worker {worker.pid} still running {grace_s:.0f}s after SIGTERM: killed")
            worker.kill()
            worker.wait()
            clean = False
    return clean


FILL = """
INSERT INTO reading (device_id, seq, observed_at, sign_type, value, unit, confidence,
    sources_disagree, x1, y1, x2, y2, track_id, frames_seen, model_version, model_sha256,
    lat, lon, received_at)
SELECT format('sim-%%s', lpad((i %% %(devices)s)::text, 5, '0')),
       10000000 + i,
       %(base)s::timestamptz + make_interval(mins => i / %(devices)s),
       (ARRAY['speed_limit', 'stop', 'yield', 'prohibitory', 'danger'])[1 + i %% 5],
       (ARRAY[30, 50, 60, 80, 100, 120])[1 + i %% 6], 'km/h', 0.9, false,
       1, 1, 30, 30, i, 5, 'bench', repeat('0', 64),
       48.0 + (i %% 997) / 997.0, 11.0 + (i %% 991) / 991.0,
       %(base)s::timestamptz + make_interval(mins => i / %(devices)s)
FROM generate_series(0, %(count)s - 1) AS i
"""


def time_queries(
    url: str, total_rows: int, devices: int, per_kind: int = 50
) -> tuple[float, dict[str, float]]:
    """Grow the readings table to `total_rows`, then time the readings API on it.

    The rows added spread over `total_rows / devices` minutes, one per device per minute, over
    five sign types and a 1x1 degree area. Each query kind is an HTTP GET of
    ``/api/v1/readings`` through the real app (auth, query, serialisation; in process, no
    socket). Returns the p95 over all queries in ms and the p95 of each kind.
    """
    base = datetime(2026, 10, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as db:
        have = int(db.execute("SELECT count(*) FROM reading").fetchone()[0])  # type: ignore[index]
        count = max(total_rows - have, 0)
        started = time.monotonic()
        db.execute(FILL, {"devices": devices, "base": base, "count": count})
        db.execute("VACUUM ANALYZE reading")
        print(f"query table: {count} rows added in {time.monotonic() - started:.0f}s", flush=True)
    token = "rsf_bench-admin-token"  # noqa: S105 - a throwaway database's bootstrap token
    settings = ServerSettings(
        database=DatabaseSettings(url=url.replace("postgresql://", "postgresql+psycopg://")),
        auth=AuthSettings(bootstrap_admin_token=SecretStr(token)),
    )
    engine = make_engine(settings.database)
    span_minutes = max(total_rows // devices, 1)
    kinds: dict[str, list[float]] = {}
    try:
        with TestClient(create_app(settings, engine)) as client:
            headers = {"Authorization": f"Bearer {token}"}
            for q in range(per_kind):
                since = base + timedelta(minutes=(q * 37) % span_minutes)
                until = since + timedelta(days=1)
                window = {"since": since.isoformat(), "until": until.isoformat()}
                queries: tuple[tuple[str, dict[str, str]], ...] = (
                    ("device_day", {"device_id": f"sim-{q % devices:05d}", **window}),
                    ("type_value_day", {"sign_type": "speed_limit", "value": "50", **window}),
                    ("area_day", {"bbox": "11.2,48.2,11.3,48.3", **window}),
                    ("newest", {}),
                )
                for kind, params in queries:
                    started = time.perf_counter()
                    response = client.get("/api/v1/readings", params=params, headers=headers)
                    kinds.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
    finally:
        engine.dispose()
    everything = [t for times in kinds.values() for t in times]
    return p95(everything), {kind: round(p95(times), 2) for kind, times in kinds.items()}


def p95(times: list[float]) -> float:
    """The 95th percentile."""
    return statistics.quantiles(times, n=20)[18]


if __name__ == "__main__":
    raise SystemExit(main())
