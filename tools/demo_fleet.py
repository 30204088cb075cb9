"""``make demo``'s fleet: three enrolled agents, each its own profile variant, tags and drive,
reading their drives in a loop (``camera.loop``) so the fleet stays live until the demo stops."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from demo_stack import ROOT, WORK, Stack, api

BUNDLE = ROOT / "models" / "default"
SIGNS = 3


@dataclass(frozen=True)
class Car:
    """One demo device: its id, the dev-x86 variant it runs, its tags and its drive's seed."""

    device_id: str
    variant: str
    tags: tuple[str, ...]
    seed: int


CARS = (
    Car("demo-car-0001", "dev-x86", ("depot-north", "ring"), 3),
    Car("demo-car-0002", "dev-x86-lowpower", ("depot-north", "city"), 5),
    Car("demo-car-0003", "dev-x86-bench", ("depot-south", "city"), 8),
)


def enrol(base: str, token: str, car: Car) -> dict[str, Any]:
    """Enrol `car` through the API; its credentials."""
    body = {"device_id": car.device_id, "profile": car.variant, "tags": list(car.tags)}
    enrolled: dict[str, Any] = api(base, "/api/v1/devices", token, body)
    return enrolled


def device_profile(car: Car, enrolled: dict[str, Any], video: Path, fps: float) -> Path:
    """The dev-x86 profile as `car`'s variant: its identity, drive (looped), broker account."""
    profile = yaml.safe_load((ROOT / "firmware_configs" / "dev-x86.yaml").read_text())
    home = WORK / car.device_id
    home.mkdir(exist_ok=True)
    (home / "password").write_text(enrolled["password"])
    profile["profile"] = car.variant
    profile["identity"] = {**profile.get("identity", {}), "device_id": car.device_id}
    # Two cores serve the whole fleet in CI: one inference thread per car.
    profile["detector"] = {**profile["detector"], "model_dir": str(BUNDLE), "threads": 1}
    profile["camera"] = {
        **profile["camera"],
        "source": str(video),
        "kind": "video",
        "loop": True,
        "fps_cap": fps,
    }
    profile["broker"] = {
        **profile["broker"],
        "url": enrolled["broker_url"],
        "username": enrolled["username"],
        "password_file": str(home / "password"),
    }
    profile["reporting"] = {**profile["reporting"], "sink": "mqtt"}
    profile["outbox"] = {**profile["outbox"], "path": str(home / "outbox.sqlite3")}
    profile["api"] = {**profile["api"], "enabled": False}
    path = home / "device.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def start_agents(stack: Stack, base: str, token: str, fps: float) -> dict[str, int]:
    """Enrol each car, render its drive, start its agent; the signs on each drive."""
    from training.data.drive import render_drive

    signs: dict[str, int] = {}
    for car in CARS:
        enrolled = enrol(base, token, car)
        video = WORK / f"{car.device_id}.mp4"
        signs[car.device_id] = len(render_drive(video, SIGNS, seed=car.seed))
        profile = device_profile(car, enrolled, video, fps)
        stack.start(
            car.device_id, [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(profile)]
        )
        print(
            f"enrolled {car.device_id} ({car.variant}, tags {', '.join(car.tags)}): "
            f"a looped drive past {signs[car.device_id]} signs"
        )
    return signs


def readings_per_device(base: str, token: str) -> dict[str, int]:
    """How many readings the fleet server stored from each car."""
    counts: dict[str, int] = {}
    for car in CARS:
        page = api(base, f"/api/v1/readings?device_id={car.device_id}&limit=1000", token)
        counts[car.device_id] = len(page["items"])
    return counts
