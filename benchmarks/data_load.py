"""How long `fercore.data.load` takes on a FER2013-sized CSV and on a class-per-folder PNG tree, cold and warm.

Cold = reading and converting the source, then writing the cache entry; warm = the same call again, answered
from the cache. Everything lives in a temporary folder that is removed afterwards. The source files were just
written, so cold figures do not include reading them from a cold disk.

    python benchmarks/data_load.py
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fercore.data import load
from fercore.labels import CLASSES

# The real fer2013.csv: 28,709 Training, 3,589 PublicTest, 3,589 PrivateTest rows of 48x48 faces.
FER_USAGE = {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}
TREE_PER_CLASS = {"train": 386, "test": 43}  # 7 x 429 = 3,003 PNGs
SIDE = 48
WARM_REPEATS = 3


def write_fer2013_csv(path: Path, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    as_text = np.array([str(v) for v in range(256)], dtype=object)
    rows = 0
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for usage, n in FER_USAGE.items():
            pixels = rng.integers(0, 256, size=(n, SIDE * SIDE), dtype=np.uint8)
            labels = rng.integers(0, len(CLASSES), size=n)
            for label, row in zip(labels, pixels):
                f.write(f"{label},{' '.join(as_text[row])},{usage}\n")
            rows += n
    return rows


def write_png_tree(root: Path, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    count = 0
    for split, n in TREE_PER_CLASS.items():
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, size=(SIDE, SIDE), dtype=np.uint8)).save(folder / f"{i:04d}.png")
                count += 1
    return count


def time_loads(source: Path, cache_dir: Path) -> tuple[float, float, float, int]:
    """(cold seconds, cold CPU seconds, median warm seconds, images) for one source with an empty cache."""
    start, cpu = time.perf_counter(), time.process_time()
    cold_set = load(str(source), image_size=SIDE, cache_dir=cache_dir)
    cold, cold_cpu = time.perf_counter() - start, time.process_time() - cpu
    warm_times = []
    for _ in range(WARM_REPEATS):
        start = time.perf_counter()
        warm_set = load(str(source), image_size=SIDE, cache_dir=cache_dir)
        warm_times.append(time.perf_counter() - start)
        assert warm_set.fingerprint == cold_set.fingerprint, "the cache returned a different data set"
    return cold, cold_cpu, statistics.median(warm_times), len(cold_set.images)


def main() -> int:
    results = {}
    with tempfile.TemporaryDirectory(prefix="fercore-bench-") as tmp:
        tmp = Path(tmp)
        csv_path = tmp / "fer2013.csv"
        start = time.perf_counter()
        write_fer2013_csv(csv_path)
        print(f"wrote {csv_path.name}: {csv_path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s",
              flush=True)
        results["FER2013 CSV"] = time_loads(csv_path, tmp / "cache-csv")

        tree = tmp / "tree"
        start = time.perf_counter()
        n = write_png_tree(tree)
        print(f"wrote {n} PNGs in {time.perf_counter() - start:.1f} s", flush=True)
        results["PNG folder tree"] = time_loads(tree, tmp / "cache-tree")

    print()
    # CPU time counts every thread; a cold wall time far above CPU time / cores means a busy machine.
    print(f"{'source':<18}{'images':>8}{'cold s':>9}{'cold cpu s':>12}{'warm s':>9}{'cold/warm':>11}")
    for name, (cold, cold_cpu, warm, images) in results.items():
        print(f"{name:<18}{images:>8}{cold:>9.2f}{cold_cpu:>12.2f}{warm:>9.3f}{cold / warm:>10.0f}x")
    _, _, warm_csv, images = results["FER2013 CSV"]
    verdict = "well under 1 s: OK" if warm_csv < 0.5 else ("under 1 s" if warm_csv < 1 else "NOT under 1 s")
    print(f"\nwarm load of the {images:,}-image CSV: {warm_csv:.3f} s ({verdict}); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    return 0 if warm_csv < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
