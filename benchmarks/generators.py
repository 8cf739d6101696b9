"""Every generator type on the built-in faces for a fixed CPU budget: training speed, sampling speed and quality.

Quality is judged as a sweep judges it (fercore.synthetic.generator_quality): against real faces neither the
generator nor the reference classifier trained on (the validation split, QUALITY_REAL_SPLIT), in the feature space of
a cnn3 trained on the real training split less a held-out tenth (fercore.reference), on a class-matched sample of
fixed size - per class min(real validation count, --quality-n) images from each side, unfiltered - by FID and KID (±
its spread over subsets; lower is better), precision and recall (k-NN manifolds, k=3: few good images give high
precision and low recall, many poor ones the reverse) and conditional accuracy macro-averaged over classes (the share
of generated images the reference classifier assigns to the class they were drawn for). Four reference rows,
measured in the same run, bracket the figures:
- real held-out training faces (the reference's held-out tenth): the floor a perfect generator would reach;
- real training faces as they are: a generator that memorised its training set (before issue 24 the real side was
  the training split, where this row scored a perfect FID of 0);
- per-class mean image plus noise: a generator that learnt only the average face of each class;
- real training faces with shuffled labels: perfect images, no class information.

Usage: python benchmarks/generators.py [--budget SECONDS] [--scale 0.1] [--types cgan,stylegan,...] [--quality-n 500]
       python benchmarks/generators.py --data DIR/fer2013 --budget 300     (real FER2013: its training split)
       ... --epochs cgan=14,stylegan=3   (those types train so many epochs instead of what the budget holds)

On real data the `folder` type (images made elsewhere) is left out: there is no elsewhere to read real faces from
that is not the data set itself.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fercore.config import resolve
from fercore.data import load
from fercore.generators import GENERATORS, build_generator
from fercore.labels import CLASSES
from fercore.metrics.quality import sample_quality
from fercore.reference import heldout_mask, train_reference_classifier
from fercore.synthetic import QUALITY_N, QUALITY_REAL_SPLIT, QUALITY_SEED

SAMPLES_PER_CLASS = 1000 // len(CLASSES) + 1  # ~1,000 images in all, for the speed and quality figures
# Small, CPU-sized settings per type; the budget sets the epochs.
SETTINGS = {
    "gan": {},
    "dcgan": {"generator.augment": "diffaugment"},
    # 64 px gets ~5 epochs in 120 s; through 001's mask channels the label was not learnt in 240 s (projection was).
    "cgan": {"generator.augment": "diffaugment", "generator.resolution": 32, "generator.conditioning": "projection"},
    # StyleGAN2's mapping learning rate (x0.01) is for millions of images; in ~600 steps the class barely reached
    # w (FID 197, cond acc 0.18 at step 300); x1 with batch 32 learnt it (FID 92, cond acc 0.35 at step 600).
    "stylegan": {"generator.augment": "ada", "generator.conditioning": "label", "generator.batch_size": 32,
                 "generator.mapping_lr_mul": 1.0},
    "diffusion": {},
    "folder": {},
}


def write_folder_tree(root: Path, scale: float) -> Path:
    """Images 'made elsewhere': procedural faces of another seed, one folder per class, as PNG files."""
    from PIL import Image

    other = load("procedural", scale=scale, seed=1234)
    x, y = other.split("train")
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(x[y == c][:200]):
            Image.fromarray(img).save(root / name / f"{i:04d}.png")
    return root


def values_for(gtype: str, epochs: int, extra: dict) -> dict:
    return dict(resolve({"generator.type": gtype, "generator.epochs": epochs, **SETTINGS.get(gtype, {}), **extra},
                        drop_inapplicable=True).generator.values)


def sample_all(gen, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    t0 = time.perf_counter()
    xs = [gen.sample(SAMPLES_PER_CLASS, c, seed=seed + c) for c in range(len(CLASSES))]
    seconds = time.perf_counter() - t0
    labels = np.repeat(np.arange(len(CLASSES)), SAMPLES_PER_CLASS)
    return np.concatenate(xs), labels, seconds * 1000 / len(labels)


def quality_counts(real_y: np.ndarray, n: int) -> np.ndarray:
    """Per class: the real side's count capped at N, the same for every generator."""
    return np.minimum(np.bincount(real_y, minlength=len(CLASSES)), n)


def matched_real(x: np.ndarray, y: np.ndarray, counts: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """COUNTS[c] images of class c of (X, Y) (all of them where the class has fewer), a seeded choice."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), min(n, int((y == c).sum())), replace=False)
                          for c, n in enumerate(counts)])
    return x[idx], y[idx]


def matched_sample(gen, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COUNTS[c] unfiltered images of class c from GEN, with the seeds a sweep scores it with."""
    xs = [gen.sample(int(n), c, seed=QUALITY_SEED + c) for c, n in enumerate(counts)]
    return np.concatenate(xs), np.concatenate([np.full(len(x), c) for c, x in enumerate(xs)])


def run_type(gtype: str, data, budget: float, device, extra: dict, counts: np.ndarray | None = None,
             epochs: int | None = None) -> dict:
    """Train GTYPE for about BUDGET seconds (or EPOCHS epochs) and time its sampling; with COUNTS (per class), also
    draw the class-matched sample its quality is scored on (benchmarks/gpu_check.py times speeds only, passes none)."""
    train_x, train_y = data.split("train")
    if epochs is None:  # one epoch timed on a throw-away instance, then a fresh one for as many as the budget holds
        probe = build_generator(values_for(gtype, 1, extra), data.image_size, len(CLASSES), device)
        t0 = time.perf_counter()
        probe.fit(train_x, train_y, seed=0)
        per_epoch = max(time.perf_counter() - t0, 1e-3)
        epochs = max(1, int(budget / per_epoch)) if gtype != "folder" else 1
    gen = build_generator(values_for(gtype, epochs, extra), data.image_size, len(CLASSES), device)
    t0 = time.perf_counter()
    gen.fit(train_x, train_y, seed=0)
    train_seconds = time.perf_counter() - t0
    _, _, sec_per_1000 = sample_all(gen)
    return {"epochs": epochs, "train_img_s": epochs * len(train_x) / train_seconds if gtype != "folder" else float("nan"),
            "train_s": train_seconds, "sample_s_per_1000": sec_per_1000,
            "images": matched_sample(gen, counts) if counts is not None else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=120.0, help="training seconds per type (CPU)")
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--types", default=",".join(t for t in SETTINGS if t in GENERATORS))
    p.add_argument("--quality-n", type=int, default=QUALITY_N, help="quality sample's cap per class (a sweep's)")
    p.add_argument("--data", default=None, help="a data source (e.g. DIR/fer2013) instead of the procedural faces")
    p.add_argument("--epochs", default="", metavar="TYPE=N,...",
                   help="train these types N epochs instead of what the budget holds (to repeat an earlier run)")
    args = p.parse_args()
    fixed_epochs = {t: int(n) for t, n in (item.split("=") for item in args.epochs.split(",") if item)}
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load(args.data) if args.data else load("procedural", scale=args.scale, seed=0)
    if args.data:
        args.types = ",".join(t for t in args.types.split(",") if t != "folder")
    train_x, train_y = data.split("train")
    val_x, val_y = data.split("val")
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"data: {data.source}, {len(train_x)} training images; device: {machine}; budget {args.budget:.0f} s per type",
          flush=True)

    t0 = time.perf_counter()
    ref = train_reference_classifier(data, seed=0, epochs=8, device=device)
    _, p_val = ref.features_and_proba(val_x)
    print(f"reference cnn3: {time.perf_counter() - t0:.0f} s, validation accuracy "
          f"{(p_val.argmax(1) == val_y).mean():.3f}\n", flush=True)

    rng = np.random.default_rng(0)
    real_x, real_y = data.split(QUALITY_REAL_SPLIT)
    counts = quality_counts(real_y, args.quality_n)
    real = matched_real(real_x, real_y, counts, QUALITY_SEED)
    held = heldout_mask(train_y, 0)  # the reference's held-out tenth (seed 0, as trained above)

    def quality(synthetic: tuple[np.ndarray, np.ndarray]) -> dict:
        return sample_quality(ref, real, synthetic, CLASSES, seed=QUALITY_SEED)[0]

    rows = []
    # Reference rows.
    rows.append(("real held-out training faces (floor)", np.nan, np.nan, np.nan,
                 quality(matched_real(train_x[held], train_y[held], counts, 1))))
    rows.append(("real training faces (memorised)", np.nan, np.nan, np.nan,
                 quality(matched_real(train_x[~held], train_y[~held], counts, 1))))
    means = np.stack([train_x[train_y == c].mean(0) for c in range(len(CLASSES))])
    mean_y = np.repeat(np.arange(len(CLASSES)), counts)
    mean_x = np.clip(means[mean_y] + rng.normal(0, 20, (len(mean_y), *means.shape[1:])), 0, 255).astype(np.uint8)
    rows.append(("class mean image + noise", np.nan, np.nan, np.nan, quality((mean_x, mean_y))))
    other_x, other_y = matched_real(train_x, train_y, counts, 2)
    rows.append(("real images, shuffled labels", np.nan, np.nan, np.nan, quality((other_x, rng.permutation(other_y)))))

    with tempfile.TemporaryDirectory() as tmp:
        extra_by_type = {"folder": {"generator.path": str(write_folder_tree(Path(tmp) / "folder", args.scale))}}
        for gtype in [t for t in args.types.split(",") if t]:
            print(f"training {gtype} ...", flush=True)
            r = run_type(gtype, data, args.budget, device, extra_by_type.get(gtype, {}), counts,
                         fixed_epochs.get(gtype))
            q = quality(r["images"])
            rows.append((f"{gtype} ({r['epochs']} epochs, {r['train_s']:.0f} s)", r["train_img_s"],
                         r["sample_s_per_1000"], r["epochs"], q))
            print(f"  {gtype}: FID {q['gen_fid']:.1f}, KID {q['gen_kid']:.4f} ± {q['gen_kid_std']:.4f}, precision "
                  f"{q['gen_precision']:.3f}, recall {q['gen_recall']:.3f}, conditional accuracy "
                  f"{q['gen_conditional_accuracy']:.3f}", flush=True)

    fmt = lambda v, f: (f"{v:{f}}" if np.isfinite(v) else "-")  # noqa: E731
    print(f"\n{'row':<40}{'train img/s':>12}{'s / 1000 smp':>13}{'FID':>9}{'KID':>17}{'prec':>7}{'recall':>8}"
          f"{'cond acc':>10}")
    for name, img_s, smp, _, q in rows:
        kid = f"{fmt(q['gen_kid'], '.4f')} ± {fmt(q['gen_kid_std'], '.4f')}"
        print(f"{name:<40}{fmt(img_s, '12.0f'):>12}{fmt(smp, '13.2f'):>13}{fmt(q['gen_fid'], '9.1f'):>9}{kid:>17}"
              f"{fmt(q['gen_precision'], '7.3f'):>7}{fmt(q['gen_recall'], '8.3f'):>8}"
              f"{fmt(q['gen_conditional_accuracy'], '10.3f'):>10}")
    sample = ", ".join(f"{c} {n}" for c, n in zip(CLASSES, counts))
    print(f"\nQuality sample per class ({QUALITY_REAL_SPLIT} count capped at {args.quality_n}; the real rows use up to "
          f"as many): {sample}. FID and KID in the reference cnn3's penultimate features (256-d), lower is better; precision "
          f"and recall: k-NN manifolds, k=3. cond acc: macro over classes, before any filter; chance is 1/7 = 0.143.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
