"""`dcgan`: the DCGAN of 000_d4268ee43cae98ab.txt, which replicated the PyTorch DCGAN tutorial, one model per class.

Generator: latent (100) -> transposed convs 8w (4x4, stride 1, to 4x4), 4w, 2w, w (4x4, stride 2), each with batch
norm and ReLU -> transposed conv to 1 channel (4x4, stride 2) -> tanh: 64x64. Discriminator: convs w (no batch
norm), 2w, 4w, 8w (4x4, stride 2, batch norm, LeakyReLU 0.2) -> conv 4x4 to one logit. Weights drawn from N(0, 0.02),
batch-norm scales from N(1, 0.02), as the tutorial does. The tutorial's w is 64; the default here is smaller so a CPU
trial stays quick. Images are made at 64x64 and resized to the data set's size. Unconditional, so one model per
class (PerClass) gives images of a chosen class.
"""
from __future__ import annotations

import torch
from torch import nn

from fercore.generators import GENERATORS
from fercore.generators.base import GAN_PARAMS
from fercore.generators.gan import UnconditionalGAN
from fercore.generators.per_class import PerClass
from fercore.params import Param

RESOLUTION = 64


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, width: int, channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, 8 * width, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(8 * width), nn.ReLU(inplace=True)]
        for c_in, c_out in ((8 * width, 4 * width), (4 * width, 2 * width), (2 * width, width)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(self, width: int, channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in ((width, 2 * width), (2 * width, 4 * width), (4 * width, 8 * width)):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(8 * width, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).flatten()


class DCGANModel(UnconditionalGAN):
    resolution = RESOLUTION

    def build(self, values, image_size):
        width = int(values["width"])
        return DCGANGenerator(self.latent_dim, width, self.channels), DCGANDiscriminator(width, self.channels)


DCGAN_PARAMS = GAN_PARAMS + (
    Param("latent_dim", 100, 2, 1024, help="noise vector length (000 used 100)"),
    Param("width", 16, 4, 128, help="base channel count w (the tutorial's ngf/ndf: 64)"),
)


@GENERATORS.register("dcgan", params=DCGAN_PARAMS, help=(
    "DCGAN (000, the PyTorch tutorial's): transposed-conv generator at 64x64, resized; one model per class"))
class DCGAN(PerClass):
    inner = DCGANModel
