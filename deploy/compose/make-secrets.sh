#!/usr/bin/env bash
# Write ./secrets/ for docker-compose.yml: fresh strong secrets and the broker's TLS files.
#   sudo deploy/compose/make-secrets.sh broker.pem broker.key ca.pem
# The certificate must name the host `mosquitto` (the server and worker connect to it by that
# name) and the public host of FLEET_BROKER_PUBLIC_URL (devices). Run as root: each file is
# handed to the one container user that reads it (10001 the fleet's images, 999 PostgreSQL),
# mode 0400, since docker compose mounts a file secret as it is on the host.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: make-secrets.sh BROKER_CERT BROKER_KEY CA_CERT" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${SECRETS_DIR:-$here/secrets}  # SECRETS_DIR: elsewhere (tests)
[ ! -e "$out" ] || { echo "make-secrets.sh: $out exists; move it away first" >&2; exit 1; }
token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
umask 077
mkdir -m 0700 "$out"
db_password=$(token)
broker_password=$(token)
secret_key=$(token)
admin_token=$(token)
# token_urlsafe strings: YAML reads each back as the same string (docs/deploy.md).
cat > "$out/fleet-worker.yaml" <<YAML
auth:
  secret_key: $secret_key
  bootstrap_admin_token: $admin_token
broker:
  password: $broker_password
YAML
# The API and broker-config also manage the broker's accounts: they alone hold its admin password.
{ cat "$out/fleet-worker.yaml"; printf 'enrolment:\n  broker_admin_password: %s\n' "$(token)"; } \
    > "$out/fleet-server.yaml"
printf 'postgres:5432:*:fleet:%s\n' "$db_password" > "$out/pgpass"
printf '%s' "$db_password" > "$out/postgres-password"
cp "$1" "$out/broker-tls.pem"
cp "$2" "$out/broker-tls.key"
cp "$3" "$out/broker-ca.pem"
chmod 0400 "$out"/*
if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 "$out"/fleet-*.yaml "$out/pgpass" "$out"/broker-*
    chown 999:999 "$out/postgres-password"
else
    echo "make-secrets.sh: not root, so the files stay yours: the containers cannot read them" >&2
fi
# Compose reads the files as the user who runs it (root), the containers by their own uid.
chmod 0711 "$out"
echo "wrote $out; the first admin token is in fleet-server.yaml (auth.bootstrap_admin_token)"
