"""ResEmoteNet (report 002_8bd063b910fbcebc.txt, section II; Roy et al., arXiv:2409.10545). No training code.

The report's three parts, for a one-channel image:
- CNN backbone: three 3x3 conv + batch norm + ReLU + 2x2 max-pool blocks (width, 2 width, 4 width channels), with
  dropout 0.2 after the first two (as in the authors' published code);
- a squeeze-and-excitation block on the third block's maps (global average pool, bottleneck of 1/16, sigmoid gate);
- three residual blocks (two 3x3 convs with batch norm, projection shortcut, stride 2; 8, 16, 32 width channels);
- adaptive average pooling, then the head: three Linear + ReLU + dropout layers (16, 8, 4 width units) and the final
  Linear to num_classes. classifier.dropout is the head's dropout (0.5 in the authors' code).

width=64 is the published network (80M parameters, 004's table 1). Parameter names follow the authors' code
(conv1, bn1, ..., se.fc.0, res_block1.shortcut.0, fc1 ... fc4), so their checkpoints load through
classifier.weights (a 3-channel conv1 is summed to one channel, an fc4 of another size is skipped).

Stages for classifier.freeze_stages (no separate stem: stage 0 is empty): 1-3 the conv blocks (3 with the SE block),
4-6 the residual blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# A dropout after block k belongs to block k+1, whose input it regularises: frozen stages run without dropout, the
# first trainable stage still gets its dropped-out input.
STAGES = [[], ["conv1", "bn1"], ["drop1", "conv2", "bn2"], ["drop2", "conv3", "bn3", "se"],
          ["res_block1"], ["res_block2"], ["res_block3"]]
FIRST_CONV, HEAD = "conv1", "fc4"


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class ResEmoteNet(nn.Module):
    def __init__(self, num_classes: int = 7, dropout: float = 0.5, width: int = 64, in_channels: int = 1,
                 feature_dropout: float = 0.2):
        super().__init__()
        w = width
        self.conv1, self.bn1 = nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w)
        self.drop1 = nn.Dropout(feature_dropout)
        self.conv2, self.bn2 = nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w)
        self.drop2 = nn.Dropout(feature_dropout)
        self.conv3, self.bn3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w)
        self.se = SqueezeExcitation(4 * w)
        self.res_block1 = ResidualBlock(4 * w, 8 * w)
        self.res_block2 = ResidualBlock(8 * w, 16 * w)
        self.res_block3 = ResidualBlock(16 * w, 32 * w)
        self.fc1 = nn.Linear(32 * w, 16 * w)
        self.fc2 = nn.Linear(16 * w, 8 * w)
        self.fc3 = nn.Linear(8 * w, 4 * w)
        self.fc4 = nn.Linear(4 * w, num_classes)
        self.head_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2))
        x = self.drop2(F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2))
        x = self.se(F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2))
        x = self.res_block3(self.res_block2(self.res_block1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        for fc in (self.fc1, self.fc2, self.fc3):
            x = self.head_drop(F.relu(fc(x)))
        return self.fc4(x)
