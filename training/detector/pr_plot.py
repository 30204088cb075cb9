"""Precision-recall curves drawn into a PNG (matplotlib, headless), for MLflow and the docs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_pr_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    *,
    title: str,
    marker: str | None = None,
) -> Path:
    """Draw each named (recall, precision) curve into one PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    for label, (recall, precision) in curves.items():
        axes.plot(recall, precision, marker=marker, label=label)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.legend(fontsize=7, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
