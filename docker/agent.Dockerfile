# syntax=docker/dockerfile:1
# The on-device agent (edge extra: no torch, no server stack) for amd64 and arm64 devices.
# Build from the repository root, per platform:
#   buildah bud --platform linux/arm64 -f docker/agent.Dockerfile -t roadsign-fleet/agent .
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: the agent runs under systemd on devices, whose
# watchdog it feeds (deploy/device/roadsign-agent.service), or as a one-shot command.
FROM docker.io/library/python:3.11.14-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# tesserocr compiles against libtesseract where no wheel fits the platform. Versions pinned as
# Debian 12 has them; binNMU-suffixed (+bN) ones are left to their parent, as they differ by arch.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       build-essential=12.9 pkg-config=1.8.1-1 libtesseract-dev=5.3.0-2 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt README.md ./
COPY fleet_protocol fleet_protocol
COPY edge_agent edge_agent
COPY models models
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints.txt './[edge]'

FROM docker.io/library/python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="roadsign-fleet agent" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       tesseract-ocr=5.3.0-2 tesseract-ocr-eng=1:4.1.0-2 libgl1=1.6.0-1 libglib2.0-0=2.74.6-2+deb12u9 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 agent \
    && useradd --system --uid 10001 --gid agent --no-create-home --home-dir /var/lib/roadsign agent
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["roadsign-agent"]
CMD ["--help"]
