"""The local API alone in a process, so that a test can measure what one request costs it.

    python -m tests.edge_agent.api_process PROFILE BUNDLE

serves the profile's ``api`` section with the model bundle in BUNDLE (ONNX Runtime), prints
``{"port": N}`` on stdout once it listens, and stops when its stdin closes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge_agent.api import LocalApi
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import load_reader
from fleet_protocol.config_files import load_config


def main(profile: str, bundle: str) -> None:
    """Serve until stdin closes."""
    api = LocalApi(
        load_config(DeviceProfile, Path(profile)).api,
        reader=lambda: load_reader(Path(bundle), backend="onnxruntime"),
        health=lambda: {"device_id": "measured"},
        metrics=str,
    ).start()
    sys.stdout.write(json.dumps({"port": api.port}) + "\n")
    sys.stdout.flush()
    sys.stdin.read()
    api.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
