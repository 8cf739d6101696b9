"""`stylegan`: a compact StyleGAN2(-ADA) at 32x32 or 64x64, as 004_771f13d8c1b83b8c.txt trained it (one model per
class; 32 vs 64 px; ADA on vs off), resized to the data set's size on output.

Networks are in stylegan_networks.py; training is the shared loop (non-saturating loss, lazy R1, EMA of G, ADA via
augment=ada). Sampling uses the EMA copy when ema > 0. conditioning=per_class trains one unconditional model per
class (004); conditioning=label trains one model with the class fed to the mapping network and a projection D.

Defaults follow StyleGAN2 rather than DCGAN (its equalised learning rate expects them): Adam lr 0.002, betas
(0, 0.99); ema 0.99 because short CPU runs have few steps to average over (StyleGAN2 uses ~0.998 at batch 64), and
the EMA is bias-corrected after training so the untrained initial weights drop out of it (StyleGAN2 ramps the decay
up instead; the shared loop's decay is fixed).
r1_gamma 0.1: StyleGAN2-ADA's rule 0.0002 * res^2 / batch gives 0.003-0.013 at 32-64 px; the small procedural and
per-class sets let D overfit sooner, so the default leans stronger.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from fercore.generators import GENERATORS
from fercore.generators.adversarial import AdversarialSetup, make_ema, train_adversarial
from fercore.generators.base import GAN_PARAMS, Generator, StepHook, d_scores, to_uint8
from fercore.generators.discriminator_augment import DAugment
from fercore.generators.per_class import PerClass
from fercore.generators.stylegan_networks import StyleDiscriminator, StyleGenerator
from fercore.images import empty_images
from fercore.params import Param

_STYLEGAN2_DEFAULTS = {"lr_g": 2e-3, "lr_d": 2e-3, "beta1": 0.0, "beta2": 0.99, "ema": 0.99}


class StyleGANModel(Generator):
    """One generator/discriminator pair: unconditional (labels ignored) unless values["conditioning"] == "label"."""

    def __init__(self, values, image_size, num_classes, device, channels=1):
        super().__init__(values, image_size, num_classes, device, channels)
        classes = num_classes if values["conditioning"] == "label" else 0
        self.resolution = values["resolution"]
        self.g = StyleGenerator(values["latent_dim"], self.resolution, values["width"], values["mapping_layers"],
                                classes, values["mapping_lr_mul"], channels).to(device)
        self.d = StyleDiscriminator(self.resolution, values["width"], classes, channels).to(device)
        self.g_ema = make_ema(self.g, values)
        self.augment = self._new_augment()
        self.steps_done = 0

    def _new_augment(self) -> DAugment:
        v = self.values
        return DAugment(v["augment"], v["ada_target"], v["ada_kimg"]).to(self.device)

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        torch.manual_seed(seed)
        self.g_ema = make_ema(self.g, self.values)
        start = [p.detach().clone() for p in self.g_ema.parameters()] if self.g_ema is not None else []
        self.augment = self._new_augment()  # Kept after training: augment.p is where ADA ended.
        setup = AdversarialSetup(self.g, self.d, self.values["latent_dim"], self.resolution,
                                 r1_gamma=self.values["r1_gamma"])
        self.steps_done = 0

        def counted(step: int, losses: dict[str, float]) -> None:
            self.steps_done = step + 1  # after this step's EMA update
            if on_step is not None:
                on_step(step, losses)

        try:
            train_adversarial(setup, images, labels, self.values, self.device, seed, counted,
                              augment=self.augment, g_ema=self.g_ema)
        finally:  # Also when a hook stops training early (a time budget, a scheduler): the EMA is then usable.
            if self.g_ema is not None:
                _debias_ema(self.g_ema, start, self.values["ema"], self.steps_done)

    @torch.no_grad()
    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        g = self.g_ema if self.g_ema is not None else self.g
        g.eval()
        gen = torch.Generator(device="cpu").manual_seed(seed)  # z and the per-layer noise both come from it
        out = []
        for start in range(0, n, 512):
            m = min(512, n - start)
            z = torch.randn(m, self.g.latent_dim, generator=gen).to(self.device)
            y = torch.full((m,), label, dtype=torch.long, device=self.device)
            out.append(to_uint8(g(z, y, noise_gen=gen), self.image_size))
        return np.concatenate(out) if out else empty_images(self.image_size, self.channels)

    def discriminator_scores(self, images: np.ndarray, label: int) -> np.ndarray:
        return d_scores(self.d, images, label, self.resolution, self.device)

    def networks(self) -> dict[str, nn.Module]:
        # augment holds ADA's p (a buffer): saved so a loaded model reports where ADA ended.
        nets = {"g": self.g, "d": self.d, "augment": self.augment}
        return nets | ({"g_ema": self.g_ema} if self.g_ema is not None else {})


@torch.no_grad()
def _debias_ema(ema: nn.Module, start: list[torch.Tensor], decay: float, steps: int) -> None:
    """Remove the initial weights' share decay**steps from an EMA started at them (Adam's bias correction).

    After T steps the EMA is decay**T * start + (1 - decay) * sum_t decay**(T-t) * g_t; with ema 0.99 and the tens of
    steps a short CPU run (or one class of a per-class model) gets, the untrained start would still weigh 50-90%.
    Dividing out leaves a weighted average of the trained weights only; for long runs decay**T ~ 0 changes nothing.
    """
    share = decay ** steps
    if steps == 0 or share < 1e-6:
        return
    for p, p0 in zip(ema.parameters(), start):
        p.sub_(p0, alpha=share).div_(1.0 - share)


class StyleGANPerClass(PerClass):
    inner = StyleGANModel


STYLEGAN_PARAMS = tuple(replace(p, default=_STYLEGAN2_DEFAULTS[p.name]) if p.name in _STYLEGAN2_DEFAULTS else p
                        for p in GAN_PARAMS) + (
    Param("latent_dim", 64, 8, 512, help="size of z and w"),
    Param("mapping_layers", 2, 1, 8, help="FC layers of the mapping network z -> w (StyleGAN2 uses 8)"),
    Param("mapping_lr_mul", 0.01, 1e-3, 1.0, help="mapping network's learning-rate multiplier; StyleGAN2's 0.01 suits "
                                                        "millions of images, CPU budgets of ~1,000 steps want ~1"),
    Param("width", 8, 4, 128, help="channels at 64 px, doubling per halving up to 8x (StyleGAN2-ADA: 256-512)"),
    Param("resolution", 32, choices=(32, 64), help="side the networks work at; output is resized to the data's"),
    Param("r1_gamma", 0.1, 0.0, 100.0, help="R1 penalty weight on real images (lazy, every 4 D steps); 0: off"),
    Param("conditioning", "per_class", choices=("per_class", "label"),
          help="per_class: one unconditional model per class (004); label: one model, class in mapping and D"),
)


@GENERATORS.register("stylegan", params=STYLEGAN_PARAMS, help=(
    "compact StyleGAN2 (modulated convs, noise, skip outputs, residual D, R1, EMA, ADA) at 32/64 px (004)"))
class StyleGAN(Generator):
    def __init__(self, values, image_size, num_classes, device, channels=1):
        super().__init__(values, image_size, num_classes, device, channels)
        kind = StyleGANPerClass if values["conditioning"] == "per_class" else StyleGANModel
        self.impl: Generator = kind(values, image_size, num_classes, device, channels)
        self.steps_done = 0

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        self.impl.fit(images, labels, seed, on_step)
        self.steps_done = sum(m.steps_done for m in self.models())

    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        return self.impl.sample(n, label, seed)

    def models(self) -> list[StyleGANModel]:
        """The trained pairs: one per class (per_class) or the single conditional one (label)."""
        return list(self.impl.models) if isinstance(self.impl, PerClass) else [self.impl]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.impl.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.impl.load_state_dict(state)

    def discriminator_scores(self, images: np.ndarray, label: int) -> np.ndarray:
        return self.impl.discriminator_scores(images, label)
