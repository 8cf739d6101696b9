"""Is a backbone usable in a CPU sweep with the small-image stem? Training images/s of each torchvision backbone with
classifier.small_stem=true (3x3 stride-1 first conv, no stem pooling), in the memory layout fercore's trainer uses.

A quick screen, not the side-by-side benchmark (benchmarks/classifier_speed.py does that, but with the small stem the
slow networks take minutes per timed step there): one warm-up and two timed training steps at batch 32 on random
48x48 input, then the minutes one epoch of FER2013's 28,709 training images would take at that rate.

    python benchmarks/small_stem_cpu.py [--backbones resnet18,...] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from fercore.classifiers import CLASSIFIERS, build_classifier, memory_format
from fercore.config import resolve

FER2013_TRAIN = 28_709


def train_rate(backbone: str, batch: int, device: torch.device) -> float:
    cfg = resolve({"classifier.backbone": backbone, "classifier.small_stem": True}).classifier
    torch.manual_seed(0)
    layout = memory_format(backbone, device)
    model = build_classifier(cfg, 48, 7).to(device, memory_format=layout).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 48, 48, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 7, (batch,), device=device)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * batch / (time.perf_counter() - t0)


def main() -> int:
    with_stem = [n for n, e in CLASSIFIERS.items() if any(p.name == "small_stem" for p in e.params)]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default=",".join(with_stem))
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"{where}; small stem; batch {args.batch}; 48x48")
    print(f"{'backbone':<20}{'train img/s':>12}{'min / FER2013 epoch':>21}")
    for name in args.backbones.split(","):
        rate = train_rate(name, args.batch, device)
        print(f"{name:<20}{rate:12.1f}{FER2013_TRAIN / rate / 60:21.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
