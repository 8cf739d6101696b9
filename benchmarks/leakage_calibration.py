"""Calibration of the copy audit (fercore.metrics.copies), today's windows alone ("old": nearest_copy with
geometry=False, the audit before issue 22) against windows + alignment ("new"), measured in the same run.

Two modes:
- procedural (default): planted copies of every test image of the built-in procedural set under each of
  alterations.ALTERATIONS; distinct faces (train vs test, val vs test, another seed vs test) with the
  false-positive count at COPY_THRESHOLD; the reference classifier's feature cosines (skip with --no-features);
  the time of N candidates against M reference images.
- real (--data: an unpacked FER2013-like folder tree, or its .tar.gz archive, unpacked to a temporary folder):
  per alteration, how many of --faces test faces are caught against the whole test split and their distances;
  false positives on distinct faces (the training faces today's audit does not flag against the test split: what
  the new stage adds there, judged by eye, --pairs-png writes a sample side by side); the data set's own
  cross-split copies; the time of both against the test split's index. Its last line is JSON.

    PYTHONPATH=. python benchmarks/leakage_calibration.py [--no-features] [--candidates 20000] [--reference 4000]
    PYTHONPATH=. python benchmarks/leakage_calibration.py --data /tmp/fer/fer2013 [--faces 700] [--pairs-png P]
"""
from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from fercore.data import load
from fercore.metrics import copies
from fercore.metrics.alterations import (ALTERATIONS, blur, brightness, contrast, crop, flip, jpeg, rotate,
                                         shift)
from fercore.metrics.leakage import audit, phash

# By eye (issue 22, FER2013): the new stage's extra flags on training faces against the test split, sampled and
# viewed side by side (--pairs-png): 144 pairs (48 at random, 64 more of 12-16 bits, 32 more of 0-11), 141 of them
# flagged by the final settings (764 flags); every one the same photograph (re-cropped, re-toned, watermarked),
# none two different faces; so were 48 of the windows' own flags at 9-16 bits. Re-judge for other data.
EYE_JUDGED = {"viewed": 141, "distinct": 0}


def spread(d: np.ndarray) -> str:
    d = np.asarray(d, dtype=np.float64)
    return (f"min {d.min():4.3g} p1 {np.percentile(d, 1):4.3g} median {np.median(d):4.3g} "
            f"p99 {np.percentile(d, 99):4.3g} max {d.max():4.3g}")


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def fercore_transform(**strengths):
    """train.<key>=value as fercore applies it to a training batch (fercore.transforms.augment)."""
    def apply(x: np.ndarray) -> np.ndarray:
        import torch

        from fercore.images import from_unit
        from fercore.transforms import Strengths, augment, normalise

        gen = torch.Generator().manual_seed(0)
        return from_unit(augment(normalise(torch.from_numpy(x)), Strengths(**strengths), gen)).numpy()
    return apply


# What the real-data mode plants, per name (the user's list of issue 22 and fercore's own geometric transforms).
REAL_ALTERATIONS = {
    "flip": flip,
    "shift_1": lambda x: shift(x, 1, -1),
    "shift_2": lambda x: shift(x, -2, 2),
    "shift_2_edge": lambda x: shift(x, 2, 1, fill=None),
    "flip_shift_2": lambda x: shift(flip(x), 2, -2),
    "brightness_+12": lambda x: brightness(x, 1.12),
    "brightness_-12": lambda x: brightness(x, 0.88),
    "contrast_+12": lambda x: contrast(x, 1.12),
    "contrast_-12": lambda x: contrast(x, 0.88),
    "jpeg_60": lambda x: jpeg(x, 60),
    "blur_0.6": lambda x: blur(x, 0.6),
    "rotate_3": lambda x: rotate(x, 3),
    "rotate_5": lambda x: rotate(x, 5),
    "rotate_-5": lambda x: rotate(x, -5),
    "flip_rotate_5": lambda x: rotate(flip(x), 5),
    "rotate_10": lambda x: rotate(x, 10),
    "crop_96": lambda x: crop(x, 0.96),
    "crop_92": lambda x: crop(x, 0.92),
    "crop_92_corner": lambda x: crop(x, 0.92, 1.9, -1.9),
    "rotate_5_jpeg_60": lambda x: jpeg(rotate(x, 5), 60),
    "train.rotate=5": fercore_transform(rotate=5.0),
    "train.rotate=15": fercore_transform(rotate=15.0),
    "train.rotate=30": fercore_transform(rotate=30.0),
    "train.crop=0.1": fercore_transform(crop=0.1),
    "train.crop=0.2": fercore_transform(crop=0.2),
    "train.crop=0.4": fercore_transform(crop=0.4),
    "train.rotate=15,crop=0.2,flip=0.5": fercore_transform(rotate=15.0, crop=0.2, flip=0.5),
}


def real_data(path: str) -> tuple:
    """The FaceSet at PATH (a folder, or a .tar.gz archive unpacked to a temporary folder, read and removed) and a
    label."""
    p = Path(path)
    if p.is_file():
        with tempfile.TemporaryDirectory(prefix="fer-calibration-") as tmp:
            with tarfile.open(p) as archive:
                archive.extractall(tmp, filter="data")
            roots = [d.parent for d in Path(tmp).rglob("train") if d.is_dir()]
            if not roots:
                raise SystemExit(f"{path}: no train/ folder inside the archive")
            return load(str(roots[0]), use_cache=False), f"{p.name} (unpacked to a temporary folder)"
    return load(str(p)), str(p)


def caught_table(test: np.ndarray, index: copies.CopyIndex, faces: int, threshold: int) -> dict:
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(test), min(faces, len(test)), replace=False))
    src = test[pick]
    print(f"\nplanted copies of {len(pick)} test faces, each against the whole test split ({len(test)}): caught at "
          f"<= {threshold} bits, old (windows) -> new (windows + alignment); new distances in bits; 'elsewhere': "
          "caught by another test image (the split's own duplicates)")
    table = {}
    for name, alter in REAL_ALTERATIONS.items():
        x = alter(src)
        _, d_old = copies.nearest_copy(x, index, geometry=False)
        found, d_new = copies.nearest_copy(x, index)
        old, new = int((d_old <= threshold).sum()), int((d_new <= threshold).sum())
        elsewhere = int(((d_new <= threshold) & (found != pick)).sum())
        table[name] = {"old": old, "new": new, "of": len(pick)}
        print(f"  {name:36s} {old:4d} -> {new:4d}/{len(pick)} ({100 * new / len(pick):5.1f} %)  {spread(d_new)}"
              f"  elsewhere {elsewhere}")
    return table


def pairs_png(path: str, cand: np.ndarray, ref: np.ndarray, groups: list[tuple[str, np.ndarray, np.ndarray, list]]
              ) -> None:
    """Candidate | reference side by side, 8 pairs a row, each group (title, candidate indices, reference indices,
    labels) under its title."""
    from PIL import Image, ImageDraw

    s, cols = 2, 8
    cw, ch = (2 * 48 + 8) * s, 48 * s + 12
    rows = sum((len(g[1]) + cols - 1) // cols + 1 for g in groups)
    canvas = Image.new("L", (cols * cw, rows * ch), 255)
    draw, y = ImageDraw.Draw(canvas), 0
    for title, cand_at, ref_at, labels in groups:
        draw.text((2, y + ch // 2), title, fill=0)
        y += ch
        for k, (c, r, label) in enumerate(zip(cand_at, ref_at, labels)):
            pair = np.concatenate([cand[c], np.full((cand.shape[1], 2), 255, np.uint8), ref[r]], 1)
            x0, y0 = (k % cols) * cw, y + (k // cols) * ch
            canvas.paste(Image.fromarray(pair).resize((pair.shape[1] * s, pair.shape[0] * s)), (x0, y0 + 10))
            draw.text((x0, y0), f"{c}|{r}: {label}", fill=0)
        y += ((len(cand_at) + cols - 1) // cols) * ch
    canvas.save(path)


def real(args) -> None:
    data, label = real_data(args.data)
    train, val, test = (data.split(s)[0] for s in ("train", "val", "test"))
    thr = copies.COPY_THRESHOLD
    print(f"{label}: train {len(train)}, val {len(val)}, test {len(test)}; COPY_THRESHOLD {thr} bits of 256")
    index, build = timed(copies.build_index, test)
    sizes = {k: v.nbytes for k, v in index.arrays().items()}
    old_mb, new_mb = (sizes["hashes"] + sizes["thumbs"]) / 2**20, sum(sizes.values()) / 2**20
    print(f"test index: built in {build:.1f} s (the same hashing as before; now it keeps the gray images too): "
          f"{old_mb:.1f} -> {new_mb:.1f} MiB")

    table = caught_table(test, index, args.faces, thr)

    print(f"\ntraining faces -> nearest test face (old, new) over the whole training split")
    plain, t_plain = timed(lambda: audit(train, phash(test)))
    (f_old, d_old), t_old = timed(copies.nearest_copy, train, index, geometry=False)
    (f_new, d_new), t_new = timed(copies.nearest_copy, train, index)
    flag_old, flag_new = d_old <= thr, d_new <= thr
    unflagged = ~flag_old  # "distinct": what today's audit does not flag
    extra = unflagged & flag_new
    bins = [0, 9, 13, 17, 25, 33, 49, 65, 81, 257]

    def hist(d: np.ndarray) -> str:
        return " ".join(f"{lo}-{hi - 1}:{n}" for lo, hi, n in zip(bins, bins[1:], np.histogram(d, bins)[0]))

    n_distinct, n_extra = int(unflagged.sum()), int(extra.sum())
    print(f"  flagged: old {int(flag_old.sum())}, new {int(flag_new.sum())} ({int((flag_old & ~flag_new).sum())} "
          f"old flags lost); plain hash (leakage.audit) {plain['count']}")
    print(f"  the {n_distinct} faces old does not flag ('distinct' under today's audit), bits:")
    print(f"    old: {hist(d_old[unflagged])}")
    print(f"    new: {hist(d_new[unflagged])}")
    viewed, wrong = EYE_JUDGED["viewed"], EYE_JUDGED["distinct"]
    fp = wrong * n_extra / viewed
    fp_bound = 3.0 * n_extra / viewed if wrong == 0 else float("nan")  # rule of three: no event seen in `viewed`
    print(f"  new flags {n_extra} of them ({n_extra / n_distinct:.2%}); by eye {wrong} of {viewed} sampled extra "
          f"pairs are two different faces (the rest: one photograph re-cropped, re-toned, watermarked): false "
          f"positives ~{fp:.0f}, 95 % upper bound {fp_bound:.0f} of {n_distinct} distinct faces "
          f"({fp_bound / n_distinct:.1e}); old: 0 by this definition")
    if args.pairs_png:
        rng = np.random.default_rng(1)
        groups = []
        for title, where, found in (("new only (extra flags)", extra, f_new),
                                    ("old flags at 9-16 bits", flag_old & (d_old > 8), f_old),
                                    ("unflagged, new 17-32 bits", unflagged & (d_new > thr) & (d_new <= 32), f_new)):
            sel = np.flatnonzero(where)
            sel = np.sort(rng.choice(sel, min(48, len(sel)), replace=False))
            groups.append((title, sel, found[sel], [f"new {d_new[i]} old {d_old[i]}" for i in sel]))
        pairs_png(args.pairs_png, train, test, groups)
        print(f"  wrote {args.pairs_png}: training | test face, labelled by their indices and distances in bits")

    print("\nthe data set's own cross-split copies (split_leakage), old -> new")
    val_index, t_val = timed(copies.build_index, val)
    leak = {"train_test": (int(flag_old.sum()), int(flag_new.sum()))}
    for name, cand, idx in (("train_val", train, val_index), ("val_test", val, index)):
        leak[name] = tuple(int((copies.nearest_copy(cand, idx, geometry=g)[1] <= thr).sum()) for g in (False, True))
    for name, (o, n) in leak.items():
        print(f"  {name:11s} {o:5d} -> {n:5d}")

    rate = lambda t: len(train) / t  # noqa: E731
    print(f"\nspeed, {len(train)} candidates against the test split ({len(test)}; index built in {build:.0f} s, "
          f"val's in {t_val:.0f} s, once per data set and split, cached):")
    print(f"  plain audit {t_plain:.1f} s ({rate(t_plain):.0f}/s); old {t_old:.1f} s ({rate(t_old):.0f}/s); "
          f"new {t_new:.1f} s ({rate(t_new):.0f}/s): {t_new / t_old:.2f}x old")
    summary = {"data": label, "threshold": thr, "faces": args.faces,
               "caught": {k: [v["old"], v["new"]] for k, v in table.items()},
               "distinct": {"faces": n_distinct, "new_flags": n_extra, "eye_viewed": viewed,
                            "eye_distinct": wrong, "fp_upper_95": round(fp_bound, 1)},
               "split_leakage": {k: {"old": o, "new": n} for k, (o, n) in leak.items()},
               "seconds": {"index_test": round(build, 1), "plain": round(t_plain, 1), "old": round(t_old, 1),
                           "new": round(t_new, 1)}}
    print(json.dumps(summary))


def procedural(args) -> None:
    data = load("procedural", scale=0.1, seed=0)
    train, test, val = (data.split(s)[0] for s in ("train", "test", "val"))
    other = load("procedural", scale=0.1, seed=1).split("train")[0]
    print(f"procedural scale 0.1 seed 0: train {len(train)}, val {len(val)}, test {len(test)}; "
          f"seed 1 train {len(other)}; COPY_THRESHOLD {copies.COPY_THRESHOLD} bits of 256")
    index = copies.build_index(test)

    print("\nplanted copies of every test image -> distance to the source (bits), windows + alignment; missed: not "
          "found with its source (old: windows alone)")
    worst, missed_all = 0, {}
    for name, alter in ALTERATIONS.items():
        x = alter(test)
        found, dist = copies.nearest_copy(x, index)
        missed = int(((found != np.arange(len(test))) | (dist > copies.COPY_THRESHOLD)).sum())
        old_found, old_dist = copies.nearest_copy(x, index, geometry=False)
        old = int(((old_found != np.arange(len(test))) | (old_dist > copies.COPY_THRESHOLD)).sum())
        plain = int((audit(x, test)["count"]))
        found_ok = (found == np.arange(len(test))) & (dist <= copies.COPY_THRESHOLD)
        worst = max(worst, int(dist[found_ok].max(initial=0)))
        missed_all[name] = missed
        print(f"  {name:30s} {spread(dist)}  missed {missed}/{len(test)} (old {old})  (plain hash catches {plain})")

    print("\ndistinct faces -> distance to the nearest test image (bits), windows + alignment (old: windows)")
    fp = total = 0
    closest = 10**9
    for name, faces in (("train vs test", train), ("val vs test", val), ("seed 1 vs test", other)):
        dist = copies.nearest_copy(faces, index)[1]
        old = copies.nearest_copy(faces, index, geometry=False)[1]
        n_fp = int((dist <= copies.COPY_THRESHOLD).sum())
        fp, total, closest = fp + n_fp, total + len(faces), min(closest, int(dist.min()))
        print(f"  {name:30s} {spread(dist)}  at or below threshold {n_fp}/{len(faces)} (old min {old.min()}, "
              f"{int((old <= copies.COPY_THRESHOLD).sum())})")
    bound = 3.0 / total if fp == 0 else float("nan")  # rule of three: 95 % upper bound with no event seen
    missed = {k: v for k, v in missed_all.items() if v}
    print(f"\ncopies found reach {worst} bits, missed: {missed or 'none'}; distinct faces come no closer than "
          f"{closest} bits; threshold {copies.COPY_THRESHOLD}: false positives {fp}/{total} "
          f"(95 % upper bound {bound:.1e})")

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
    _, plain = timed(lambda: audit(cands, phash(refs)))
    ref_index, build = timed(copies.build_index, refs)
    _, old = timed(copies.copy_audit, cands, ref_index, geometry=False)
    _, new = timed(copies.copy_audit, cands, ref_index)
    print(f"  plain audit (hash both, compare): {plain:.2f} s")
    print(f"  copy audit: reference index {build:.2f} s (once per data set, cached); candidates old {old:.2f} s, "
          f"new {new:.2f} s ({new / old:.2f}x old); per trial {new / plain:.1f}x the plain audit")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="a FER2013-like folder tree (train/validation/test) or its .tar.gz archive")
    ap.add_argument("--faces", type=int, default=700, help="real mode: test faces planted per alteration")
    ap.add_argument("--pairs-png", help="real mode: write sampled flagged pairs side by side here, to judge by eye")
    ap.add_argument("--no-features", action="store_true")
    ap.add_argument("--candidates", type=int, default=20000)
    ap.add_argument("--reference", type=int, default=4000)
    args = ap.parse_args()
    real(args) if args.data else procedural(args)


if __name__ == "__main__":
    main()
