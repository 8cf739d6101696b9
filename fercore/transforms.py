"""The random transforms of a classifier's training batches (the train.flip, train.translate, ... keys), applied to
whole batches on the device: the data stays uint8 there, and each batch is normalised and augmented in a few tensor
operations instead of per-image PIL transforms.

Strengths (all off at 0): flip (probability), translate (pixels), rotate (degrees, +-), crop (random resized crop:
the smallest kept share of the image's area, so 0.2 keeps 20-100 %), erase (probability of one random rectangle).
Flip and whole-pixel shifts alone take a cheap gather; rotation or cropping switch to one affine resampling per batch
that applies all geometric transforms at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fercore.images import to_unit


@dataclass(frozen=True)
class Strengths:
    flip: float = 0.0
    translate: int = 0
    rotate: float = 0.0
    crop: float = 0.0
    erase: float = 0.0

    @classmethod
    def from_section(cls, train) -> "Strengths":
        return cls(train.flip, train.translate, train.rotate, train.crop, train.erase)


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W (gray) or B x H x W x 3 (colour) -> float B x C x H x W in [-1, 1]."""
    return to_unit(images_u8)


def augment(x: torch.Tensor, s: Strengths, gen: torch.Generator | None = None) -> torch.Tensor:
    """Augment a normalised B x C x H x W batch; each image draws its own transform from GEN (the same for all of
    its channels, so colour stays registered)."""
    if s.rotate > 0 or s.crop > 0:
        x = _affine(x, s, gen)
    else:
        x = _flip_and_shift(x, s.flip, s.translate, gen)
    if s.erase > 0:
        x = _erase(x, s.erase, gen)
    return x


def _rand(n: int, x: torch.Tensor, gen) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=x.device)


def _flip_and_shift(x: torch.Tensor, flip: float, translate: int, gen) -> torch.Tensor:
    b, _, h, w = x.shape
    dev = x.device
    if flip > 0:
        mask = _rand(b, x, gen) < flip
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if translate > 0:
        t = translate
        padded = F.pad(x, (t, t, t, t), mode="replicate")
        dy = torch.randint(0, 2 * t + 1, (b,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * t + 1, (b,), generator=gen, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])[:, :, None]  # B x H x 1
        cols = (dx[:, None] + torch.arange(w, device=dev)[None, :])[:, None, :]  # B x 1 x W
        # Advanced indices around the channel slice put it last: B x H x W x C, back to B x C x H x W.
        x = padded[torch.arange(b, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    return x


def _affine(x: torch.Tensor, s: Strengths, gen) -> torch.Tensor:
    """Flip, rotation, random resized crop and translation as one sampling grid per image."""
    b, _, h, w = x.shape
    angle = (_rand(b, x, gen) * 2 - 1) * math.radians(s.rotate)
    # A crop keeping a share `area` of the image, shown at full size, is a zoom by 1/sqrt(area).
    area = 1 - _rand(b, x, gen) * s.crop
    zoom = area.sqrt()
    sign = torch.where(_rand(b, x, gen) < s.flip, -1.0, 1.0)
    # Shift: the translate strength, plus wherever the crop window may sit inside the image.
    room = (1 - zoom)
    tx = (_rand(b, x, gen) * 2 - 1) * (room + 2 * s.translate / w)
    ty = (_rand(b, x, gen) * 2 - 1) * (room + 2 * s.translate / h)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _erase(x: torch.Tensor, p: float, gen) -> torch.Tensor:
    """Random erasing: with probability p, one rectangle of 2-25 % of the area, aspect 0.3-3.3, set to 0 (mid-gray)."""
    b, _, h, w = x.shape
    dev = x.device
    area = (0.02 + _rand(b, x, gen) * 0.23) * h * w
    aspect = torch.exp((_rand(b, x, gen) * 2 - 1) * math.log(3.3))
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    y0 = _rand(b, x, gen) * (h - eh)
    x0 = _rand(b, x, gen) * (w - ew)
    yy = torch.arange(h, device=dev)[None, :, None]
    xx = torch.arange(w, device=dev)[None, None, :]
    inside = (yy >= y0[:, None, None]) & (yy < (y0 + eh)[:, None, None]) & \
             (xx >= x0[:, None, None]) & (xx < (x0 + ew)[:, None, None])
    inside &= (_rand(b, x, gen) < p)[:, None, None]
    return x.masked_fill(inside.unsqueeze(1), 0.0)
