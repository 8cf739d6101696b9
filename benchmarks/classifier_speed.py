"""Classifier training and inference speed: fercore's device-resident pipeline against a conventional one.

For each backbone, on a FER2013-sized training set (28,709 procedural 48x48 faces), in the same run:
- fercore: the uint8 training set lives on the device; each batch is indexed, normalised and augmented there
  (flip + shift) by fercore.train.Trainer's own code path;
- conventional: a torch DataLoader over PIL images with torchvision transforms (RandomHorizontalFlip,
  RandomAffine translate, ToTensor, Normalize) and worker processes, feeding the same network and batch size.
Each pipeline trains for a time budget (images counted), then predicts. Also printed: the share of a training step
spent on input handling (input pipeline alone vs whole step) and the peak memory of the trial's process (resident
memory on CPU, CUDA memory on a GPU). Each backbone runs in its own subprocess so the peak is its own.

    python benchmarks/classifier_speed.py [--budget 15] [--backbones linear,cnn3,...] [--small-stem]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

BATCH = 128


def fercore_pipeline(model, x_u8, y, device, budget, strengths):
    """Train for BUDGET seconds with fercore's device-resident batches; returns images/s and the input-only rate."""
    from fercore.augment.batch import augment, normalise

    x = torch.from_numpy(x_u8).to(device)
    yt = torch.from_numpy(y).long().to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def batches():
        while True:
            order = torch.randperm(len(x), generator=gen, device=device)
            for i in range(0, len(x) - BATCH + 1, BATCH):
                idx = order[i:i + BATCH]
                yield augment(normalise(x[idx]), strengths, gen), yt[idx]

    def step(xb, yb):
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(batches(), step, budget, device)


def conventional_pipeline(model, x_u8, y, device, budget, workers):
    """The same training driven by DataLoader + PIL + torchvision transforms in worker processes."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class Faces(Dataset):
        def __init__(self):
            self.t = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.RandomAffine(0, translate=(2 / 48, 2 / 48)),
                                         transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

        def __len__(self):
            return len(x_u8)

        def __getitem__(self, i):
            return self.t(Image.fromarray(x_u8[i])), int(y[i])

    loader = DataLoader(Faces(), batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def batches():
        while True:
            for xb, yb in loader:
                yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

    def step(xb, yb):
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(batches(), step, budget, device)


def _timed(batches, step, budget, device):
    """Images/s of whole steps, and of the input pipeline alone, each for about BUDGET (split 3:1) seconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    it = iter(batches)
    for _ in range(2):  # Warm-up: workers start, kernels get picked.
        step(*next(it))
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget * 0.75:
        xb, yb = next(it)
        step(xb, yb)
        n += len(xb)
    sync()
    step_rate = n / (time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget * 0.25:
        xb, _ = next(it)
        n += len(xb)
    sync()
    return step_rate, n / (time.perf_counter() - t0)


@torch.no_grad()
def inference_rate(model, x_u8, device, seconds=3.0):
    from fercore.augment.batch import normalise

    model.eval()
    x = torch.from_numpy(x_u8[:4096]).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(0, len(x), 512):
            model(normalise(x[i:i + 512]))
            n += len(x[i:i + 512])
    sync()
    return n / (time.perf_counter() - t0)


def one(backbone: str, small_stem: bool, budget: float, scale: float) -> dict:
    from fercore.augment.batch import Strengths
    from fercore.classifiers import CLASSIFIERS, build_classifier
    from fercore.config import resolve
    from fercore.data import load

    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load("procedural", scale=scale, seed=0)
    x, y = data.split("train")
    values = {"classifier.backbone": backbone}
    if any(p.name == "small_stem" for p in CLASSIFIERS.get(backbone).params):
        values["classifier.small_stem"] = small_stem
    cfg = resolve(values).classifier
    out = {"backbone": backbone, "small_stem": values.get("classifier.small_stem"), "images": len(x)}
    torch.manual_seed(0)
    model = build_classifier(cfg, 48, 7).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out["fercore_img_s"], out["fercore_input_img_s"] = fercore_pipeline(model, x, y, device, budget,
                                                                        Strengths(flip=0.5, translate=2))
    out["infer_img_s"] = inference_rate(model, x, device)
    out["peak_mb"] = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                      else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    torch.manual_seed(0)
    model = build_classifier(cfg, 48, 7).to(device)
    workers = max(1, min(4, (os.cpu_count() or 2)))
    out["conv_img_s"], out["conv_input_img_s"] = conventional_pipeline(model, x, y, device, budget, workers)
    out["device"] = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=15.0, help="seconds of training per pipeline and backbone")
    p.add_argument("--backbones", default=None, help="comma-separated (default: every registered backbone)")
    p.add_argument("--small-stem", action="store_true", help="use the small-image stem where a backbone has one")
    p.add_argument("--scale", type=float, default=1.0, help="procedural scale; 1.0 gives 28,709 training images")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.small_stem, args.budget, args.scale)))
        return 0
    from fercore.classifiers import CLASSIFIERS
    from fercore.data import load

    load("procedural", scale=args.scale, seed=0)  # Draw and cache once, outside the timed subprocesses.
    names = args.backbones.split(",") if args.backbones else CLASSIFIERS.names()
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--budget", str(args.budget), "--scale", str(args.scale)]
        if args.small_stem:
            cmd.append("--small-stem")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{name}: fercore {r['fercore_img_s']:.0f} img/s, conventional {r['conv_img_s']:.0f} img/s", flush=True)
    if not rows:
        return 1
    print(f"\ndevice: {rows[0]['device']}; batch {BATCH}; {rows[0]['images']} training images of 48x48; "
          f"small stem: {'on where available' if args.small_stem else 'off'}")
    head = (f"{'backbone':<20}{'fercore img/s':>14}{'conv img/s':>11}{'ratio':>7}{'input share':>12}"
            f"{'conv input sh.':>15}{'infer img/s':>12}{'peak MB':>9}")
    print(head)
    for r in rows:
        share = r["fercore_img_s"] / r["fercore_input_img_s"]  # fraction of a step's time spent making its batch
        conv_share = min(1.0, r["conv_img_s"] / r["conv_input_img_s"])
        print(f"{r['backbone']:<20}{r['fercore_img_s']:14.0f}{r['conv_img_s']:11.0f}"
              f"{r['fercore_img_s'] / r['conv_img_s']:7.2f}{share:12.1%}{conv_share:15.1%}"
              f"{r['infer_img_s']:12.0f}{r['peak_mb']:9.0f}")
    print("\ninput share: time to produce a batch / time of a whole training step (fercore: on the device; "
          "conventional: DataLoader with worker processes, measured alone; above 100 % the workers cannot keep up).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
