"""Quality filters for synthetic images, registered by name (`augment.filter`), and `fill_pool`, which over-generates
until every class has exactly the synthetic images its mixing policy promised.

A filter keeps the images its score function (images, class -> a score in [0, 1] per image) rates >= augment.filter_tau.
Filters know score functions only, never a generator or classifier type; the trial offers them (`Judges`):
- classifier_confidence: the reference classifier's probability of the conditioned class (fercore.reference):
  drops faces that do not show their expression.
- discriminator: sigmoid of the trained discriminator's logit: drops faces D finds unrealistic.
Rejected images are replaced by drawing more: each round draws what the acceptance observed so far says is missing,
with a margin; after augment.filter_rounds rounds a class still short is an error, since the policy's counts are a
promise that the result row's n_train_synthetic reports.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from fercore.errors import UserError
from fercore.labels import CLASSES
from fercore.registry import Entry, Registry

SampleFn = Callable[[int, int, int], np.ndarray]  # (n, label, seed) -> uint8 n x H x W, as Generator.sample
ScoreFn = Callable[[np.ndarray, int], np.ndarray]  # (images, label) -> one score in [0, 1] per image

MARGIN = 1.2  # Draw 20% more than the observed acceptance says is missing, so a class rarely needs another round.
FLOOR = 0.05  # Acceptance assumed at least this, which caps one round's draw at remaining / FLOOR * MARGIN (24x).
MIN_DRAW = 64  # A handful of missing images is not worth a round of its own: draw at least this many.
CHUNK = 2048  # Images drawn and scored at a time: memory stays bounded however low the acceptance.


class FilterShortfall(UserError):
    """A class got fewer accepted synthetic images than its mixing policy needs within augment.filter_rounds."""


class Judges(Protocol):
    """The score functions a trial offers its filter, each made when first asked for: only the filter that needs
    the reference classifier pays for training it."""

    def reference_confidence(self) -> ScoreFn: ...

    def discriminator(self) -> ScoreFn: ...


# Each entry's target: Judges -> the score function the filter keeps images by, or None to keep every image.
FILTERS: Registry[Entry] = Registry("quality filter", "augment.filter")


@FILTERS.register("none", help="keep every synthetic image")
def _none(judges: Judges) -> ScoreFn | None:
    return None


@FILTERS.register("classifier_confidence", help="keep images the reference classifier gives their class >= tau")
def _classifier_confidence(judges: Judges) -> ScoreFn | None:
    return judges.reference_confidence()


@FILTERS.register("discriminator", help="keep images the generator's discriminator finds real with probability >= tau")
def _discriminator(judges: Judges) -> ScoreFn | None:
    return judges.discriminator()


def build_scorer(name: str, judges: Judges) -> ScoreFn | None:
    """The score function of filter NAME (None for `none`), from the ones JUDGES offers."""
    return FILTERS.get(name).target(judges)


def fill_pool(sample_fn: SampleFn, needed: np.ndarray, score_fn: ScoreFn | None = None, tau: float = 0.5,
              rounds: int = 5, seed: int = 0, class_names: tuple[str, ...] = CLASSES
              ) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Exactly needed[c] synthetic images of each class c whose score is >= tau.

    Returns (pool: class -> images, acceptance per class: accepted / generated, nan where nothing was generated,
    generated per class). Without a score function each class is one draw of needed[c] images with seed `seed + c`,
    what an unfiltered trial draws; with one, every draw gets its own seed derived from (seed, class, round, chunk),
    so a class's pool depends on neither the other classes nor the order they are filled in.
    Raises FilterShortfall, naming the class by CLASS_NAMES (the data set's), when a class is still short after
    `rounds` rounds.
    """
    needed = np.asarray(needed, dtype=np.int64)
    if score_fn is None:
        pool = {c: sample_fn(int(n), c, seed + c) for c, n in enumerate(needed)}
        return pool, _ratio(needed, needed), needed.copy()
    pool: dict[int, np.ndarray] = {}
    accepted, generated = np.zeros_like(needed), np.zeros_like(needed)
    for c, n in enumerate(needed):
        pool[c], accepted[c], generated[c] = _fill_class(sample_fn, score_fn, c, int(n), tau, rounds, seed,
                                                         class_names)
    return pool, _ratio(accepted, generated), generated


def _fill_class(sample_fn: SampleFn, score_fn: ScoreFn, label: int, needed: int, tau: float, rounds: int,
                seed: int, class_names: tuple[str, ...] = CLASSES) -> tuple[np.ndarray, int, int]:
    """(the first `needed` accepted images, images accepted, images generated) of one class."""
    if needed == 0:
        return sample_fn(0, label, seed + label), 0, 0  # An empty array of the generator's image shape.
    kept, accepted, generated = [], 0, 0
    for r in range(rounds):
        if accepted >= needed:
            break
        for k, size in enumerate(_chunks(draw_size(needed - accepted, accepted, generated))):
            images = sample_fn(size, label, draw_seed(seed, label, r, k))
            ok = _checked(score_fn(images, label), len(images)) >= tau
            kept.append(images[ok])
            accepted, generated = accepted + int(ok.sum()), generated + len(images)
            if accepted >= needed:  # Met mid-round: the rest of the round's draw would be thrown away.
                break
    if accepted < needed:
        name = class_names[label] if label < len(class_names) else str(label)
        raise FilterShortfall(
            f"augment.filter: class {name!r} got {accepted} of the {needed} synthetic images its mixing policy needs "
            f"after {rounds} rounds ({accepted} of {generated} generated scored >= augment.filter_tau={tau}); "
            f"lower augment.filter_tau or raise augment.filter_rounds")
    return np.concatenate(kept)[:needed], accepted, generated


def draw_size(remaining: int, accepted: int, generated: int) -> int:
    """Images to draw in a round: what the acceptance so far (1 before any draw, at least FLOOR) says is missing,
    times MARGIN, at least MIN_DRAW."""
    rate = max(accepted / generated if generated else 1.0, FLOOR)
    return max(int(np.ceil(remaining / rate * MARGIN)), MIN_DRAW)


def draw_seed(seed: int, label: int, round_: int, chunk: int) -> int:
    """A seed per (trial seed, class, round, chunk): distinct draws, the same ones for the same seed."""
    return int(np.random.SeedSequence([seed, label, round_, chunk]).generate_state(1, np.uint64)[0] >> 1)


def _chunks(n: int) -> list[int]:
    return [min(CHUNK, n - start) for start in range(0, n, CHUNK)]


def _checked(scores: np.ndarray, n: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"a filter's score function must return one score per image: {n}, got shape {scores.shape}")
    if not ((scores >= 0) & (scores <= 1)).all():  # NaN fails too
        raise ValueError(f"filter scores must lie in [0, 1], got values in [{scores.min()}, {scores.max()}]")
    return scores


def _ratio(accepted: np.ndarray, generated: np.ndarray) -> np.ndarray:
    return np.where(generated > 0, accepted / np.maximum(generated, 1), np.nan)
