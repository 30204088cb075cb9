# syntax=docker/dockerfile:1
# The fleet server: serve, ingest, migrate, broker-config, keys, models (k3s/roadsign-fleet runs it).
# Build from the repository root: buildah bud -f docker/server.Dockerfile -t roadsign-fleet/server .
# Multi-stage: the build stage's compilers and pip cache never reach the runtime image.
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: Kubernetes ignores it and probes the containers
# itself (the chart's probes), and docker compose declares its own healthchecks.
FROM docker.io/library/python:3.11.14-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml constraints.txt README.md ./
COPY fleet_protocol fleet_protocol
COPY fleet_server fleet_server
# The versions every install of the repository uses (constraints.txt), into a venv copied whole.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints.txt './[server]'

FROM docker.io/library/python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="roadsign-fleet server" \
      org.opencontainers.image.licenses="Apache-2.0"
# The broker folder: a compose volume mounted there starts owned by the image's user
# (deploy/compose/docker-compose.yml: broker-config writes it, Mosquitto reads it).
RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --no-create-home --home-dir /tmp fleet \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/roadsign-fleet/broker
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
# Numeric, so Kubernetes' runAsNonRoot can verify it without the passwd file.
USER 10001:10001
EXPOSE 8000 9101
ENTRYPOINT ["roadsign-fleet"]
CMD ["--help"]
