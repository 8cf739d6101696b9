"""What augmentation does to a copy, as plain numpy (JPEG and blur through PIL): the alterations the copy audit
(copies.py) must see through. Used by its calibration (benchmarks/leakage_calibration.py) and tests to plant copies;
uint8 N x H x W in and out."""
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


def warp(images: np.ndarray, degrees: float = 0.0, scale: float = 1.0, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
    """Resample about the centre as fercore.transforms does (grid_sample, bilinear, edge padding, align_corners
    False): output pixel p reads the input at scale * R(degrees) p + (dx, dy), pixels from the centre; scale < 1
    zooms in (a crop of `scale` of each side, resized back)."""
    n, h, w = images.shape
    rad = np.deg2rad(degrees)
    x = np.arange(w) + 0.5 - w / 2  # pixel centres about the image centre
    y = (np.arange(h) + 0.5 - h / 2)[:, None]
    sx = scale * (np.cos(rad) * x - np.sin(rad) * y * w / h) + dx
    sy = scale * (np.sin(rad) * x * h / w + np.cos(rad) * y) + dy
    px = np.clip(sx + w / 2 - 0.5, 0, w - 1)
    py = np.clip(sy + h / 2 - 0.5, 0, h - 1)
    x0, y0 = np.minimum(np.floor(px).astype(int), w - 2), np.minimum(np.floor(py).astype(int), h - 2)
    fx, fy = px - x0, py - y0
    im = images.astype(np.float64)
    out = (im[:, y0, x0] * (1 - fx) * (1 - fy) + im[:, y0, x0 + 1] * fx * (1 - fy)
           + im[:, y0 + 1, x0] * (1 - fx) * fy + im[:, y0 + 1, x0 + 1] * fx * fy)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre (train.rotate's resampling); the corners read the nearest edge pixel."""
    return warp(images, degrees)


def crop(images: np.ndarray, share: float, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
    """Keep `share` of each side (a window moved (dy, dx) pixels from the centre) and resize it back to full size
    (bilinear): what train.crop does with an area share of share^2."""
    return warp(images, scale=share, dy=dy, dx=dx)


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Save and read back as JPEG (PIL) at `quality`."""
    import io

    from PIL import Image

    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buffer).convert("L"))
    return out


def blur(images: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur (PIL) of `radius` pixels."""
    from PIL import Image, ImageFilter

    return np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(radius))) for x in images])


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
    # Geometric (since issue 22): caught by the audit's alignment stage (copy_geometry), not by its windows.
    "rotate_5": lambda x: rotate(x, 5),
    "flip_rotate_-5": lambda x: rotate(flip(x), -5),
    "crop_92": lambda x: crop(x, 0.92),
    "crop_96_corner": lambda x: crop(x, 0.96, 1, -1),
}
