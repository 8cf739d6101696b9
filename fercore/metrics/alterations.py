"""What augmentation does to a copy, as plain numpy: the alterations the copy audit (copies.py) must see through.
Used by its calibration (benchmarks/leakage_calibration.py) and tests to plant copies; uint8 N x H x W in and out."""
from __future__ import annotations

import numpy as np


def flip(images: np.ndarray) -> np.ndarray:
    """Mirror left to right."""
    return np.ascontiguousarray(images[:, :, ::-1])


def shift(images: np.ndarray, dy: int, dx: int, fill: int | None = 0) -> np.ndarray:
    """Move the content by (dy, dx) pixels; the uncovered border gets `fill` (None: the nearest edge pixel, as
    a reflect/replicate padding would)."""
    h, w = images.shape[1:]
    pad = max(abs(dy), abs(dx))
    width = ((0, 0), (pad, pad), (pad, pad))
    padded = np.pad(images, width, mode="edge") if fill is None else np.pad(images, width, constant_values=fill)
    return np.ascontiguousarray(padded[:, pad - dy:pad - dy + h, pad - dx:pad - dx + w])


def brightness(images: np.ndarray, factor: float) -> np.ndarray:
    """Scale every pixel by factor (torchvision's ColorJitter brightness), clipped to 0..255."""
    return np.clip(np.rint(images.astype(np.float64) * factor), 0, 255).astype(np.uint8)


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Blend with each image's mean gray (torchvision's ColorJitter contrast), clipped to 0..255."""
    x = images.astype(np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return np.clip(np.rint(mean + (x - mean) * factor), 0, 255).astype(np.uint8)


# Every alteration the audit is calibrated and tested on, by name.
ALTERATIONS = {
    "exact": lambda x: x.copy(),
    "flip": flip,
    "shift_1": lambda x: shift(x, 1, -1),
    "shift_2": lambda x: shift(x, -2, 2),
    "shift_2_edge": lambda x: shift(x, 2, 1, fill=None),
    "flip_shift_1": lambda x: shift(flip(x), 0, 1),
    "flip_shift_2": lambda x: shift(flip(x), 2, -2),
    "brightness_+15": lambda x: brightness(x, 1.15),
    "brightness_-15": lambda x: brightness(x, 0.85),
    "contrast_+15": lambda x: contrast(x, 1.15),
    "contrast_-15": lambda x: contrast(x, 0.85),
    "flip_shift_2_brightness_+15": lambda x: brightness(shift(flip(x), 1, 2), 1.15),
    "flip_shift_2_contrast_-15": lambda x: contrast(shift(flip(x), -2, -1), 0.85),
}
