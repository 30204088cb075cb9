"""The classifier network: a small VGG-style CNN with two heads, sign and speed.

About 0.6 M parameters at width 32: it reaches 99% on GTSRB's test set at 32 px and runs in well
under a millisecond per crop on one CPU core, so reading never slows the detector down.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class SignClassifier(nn.Module):
    """Crops (N x 3 x S x S, 0-1) to logits ``sign`` and ``speed``."""

    def __init__(self, sign_classes: int, speed_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w),
            _block(w, w),
            nn.MaxPool2d(2),
            _block(w, 2 * w),
            _block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _block(2 * w, 4 * w),
            _block(4 * w, 4 * w),
            nn.MaxPool2d(2),
            _block(4 * w, 8 * w),
        )
        self.dropout = nn.Dropout(0.2)
        self.sign = nn.Linear(8 * w, sign_classes)
        self.speed = nn.Linear(8 * w, speed_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sign and speed logits."""
        pooled = self.dropout(F.adaptive_avg_pool2d(self.features(images), 1).flatten(1))
        return self.sign(pooled), self.speed(pooled)
