"""Inference runtimes behind one small interface, chosen through an explicit registry.

Each backend lives in its own file and imports its runtime (OpenVINO, ONNX Runtime) only when
chosen, so a device carries and loads just the one it runs. ONNX Runtime takes the profile's
execution providers; OpenVINO runs on its CPU plugin and has no use for them.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from typing import Literal

from edge_agent.exceptions import ModelError
from edge_agent.inference.base import CompiledModel, InferenceBackend

BackendName = Literal["openvino", "onnxruntime"]
CPU_ONLY = ("CPUExecutionProvider",)


def _openvino(execution_providers: Sequence[str]) -> InferenceBackend:
    from edge_agent.inference.openvino_backend import OpenVinoBackend

    return OpenVinoBackend()


def _onnxruntime(execution_providers: Sequence[str]) -> InferenceBackend:
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(execution_providers)


BACKENDS: dict[BackendName, Callable[[Sequence[str]], InferenceBackend]] = {
    "openvino": _openvino,
    "onnxruntime": _onnxruntime,
}


def resolve_backend_name(name: str, machine: str | None = None) -> BackendName:
    """The backend `name` stands for: ``auto`` is OpenVINO on x86-64, ONNX Runtime elsewhere."""
    if name == "auto":
        arch = (machine or platform.machine()).lower()
        return "openvino" if arch in {"x86_64", "amd64", "x64"} else "onnxruntime"
    if name not in BACKENDS:
        raise ModelError(f"unknown inference backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    return name


def get_backend(name: str, *, execution_providers: Sequence[str] = CPU_ONLY) -> InferenceBackend:
    """The backend registered as `name` (or ``auto``); ONNX Runtime on `execution_providers`."""
    return BACKENDS[resolve_backend_name(name)](execution_providers)


__all__ = [
    "BACKENDS",
    "CPU_ONLY",
    "CompiledModel",
    "InferenceBackend",
    "get_backend",
    "resolve_backend_name",
]
