"""Stops a generator's training that has gone wrong, with the step where it happened: NaN or infinite losses, or a
discriminator that wins completely (D(real) ~ 1 and D(fake) ~ 0) for a sustained stretch, the sign of collapse."""
from __future__ import annotations

import math

from fercore.generators.base import Diverged


class Watchdog:
    def __init__(self, collapse_steps: int = 200, confident: float = 0.99):
        self.collapse_steps = collapse_steps  # consecutive steps of complete D victory before we call it collapse
        self.confident = confident
        self._streak = 0

    def check(self, step: int, losses: dict[str, float], real_prob: float | None = None,
              fake_prob: float | None = None) -> None:
        """Raise Diverged when a loss is not finite, or when D has been certain of every image for too long.

        real_prob / fake_prob: mean probability D assigns 'real' to the real and to the generated batch.
        """
        for name, value in losses.items():
            if not math.isfinite(value):
                raise Diverged(step, f"{name} is {value}")
        if real_prob is None or fake_prob is None:
            return
        if real_prob >= self.confident and fake_prob <= 1 - self.confident:
            self._streak += 1
            if self._streak >= self.collapse_steps:
                raise Diverged(step, f"the discriminator won completely for {self._streak} steps "
                                     f"(D(real)={real_prob:.3f}, D(fake)={fake_prob:.3f}): the generator collapsed")
        else:
            self._streak = 0
