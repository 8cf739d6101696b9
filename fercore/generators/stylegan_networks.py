"""Compact StyleGAN2 networks (Karras et al. 2020, NVlabs/stylegan2-ada-pytorch) for 32x32 or 64x64 faces,
gray or (image_channels 3) colour.

Generator: mapping network (normalised z, plus a class embedding when conditional -> FC + LeakyReLU layers -> w),
a learned 4x4 constant, per resolution an upsampling block of two style-modulated 3x3 convolutions with weight
demodulation, per-layer noise with a learned strength, and a to-gray 1x1 output summed into an upsampled skip image.
Discriminator: residual blocks down to 4x4, minibatch standard deviation, a 3x3 conv, an FC layer and the logit
(plus a projection term <embed(y), h> when conditional).

Simplifications against the original, for small CPU budgets: bilinear up- and average-pool downsampling instead of
FIR filters, no style mixing, no path length regularisation, no truncation. Equalised learning rate is kept (every
weight is drawn N(0, 1) and scaled at run time), so Adam's learning rate means the same thing in every layer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2)  # keeps activations' magnitude through leaky ReLU(0.2), as StyleGAN2 does


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def channels(res: int, width: int) -> int:
    """Feature maps at resolution RES: width at 64 px, doubling per halving, capped at 8 * width (StyleGAN2's rule)."""
    return min(8 * width, width * 64 // res)


class EqualLinear(nn.Module):
    def __init__(self, c_in: int, c_out: int, act: bool = False, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((c_out,), bias_init / lr_mul))
        self.scale, self.lr_mul, self.act = lr_mul / math.sqrt(c_in), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return _lrelu(x) if self.act else x


class EqualConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, act: bool = True, bias: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale, self.act, self.down = 1 / math.sqrt(c_in * kernel * kernel), act, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)
        if self.down:
            x = F.avg_pool2d(x, 2)
        return _lrelu(x) if self.act else x


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Module):
    """z (and a class) -> w. The mapping layers learn lr_mul times as fast as the rest (StyleGAN2: 0.01, 100x slower)."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, num_classes: int = 0, lr_mul: float = 0.01):
        super().__init__()
        self.num_classes = num_classes
        self.embed = EqualLinear(num_classes, w_dim) if num_classes else None
        dims = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[EqualLinear(a, b, act=True, lr_mul=lr_mul) for a, b in zip(dims, dims[1:])])

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = _normalize(z)
        if self.embed is not None:
            y = _normalize(self.embed(F.one_hot(labels, self.num_classes).to(z.dtype)))
            x = torch.cat([x, y], dim=1)
        return self.layers(x)


class ModulatedConv2d(nn.Module):
    """A conv whose input channels are scaled by a style from w; demodulation rescales each output channel so
    its expected std is 1 again for unit-std input, whatever the style's magnitude.

    Computed by scaling activations rather than weights (StyleGAN2's non-fused path): one ordinary conv per batch.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # Styles start at 1: the plain conv.
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.scale, self.demodulate = 1 / math.sqrt(c_in * kernel * kernel), demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # B x c_in
        weight = self.weight * self.scale
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            # sum_{i,k} (weight[o, i, k] * s[b, i])^2 for every (b, o), as one matrix product.
            energy = styles.square() @ weight.square().sum(dim=(2, 3)).t()
            x = x * torch.rsqrt(energy + 1e-8)[:, :, None, None]
        return x


class SynthesisLayer(nn.Module):
    """(upsample) -> modulated 3x3 conv -> + noise * learned strength -> + bias -> leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, up: bool = False):
        super().__init__()
        self.up = up
        self.conv = ModulatedConv2d(c_in, c_out, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_gen: torch.Generator | None) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        shape = (x.shape[0], 1, x.shape[2], x.shape[3])
        if noise_gen is None:
            noise = torch.randn(shape, device=x.device)
        else:  # Sampling: the noise comes from the caller's seeded generator, so a seed fixes the images.
            noise = torch.randn(shape, generator=noise_gen, device=noise_gen.device).to(x.device)
        return _lrelu(x + noise * self.noise_strength + self.bias[None, :, None, None])


class ToGray(nn.Module):
    """StyleGAN2's toRGB: features -> image channels (1 gray, 3 colour). The name predates colour and stays, since
    it is part of every stored gray model's state-dict keys."""

    def __init__(self, c_in: int, w_dim: int, image_channels: int = 1):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, image_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(image_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: two layers (the first upsamples, except at 4x4) and a to-gray output added to the skip image."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, first: bool, image_channels: int = 1):
        super().__init__()
        self.layers = nn.ModuleList([SynthesisLayer(c_in, c_out, w_dim)] if first else
                                    [SynthesisLayer(c_in, c_out, w_dim, up=True), SynthesisLayer(c_out, c_out, w_dim)])
        self.to_gray = ToGray(c_out, w_dim, image_channels)

    def forward(self, x, img, w, noise_gen):
        for layer in self.layers:
            x = layer(x, w, noise_gen)
        y = self.to_gray(x, w)
        if img is not None:
            y = y + F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, y


class StyleGenerator(nn.Module):
    """G(z, labels) -> B x image_channels x resolution x resolution, roughly in [-1, 1] (no tanh, as in StyleGAN2).

    num_classes 0: unconditional (labels ignored); otherwise the class enters through the mapping network.
    """

    def __init__(self, latent_dim: int, resolution: int, width: int, mapping_layers: int, num_classes: int = 0,
                 mapping_lr_mul: float = 0.01, image_channels: int = 1):
        super().__init__()
        self.latent_dim, self.resolution = latent_dim, resolution
        self.mapping = MappingNetwork(latent_dim, latent_dim, mapping_layers, num_classes, mapping_lr_mul)
        self.const = nn.Parameter(torch.randn(channels(4, width), 4, 4))
        resolutions = [2 ** k for k in range(2, int(math.log2(resolution)) + 1)]
        self.blocks = nn.ModuleList(
            SynthesisBlock(channels(max(r // 2, 4), width), channels(r, width), latent_dim, first=(r == 4),
                           image_channels=image_channels)
            for r in resolutions)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        w = self.mapping(z, labels)
        x, img = self.const.unsqueeze(0).expand(len(z), -1, -1, -1), None
        for block in self.blocks:
            x, img = block(x, img, w, noise_gen)
        return img


class DiscriminatorBlock(nn.Module):
    """conv 3x3 -> conv 3x3 + 2x downsample, plus a downsampled 1x1 skip; the sum scaled to keep its variance."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = EqualConv2d(c_in, c_in, 3)
        self.conv1 = EqualConv2d(c_in, c_out, 3, down=True)
        self.skip = EqualConv2d(c_in, c_out, 1, act=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(F.avg_pool2d(x, 2)) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one channel: the std of each feature across a small group of images, averaged (StyleGAN2).

    The group is the largest size up to GROUP that divides the batch, so odd-sized per-class batches work too.
    """
    b, c, h, w = x.shape
    g = next(k for k in range(min(group, b), 0, -1) if b % k == 0)
    y = x.view(g, b // g, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # b/g
    y = y.view(1, b // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)
    return torch.cat([x, y], dim=1)


class StyleDiscriminator(nn.Module):
    """D(x, labels) -> one logit per image. num_classes > 0 adds a projection term (Miyato & Koyama 2018)."""

    def __init__(self, resolution: int, width: int, num_classes: int = 0, image_channels: int = 1):
        super().__init__()
        self.num_classes = num_classes
        self.from_gray = EqualConv2d(image_channels, channels(resolution, width), 1)  # fromRGB for colour
        resolutions = [2 ** k for k in range(int(math.log2(resolution)), 2, -1)]  # resolution .. 8
        self.blocks = nn.Sequential(*[DiscriminatorBlock(channels(r, width), channels(r // 2, width))
                                      for r in resolutions])
        c4 = channels(4, width)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, act=True)
        self.out = EqualLinear(c4, 1)
        self.embed = nn.Parameter(torch.randn(num_classes, c4)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.from_gray(x))
        h = self.fc(self.conv(minibatch_stddev(h)).flatten(1))
        logit = self.out(h).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed[labels] * h).sum(dim=1) / math.sqrt(h.shape[1])
        return logit
