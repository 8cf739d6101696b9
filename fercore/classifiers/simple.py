"""Small classifier networks from the source reports: `linear` (000) and `cnn3` (003, table 1). No training code."""
from __future__ import annotations

import torch
from torch import nn


class LinearClassifier(nn.Module):
    """Flattened pixels -> 7 logits: the linear baseline of 000_d4268ee43cae98ab.txt."""

    def __init__(self, image_size: int = 48, num_classes: int = 7, dropout: float = 0.0, in_channels: int = 1):
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(in_channels * image_size * image_size, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class CNN3(nn.Module):
    """Three 3x3 conv + ReLU + 2x2 max-pool blocks (32, 64, 128), dense 256, dropout, 7 logits (003, table 1)."""

    def __init__(self, image_size: int = 48, num_classes: int = 7, dropout: float = 0.5, width: int = 32,
                 in_channels: int = 1):
        super().__init__()
        chans = [in_channels, width, width * 2, width * 4]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        side = image_size // 8
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(chans[-1] * side * side, 256), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
