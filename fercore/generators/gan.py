"""`gan`: the simple MLP GAN of 000_d4268ee43cae98ab.txt, one unconditional model per class.

The report gives a latent vector of 100 that the generator "gradually expands to the full extent of the image", with
batch normalisation and ReLU at each stage and a tanh output; it names no layer sizes. We use the layout of the
classic MLP GAN (Goodfellow et al. 2014, as in eriklindernoren/PyTorch-GAN): generator z -> w -> 2w -> 4w -> 8w
(Linear, batch norm, ReLU) -> H*W (tanh), discriminator H*W -> 4w -> 2w (Linear, LeakyReLU 0.2) -> one logit. The
classic width w is 128; the default is smaller so a CPU trial stays quick. Images are made directly at the data set's
size. `UnconditionalGAN` here is also the base of `dcgan`'s per-class model.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from fercore.generators import GENERATORS
from fercore.generators.adversarial import AdversarialSetup, make_ema, recalibrate_batch_norm, train_adversarial
from fercore.generators.base import GAN_PARAMS, Generator, StepHook, d_scores, to_uint8
from fercore.generators.per_class import PerClass
from fercore.images import empty_images
from fercore.params import Param


class UnconditionalGAN(Generator):
    """One unconditional GAN trained by the shared adversarial loop; labels are ignored, so a PerClass type wraps it.

    A subclass sets `resolution` (the side G produces and D sees; None: the data set's size) and builds its two
    networks in `build`. As in a trial, the initial weights come from the global torch generator.
    """

    resolution: ClassVar[int | None] = None

    def __init__(self, values, image_size, num_classes, device, channels=1):
        super().__init__(values, image_size, num_classes, device, channels)
        self.latent_dim = int(values["latent_dim"])
        g, d = self.build(values, image_size)
        self.g, self.d = g.to(device), d.to(device)
        self.g_ema = make_ema(self.g, values)
        self.steps_done = 0

    @abstractmethod
    def build(self, values: dict, image_size: int) -> tuple[nn.Module, nn.Module]:
        """(G, D): G(z, labels=None) -> N x channels x side x side in [-1, 1]; D(x, labels=None) -> N logits."""

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        torch.manual_seed(seed)
        self.g_ema = make_ema(self.g, self.values)
        setup = AdversarialSetup(self.g, self.d, self.latent_dim, self.resolution or self.image_size)
        self.steps_done = train_adversarial(setup, images, labels, self.values, self.device, seed, on_step,
                                            g_ema=self.g_ema)
        # Eval-mode sampling uses batch-norm running statistics; after a short run the moving average still lags
        # the final weights (and never matched the EMA copy's), so measure them afresh for each network we sample.
        for g in (self.g, self.g_ema):
            if g is not None:
                recalibrate_batch_norm(g, self.latent_dim, self.device, seed)

    @torch.no_grad()
    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        g = self.g_ema if self.g_ema is not None else self.g
        g.eval()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = [empty_images(self.image_size, self.channels)]
        for start in range(0, n, 512):
            z = torch.randn(min(512, n - start), self.latent_dim, generator=gen).to(self.device)
            out.append(to_uint8(g(z), self.image_size))
        return np.concatenate(out)

    def discriminator_scores(self, images: np.ndarray, label: int) -> np.ndarray:
        return d_scores(self.d, images, label, self.resolution or self.image_size, self.device)

    def networks(self) -> dict[str, nn.Module]:
        return {"g": self.g, "d": self.d, **({"g_ema": self.g_ema} if self.g_ema is not None else {})}


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int, width: int, size: int, channels: int = 1):
        super().__init__()
        self.size, self.channels = size, channels
        layers: list[nn.Module] = []
        dims = [latent_dim, width, 2 * width, 4 * width, 8 * width]
        for d_in, d_out in zip(dims, dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        layers += [nn.Linear(dims[-1], channels * size * size), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(-1, self.channels, self.size, self.size)


class MLPDiscriminator(nn.Module):
    def __init__(self, width: int, size: int, channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, 4 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(4 * width, 2 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * width, 1),
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).squeeze(1)


class MLPGAN(UnconditionalGAN):
    def build(self, values, image_size):
        width = int(values["width"])
        return (MLPGenerator(self.latent_dim, width, image_size, self.channels),
                MLPDiscriminator(width, image_size, self.channels))


MLP_GAN_PARAMS = GAN_PARAMS + (
    Param("latent_dim", 100, 2, 1024, help="noise vector length (000 used 100)"),
    Param("width", 32, 4, 1024, help="first hidden layer of G; G has w, 2w, 4w, 8w, D 4w, 2w (classic: 128)"),
)


@GENERATORS.register("gan", params=MLP_GAN_PARAMS, help="MLP GAN (000), one unconditional model per class")
class GAN(PerClass):
    inner = MLPGAN
