"""The generator interface every type implements, and the pieces all types share (image scaling, safe save/load)."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from fercore.atomic import atomic_write
from fercore.errors import ConfigError
from fercore.images import from_unit, to_unit
from fercore.params import Param

# Hyperparameters every adversarial type shares; each GAN type's registration lists them in its `params`.
GAN_PARAMS = (
    Param("lr_g", 2e-4, 1e-6, 1.0, help="generator learning rate (Adam)"),
    Param("lr_d", 2e-4, 1e-6, 1.0, help="discriminator learning rate (Adam)"),
    Param("beta1", 0.5, 0.0, 0.999, help="Adam beta1 of both networks"),
    Param("beta2", 0.999, 0.0, 0.9999, help="Adam beta2 of both networks"),
    Param("d_steps", 1, 1, 10, help="discriminator steps per generator step"),
    Param("augment", "none", choices=("none", "diffaugment", "ada"), help="what D sees: plain, DiffAugment or ADA"),
    Param("ada_target", 0.6, 0.0, 1.0, help="ADA: target of E[sign(D(real))]"),
    Param("ada_kimg", 10.0, 0.1, 1000.0, help="ADA: thousands of images for p to move from 0 to 1"),
    Param("ema", 0.0, 0.0, 0.9999, help="decay of the generator's exponential moving average; 0 turns it off"),
    Param("collapse_steps", 200, 5, 1_000_000, help="steps in a row that D wins completely (D(real) >= 0.99, "
                                                     "D(fake) <= 0.01) before the run is stopped as collapsed"),
)

StepHook = Callable[[int, dict[str, float]], None]  # (step, losses) -> None


class Diverged(RuntimeError):
    """Training produced NaN or infinite losses, or collapsed; carries the step where it happened."""

    def __init__(self, step: int, why: str):
        super().__init__(f"diverged at step {step}: {why}")
        self.step = step
        self.why = why

    def __reduce__(self):
        # Rebuilt from (step, why), not from the message: Ray pickles a trial's exception back to the driver.
        return type(self), (self.step, self.why)


class Generator(ABC):
    """Trained on the training split only; draws uint8 images of the data set's size and channels for a given class.

    Images go in and come out in the FaceSet layout (fercore.images): N x H x W gray (channels 1), N x H x W x 3 colour.
    """

    def __init__(self, values: dict[str, Any], image_size: int, num_classes: int, device: torch.device,
                 channels: int = 1):
        self.values = dict(values)  # the resolved generator.* section, stored beside the weights
        self.image_size = image_size
        self.num_classes = num_classes
        self.device = device
        self.channels = channels
        # The data set's classes, label order (build_generator sets them): what a type that reads class names uses.
        self.class_names: tuple[str, ...] = tuple(f"class{i}" for i in range(num_classes))

    @abstractmethod
    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        """Train on uint8 images (N x H x W, or N x H x W x 3 for channels 3) with int labels."""

    @abstractmethod
    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        """Draw n uint8 images (n x H x W, or n x H x W x 3) of class LABEL; the same seed gives the same images."""

    def discriminator_scores(self, images: np.ndarray, label: int) -> np.ndarray:
        """The trained discriminator's probability that each uint8 image (FaceSet layout) is a real one of class LABEL.

        For augment.filter=discriminator; only adversarial types have a discriminator to ask.
        """
        raise ConfigError(f"augment.filter=discriminator needs a generator with a discriminator; "
                          f"generator.type {self.values.get('type', type(self).__name__)} has none")

    def networks(self) -> dict[str, torch.nn.Module]:
        """The modules whose weights make up this generator, by name; types with other state override the two below."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that, with `values`, restore this generator."""
        return {f"{name}.{k}": t for name, m in self.networks().items() for k, t in m.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, m in self.networks().items():
            prefix = f"{name}."
            m.load_state_dict({k[len(prefix):]: t for k, t in state.items() if k.startswith(prefix)})

    def save(self, folder: Path) -> None:
        """Write weights.pt and config.json into FOLDER, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "weights.pt", lambda f: torch.save(self.state_dict(), f))
        meta = {"values": self.values, "image_size": self.image_size, "num_classes": self.num_classes}
        if self.channels != 1:  # Colour; a gray generator's file stays as it was.
            meta["channels"] = self.channels
        atomic_write(folder / "config.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))

    def load(self, folder: Path) -> None:
        # weights_only: a weights file from elsewhere cannot run code when it is read.
        state = torch.load(Path(folder) / "weights.pt", map_location=self.device, weights_only=True)
        self.load_state_dict(state)


def to_unit_range(images_u8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 B x H x W (or B x H x W x C) -> float B x C x size x size in [-1, 1], resized for architectures that
    need a power of two."""
    x = to_unit(images_u8)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.no_grad()
def d_scores(d: torch.nn.Module, images: np.ndarray, label: int, resolution: int, device: torch.device,
             batch_size: int = 512) -> np.ndarray:
    """sigmoid(D(x, label)) for uint8 images in the FaceSet layout, as float64 probabilities in [0, 1].

    D runs in eval mode (batch norm on running statistics, spectral norm without a power-iteration step, so scoring
    changes no state) and is put back in the mode it was in. StyleGAN's D mixes statistics across a batch, so scores
    depend on the batching; fixed batches keep them deterministic.
    """
    was_training = d.training
    d.eval()
    try:
        out = [torch.zeros(0, dtype=torch.float64)]
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
            y = torch.full((len(x),), label, dtype=torch.long, device=device)
            out.append(torch.sigmoid(d(to_unit_range(x, resolution), y)).double().cpu())
    finally:
        d.train(was_training)
    return torch.cat(out).numpy()


def to_uint8(x: torch.Tensor, size: int) -> np.ndarray:
    """float B x C x S x S in [-1, 1] -> uint8 numpy images of side SIZE: B x size x size (C 1), else x C last."""
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return from_unit(x).cpu().numpy()


