"""`cgan`: the conditional DCGAN of 001_037758f3b7c4ab80.txt.

Generator: latent + one-hot label -> dense 8x8x(8w) -> transposed convs 4w, 2w, w (4x4, stride 2, batch norm,
LeakyReLU 0.4) -> 64x64 -> transposed conv to 1 channel (4x4, stride 1) -> tanh. The report's width w is 64; the
default here is smaller so a CPU trial stays quick. Discriminator: the image plus 7 label-mask channels ->
spectral-norm convs w, 2w, 4w, 8w (4x4, stride 2, LeakyReLU 0.4) -> dense -> one logit. BCE, Adam (2e-4, beta1 0.5).
Images are generated at 64x64 (the report's size) and resized to the data set's size; `resolution: 32` starts the
generator at 4x4 instead, the same layers at a quarter of the pixels, for CPU budgets.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fercore.generators import GENERATORS
from fercore.generators.adversarial import AdversarialSetup, make_ema, train_adversarial
from fercore.generators.base import GAN_PARAMS, Generator, StepHook, d_scores, to_uint8
from fercore.images import empty_images
from fercore.params import Param


class CGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, width: int, resolution: int = 64, channels: int = 1):
        super().__init__()
        self.latent_dim, self.num_classes, self.width = latent_dim, num_classes, width
        self.start = resolution // 8  # three stride-2 transposed convs follow the dense layer
        cells = self.start * self.start * 8 * width
        self.dense = nn.Sequential(nn.Linear(latent_dim + num_classes, cells), nn.BatchNorm1d(cells), nn.LeakyReLU(0.4))
        blocks = []
        for c_in, c_out in ((8 * width, 4 * width), (4 * width, 2 * width), (2 * width, width)):
            blocks += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.4)]
        self.up = nn.Sequential(*blocks)
        # Kernel 4, stride 1 with asymmetric 'same' padding, as Keras does it; done by padding then a plain conv.
        self.out = nn.Sequential(nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(width, channels, 4, 1, 0), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.dense(torch.cat([z, F.one_hot(labels, self.num_classes).float()], dim=1))
        return self.out(self.up(h.view(-1, 8 * self.width, self.start, self.start)))


class CGANDiscriminator(nn.Module):
    """mask (001): the label enters as one-hot mask channels beside the image. projection (Miyato & Koyama 2018):
    the image alone goes through the convs, and the label's learnt embedding is dotted with the features."""

    def __init__(self, num_classes: int, width: int, resolution: int = 64, conditioning: str = "mask",
                 channels: int = 1):
        super().__init__()
        self.num_classes, self.projection = num_classes, conditioning == "projection"
        layers: list[nn.Module] = []
        chans = [channels if self.projection else channels + num_classes, width, 2 * width, 4 * width, 8 * width]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.4)]
        self.features = nn.Sequential(*layers)
        features = 8 * width * (resolution // 16) ** 2
        self.head = nn.Linear(features, 1)
        self.embed = spectral_norm(nn.Embedding(num_classes, features)) if self.projection else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.projection:
            h = self.features(x).flatten(1)
            return self.head(h).squeeze(1) + (self.embed(labels) * h).sum(1)
        masks = F.one_hot(labels, self.num_classes).float()[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.head(self.features(torch.cat([x, masks], dim=1)).flatten(1)).squeeze(1)


CGAN_PARAMS = GAN_PARAMS + (
    Param("latent_dim", 100, 2, 1024, help="noise vector length (001 used 150)"),
    Param("width", 16, 4, 128, help="base channel count w (001 used 64)"),
    Param("resolution", 64, choices=(32, 64), help="side G draws and D sees (001: 64); images are resized to the data's"),
    Param("conditioning", "mask", choices=("mask", "projection"),
          help="how D sees the label: one-hot mask channels (001) or a projection of a label embedding"),
)


@GENERATORS.register("cgan", params=CGAN_PARAMS,
                     help="conditional DCGAN with spectral-norm discriminator and label mask channels (001)")
class CGAN(Generator):
    def __init__(self, values, image_size, num_classes, device, channels=1):
        super().__init__(values, image_size, num_classes, device, channels)
        self.g = CGANGenerator(values["latent_dim"], num_classes, values["width"], values["resolution"],
                               channels).to(device)
        self.d = CGANDiscriminator(num_classes, values["width"], values["resolution"], values["conditioning"],
                                   channels).to(device)
        self.g_ema = make_ema(self.g, values)

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        torch.manual_seed(seed)
        self.g_ema = make_ema(self.g, self.values)
        setup = AdversarialSetup(self.g, self.d, self.values["latent_dim"], self.values["resolution"])
        self.steps_done = train_adversarial(setup, images, labels, self.values, self.device, seed, on_step,
                                            g_ema=self.g_ema)

    @torch.no_grad()
    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        g = self.g_ema if self.g_ema is not None else self.g
        g.eval()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = []
        for start in range(0, n, 512):
            m = min(512, n - start)
            z = torch.randn(m, self.g.latent_dim, generator=gen).to(self.device)
            y = torch.full((m,), label, dtype=torch.long, device=self.device)
            out.append(to_uint8(g(z, y), self.image_size))
        return np.concatenate(out) if out else empty_images(self.image_size, self.channels)

    def discriminator_scores(self, images: np.ndarray, label: int) -> np.ndarray:
        return d_scores(self.d, images, label, self.values["resolution"], self.device)

    def networks(self) -> dict[str, nn.Module]:
        return {"g": self.g, "d": self.d, **({"g_ema": self.g_ema} if self.g_ema is not None else {})}
