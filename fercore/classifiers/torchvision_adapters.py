"""torchvision backbones adapted to one-channel input of any small size and 7 outputs. Never downloads weights."""
from __future__ import annotations

import torchvision
from torch import nn


def resnet(arch: str, num_classes: int, dropout: float, small_stem: bool) -> nn.Module:
    model = getattr(torchvision.models, arch)(weights=None)
    if small_stem:
        # 48x48 inputs lose most of their detail to a 7x7/2 conv and a max-pool; keep full resolution instead.
        model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
    return model
