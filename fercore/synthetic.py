"""The synthetic half of a trial: the trained generator (cached), a pool holding exactly the counts the mixing policy
needs after the quality filter (cached), and that pool's quality as the reference classifier sees it.

Everything here sees the training split only; the reference classifier was trained on it, with validation picking
its epoch. The row keys this adds: generator_key / generator_cache_hit, pool_key / pool_cache_hit, reference_key /
reference_cache_hit (when a reference was needed), filter_acceptance[_<class>] and filter_generated, and the gen_*
quality figures (FID overall and per class, conditional accuracy, embedding Jensen-Shannon distance).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from fercore.cache import entries
from fercore.augment import filters
from fercore.augment.filters import ScoreFn, fill_pool
from fercore.cache import CacheStore
from fercore.config import TrialConfig
from fercore.data import FaceSet
from fercore.generators import Generator
from fercore.metrics.quality import quality_and_embedding
from fercore.reference import ReferenceClassifier, confidence_scorer

GRID_COLUMNS = 8  # samples per class in the trial's image grid
EMBEDDING_POINTS = 100  # per class and source: the points of embeddings.parquet (a report's scatter plot)


@dataclass
class SyntheticPool:
    images: dict[int, np.ndarray]  # class -> uint8 n x H x W, exactly the policy's count
    grid: np.ndarray  # classes x GRID_COLUMNS x H x W, unfiltered samples for TensorBoard
    row: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # all of it: the generator, drawing and filtering the pool, its quality figures
    generator_seconds: float = 0.0  # training the generator, or loading it from the cache
    embedding: dict[str, np.ndarray] = field(default_factory=dict)  # fercore.metrics.embedding.embedding_sample


class _Reference:
    """The reference classifier, fetched (or trained) on first use only: a trial with no filter still needs it for
    its quality figures, but a failed generator never does."""

    def __init__(self, data: FaceSet, store: CacheStore, device: torch.device):
        self.data, self.store, self.device = data, store, device
        self.model: ReferenceClassifier | None = None
        self.entry: entries.Cached | None = None

    def __call__(self) -> ReferenceClassifier:
        if self.model is None:
            self.model, self.entry = entries.reference(self.data, self.store, self.device)
        return self.model


class _Judges:
    """What a quality filter may keep images by (fercore.augment.filters.Judges), each made when first asked for."""

    def __init__(self, generator: Generator, reference: Callable[[], ReferenceClassifier]):
        self.generator, self.reference = generator, reference

    def reference_confidence(self) -> ScoreFn:
        return confidence_scorer(self.reference())

    def discriminator(self) -> ScoreFn:
        return discriminator_scorer(self.generator)


def build_scorer(name: str, generator: Generator, reference: Callable[[], ReferenceClassifier]) -> ScoreFn | None:
    """The score function of filter NAME for this generator and reference classifier (made only if the filter
    needs it); fails at once when the generator cannot serve the filter."""
    return filters.build_scorer(name, _Judges(generator, reference))


def discriminator_scorer(generator: Generator) -> ScoreFn:
    """generator.discriminator_scores; asked once with no images first, so a type without a discriminator raises its
    ConfigError here (also before training) rather than in the middle of drawing."""
    size = generator.image_size
    generator.discriminator_scores(np.zeros((0, size, size), np.uint8), 0)
    return generator.discriminator_scores


def make_pool(cfg: TrialConfig, data: FaceSet, needed: np.ndarray, store: CacheStore,
              device: torch.device) -> SyntheticPool:
    """The generator of CFG (trained once per content key), and NEEDED[c] accepted synthetic images of class c."""
    t0 = time.perf_counter()
    names = data.class_names
    gen, gen_entry = entries.generator(cfg, data, store, device)
    generator_seconds = time.perf_counter() - t0
    reference = _Reference(data, store, device)
    aug = cfg.augment
    scorer = build_scorer(aug.filter, gen, reference)
    parts = {"generator": gen_entry.key, "needed": [int(n) for n in needed], "filter": aug.filter,
             "seed": cfg.seed}
    if aug.filter != "none":
        parts |= {"tau": aug.filter_tau, "rounds": aug.filter_rounds}
    if aug.filter == "classifier_confidence":  # The judge decides which images are kept.
        parts["reference"] = entries.reference_key(data)[0]
    # Seeds cfg.seed * 1000 + c per class, as before filters existed: filter=none keeps earlier trials' images.
    images, acceptance, generated, pool_entry = entries.pool(
        parts, store, lambda: fill_pool(gen.sample, needed, scorer, aug.filter_tau, aug.filter_rounds,
                                        seed=cfg.seed * 1000))
    grid = np.stack([gen.sample(GRID_COLUMNS, c, seed=cfg.seed * 1000 + 500 + c) for c in range(len(names))])

    row: dict[str, Any] = {"generator_key": gen_entry.key, "generator_cache_hit": gen_entry.hit,
                           "pool_key": pool_entry.key, "pool_cache_hit": pool_entry.hit}
    accepted = np.nan_to_num(acceptance * generated)  # acceptance is nan where a class drew nothing
    row["filter_acceptance"] = float(accepted.sum() / generated.sum()) if generated.sum() else float("nan")
    row["filter_generated"] = int(generated.sum())
    row |= {f"filter_acceptance_{name}": float(acceptance[c]) for c, name in enumerate(names)}

    # Quality of what the classifier will train on, against the real training images.
    train_x, train_y = data.split("train")
    syn_y = np.concatenate([np.full(len(images[c]), c) for c in sorted(images)])
    points: dict[str, np.ndarray] = {}
    if len(syn_y) > 1:
        syn_x = np.concatenate([images[c] for c in sorted(images)])
        quality, points = quality_and_embedding(reference(), (train_x, train_y), (syn_x, syn_y), names,
                                                embedding=True, points_per_class=EMBEDDING_POINTS, seed=cfg.seed)
        row |= quality
    if reference.entry is not None:
        row |= {"reference_key": reference.entry.key, "reference_cache_hit": reference.entry.hit}
    return SyntheticPool(images, grid, row, time.perf_counter() - t0, generator_seconds, points)
