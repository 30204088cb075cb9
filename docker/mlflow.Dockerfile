# syntax=docker/dockerfile:1
# MLflow tracking server with the PostgreSQL driver and S3 client the chart's MLflow needs.
# Build from the repository root: buildah bud -f docker/mlflow.Dockerfile -t roadsign-fleet/mlflow .
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: Kubernetes ignores it and probes the containers
# itself (the chart's probes), and docker compose declares its own healthchecks.
FROM docker.io/library/python:3.11.14-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY constraints.txt docker/mlflow-requirements.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints.txt -r mlflow-requirements.txt

FROM docker.io/library/python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="roadsign-fleet mlflow" \
      org.opencontainers.image.licenses="Apache-2.0"
# /mlflow/artifacts owned by the user: a compose volume mounted there starts so.
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --no-create-home --home-dir /tmp mlflow \
    && install -d -o 10001 -g 10001 -m 0750 /mlflow/artifacts
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--help"]
