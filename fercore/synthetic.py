"""The synthetic half of a trial: the trained generator (cached), its quality measured once (cached), and a pool
holding exactly the counts the mixing policy needs after the quality filter (cached).

A generator is scored once, not per trial: on an unfiltered, class-matched sample - per class the real class's
validation count capped at QUALITY_N, the same cap for every generator, drawn with the fixed QUALITY_SEED from both
the generator and the real validation split - by the reference classifier (fercore.metrics.quality.sample_quality).
The real side is validation because neither the generator nor the reference classifier trained on it: against the
generator's own training faces, one that memorised them would score as perfect. Every trial that uses the generator
copies those figures; the filtered pool's own quality would measure the filter and the policy's class mix instead
(a confidence filter makes its own judge's accuracy ~1 by construction). What the filter did is reported as its
acceptance and the conditional accuracy of what it kept.

The generator and the reference classifier train on the training split only (the reference less a held-out part,
its accuracy on which is in the row; validation picks its epoch). The row keys this adds: generator_key /
generator_cache_hit, quality_key / quality_cache_hit, pool_key / pool_cache_hit, reference_key /
reference_cache_hit / reference_heldout_accuracy / reference_heldout_n (when a reference was needed),
filter_acceptance[_<class>], filter_generated and filter_kept_conditional_accuracy (a filter other than none), and
the generator's figures: gen_quality_n, gen_fid, gen_kid, gen_kid_std, gen_precision, gen_recall (each also per
class, missing below fercore.metrics.quality.MIN_PER_CLASS with gen_quality_note_<class> saying why),
gen_conditional_accuracy (macro over classes) and gen_embedding_jsd[_<class>].
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
from fercore.errors import DataError
from fercore.images import empty_images
from fercore.metrics.quality import sample_quality
from fercore.reference import ReferenceClassifier, confidence_scorer

GRID_COLUMNS = 8  # samples per class in the trial's image grid
EMBEDDING_POINTS = 100  # per class and source: the points of embeddings.parquet (a report's scatter plot)
# A generator's quality sample, per class: min(real training count, QUALITY_N) images from each side. Fixed, so every
# generator of a sweep (and of any sweep on the same data) is scored on samples of the same sizes: FID depends on n.
QUALITY_N = 500
QUALITY_SEED = 987_654_000  # its draws; far from the pools' cfg.seed * 1000 + c so they are other images
QUALITY_REAL_SPLIT = "val"  # where the quality sample's real faces come from: no generator or reference trained on it


@dataclass
class SyntheticPool:
    images: dict[int, np.ndarray]  # class -> uint8 n x H x W, exactly the policy's count
    grid: np.ndarray  # classes x GRID_COLUMNS x H x W (x 3 for colour), unfiltered samples for TensorBoard
    row: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # all of it: the generator, drawing and filtering the pool, its quality figures
    generator_seconds: float = 0.0  # training the generator, or loading it from the cache
    embedding: dict[str, np.ndarray] = field(default_factory=dict)  # fercore.metrics.embedding.embedding_sample
    # The reference classifier's penultimate features (images -> N x D), for the audit's feature neighbours; the
    # reference is fetched from the cache (or trained) on first use.
    features: Callable[[np.ndarray], np.ndarray] | None = None


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
    generator.discriminator_scores(empty_images(generator.image_size, generator.channels), 0)
    return generator.discriminator_scores


def generator_quality(gen: Generator, gen_key: str, data: FaceSet, store: CacheStore,
                      reference: Callable[[], ReferenceClassifier]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """GEN's figures (row keys) and embedding points on its fixed quality sample, measured once per generator key,
    cap and reference; the row keys quality_key / quality_cache_hit say which entry and whether it was found."""
    names = data.class_names
    # The real side: validation faces, which neither the generator nor the reference trained on. Against the
    # generator's own training faces, a generator that hands back training faces would look perfect.
    real_x, real_y = data.split(QUALITY_REAL_SPLIT)
    counts = np.minimum(np.bincount(real_y, minlength=len(names)), QUALITY_N)
    parts = {"generator": gen_key, "n": QUALITY_N, "seed": QUALITY_SEED, "reference": entries.reference_key(data)[0],
             "points_per_class": EMBEDDING_POINTS, "real": QUALITY_REAL_SPLIT}

    def make() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        rng = np.random.default_rng(QUALITY_SEED)
        real_idx = np.concatenate([rng.choice(np.flatnonzero(real_y == c), n, replace=False)
                                   for c, n in enumerate(counts)])
        drawn, notes = [], {}
        for c, n in enumerate(counts):
            try:
                drawn.append(gen.sample(int(n), c, seed=QUALITY_SEED + c))
            except DataError as e:  # A folder without images of this class: nothing to score it on.
                drawn.append(empty_images(data.image_size, data.channels))
                notes[f"gen_quality_note_{names[c]}"] = f"no synthetic images: {e}"
        syn_y = np.concatenate([np.full(len(x), c) for c, x in enumerate(drawn)])
        figures, points = sample_quality(reference(), (real_x[real_idx], real_y[real_idx]),
                                         (np.concatenate(drawn), syn_y), names,
                                         points_per_class=EMBEDDING_POINTS, seed=QUALITY_SEED)
        return {"gen_quality_n": QUALITY_N} | figures | notes, points

    figures, points, entry = entries.quality(parts, store, make)
    return figures | {"quality_key": entry.key, "quality_cache_hit": entry.hit}, points


def kept_conditional_accuracy(images: dict[int, np.ndarray], reference: ReferenceClassifier) -> float:
    """The share of a filtered pool's images the reference assigns to their class, averaged over classes."""
    shares = [float((reference.features_and_proba(x)[1].argmax(1) == c).mean()) for c, x in images.items() if len(x)]
    return float(np.mean(shares)) if shares else float("nan")


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
                                        seed=cfg.seed * 1000, class_names=tuple(names)))
    grid = np.stack([gen.sample(GRID_COLUMNS, c, seed=cfg.seed * 1000 + 500 + c) for c in range(len(names))])

    row: dict[str, Any] = {"generator_key": gen_entry.key, "generator_cache_hit": gen_entry.hit,
                           "pool_key": pool_entry.key, "pool_cache_hit": pool_entry.hit}
    accepted = np.nan_to_num(acceptance * generated)  # acceptance is nan where a class drew nothing
    row["filter_acceptance"] = float(accepted.sum() / generated.sum()) if generated.sum() else float("nan")
    row["filter_generated"] = int(generated.sum())
    row |= {f"filter_acceptance_{name}": float(acceptance[c]) for c, name in enumerate(names)}

    if aug.filter != "none":  # What the filter kept, as the reference sees it: its effect, not the generator's.
        row["filter_kept_conditional_accuracy"] = kept_conditional_accuracy(images, reference())
    quality, points = generator_quality(gen, gen_entry.key, data, store, reference)
    row |= quality
    if reference.entry is not None:
        row |= {"reference_key": reference.entry.key, "reference_cache_hit": reference.entry.hit,
                "reference_heldout_accuracy": reference.model.heldout_accuracy,
                "reference_heldout_n": reference.model.heldout_n}
    else:  # Figures found in the cache, no filter to judge: the reference that measured them, not loaded this time.
        row["reference_key"] = entries.reference_key(data)[0]
    return SyntheticPool(images, grid, row, time.perf_counter() - t0, generator_seconds, points,
                         features=lambda x: reference().features_and_proba(x)[0])
