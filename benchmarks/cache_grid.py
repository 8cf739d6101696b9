"""A small real-ratio grid (004 in miniature: backbones x one generator x five real ratios) run twice on the
built-in faces: with the generator cache, and with it disabled. Prints both wall times, their ratio, and what each
run trained, counted from the cache's event log.

With the cache, the grid trains one generator, one reference classifier and one real-only baseline per backbone;
without it, every trial trains its own generator, reference and baseline.
The trials run one after another in this process (trial.run, no Ray), so the figures are the work saved, not
scheduling effects.

Usage: python benchmarks/cache_grid.py [--scale 0.05] [--backbones cnn3,linear] [--generator-epochs 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter

import torch

from fercore.cache import CacheStore
from fercore.data import load
from fercore.trial import run

RATIOS = (0.0, 0.1, 0.3, 0.5, 1.0)  # 004's real shares


def grid(args) -> list[dict]:
    base = {"data.scale": args.scale, "generator.type": "cgan", "generator.resolution": 32,
            "generator.conditioning": "projection", "generator.width": 8, "generator.epochs": args.generator_epochs,
            "augment.policy": "real_ratio", "classifier.epochs": args.classifier_epochs}
    return [{**base, "classifier.backbone": b, "augment.real_ratio": r}
            for b in args.backbones.split(",") for r in RATIOS]


def run_grid(configs: list[dict], data, store: CacheStore) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    rows = []
    for i, config in enumerate(configs, 1):
        row = run(config, data, lambda *a: None, store).row
        rows.append(row)
        print(f"  [{i}/{len(configs)}] {config['classifier.backbone']:<8} r={config['augment.real_ratio']:.1f}  "
              f"test macro-F1 {row['test_macro_f1']:.3f}  generator hit {row.get('generator_cache_hit', '-')}  "
              f"{row['train_seconds']:.0f} s", flush=True)
    return time.perf_counter() - t0, rows


def trained(store: CacheStore) -> Counter:
    """What the run built, by kind without its version: generator, pool, reference, baseline."""
    return Counter({kind.rsplit("-", 1)[0]: n for (kind, event), n in store.counts_by_kind().items()
                    if event == "built"})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.05)
    p.add_argument("--backbones", default="cnn3,linear")
    p.add_argument("--generator-epochs", type=int, default=3)
    p.add_argument("--classifier-epochs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = load("procedural", scale=args.scale, seed=0)
    configs = grid(args)
    machine = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"{len(configs)} trials on {len(data.split('train')[0])} training images; {machine}", flush=True)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, enabled in (("cache", True), ("no cache", False)):
            print(f"{name}:", flush=True)
            store = CacheStore(f"{tmp}/{name.replace(' ', '_')}", enabled=enabled)
            seconds, rows = run_grid(configs, data, store)
            results[name] = (seconds, trained(store), rows)

    print(f"\n{'run':<10}{'wall s':>9}  trained")
    for name, (seconds, built, _) in results.items():
        print(f"{name:<10}{seconds:9.0f}  " + ", ".join(f"{k} {v}" for k, v in sorted(built.items())))
    with_cache, without = results["cache"][0], results["no cache"][0]
    print(f"\nno cache / cache: {without / with_cache:.2f}x")
    same = all(a["test_macro_f1"] == b["test_macro_f1"]
               for a, b in zip(results["cache"][2], results["no cache"][2]))
    print(f"identical test macro-F1 in both runs: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
