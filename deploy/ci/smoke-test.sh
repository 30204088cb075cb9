#!/usr/bin/env bash
# After `helm upgrade --atomic` (.github/workflows/deploy.yml): is the release serving?
#   deploy/ci/smoke-test.sh NAMESPACE RELEASE URL
# Every workload rolled out; the dashboard's /healthz through the Ingress (TLS included); each
# ingestion worker's metrics; the broker's TLS port from inside the cluster. Exits non-zero,
# naming the check, on the first that fails.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: smoke-test.sh NAMESPACE RELEASE URL" >&2; exit 2; }
namespace=$1
name=$2-roadsign-fleet
url=${3%/}
kube() { kubectl --namespace "$namespace" "$@"; }
fail() { echo "smoke test failed: $*" >&2; exit 1; }

for workload in deployment/$name-api deployment/$name-ingest statefulset/$name-broker; do
    kube rollout status "$workload" --timeout=5m || fail "$workload did not roll out"
done
[ -n "$url" ] || fail "no URL (the environment's FLEET_URL variable)"
health=$(curl -fsS --retry 10 --retry-all-errors --retry-delay 6 --max-time 10 "$url/healthz") \
    || fail "$url/healthz did not answer"
[ "$health" = '{"status":"ok"}' ] || fail "$url/healthz answered $health"
kube exec "deployment/$name-ingest" -- python -c \
    "import urllib.request as u; u.urlopen('http://127.0.0.1:9101/metrics', timeout=5)" \
    || fail "the ingestion worker's metrics did not answer"
kube exec "deployment/$name-api" -- python -c \
    "import socket; socket.create_connection(('$name-broker', 8883), timeout=5).close()" \
    || fail "the broker's port 8883 is closed"
echo "smoke test passed: $url"
