"""Augmentation of whole batches on the device: the data stays uint8 there, and each batch is normalised and
augmented in a few tensor operations instead of per-image PIL transforms."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W -> float B x 1 x H x W in [-1, 1]."""
    return images_u8.unsqueeze(1).float().div_(127.5).sub_(1.0)


def augment(x: torch.Tensor, flip: float, translate: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flips (probability FLIP) and shifts of up to TRANSLATE pixels, per image; 0 turns each off."""
    b, _, h, w = x.shape
    dev = x.device
    if flip > 0:
        mask = torch.rand(b, generator=gen, device=dev) < flip
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if translate > 0:
        t = translate
        padded = F.pad(x, (t, t, t, t), mode="replicate")
        dy = torch.randint(0, 2 * t + 1, (b,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * t + 1, (b,), generator=gen, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])[:, :, None]  # B x H x 1
        cols = (dx[:, None] + torch.arange(w, device=dev)[None, :])[:, None, :]  # B x 1 x W
        x = padded[torch.arange(b, device=dev)[:, None, None], 0, rows, cols].unsqueeze(1)
    return x
