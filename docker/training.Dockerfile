# syntax=docker/dockerfile:1
# Training (train extra: ultralytics, torch, MLflow client); runs `roadsign-train` against MLflow.
# Build from the repository root: buildah bud -f docker/training.Dockerfile -t roadsign-fleet/training .
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: training runs to completion; it serves nothing.
FROM docker.io/library/python:3.11.14-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       build-essential=12.9 pkg-config=1.8.1-1 libtesseract-dev=5.3.0-2 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt README.md ./
COPY fleet_protocol fleet_protocol
COPY edge_agent edge_agent
COPY training training
COPY models models
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints.txt './[train]'

FROM docker.io/library/python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="roadsign-fleet training" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       tesseract-ocr=5.3.0-2 tesseract-ocr-eng=1:4.1.0-2 libgl1=1.6.0-1 libglib2.0-0=2.74.6-2+deb12u9 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 train \
    && useradd --system --uid 10001 --gid train --no-create-home --home-dir /tmp train
COPY --from=build /opt/venv /opt/venv
# Ultralytics must never fetch weights or fonts at run time (training/detector/offline.py).
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp YOLO_OFFLINE=1
USER 10001:10001
ENTRYPOINT ["roadsign-train"]
CMD ["--help"]
