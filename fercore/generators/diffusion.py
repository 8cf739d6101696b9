"""`diffusion`: a small class-conditional denoising diffusion model, trained from scratch on the training split.

It stands in for 002_8bd063b910fbcebc.txt, which drew extra faces per class from Stable Diffusion 2 / 3 prompts
("a man's face with surprise emotion"). Those weights cannot be downloaded here, so the same kind of model is
trained in plain torch on the faces at hand: a compact UNet (`unet.py`) learns to undo Gaussian noising (DDPM,
MSE) over `noise_steps` timesteps of a cosine or linear schedule. The class replaces the text prompt: a learned
class embedding added to the timestep embedding, dropped to a null class with probability `p_uncond` so that one
network learns both the conditional and the unconditional model (classifier-free guidance). Sampling is
deterministic DDIM (eta 0) over `sampling_steps` evenly spaced timesteps, from noise_steps - 1 down to 0, with

    out = out_uncond + guidance * (out_cond - out_uncond)

so guidance 0 samples the unconditional model (no class information), 1 the plain conditional one, and larger
values exaggerate the class. guidance != 1 relies on the null class, which p_uncond = 0 never trains.

`prediction` picks the network's target: the noise (eps, Ho et al. 2020) or v = sqrt(a) eps - sqrt(1-a) x0
(Salimans & Ho 2022; what Stable Diffusion 2's 768 model predicts). The default is v: after a few CPU minutes
(540 steps, width 16, procedural faces) eps models turned about a quarter of their samples into salt-and-pepper
snow, because at high noise x0 = (x_t - sqrt(1-a) eps) / sqrt(a) multiplies the network's error by up to
1/sqrt(a) ~ 2e4 and the clipped result is carried along by the deterministic sampler; v models gave faces in
every sample. `min_snr` (Hang et al. 2023) caps the loss weight of nearly clean timesteps; 5 gave cleaner
faces in the same budget. Images are modelled at `resolution` (32, 48 or 64) and resized to and from the data
set's size; with `ema` > 0 an exponential moving average of the weights (warmed up, so short runs average their
recent steps, not the initialisation) is what samples.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from fercore.errors import ConfigError
from fercore.generators import GENERATORS
from fercore.generators.base import Diverged, Generator, StepHook, to_uint8, to_unit_range
from fercore.generators.unet import UNet, downsampling
from fercore.images import empty_images
from fercore.params import Param

SAMPLE_CHUNK = 256  # images per DDIM batch (twice that through the UNet with guidance)
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # (x_t, t) -> predicted noise


def make_schedule(kind: str, steps: int) -> torch.Tensor:
    """alphas_cumprod[t] for t = 0 .. steps-1 (float64): the share of signal variance left after t+1 noising steps.

    cosine: Nichol & Dhariwal (2021), s = 0.008. linear: Ho et al. (2020), betas 1e-4 .. 0.02 at 1000 steps, scaled
    by 1000 / steps so other step counts span the same noise range. Betas are capped at 0.999, so the sequence
    stays strictly inside (0, 1) and strictly decreasing.
    """
    if kind == "cosine":
        s = 0.008
        f = torch.cos((torch.arange(steps + 1, dtype=torch.float64) / steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - f[1:] / f[:-1]
    elif kind == "linear":
        scale = 1000.0 / steps
        betas = torch.linspace(1e-4 * scale, 0.02 * scale, steps, dtype=torch.float64)
    else:
        raise ConfigError(f"generator.schedule: expected cosine or linear, got {kind!r}")
    return torch.cumprod(1 - betas.clamp(1e-8, 0.999), dim=0)


def loss_weights(alphas_cumprod: torch.Tensor, prediction: str, min_snr: float) -> torch.Tensor:
    """Per-timestep weights of the eps- or v-MSE; all ones when min_snr is 0.

    Min-SNR-gamma (Hang et al. 2023) gives the x0 error the weight min(SNR, gamma). An eps error is sqrt(SNR) times
    the x0 error and a v error sqrt(SNR + 1) times, hence the divisions.
    """
    if min_snr <= 0:
        return torch.ones_like(alphas_cumprod)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    return snr.clamp(max=min_snr) / (snr if prediction == "eps" else snr + 1)


def ddim_timesteps(noise_steps: int, sampling_steps: int) -> list[int]:
    """sampling_steps evenly spaced training timesteps, from the noisiest (noise_steps - 1) down to 0."""
    ts = np.floor(np.linspace(noise_steps - 1, 0, sampling_steps) + 0.5).astype(int)
    return [int(t) for t in dict.fromkeys(ts.tolist())]  # Distinct, in order; spacing >= 1 keeps them all anyway.


def ddim_sample(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: list[int],
                clip: bool = True) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from x = x_T at timesteps[0] down to x_0, in x's dtype.

    Each step predicts x_0 from the noise estimate (clipped to [-1, 1], the image range, when CLIP), re-derives the
    noise from that x_0 and moves to the next timestep along the same noise direction; after the last timestep
    the signal share is 1, so the result is the final x_0 prediction.
    """
    ac = alphas_cumprod.to(device=x.device, dtype=x.dtype)
    for i, t in enumerate(timesteps):
        a = ac[t]
        a_prev = ac[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones((), dtype=x.dtype, device=x.device)
        eps = eps_fn(x, t)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


DIFFUSION_PARAMS = (
    Param("lr", 1e-3, 1e-6, 1e-1, help="AdamW learning rate (2e-4 is the usual for long GPU runs)"),
    Param("batch_size", 16, 2, 4096, help="small: in a CPU budget, more steps beat bigger batches"),
    Param("width", 16, 4, 256, help="UNet base channel count (levels have 1x, 2x, 2x); 16 is ~0.27M weights"),
    Param("blocks", 1, 1, 4, help="residual blocks per UNet level"),
    Param("attention", True, help="self-attention at the UNet's lowest resolution"),
    Param("resolution", 32, choices=(32, 48, 64), help="side the model works at; images are resized to it"),
    Param("schedule", "cosine", choices=("cosine", "linear"), help="noise schedule"),
    Param("noise_steps", 1000, 10, 4000, help="training timesteps T of the noise schedule"),
    Param("sampling_steps", 25, 1, 1000, help="DDIM steps per sample; at most noise_steps"),
    Param("guidance", 2.0, 0.0, 20.0, help="classifier-free guidance scale: 0 unconditional, 1 conditional"),
    Param("p_uncond", 0.1, 0.0, 0.9, help="probability a training label is replaced by the null class"),
    Param("prediction", "v", choices=("v", "eps"), help="what the UNet predicts: v (as SD 2 does) or the noise"),
    Param("min_snr", 5.0, 0.0, 100.0, help="Min-SNR-gamma loss weighting (Hang et al. 2023); 0: plain MSE"),
    Param("ema", 0.999, 0.0, 0.9999, help="decay of the weights' moving average that samples; 0 turns it off"),
    Param("flip", True, help="train on random horizontal flips as well"),
)


@GENERATORS.register("diffusion", params=DIFFUSION_PARAMS, help=(
    "class-conditional DDPM (small UNet) with classifier-free guidance and DDIM sampling; stands in for 002"))
class Diffusion(Generator):
    def __init__(self, values, image_size, num_classes, device, channels=1):
        super().__init__(values, image_size, num_classes, device, channels)
        if values["sampling_steps"] > values["noise_steps"]:
            raise ConfigError(f"generator.sampling_steps: must not exceed generator.noise_steps "
                              f"(got {values['sampling_steps']} > {values['noise_steps']})")
        if values["resolution"] % downsampling():
            raise ConfigError(f"generator.resolution: must be a multiple of {downsampling()}, the UNet's down-sampling "
                              f"(got {values['resolution']})")
        self.alphas_cumprod = make_schedule(values["schedule"], values["noise_steps"])
        self.net, self.ema = self._build(seed=0)
        self.steps_done = 0

    def _build(self, seed: int) -> tuple[nn.Module, nn.Module | None]:
        """A freshly initialised UNet (and its EMA copy), seeded without touching the global random state."""
        v = self.values
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = UNet(self.num_classes, v["width"], v["blocks"], v["attention"], self.channels).to(self.device)
        ema = None
        if v["ema"] > 0:
            ema = copy.deepcopy(net).eval()
            ema.requires_grad_(False)
        return net, ema

    def _t_input(self, t: torch.Tensor) -> torch.Tensor:
        # The embedding sees timesteps on a 0..1000 scale whatever noise_steps is, the range its frequencies suit.
        return t.float() * (1000.0 / self.values["noise_steps"])

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        v = self.values
        self.net, self.ema = self._build(seed)
        net, dev, res = self.net, self.device, v["resolution"]
        order_gen = torch.Generator(device="cpu").manual_seed(seed)
        gen = torch.Generator(device=dev).manual_seed(seed + 1)
        x_all = torch.from_numpy(np.ascontiguousarray(images)).to(dev)
        y_all = torch.from_numpy(np.asarray(labels)).long().to(dev)
        ac = self.alphas_cumprod.to(dev, torch.float32)
        sqrt_a, sqrt_1ma = ac.sqrt(), (1 - ac).sqrt()
        weight = loss_weights(ac, v["prediction"], v["min_snr"])
        opt = torch.optim.AdamW(net.parameters(), lr=v["lr"], weight_decay=0.0)
        n, T = len(x_all), v["noise_steps"]
        bs = min(v["batch_size"], n)
        net.train()
        step = 0
        for _ in range(v["epochs"] if n else 0):
            order = torch.randperm(n, generator=order_gen).to(dev)
            for start in range(0, n, bs):  # The ragged last batch is kept: there is no batch norm to upset.
                idx = order[start:start + bs]
                m = len(idx)
                x0 = to_unit_range(x_all[idx], res)
                if v["flip"]:
                    flip = torch.rand(m, generator=gen, device=dev) < 0.5
                    x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
                drop = torch.rand(m, generator=gen, device=dev) < v["p_uncond"]
                y = torch.where(drop, torch.full_like(y_all[idx], self.num_classes), y_all[idx])
                t = torch.randint(0, T, (m,), generator=gen, device=dev)
                noise = torch.randn(x0.shape, generator=gen, device=dev)
                sa, s1a = sqrt_a[t].view(-1, 1, 1, 1), sqrt_1ma[t].view(-1, 1, 1, 1)
                x_t = sa * x0 + s1a * noise
                target = noise if v["prediction"] == "eps" else sa * noise - s1a * x0
                err = (net(x_t, self._t_input(t), y) - target).square().mean(dim=(1, 2, 3))
                loss = (weight[t] * err).mean()
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(step, f"loss is {value}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                if self.ema is not None:
                    decay = min(v["ema"], (1 + step) / (10 + step))
                    with torch.no_grad():
                        for p_ema, p in zip(self.ema.parameters(), net.parameters()):
                            p_ema.lerp_(p, 1.0 - decay)
                if on_step is not None:
                    on_step(step, {"loss": value})
                step += 1
        net.eval()
        self.steps_done = step

    def _eps(self, net: nn.Module, x: torch.Tensor, t: int, y: torch.Tensor) -> torch.Tensor:
        """The guided noise estimate; one UNet pass for guidance 0 or 1, one double-size pass otherwise."""
        g = self.values["guidance"]
        null = torch.full_like(y, self.num_classes)
        tt = self._t_input(torch.full((len(x),), t, device=x.device))
        if g == 1:
            out = net(x, tt, y)
        elif g == 0:
            out = net(x, tt, null)
        else:
            out_cond, out_uncond = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).chunk(2)
            out = out_uncond + g * (out_cond - out_uncond)  # eps and v are linear in each other: guide either
        if self.values["prediction"] == "eps":
            return out
        a = self.alphas_cumprod[t].item()
        return math.sqrt(1 - a) * x + math.sqrt(a) * out

    @torch.no_grad()
    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} is not a class id in 0..{self.num_classes - 1}")
        net = self.ema if self.ema is not None else self.net
        net.eval()
        res, v = self.values["resolution"], self.values
        timesteps = ddim_timesteps(v["noise_steps"], v["sampling_steps"])
        gen = torch.Generator(device="cpu").manual_seed(seed)  # Start noise on the CPU: the same on any device.
        out = [empty_images(self.image_size, self.channels)]
        for start in range(0, n, SAMPLE_CHUNK):
            m = min(SAMPLE_CHUNK, n - start)
            x = torch.randn(m, self.channels, res, res, generator=gen).to(self.device)
            y = torch.full((m,), label, dtype=torch.long, device=self.device)
            x0 = ddim_sample(lambda x_t, t: self._eps(net, x_t, t, y), x, self.alphas_cumprod, timesteps)
            out.append(to_uint8(x0, self.image_size))
        return np.concatenate(out)

    def networks(self) -> dict[str, nn.Module]:
        return {"net": self.net, **({"ema": self.ema} if self.ema is not None else {})}
