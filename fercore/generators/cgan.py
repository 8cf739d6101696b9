"""`cgan`: the conditional DCGAN of 001_037758f3b7c4ab80.txt.

Generator: latent + one-hot label -> dense 8x8x(8w) -> transposed convs 4w, 2w, w (4x4, stride 2, batch norm,
LeakyReLU 0.4) -> 64x64 -> transposed conv to 1 channel (4x4, stride 1) -> tanh. The report's width w is 64; the
default here is smaller so a CPU trial stays quick. Discriminator: the image plus 7 label-mask channels ->
spectral-norm convs w, 2w, 4w, 8w (4x4, stride 2, LeakyReLU 0.4) -> dense -> one logit. BCE, Adam (2e-4, beta1 0.5).
Images are generated at 64x64 and resized to the data set's size.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fercore.config import Param
from fercore.generators import GENERATORS
from fercore.generators.base import Generator, StepHook, check_finite, to_uint8, to_unit_range

RESOLUTION = 64


class CGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, width: int):
        super().__init__()
        self.latent_dim, self.num_classes, self.width = latent_dim, num_classes, width
        self.dense = nn.Sequential(nn.Linear(latent_dim + num_classes, 8 * 8 * 8 * width), nn.BatchNorm1d(8 * 8 * 8 * width),
                                   nn.LeakyReLU(0.4))
        blocks = []
        for c_in, c_out in ((8 * width, 4 * width), (4 * width, 2 * width), (2 * width, width)):
            blocks += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.4)]
        self.up = nn.Sequential(*blocks)
        # Kernel 4, stride 1 with asymmetric 'same' padding, as Keras does it; done by padding then a plain conv.
        self.out = nn.Sequential(nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(width, 1, 4, 1, 0), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.dense(torch.cat([z, F.one_hot(labels, self.num_classes).float()], dim=1))
        return self.out(self.up(h.view(-1, 8 * self.width, 8, 8)))


class CGANDiscriminator(nn.Module):
    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        chans = [1 + num_classes, width, 2 * width, 4 * width, 8 * width]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.4)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(8 * width * (RESOLUTION // 16) ** 2, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        masks = F.one_hot(labels, self.num_classes).float()[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.head(self.features(torch.cat([x, masks], dim=1)).flatten(1)).squeeze(1)


@GENERATORS.register("cgan")
class CGAN(Generator):
    help = "conditional DCGAN with spectral-norm discriminator and label mask channels (001)"
    params = (
        Param("latent_dim", 100, 2, 1024, help="noise vector length (001 used 150)"),
        Param("width", 16, 4, 128, help="base channel count w (001 used 64)"),
    )

    def __init__(self, values, image_size, num_classes, device):
        super().__init__(values, image_size, num_classes, device)
        self.g = CGANGenerator(values["latent_dim"], num_classes, values["width"]).to(device)
        self.d = CGANDiscriminator(num_classes, values["width"]).to(device)

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        v = self.values
        gen = torch.Generator(device="cpu").manual_seed(seed)
        torch.manual_seed(seed)
        x_all = torch.from_numpy(images).to(self.device)
        y_all = torch.from_numpy(labels).long().to(self.device)
        opt_g = torch.optim.Adam(self.g.parameters(), lr=v["lr_g"], betas=(v["beta1"], v["beta2"]))
        opt_d = torch.optim.Adam(self.d.parameters(), lr=v["lr_d"], betas=(v["beta1"], v["beta2"]))
        bce = nn.BCEWithLogitsLoss()
        n, bs = len(x_all), min(v["batch_size"], len(x_all))
        step = 0
        self.g.train(), self.d.train()
        for _ in range(v["epochs"]):
            order = torch.randperm(n, generator=gen).to(self.device)
            for start in range(0, n - bs + 1, bs):  # Drop the ragged last batch: batch norm dislikes tiny batches.
                idx = order[start:start + bs]
                real, y = to_unit_range(x_all[idx], RESOLUTION), y_all[idx]
                z = torch.randn(bs, self.g.latent_dim, device=self.device)
                fake = self.g(z, y)
                # Discriminator step: real -> 1, fake -> 0.
                d_loss = bce(self.d(real, y), torch.ones(bs, device=self.device)) + \
                    bce(self.d(fake.detach(), y), torch.zeros(bs, device=self.device))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                # Generator step: make D call the fakes real.
                g_loss = bce(self.d(fake, y), torch.ones(bs, device=self.device))
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                losses = {"loss_d": d_loss.item(), "loss_g": g_loss.item()}
                check_finite(step, losses)
                if on_step is not None:
                    on_step(step, losses)
                step += 1

    @torch.no_grad()
    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        self.g.eval()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = []
        for start in range(0, n, 512):
            m = min(512, n - start)
            z = torch.randn(m, self.g.latent_dim, generator=gen).to(self.device)
            y = torch.full((m,), label, dtype=torch.long, device=self.device)
            out.append(to_uint8(self.g(z, y), self.image_size))
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size), np.uint8)

    def state_dict(self):
        return {**{f"g.{k}": t for k, t in self.g.state_dict().items()},
                **{f"d.{k}": t for k, t in self.d.state_dict().items()}}

    def load_state_dict(self, state):
        self.g.load_state_dict({k[2:]: t for k, t in state.items() if k.startswith("g.")})
        self.d.load_state_dict({k[2:]: t for k, t in state.items() if k.startswith("d.")})
