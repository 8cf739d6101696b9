"""One unconditional model per class, behind the conditional interface: how 004_771f13d8c1b83b8c.txt trained
StyleGAN2-ADA, and the only way an unconditional GAN can draw images of a chosen class.

A registered type subclasses PerClass and names its unconditional model class in `inner`; that class implements
the Generator interface and ignores labels (it is trained on one class's images and samples that class).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from fercore.generators.base import Diverged, Generator, StepHook


class PerClass(Generator):
    inner: ClassVar[type[Generator]]

    def __init__(self, values, image_size, num_classes, device, channels=1):
        super().__init__(values, image_size, num_classes, device, channels)
        self.models = [self.inner(values, image_size, num_classes, device, channels) for _ in range(num_classes)]

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        offset = 0
        for c, model in enumerate(self.models):
            mask = labels == c
            if not mask.any():
                continue

            def hook(step, losses, c=c, offset=offset):
                if on_step is not None:
                    on_step(offset + step, {**losses, "class": float(c)})

            try:
                model.fit(images[mask], np.zeros(int(mask.sum()), np.int64), seed=seed * 100 + c, on_step=hook)
            except Diverged as e:  # Report the step on the same count on_step uses, and which class went wrong.
                raise Diverged(offset + e.step, f"class {c}: {e.why}") from e
            offset += getattr(model, "steps_done", 0)
        self.steps_done = offset

    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        return self.models[label].sample(n, 0, seed)

    def discriminator_scores(self, images: np.ndarray, label: int) -> np.ndarray:
        return self.models[label].discriminator_scores(images, 0)  # Each class's D was trained on label 0.

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"class{c}.{k}": t for c, m in enumerate(self.models) for k, t in m.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for c, model in enumerate(self.models):
            prefix = f"class{c}."
            model.load_state_dict({k[len(prefix):]: t for k, t in state.items() if k.startswith(prefix)})
