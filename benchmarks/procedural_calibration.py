"""Calibration of the procedural faces: is the default data set learnable but not trivial?

Draws the default set (and times drawing it at scale=1), trains the 3-conv baseline CNN (cnn3) briefly on CPU through fercore's own trial and
prints a one-screen summary: test accuracy, macro-F1, per-class recall and the confusion matrix. The data set is
calibrated when the CNN lands clearly above chance (1/7) and clearly below 100 % (roughly 55-80 %), with disgust
(the rarest class, close to angry) recalled clearly worse than happy.

    python benchmarks/procedural_calibration.py                 # defaults: scale 0.1, seed 0, 5 epochs
    python benchmarks/procedural_calibration.py --preview /tmp/preview.png   # also write a class x sample grid
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from fercore.data.procedural import draw_procedural
from fercore.labels import CLASSES
from fercore.trial import run


def write_preview(fs, path, per_class=10, upscale=3):
    from PIL import Image

    rows = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(fs.labels == c)[:per_class]
        tiles = [fs.images[i] for i in idx] + [np.zeros_like(fs.images[0])] * (per_class - len(idx))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * upscale, grid.shape[0] * upscale), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--no-full-scale", action="store_true", help="skip timing the scale=1 drawing")
    ap.add_argument("--preview", default=None, help="write a classes x samples PNG grid here")
    args = ap.parse_args()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    t0 = time.perf_counter()
    fs = draw_procedural(scale=args.scale, seed=args.seed, image_size=args.image_size)
    t_draw = time.perf_counter() - t0
    print(f"draw scale={args.scale}: {len(fs.images)} images in {t_draw:.2f}s  {fs.counts()}")
    if not args.no_full_scale:
        t0 = time.perf_counter()
        full = draw_procedural(scale=1.0, seed=args.seed, image_size=args.image_size)
        print(f"draw scale=1: {len(full.images)} images in {time.perf_counter() - t0:.2f}s")
        del full
    if args.preview:
        write_preview(fs, args.preview)
        print(f"preview: {args.preview}")

    # Through fercore's own trial (real images only): the same trainer and metrics a sweep uses.
    config = {"augment.policy": "none", "classifier.backbone": "cnn3", "classifier.epochs": args.epochs,
              "classifier.batch_size": args.batch, "classifier.lr": args.lr, "seed": args.seed,
              "data.scale": args.scale, "data.image_size": args.image_size}
    print(f"train CNN3 via fercore.trial: {int((fs.splits == 0).sum())} images, {args.epochs} epochs, "
          f"batch {args.batch}, Adam lr {args.lr}, {torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    result = run(config, fs)
    t_train = time.perf_counter() - t0
    yte = fs.split("test")[1]
    cm = np.asarray(result.artifacts["confusion"])
    acc, macro_f1 = result.row["test_accuracy"], result.row["test_macro_f1"]

    k = len(CLASSES)
    recall = cm.diagonal() / np.maximum(cm.sum(1), 1)
    print(f"\ntest ({len(yte)} images, chance {1 / k:.3f}): accuracy {acc:.3f}  macro-F1 {macro_f1:.3f}  "
          f"(training {t_train:.0f}s)")
    print("recall   " + "  ".join(f"{c[:8]:>8s}" for c in CLASSES))
    print("         " + "  ".join(f"{r:8.2f}" for r in recall))
    print("\nconfusion (rows true, columns predicted)")
    print(f"{'':>9s}" + "".join(f"{c[:7]:>8s}" for c in CLASSES))
    for i, c in enumerate(CLASSES):
        print(f"{c:>9s}" + "".join(f"{v:8d}" for v in cm[i]))
    ok = 0.55 <= acc <= 0.80 and recall[CLASSES.index("disgust")] < recall[CLASSES.index("happy")] - 0.15
    print(f"\ncalibration {'OK' if ok else 'OFF'}: want accuracy in [0.55, 0.80] and disgust recall clearly "
          f"below happy recall")


if __name__ == "__main__":
    main()
