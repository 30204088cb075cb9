"""One agent process of the kill -9 tests: boots, runs one OTA check, and may SIGKILL itself.

    python -m tests.edge_agent.ota.crash_child PROFILE_JSON POINT OUT_JSON STATUS_LINES

It boots as the agent does (``boot_model``: the restart counted against a probation, the slot
record read, the bundle verified), writes what it booted to OUT_JSON, reports a boot-time
rollback, then runs the real ``Updater.check`` against the repository the profile names, its
statuses appended to STATUS_LINES. At POINT it kills itself with a real SIGKILL: the named
function is wrapped in this process only, nothing in the agent knows about it. POINT "none"
finishes the check and writes its state to OUT_JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent import golden
from edge_agent.agent import JsonLinesSink
from edge_agent.ota import client as client_module
from edge_agent.ota import slots as slots_module
from edge_agent.ota import updater as updater_module
from edge_agent.profile import DeviceProfile
from fleet_protocol.messages import ModelRef

POINTS = (
    "mid-download",
    "after-verify",
    "mid-stage",
    "mid-smoke-test",
    "switch-before-rename",
    "switch-after-rename",
    "in-probation",
)
"""Where an update is killed, in the order an install passes them."""


def die() -> None:
    """The crash: SIGKILL, no handler, no flush, no atexit."""
    os.kill(os.getpid(), signal.SIGKILL)


def _dies_on_entry(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        die()
        return function(*args, **kwargs)  # pragma: no cover - never reached

    return wrapper


class _CutResponse:
    """A target download's response that lets half the signed bytes through, then dies."""

    def __init__(self, response: Any, allowed: int) -> None:
        self._response = response
        self._left = allowed

    def read1(self, n: int = -1) -> bytes:
        if self._left <= 0:
            die()
        chunk: bytes = self._response.read1(min(n, self._left) if n >= 0 else self._left)
        self._left -= len(chunk)
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


class _DyingOs:
    """The slots module's `os`, dying at the rename of the slot record (before or after)."""

    def __init__(self, after: bool) -> None:
        self._after = after

    def replace(self, src: Any, dst: Any) -> None:
        if Path(dst).name == slots_module.RECORD:
            if not self._after:
                die()  # the new record is written and fsynced under its temporary name
            os.replace(src, dst)
            die()  # renamed, the folder not fsynced yet
        os.replace(src, dst)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def arm(point: str) -> None:
    """Wrap the function at `point` so that this process dies there."""
    if point == "mid-download":
        real_open = client_module.HttpFetcher.open

        def cut_open(self: client_module.HttpFetcher, url: str, *, start: int = 0) -> Any:
            response = real_open(self, url, start=start)
            if "/tuf/targets/models/" not in url:
                return response
            length = int(response.getheader("Content-Length") or 0)
            return _CutResponse(response, max(1, length // 2))

        client_module.HttpFetcher.open = cut_open  # type: ignore[method-assign]
    elif point == "after-verify":
        slots_module.Slots.stage = _dies_on_entry(slots_module.Slots.stage)  # type: ignore[method-assign]
    elif point == "mid-stage":
        real_extractfile = tarfile.TarFile.extractfile
        extracted: list[str] = []

        def extract_some(self: tarfile.TarFile, member: Any) -> Any:
            # the second file member: the first one is written, the others not
            extracted.append(str(member))
            if len(extracted) == 2:
                die()
            return real_extractfile(self, member)

        tarfile.TarFile.extractfile = extract_some  # type: ignore[method-assign]
    elif point == "mid-smoke-test":
        # the staged reader loaded and ran once; its golden set is being read
        golden.check_golden = _dies_on_entry(golden.check_golden)
    elif point in {"switch-before-rename", "switch-after-rename"}:
        # only the slots module's renames: the download's own os.replace stays real
        setattr(slots_module, "os", _DyingOs(after=point == "switch-after-rename"))  # noqa: B010
    elif point not in {"none", "in-probation", "crash-while-new"}:
        raise SystemExit(f"unknown point {point!r}")


def main(argv: list[str]) -> int:
    profile_file, point, out, status_lines = argv
    profile = DeviceProfile.model_validate_json(Path(profile_file).read_text())
    device_id = profile.identity.device_id or "cam-unnamed"
    boot = updater_module.boot_model(profile)
    booted: dict[str, Any] = {
        "bundle_dir": str(boot.bundle_dir),
        "version": boot.running.version,
        "release": boot.running.release,
        "rolled_back": boot.rolled_back,
    }
    Path(out).write_text(json.dumps({"boot": booted}))
    if point == "crash-while-new" and boot.running.release > 1:
        # the model after the device's first (release 1) crashes the agent at every start
        die()
    arm(point)
    with open(status_lines, "a", encoding="utf-8") as stream:
        updater = updater_module.Updater(
            profile,
            device_id=device_id,
            sink=JsonLinesSink(stream, device_id),
            running=boot.running,
            model=ModelRef(version=boot.running.version, sha256=boot.running.sha256 or "0" * 64),
            swap=lambda reader, model: None,
            boot=boot,
        )
        updater.report_boot()
        state = updater.check()
        if point == "in-probation":
            die()
    Path(out).write_text(json.dumps({"boot": booted, "state": state}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
