"""Calibration of the copy audit (fercore.metrics.copies) on the built-in procedural set, and its speed against the
plain one-hash audit (fercore.metrics.leakage.audit) measured in the same run.

Prints: per alteration, the distances of planted copies of every test image to their source (and whether the
source was found); the distances of distinct faces (train vs test, val vs test, another seed vs test) with the
false-positive count at COPY_THRESHOLD; the reference classifier's feature cosines for copies and for distinct
faces (skip with --no-features); the time of hashing + comparing N candidates against M reference images.

    PYTHONPATH=. python benchmarks/leakage_calibration.py [--no-features] [--candidates 20000] [--reference 4000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fercore.data import load
from fercore.metrics import copies
from fercore.metrics.alterations import ALTERATIONS
from fercore.metrics.leakage import audit, phash


def spread(d: np.ndarray) -> str:
    d = np.asarray(d, dtype=np.float64)
    return (f"min {d.min():6.3g} p1 {np.percentile(d, 1):6.3g} median {np.median(d):6.3g} "
            f"p99 {np.percentile(d, 99):6.3g} max {d.max():6.3g}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-features", action="store_true")
    ap.add_argument("--candidates", type=int, default=20000)
    ap.add_argument("--reference", type=int, default=4000)
    args = ap.parse_args()
    data = load("procedural", scale=0.1, seed=0)
    train, test, val = (data.split(s)[0] for s in ("train", "test", "val"))
    other = load("procedural", scale=0.1, seed=1).split("train")[0]
    print(f"procedural scale 0.1 seed 0: train {len(train)}, val {len(val)}, test {len(test)}; "
          f"seed 1 train {len(other)}; COPY_THRESHOLD {copies.COPY_THRESHOLD} bits of 256")
    index = copies.build_index(test)

    print("\nplanted copies of every test image -> distance to the source (bits)")
    worst = 0
    for name, alter in ALTERATIONS.items():
        found, dist = copies.nearest_copy(alter(test), index)
        missed = int((found != np.arange(len(test))).sum() + (dist > copies.COPY_THRESHOLD).sum())
        plain = int((audit(alter(test), test)["count"]))
        worst = max(worst, int(dist.max()))
        print(f"  {name:30s} {spread(dist)}  missed {missed}/{len(test)}  (plain hash catches {plain})")

    print("\ndistinct faces -> distance to the nearest test image under flips and shifts (bits)")
    fp = total = 0
    closest = 10**9
    for name, faces in (("train vs test", train), ("val vs test", val), ("seed 1 vs test", other)):
        dist = copies.nearest_copy(faces, index)[1]
        n_fp = int((dist <= copies.COPY_THRESHOLD).sum())
        fp, total, closest = fp + n_fp, total + len(faces), min(closest, int(dist.min()))
        print(f"  {name:30s} {spread(dist)}  at or below threshold {n_fp}/{len(faces)}")
    bound = 3.0 / total if fp == 0 else float("nan")  # rule of three: 95 % upper bound with no event seen
    print(f"\ncopies reach at most {worst} bits; distinct faces come no closer than {closest} bits;"
          f" threshold {copies.COPY_THRESHOLD}: false positives {fp}/{total} (95 % upper bound {bound:.1e})")

    if not args.no_features:
        import torch

        from fercore.reference import train_reference_classifier

        torch.manual_seed(0)
        t0 = time.perf_counter()
        ref = train_reference_classifier(data, seed=0, epochs=6, device=torch.device("cpu"))
        print(f"\nreference classifier trained in {time.perf_counter() - t0:.0f} s; cosine of its features:")
        feats = lambda x: ref.features_and_proba(x)[0]  # noqa: E731
        test_f = feats(test)
        for name in ("flip", "shift_2", "flip_shift_2_brightness_+15", "contrast_-15"):
            sims = copies.feature_similarity(feats(ALTERATIONS[name](test)), test_f)
            print(f"  copies {name:30s} {spread(sims)}")
        for name, faces in (("train vs test", train), ("seed 1 vs test", other)):
            sims = copies.feature_similarity(feats(faces), test_f)
            print(f"  distinct {name:28s} {spread(sims)}  at or above {copies.FEATURE_THRESHOLD}: "
                  f"{int((sims >= copies.FEATURE_THRESHOLD).sum())}/{len(faces)}")

    print(f"\nspeed: {args.candidates} candidates against {args.reference} reference images")
    pool = load("procedural", scale=1.0, seed=2)
    cands, refs = pool.split("train")[0][:args.candidates], pool.images[pool.splits != 0][:args.reference]
    t0 = time.perf_counter()
    audit(cands, phash(refs))
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_index = copies.build_index(refs)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    copies.copy_audit(cands, ref_index)
    compare = time.perf_counter() - t0
    print(f"  plain audit (hash both, compare): {plain:.2f} s")
    print(f"  copy audit: reference index {build:.2f} s (once per data set, cached), candidates {compare:.2f} s; "
          f"per trial {compare / plain:.1f}x the plain audit, {(build + compare) / plain:.1f}x uncached")


if __name__ == "__main__":
    main()
