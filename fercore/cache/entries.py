"""What a trial keeps in the content-addressed cache (fercore.cache), so a sweep never trains the same thing twice:
the trained generator, its filtered synthetic pool, the reference classifier that judges synthetic images, and the
classifiers each trial is compared against - the real-only baseline, the oversampling control (the trial's counts,
its synthetic images replaced by real ones drawn again) and the real-subset control (the real images a trial kept,
alone) - each stored as its test-set class probabilities and metrics.

Each key holds everything that decides the entry's content and nothing else: a generator's key is its config, the
data set's fingerprint (which fixes the images, labels and the training split) and the seed, so 004's grid of
7 backbones x 3 generator settings x 5 ratios trains 3 generators. A compared classifier's key is what decides its
weights: the classifier and training config (keys that take no part left out), the data, the seed, the training
set's counts, and where it ran - the device type and the precision the forward pass ran in - so a CPU fp32 baseline
is never paired with a GPU bf16 trial. The `-vN` suffix of a kind is bumped when what an entry holds, or how it is
made, changes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fercore.atomic import atomic_write
from fercore.cache import CacheStore, content_key
from fercore.config import TrialConfig, inapplicable
from fercore.data import FaceSet
from fercore.generators import build_generator
from fercore.generators.base import Generator
from fercore.reference import ReferenceClassifier, load_reference_classifier, train_reference_classifier
from fercore.train import autocast_dtype, pick_device

# A compared classifier's outcome: its test-set class probabilities and its result metrics.
Outcome = tuple[np.ndarray, dict[str, Any]]

# Each kind of entry, its version (the key's prefix) and the code that decides what its entries hold: a module, a
# package (every module in it) or module:function. tests/test_cache_rules.py fingerprints that code (its syntax
# tree, comments and docstrings left out) and fails when it changes while the version stays: an entry made under
# old rules would otherwise be found and used as if made under the new ones.
COMPARED_RULES = ("fercore/train.py", "fercore/classifiers", "fercore/transforms.py", "fercore/images.py",
                  "fercore/metrics/classification.py", "fercore/augment/policies.py",
                  "fercore/trial.py:_trained_on", "fercore/trial.py:_train_and_read", "fercore/trial.py:_trainer",
                  "fercore/trial.py:_predict_best")
RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "generator": ("generator-v1", ("fercore/generators", "fercore/images.py")),
    # reference v3: trained without a held-out part of the training split, its accuracy there stored with it;
    # quality v2: the sample's real side from validation, judged by that reference.
    "reference": ("reference-v3", ("fercore/reference.py", "fercore/train.py", "fercore/classifiers/simple.py",
                                   "fercore/transforms.py", "fercore/images.py")),
    "pool": ("pool-v2", ("fercore/synthetic.py", "fercore/augment/filters.py", "fercore/generators")),
    "quality": ("quality-v2", ("fercore/metrics/quality.py", "fercore/metrics/kid.py",
                               "fercore/metrics/precision_recall.py", "fercore/synthetic.py")),
    # v3 / v2: the early-stopping score's weighted loss includes label smoothing (issue 24), and 8bb89d9 changed
    # macro-F1 and that score without a new version.
    "baseline": ("baseline-v3", COMPARED_RULES),
    "control": ("control-v2", COMPARED_RULES),
    "subset": ("subset-v2", COMPARED_RULES),
}


def _version(kind: str) -> str:
    return RULES[kind][0]


REFERENCE_EPOCHS = 6  # The judge of every trial in a sweep; fixed so all trials are judged by the same model.
REFERENCE_SEED = 0


@dataclass
class Cached:
    """An entry in use: where it lives, its key, and whether this trial found it (hit) or made it."""
    folder: Path
    key: str
    hit: bool


def generator(cfg: TrialConfig, data: FaceSet, store: CacheStore, device: torch.device) -> tuple[Generator, Cached]:
    """The trained generator of CFG on DATA's training split: loaded from the cache, or trained and stored there.

    A generator that diverges raises fercore.generators.Diverged and leaves nothing in the cache.
    """
    values = dict(cfg.generator.values)
    parts = {"generator": values, "data": data.fingerprint, "image_size": data.image_size, "seed": cfg.seed}
    if data.channels != 1:  # Colour: already in the fingerprint (it hashes the images' shape), named for the reader.
        parts["channels"] = data.channels  # Gray keys stay as they were, so stored generators are still found.
    if values.get("path"):  # Images made elsewhere (folder): the files, not only their folder's name, are the input.
        parts["files"] = _tree_fingerprint(Path(values["path"]))
    key = content_key(_version("generator"), parts)
    num_classes = len(data.class_names)

    def build(folder: Path) -> None:
        gen = build_generator(values, data.image_size, num_classes, device, data.channels, data.class_names)
        gen.fit(*data.split("train"), seed=cfg.seed)  # The training split only: val and test never reach it.
        gen.save(folder)

    folder, hit = store.get_or_create(key, build, parts)
    gen = build_generator(values, data.image_size, num_classes, device, data.channels, data.class_names)
    gen.load(folder)  # Also after building here: every trial samples from the same stored weights.
    return gen, Cached(folder, key, hit)


def reference_key(data: FaceSet) -> tuple[str, dict[str, Any]]:
    parts = {"data": data.fingerprint, "image_size": data.image_size, "epochs": REFERENCE_EPOCHS,
             "seed": REFERENCE_SEED}
    if data.channels != 1:  # As for generators: covered by the fingerprint, named; gray keys unchanged.
        parts["channels"] = data.channels
    return content_key(_version("reference"), parts), parts


def reference(data: FaceSet, store: CacheStore, device: torch.device) -> tuple[ReferenceClassifier, Cached]:
    """The cnn3 trained on the real training split (validation picks its epoch) that judges synthetic images."""
    key, parts = reference_key(data)

    def build(folder: Path) -> None:
        train_reference_classifier(data, seed=REFERENCE_SEED, epochs=REFERENCE_EPOCHS, device=device).save(folder)

    folder, hit = store.get_or_create(key, build, parts)
    return (load_reference_classifier(folder, data.image_size, len(data.class_names), device, data.channels),
            Cached(folder, key, hit))


def pool(parts: dict[str, Any], store: CacheStore,
         make: Callable[[], tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]]
         ) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray, Cached]:
    """A synthetic pool (images per class, acceptance and generated counts per class) under a key made of PARTS:
    the generator's key, the counts needed, the filter and its settings, and the sampling seed."""
    key = content_key(_version("pool"), parts)

    def build(folder: Path) -> None:
        images, acceptance, generated = make()
        arrays = {f"class{c}": x for c, x in images.items()}
        atomic_write(folder / "pool.npz", lambda f: np.savez(f, acceptance=acceptance, generated=generated, **arrays))

    folder, hit = store.get_or_create(key, build, parts)
    with np.load(folder / "pool.npz") as z:
        images = {int(k[5:]): z[k] for k in z.files if k.startswith("class")}
        return images, z["acceptance"], z["generated"], Cached(folder, key, hit)


def quality(parts: dict[str, Any], store: CacheStore,
            make: Callable[[], tuple[dict[str, Any], dict[str, np.ndarray]]]
            ) -> tuple[dict[str, Any], dict[str, np.ndarray], Cached]:
    """A generator's quality figures (a row's gen_* keys) and its embedding points, measured once on a fixed sample
    (fercore.synthetic.generator_quality), under a key made of PARTS: the generator's key, the sample's size cap per
    class, its seed and the reference classifier's key. Its own small entry beside the generator's, so the generator
    entry's files and checksums stay as they were, and a generator stored before figures existed gets them added."""
    key = content_key(_version("quality"), parts)

    def build(folder: Path) -> None:
        figures, points = make()
        atomic_write(folder / "quality.json", lambda f: f.write(json.dumps(figures, default=float).encode()))
        atomic_write(folder / "points.npz", lambda f: np.savez(f, **points))

    folder, hit = store.get_or_create(key, build, parts)
    with np.load(folder / "points.npz") as z:
        points = {k: z[k] for k in z.files}
    return json.loads((folder / "quality.json").read_text()), points, Cached(folder, key, hit)


def classifier_parts(cfg: TrialConfig, data: FaceSet, device: torch.device | None = None) -> dict[str, Any]:
    """What decides the weights of a classifier trained with CFG's classifier and training config on DATA, on DEVICE
    (None: where train.device puts it here)."""
    device = device or pick_device(cfg.train.device)
    unused = set(inapplicable(cfg))
    return {"classifier": {k: v for k, v in cfg.classifier.values.items() if f"classifier.{k}" not in unused},
            "train": _train_values(cfg), "data": data.fingerprint, "seed": cfg.seed, "device": device.type,
            "precision": "bf16" if autocast_dtype(cfg.train.precision, device) is not None else "fp32"}


def baseline_key(cfg: TrialConfig, data: FaceSet, device: torch.device | None = None) -> tuple[str, dict[str, Any]]:
    """The real-only baseline of a trial: same backbone, classifier and training config, data, seed and device."""
    parts = classifier_parts(cfg, data, device)
    return content_key(_version("baseline"), parts), parts


def control_key(cfg: TrialConfig, data: FaceSet, device: torch.device, real: np.ndarray,
                total: np.ndarray) -> tuple[str, dict[str, Any]]:
    """The oversampling control: REAL[c] real images of class c kept (mix()'s seeded choice), drawn again up to
    TOTAL[c]. An oversample_* trial with the same counts trains exactly this set, so it is its own control."""
    parts = {**classifier_parts(cfg, data, device), "real": [int(n) for n in real], "total": [int(n) for n in total]}
    return content_key(_version("control"), parts), parts


def subset_key(cfg: TrialConfig, data: FaceSet, device: torch.device, real: np.ndarray) -> tuple[str, dict[str, Any]]:
    """The real-subset control: the REAL[c] real images of class c a trial kept (mix()'s seeded choice), alone."""
    parts = {**classifier_parts(cfg, data, device), "real": [int(n) for n in real]}
    return content_key(_version("subset"), parts), parts


def compared(key: str, parts: dict[str, Any], store: CacheStore,
             make: Callable[[], Outcome]) -> tuple[np.ndarray, dict[str, Any], Cached]:
    """Test-set class probabilities and result metrics of a compared classifier under KEY; MAKE trains it when the
    cache has none.

    A trial that trained exactly that classifier (policy none for a baseline, oversample_* for a control) stores its
    own outcome here (its make returns what it already computed), so later trials pair with it instead of training
    another."""
    def build(folder: Path) -> None:
        proba, metrics = make()
        atomic_write(folder / "test_proba.npy", lambda f: np.save(f, proba))
        atomic_write(folder / "metrics.json", lambda f: f.write(json.dumps(metrics, default=float).encode()))

    folder, hit = store.get_or_create(key, build, parts)
    proba = np.load(folder / "test_proba.npy")
    return proba, json.loads((folder / "metrics.json").read_text()), Cached(folder, key, hit)


def baseline(cfg: TrialConfig, data: FaceSet, store: CacheStore, device: torch.device,
             make: Callable[[], Outcome]) -> tuple[np.ndarray, dict[str, Any], Cached]:
    """The real-only baseline's outcome (see `compared`)."""
    return compared(*baseline_key(cfg, data, device), store, make)


def _tree_fingerprint(root: Path) -> str:
    """Names, sizes and modification times of every file under ROOT: changes when an image is added or replaced."""
    if not root.is_dir():
        return ""  # The generator's own check reports the missing folder, with its key.
    entries = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in root.rglob("*") if p.is_file())
    return content_key("files", {"entries": entries})


def _train_values(cfg: TrialConfig) -> dict[str, Any]:
    # Threads and compile change speed, not the result; device and precision are in the key as what they resolved
    # to (classifier_parts), so device=auto and device=cuda on a GPU share an entry.
    return {k: v for k, v in cfg.train.values.items() if k not in ("threads", "device", "compile", "precision")}
