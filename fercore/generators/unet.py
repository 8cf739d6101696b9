"""The compact class-conditional UNet behind the `diffusion` generator: it predicts the noise in a noised image.

Shape (Ho et al. 2020, trimmed for CPU): a 3x3 stem, then per resolution level `blocks` residual blocks (group
norm, SiLU, 3x3 convs, the time-and-class embedding added in between) and a stride-2 down-sampling conv; a middle
of residual block, self-attention (optional) and residual block at the lowest resolution; the mirror image going
up, each block reading the matching skip connection; group norm, SiLU and a 3x3 conv to the image's channels. Level
channels are width x LEVEL_MULT, so the image side must be a multiple of `downsampling()` (32 -> 8, 48 -> 12,
64 -> 16 at the bottom). The conditioning vector is a sinusoidal embedding of the timestep through a small
MLP plus a learned class embedding, whose extra last row is the null class of classifier-free guidance.
The network knows nothing of noise schedules or training; `diffusion.py` drives it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEVEL_MULT = (1, 2, 2)  # channel multiplier per resolution level; a down-sampling between consecutive levels


def downsampling() -> int:
    """The factor between the input side and the lowest resolution; the image side must be a multiple of it."""
    return 2 ** (len(LEVEL_MULT) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)  # 8 groups where the width allows (tiny test nets)
    return nn.GroupNorm(groups, channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch, so each block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of float timesteps t (B,) -> (B, dim), as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
        self.out_layers = nn.Sequential(_norm(c_out), nn.SiLU(), _zero(nn.Conv2d(c_out, c_out, 3, padding=1)))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class SelfAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.heads = max(1, channels // 32)
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # b, heads, hw, c/heads
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """eps = UNet(x_t, t, y): x_t B x C x R x R (C: channels, 1 gray or 3 colour; R a multiple of downsampling()),
    t (B,) float timesteps on a 0..1000 scale, y (B,) class ids where y == num_classes is the null class
    (unconditional)."""

    def __init__(self, num_classes: int, width: int, blocks: int = 1, attention: bool = True, channels: int = 1):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        emb_dim = 4 * width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)  # last row: the null class
        self.stem = nn.Conv2d(channels, width, 3, padding=1)

        chans = [width * m for m in LEVEL_MULT]
        self.down = nn.ModuleList()
        skips = [width]
        c = width
        for level, c_out in enumerate(chans):
            for _ in range(blocks):
                self.down.append(ResBlock(c, c_out, emb_dim))
                c = c_out
                skips.append(c)
            if level < len(chans) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim), SelfAttention(c) if attention else nn.Identity(),
                                  ResBlock(c, c, emb_dim)])
        self.up = nn.ModuleList()
        for level, c_out in reversed(list(enumerate(chans))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), c_out, emb_dim))
                c = c_out
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
        self.out = nn.Sequential(_norm(c), nn.SiLU(), _zero(nn.Conv2d(c, channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.width)) + self.class_emb(y)
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, ResBlock) else layer(h)
        return self.out(h)
