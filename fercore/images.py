"""The one image layout every part shares, and the conversions to and from the tensors networks see.

On the host and in the cache (FaceSet, synthetic pools, generator samples) images are uint8: N x H x W when gray,
N x H x W x 3 when colour (RGB, the channel last, as PIL and NumPy hand them over). Networks see float
N x C x H x W in [-1, 1]. Gray data is what every part handled before colour existed, and its arrays are unchanged.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # The data readers use the NumPy half; importing them should not load torch.
    import torch

CHANNELS = (1, 3)
# ITU-R 601 luma weights: PIL's convert("L"), so a colour image turned gray here matches one read gray.
LUMA = (0.299, 0.587, 0.114)


def channels_of(images) -> int:
    """1 for a batch of N x H x W images, C for N x H x W x C; numpy or torch."""
    return 1 if images.ndim == 3 else int(images.shape[3])


def image_shape(size: int, channels: int) -> tuple[int, ...]:
    """The shape of one image of side SIZE: (size, size) gray, (size, size, 3) colour."""
    return (size, size) if channels == 1 else (size, size, channels)


def empty_images(size: int, channels: int = 1) -> np.ndarray:
    """No images, in the layout of SIZE x SIZE images with CHANNELS: what a draw of zero returns."""
    return np.zeros((0, *image_shape(size, channels)), np.uint8)


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W (gray) or B x H x W x 3 (colour) -> float B x C x H x W in [-1, 1]."""
    x = images_u8.unsqueeze(1) if images_u8.ndim == 3 else images_u8.permute(0, 3, 1, 2)
    return x.float().div_(127.5).sub_(1.0)


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """float B x C x H x W in [-1, 1] -> uint8 B x H x W (C = 1) or B x H x W x C, on X's device."""
    import torch

    x = x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1).contiguous()


def to_gray(images: np.ndarray) -> np.ndarray:
    """uint8 images in either layout -> uint8 N x H x W gray (colour through the luma weights, as PIL's "L")."""
    if images.ndim == 3:
        return images
    gray = images[..., :3].astype(np.float32) @ np.asarray(LUMA, np.float32)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def with_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Gray uint8 N x H x W -> the layout of CHANNELS: unchanged for 1, the gray value in all three for 3."""
    if channels == channels_of(images):
        return images
    if channels == 1:
        return to_gray(images)
    return np.repeat(images[..., None], channels, axis=-1)
