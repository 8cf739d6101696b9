"""The adversarial training loop every GAN type shares: batches from device-resident uint8 images, d_steps
discriminator steps per generator step, the discriminator's augmentation (none, DiffAugment, ADA), an optional R1
penalty, an exponential moving average of the generator, and the watchdog that stops a diverged or collapsed run.

Losses are the non-saturating logistic ones (BCE on logits): D pushes real to 1 and fake to 0, G pushes fake to 1.
A type supplies its two networks; G(z, labels) returns images in [-1, 1] at `resolution`, D(x, labels) one logit
per image (unconditional networks ignore labels).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercore.generators.base import StepHook, to_unit_range
from fercore.generators.discriminator_augment import DAugment
from fercore.generators.watchdog import Watchdog


@dataclass
class AdversarialSetup:
    g: nn.Module
    d: nn.Module
    latent_dim: int
    resolution: int  # side G produces and D sees; real images are resized to it
    r1_gamma: float = 0.0  # weight of the R1 gradient penalty on real images (StyleGAN2); 0 turns it off
    r1_interval: int = 4  # lazy regularisation: the penalty every this many D steps, scaled up to match


def train_adversarial(setup: AdversarialSetup, images: np.ndarray, labels: np.ndarray, values: dict,
                      device: torch.device, seed: int, on_step: StepHook | None = None,
                      augment: DAugment | None = None, g_ema: nn.Module | None = None,
                      watchdog: Watchdog | None = None) -> int:
    """Train setup.g and setup.d in place for values["epochs"] passes over IMAGES; returns the steps taken.

    values: the generator.* section (lr_g, lr_d, beta1, beta2, batch_size, epochs, d_steps, augment, ada_*, ema,
    collapse_steps).
    g_ema, when given, tracks an exponential moving average of g's weights with decay values["ema"].
    """
    g, d = setup.g, setup.d
    torch.manual_seed(seed)
    order_gen = torch.Generator(device="cpu").manual_seed(seed)
    augment = augment or DAugment(values.get("augment", "none"), values.get("ada_target", 0.6),
                                  values.get("ada_kimg", 10.0)).to(device)
    watchdog = watchdog or Watchdog(collapse_steps=values.get("collapse_steps", 200))
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    y_all = torch.from_numpy(np.asarray(labels)).long().to(device)
    if len(x_all) == 1:  # A batch of one breaks batch norm in training mode; a class with one image trains on two.
        x_all, y_all = torch.cat([x_all, x_all]), y_all.repeat(2)
    betas = (values["beta1"], values["beta2"])
    opt_g = torch.optim.Adam(g.parameters(), lr=values["lr_g"], betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=values["lr_d"], betas=betas)
    n = len(x_all)
    bs = min(values["batch_size"], n)
    d_steps = values.get("d_steps", 1)
    ema_decay = values.get("ema", 0.0)
    g.train()
    d.train()
    step = d_step = 0
    for _ in range(values["epochs"]):
        order = torch.randperm(n, generator=order_gen).to(device)
        batches = [order[i:i + bs] for i in range(0, n - bs + 1, bs)]  # Ragged last batch dropped (batch norm).
        for i in range(0, len(batches), d_steps):
            for idx in batches[i:i + d_steps]:
                real, y = to_unit_range(x_all[idx], setup.resolution), y_all[idx]
                with torch.no_grad():
                    fake = g(torch.randn(len(idx), setup.latent_dim, device=device), y)
                do_r1 = setup.r1_gamma > 0 and d_step % setup.r1_interval == 0
                real_in = augment(real).detach().requires_grad_(do_r1)
                real_logits = d(real_in, y)
                fake_logits = d(augment(fake), y)
                loss_d = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
                if do_r1:
                    grad, = torch.autograd.grad(real_logits.sum(), real_in, create_graph=True)
                    loss_d = loss_d + grad.square().sum(dim=(1, 2, 3)).mean() * (setup.r1_gamma / 2 * setup.r1_interval)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                augment.update(real_logits.detach())
                d_step += 1
            y = y_all[batches[i]]  # G draws the classes of a real batch, so class frequencies match the data.
            fake = g(torch.randn(bs, setup.latent_dim, device=device), y)
            loss_g = F.softplus(-d(augment(fake), y)).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if g_ema is not None and ema_decay > 0:
                _update_ema(g_ema, g, ema_decay)
            losses = {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "ada_p": float(augment.p)}
            watchdog.check(step, losses, torch.sigmoid(real_logits).mean().item(),
                           torch.sigmoid(fake_logits).mean().item())
            if on_step is not None:
                on_step(step, losses)
            step += 1
    return step


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def make_ema(g: nn.Module, values: dict) -> nn.Module | None:
    """A frozen copy of G to average into, when values["ema"] > 0; sampling then uses it."""
    if values.get("ema", 0.0) <= 0:
        return None
    ema = copy.deepcopy(g).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def recalibrate_batch_norm(g: nn.Module, latent_dim: int, device: torch.device, seed: int, num_classes: int = 1,
                           batches: int = 4, batch_size: int = 128) -> None:
    """Replace G's batch-norm running statistics with those of its final weights (an exact average over a few
    batches of noise), so eval-mode sampling matches what D saw in training rather than the lagging moving average."""
    norms = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    was_training = g.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    gen = torch.Generator(device="cpu").manual_seed(seed)
    g.train()
    for _ in range(batches):
        z = torch.randn(batch_size, latent_dim, generator=gen).to(device)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
        g(z, y)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    g.train(was_training)
