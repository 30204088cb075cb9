"""The chart's monitoring: Grafana dashboards as labelled ConfigMaps, alert rules as a
PrometheusRule only where its CRD exists, and every metric they query one the server exports; and
its tracing: the optional OpenTelemetry collector the server's processes then send to.

What the server exports is read from its own registries (the API's `ApiMetrics`, the worker's
`IngestMetrics`), not from a list kept here, so renaming a metric in the server fails this test
until the dashboards and rules follow. Each expression is read with Prometheus' own PromQL grammar
(tools/promql-check.mjs, npm's ``@prometheus-io/lezer-promql``): a syntax error fails too, and the
metric names are those its selectors name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from fleet_server.api.metrics import ApiMetrics
from fleet_server.ingest.metrics import IngestMetrics
from tests.conftest import REPO_ROOT
from tests.k3s.conftest import CHART, Render
from tests.k3s.manifests import parse, server_containers, workload_problems
from tests.k3s.test_chart import kubernetes_validate
from tests.node_tools import run_node

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
CRDS = (
    "--api-versions=monitoring.coreos.com/v1/PrometheusRule",
    "--api-versions=monitoring.coreos.com/v1/ServiceMonitor",
)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def exported(registry: CollectorRegistry) -> set[str]:
    """The series names a registry exposes, labelled children or not."""
    return {
        metric.name + suffix
        for metric in registry.collect()
        for suffix in SUFFIXES.get(metric.type, ("",))
    }


EXPORTED = exported(ApiMetrics().registry) | exported(IngestMetrics().registry)


PROMQL_CHECK = REPO_ROOT / "tools" / "promql-check.mjs"
LEZER_PROMQL = REPO_ROOT / "node_modules" / "@prometheus-io" / "lezer-promql"
# Grafana's own query form for a variable's values, which is not PromQL.
LABEL_VALUES = re.compile(r"label_values\((\w+), *\w+\)")


def promql(expressions: list[str], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Each expression read by Prometheus' grammar: {"error": ..., "metrics": [...]}."""
    source = tmp_path / "expressions.json"
    source.write_text(json.dumps(expressions))
    result = run_node(PROMQL_CHECK, str(source), needs=LEZER_PROMQL)
    assert result.returncode == 0, result.stderr
    return {found["expr"]: found for found in json.loads(result.stdout)}


def problems(expressions: list[str], tmp_path: Path) -> list[str]:
    """What is wrong with each expression: a syntax error, no metric, a metric not exported."""
    found = []
    for expr, parsed in promql(expressions, tmp_path).items():
        if parsed["error"] is not None:
            found.append(f"{expr}: not PromQL, {parsed['error']}")
        elif not parsed["metrics"]:
            found.append(f"{expr}: names no metric")
        for metric in sorted(set(parsed["metrics"]) - EXPORTED):
            found.append(f"{expr}: {metric} is not exported")
    return found


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's panels."""
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def find_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_the_server_exports_what_the_dashboards_are_about() -> None:
    assert {
        "roadsign_devices",
        "roadsign_rollouts",
        "roadsign_ingested_total",
        "roadsign_ingest_rejected_total",
        "roadsign_ingest_lag_seconds",
        "roadsign_ingest_batch_seconds_bucket",
    } <= EXPORTED


def test_the_check_catches_an_unknown_metric_and_a_syntax_error(tmp_path: Path) -> None:
    misspelt = "sum(rate(roadsign_ingest_rejects_total[5m])) / sum(roadsign_devices)"
    unclosed = "sum(rate(roadsign_devices[5m]) /"
    assert problems([misspelt, unclosed, "vector(1)"], tmp_path) == [
        f"{misspelt}: roadsign_ingest_rejects_total is not exported",
        f'{unclosed}: not PromQL, at 32: ""',  # its end: the division's missing operand
        "vector(1): names no metric",
    ]


def test_there_are_dashboards_for_fleet_health_ingestion_and_rollouts() -> None:
    assert [p.stem for p in DASHBOARDS] == ["fleet-health", "ingestion", "rollouts"]


def test_every_dashboard_panel_queries_only_metrics_the_server_exports(tmp_path: Path) -> None:
    uids, expressions = set(), []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(set(ids)) == len(ids), path.name
        for panel in dashboard["panels"]:
            assert panel["targets"], f"{path.name}: {panel['title']} queries nothing"
        for expression in queries(dashboard):
            assert '$namespace"' in expression, "each query keeps to one release"
            expressions.append(expression)
        for variable in dashboard["templating"]["list"]:
            if "definition" in variable:
                (metric,) = LABEL_VALUES.fullmatch(variable["definition"]).groups()  # type: ignore[union-attr]
                assert metric in EXPORTED, f"{path.name}: variable {variable['name']}"
    assert len(uids) == len(DASHBOARDS)
    assert problems(expressions, tmp_path) == []


def test_dashboards_render_as_configmaps_the_grafana_sidecar_loads(
    rendered: dict[str, str],
) -> None:
    maps = [
        doc
        for doc in find_kind(parse(rendered["production"]), "ConfigMap")
        if "-dashboard-" in doc["metadata"]["name"]
    ]
    assert len(maps) == len(DASHBOARDS)
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = config_map["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / key).read_text())


def test_dashboards_can_be_turned_off(render: Render) -> None:
    result = render(CHART, "--set", "metrics.dashboards.enabled=false")
    assert result.returncode == 0, result.stderr
    names = [doc["metadata"]["name"] for doc in parse(result.stdout)]
    assert not [name for name in names if "-dashboard-" in name]


def test_alert_rules_are_rendered_only_where_the_crd_exists(
    rendered: dict[str, str], render: Render, tmp_path: Path
) -> None:
    assert not find_kind(parse(rendered["defaults"]), "PrometheusRule")
    result = render(CHART, *CRDS)
    assert result.returncode == 0, result.stderr
    docs = parse(result.stdout)
    assert workload_problems(docs) == []  # the monitoring objects add no workload
    (rule,) = find_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {
        "RoadsignIngestLagging",
        "RoadsignIngestRejectRateHigh",
        "RoadsignIngestBrokerDisconnected",
        "RoadsignRolloutPaused",
        "RoadsignRolloutRolledBack",
    }
    assert problems([alert["expr"] for alert in alerts.values()], tmp_path) == []
    for name, alert in alerts.items():
        assert 'namespace="fleet"' in alert["expr"], name
    assert alerts["RoadsignIngestLagging"]["expr"].endswith("> 60")
    assert alerts["RoadsignRolloutPaused"]["for"] == "15m"
    # Prometheus' own template braces survive helm's rendering.
    assert "{{ $value | humanizePercentage }}" in str(alerts["RoadsignIngestRejectRateHigh"])


def test_alert_thresholds_come_from_the_values(render: Render, tmp_path: Path) -> None:
    values = tmp_path / "rules.yaml"
    values.write_text("metrics:\n  rules:\n    ingestLagSeconds: 300\n    rolloutPausedFor: 1h\n")
    result = render(CHART, *CRDS, "--values", str(values))
    assert result.returncode == 0, result.stderr
    (rule,) = find_kind(parse(result.stdout), "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert alerts["RoadsignIngestLagging"]["expr"].endswith("> 300")
    assert alerts["RoadsignRolloutPaused"]["for"] == "1h"


OTLP = "ROADSIGN_FLEET__TELEMETRY__OTLP_ENDPOINT"
COLLECTOR = "fleet-roadsign-fleet-otel-collector"
WITH_COLLECTOR = (
    "--set",
    "otel.enabled=true",
    "--set",
    "otel.exporter.endpoint=jaeger-collector.observability:4317",
)


def otlp_endpoints(docs: list[dict[str, Any]]) -> dict[str, str | None]:
    """Each fleet-server process's OTLP endpoint variable (None where unset)."""
    return {
        command: {v["name"]: v.get("value") for v in container["env"]}.get(OTLP)
        for command, container in server_containers(docs).items()
    }


def test_without_a_collector_no_traces_are_exported(rendered: dict[str, str]) -> None:
    docs = parse(rendered["defaults"])
    assert not [d for d in docs if d["metadata"]["name"] == COLLECTOR]
    assert set(otlp_endpoints(docs).values()) == {None}


def test_the_collector_receives_the_servers_traces_and_exports_them_over_otlp(
    render: Render, tmp_path: Path
) -> None:
    result = render(CHART, *WITH_COLLECTOR)
    assert result.returncode == 0, result.stderr
    docs = parse(result.stdout)
    assert workload_problems(docs) == []  # non-root, read-only, bounded, probed
    manifests = tmp_path / "otel.yaml"
    manifests.write_text(result.stdout)
    validated = kubernetes_validate(manifests)
    assert validated.returncode == 0, validated.stdout + validated.stderr

    by_kind = {d["kind"]: d for d in docs if d["metadata"]["name"] == COLLECTOR}
    assert set(by_kind) == {"ConfigMap", "Deployment", "Service", "NetworkPolicy"}
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["config.yaml"])
    assert config["exporters"]["otlp"]["endpoint"] == "jaeger-collector.observability:4317"
    assert config["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    # Every server process sends to the collector's OTLP/HTTP port, through its Service.
    endpoint = f"http://{COLLECTOR}:4318/v1/traces"
    assert set(otlp_endpoints(docs).values()) == {endpoint}
    ports = {p["name"]: p["port"] for p in by_kind["Service"]["spec"]["ports"]}
    assert ports["otlp-http"] == 4318
    # Another back end rolls the collector's pods, which read their configuration at start.
    other = render(CHART, *WITH_COLLECTOR, "--set", "otel.exporter.endpoint=tempo:4317")
    (moved,) = [
        d
        for d in parse(other.stdout)
        if d["metadata"]["name"] == COLLECTOR and d["kind"] == "Deployment"
    ]
    annotation = "checksum/config"
    deployment = by_kind["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert (
        moved["spec"]["template"]["metadata"]["annotations"][annotation] != deployment[annotation]
    )


def test_an_existing_collector_named_in_the_values_wins(render: Render) -> None:
    result = render(
        CHART, *WITH_COLLECTOR, "--set", "telemetry.otlpEndpoint=http://otel.example:4318/v1/traces"
    )
    assert result.returncode == 0, result.stderr
    assert set(otlp_endpoints(parse(result.stdout)).values()) == {
        "http://otel.example:4318/v1/traces"
    }


def test_a_collector_without_a_back_end_is_refused_naming_the_value(render: Render) -> None:
    result = render(CHART, "--set", "otel.enabled=true")
    assert result.returncode != 0
    assert "otel.exporter.endpoint is required" in result.stderr
