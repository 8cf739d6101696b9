"""Augmentation of what the discriminator sees, for every GAN type: none, DiffAugment or ADA.

Both apply the same differentiable transforms to real and fake images before D, so D cannot memorise a small training
set and the generator still gets gradients through them.
- DiffAugment (Zhao et al. 2020, mit-han-lab/data-efficient-gans): brightness, contrast, translation by up to 1/8 of
  the side, cutout of a 1/2-side square, always on. (Saturation is skipped: gray images have none.)
- ADA (Karras et al. 2020): the same kinds of transforms plus horizontal flips, each applied to an image with
  probability p. p starts at 0 and is adjusted every few steps: up when the sign of D's outputs on real images,
  averaged, exceeds the target (D is overfitting), down otherwise. `ada_kimg` sets how many thousand images it takes
  p to move from 0 to 1; the paper uses 500 for long runs, short CPU budgets need it far smaller.
"""
from __future__ import annotations

import torch
from torch import nn

MODES = ("none", "diffaugment", "ada")


def _brightness(x: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    shift = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) - 0.5)
    return x + shift * apply


def _contrast(x: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    factor = torch.rand(x.shape[0], 1, 1, 1, device=x.device) + 0.5
    return torch.where(apply.bool(), (x - mean) * factor + mean, x)


def _translate(x: torch.Tensor, apply: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device) * apply.view(b, 1, 1).long()
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device) * apply.view(b, 1, 1).long()
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = nn.functional.pad(x, (1, 1, 1, 1))  # Zero border: shifted-in pixels are blank, as in DiffAugment.
    return padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device).view(b, 1, 1), rows, cols].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, apply: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((yy - cy).abs() <= ch // 2) & ((xx - cx).abs() <= cw // 2) & apply.view(b, 1, 1).bool()
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _flip(x: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    return torch.where(apply.bool(), x.flip(3), x)


class DAugment(nn.Module):
    """Call it on every batch D sees (real and fake alike); call `update(real_logits)` after each D step."""

    def __init__(self, mode: str = "none", ada_target: float = 0.6, ada_kimg: float = 10.0, ada_interval: int = 4):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"augmentation mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode, self.ada_target, self.ada_kimg, self.ada_interval = mode, ada_target, ada_kimg, ada_interval
        self.register_buffer("p", torch.zeros(()))  # ADA's probability, saved with the weights
        self._signs: list[float] = []
        self._images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        b = x.shape[0]
        if self.mode == "diffaugment":
            always = torch.ones(b, 1, 1, 1, device=x.device)
            return _cutout(_translate(_contrast(_brightness(x, always), always), always), always)
        p = float(self.p)
        if p <= 0:
            return x
        for op in (_flip, _translate, _brightness, _contrast, _cutout):
            x = op(x, (torch.rand(b, 1, 1, 1, device=x.device) < p).to(x.dtype))
        return x

    @torch.no_grad()
    def update(self, real_logits: torch.Tensor) -> None:
        """ADA's feedback: r_t = E[sign(D(real))]; move p toward keeping r_t at the target."""
        if self.mode != "ada":
            return
        self._signs.append(float(torch.sign(real_logits).mean()))
        self._images += real_logits.shape[0]
        if len(self._signs) >= self.ada_interval:
            r_t = sum(self._signs) / len(self._signs)
            step = self._images / (self.ada_kimg * 1000)
            self.p.copy_((self.p + (step if r_t > self.ada_target else -step)).clamp(0.0, 1.0))
            self._signs.clear()
            self._images = 0
