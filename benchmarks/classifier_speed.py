"""Classifier training and inference speed: fercore's device-resident pipeline against a conventional one.

For each backbone, on a FER2013-sized training set (28,709 procedural 48x48 faces), in the same run:
- fercore: the uint8 training set lives on the device; each batch is indexed, normalised and augmented there
  (flip + shift) by fercore.train.Trainer's own code path;
- conventional: a torch DataLoader over PIL images with torchvision transforms (RandomHorizontalFlip,
  RandomAffine translate, ToTensor, Normalize) and worker processes, feeding the same network and batch size.
Both pipelines train a copy of the same network, timed in alternating rounds (the median round of each counts, so
drift in the machine's speed reaches both alike; a DataLoader's workers live only during its own rounds), then
predict the same way. Also printed: the share of a training
step spent on input handling (input pipeline alone vs whole step) and the peak memory of the trial's process
(resident memory on CPU, with both pipelines' networks; CUDA memory on a GPU). Each backbone runs in its own
subprocess so the peak is its own.

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

from pipelines import conventional_batches as _conventional_batches
from pipelines import conventional_infer_batches as _conventional_infer_batches
from pipelines import sync as _sync

BATCH = 128


ROUNDS = 3  # Timed rounds per pipeline, alternating a b b a a b; the median round counts.
MIN_STEPS = 4  # A timed round lasts at least this many steps, however slow the network.


def _step_fn(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(xb, yb):
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def fercore_batches(x_u8, y, device, strengths, layout):
    """fercore's device-resident batches: the uint8 set on the device, indexed, normalised and augmented there, in
    the memory layout the trainer picks for the backbone."""
    from fercore.transforms import augment, normalise

    x = torch.from_numpy(x_u8).to(device)
    yt = torch.from_numpy(y).long().to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    while True:
        order = torch.randperm(len(x), generator=gen, device=device)
        for i in range(0, len(x) - BATCH + 1, BATCH):
            idx = order[i:i + BATCH]
            yield augment(normalise(x[idx]), strengths, gen).contiguous(memory_format=layout), yt[idx]


def _train_rate(make_batches, step, seconds, device) -> float:
    """Images/s of whole training steps (batch making included) over at least SECONDS and MIN_STEPS steps.

    The input pipeline is made for this round and closed after it: a DataLoader's worker processes exist only
    while its own pipeline is timed, so they never take CPU from the other pipeline's round. Two warm-up steps
    (workers start, the queue fills) are not timed; the queue is full again at the end, so the round pays for as
    many batches as it consumed."""
    batches = make_batches()
    for _ in range(2):
        step(*next(batches))
    _sync(device)
    n = steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < MIN_STEPS:
        xb, yb = next(batches)
        step(xb, yb)
        n, steps = n + len(xb), steps + 1
    _sync(device)
    rate = n / (time.perf_counter() - t0)
    batches.close()
    return rate


def _input_rate(make_batches, seconds, device) -> float:
    """Images/s of the input pipeline alone (after one warm-up batch)."""
    batches = make_batches()
    next(batches)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(batches)[0])
    _sync(device)
    rate = n / (time.perf_counter() - t0)
    batches.close()
    return rate


def _alternate(measure_a, measure_b, rounds: int = ROUNDS) -> tuple[float, float]:
    """Median of ROUNDS measurements of each, taken in the order a b b a a b ...: drift in the machine's speed
    (other load, clock changes) reaches both alike, and neither gains from going first."""
    a, b = [], []
    for r in range(rounds):
        order = ((measure_a, a), (measure_b, b)) if r % 2 == 0 else ((measure_b, b), (measure_a, a))
        for measure, out in order:
            out.append(measure())
    return float(np.median(a)), float(np.median(b))


INFER_BATCH = 512


def _infer_rate(model, make_batches, device, seconds) -> float:
    batches = make_batches()
    n = 0
    with torch.no_grad():
        model(next(batches))  # Warm-up: workers start, the queue fills.
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            xb = next(batches)
            model(xb)
            n += len(xb)
    _sync(device)
    rate = n / (time.perf_counter() - t0)
    batches.close()
    return rate


def conventional_batches(x_u8, y, device, workers):
    """The same batches from a DataLoader over PIL images with torchvision transforms in worker processes."""
    return _conventional_batches(x_u8, y, device, workers, BATCH)


def conventional_infer_batches(x_u8, device, workers):
    """Conventional: a DataLoader over PIL images with ToTensor + Normalize in worker processes."""
    return _conventional_infer_batches(x_u8, device, workers, INFER_BATCH, limit=4096)


def fercore_infer_batches(x_u8, device, layout):
    """fercore: the uint8 images already on the device, normalised there batch by batch."""
    from fercore.transforms import normalise

    x = torch.from_numpy(x_u8[:4096]).to(device)
    while True:
        for i in range(0, len(x), INFER_BATCH):
            yield normalise(x[i:i + INFER_BATCH]).contiguous(memory_format=layout)


def one(backbone: str, small_stem: bool, budget: float, scale: float) -> dict:
    from fercore.transforms import Strengths
    from fercore.classifiers import CLASSIFIERS, build_classifier, memory_format
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
    workers = max(1, min(4, (os.cpu_count() or 2)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Two copies of the same network, one per pipeline, each trained by its own optimizer.
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_classifier(cfg, 48, 7).to(device).train())
    strengths = Strengths(flip=0.5, translate=2)
    # fercore's network in the layout its Trainer uses; the conventional one in PyTorch's default, as users run it.
    layout = memory_format(backbone, device)
    models[0] = models[0].to(memory_format=layout)
    out["layout"] = "channels_last" if layout == torch.channels_last else "contiguous"
    fer_step, conv_step = _step_fn(models[0]), _step_fn(models[1])
    fer = lambda: fercore_batches(x, y, device, strengths, layout)  # noqa: E731
    conv = lambda: conventional_batches(x, y, device, workers)  # noqa: E731
    seconds = budget / (2 * ROUNDS)
    out["fercore_img_s"], out["conv_img_s"] = _alternate(lambda: _train_rate(fer, fer_step, seconds, device),
                                                         lambda: _train_rate(conv, conv_step, seconds, device))
    out["fercore_input_img_s"], out["conv_input_img_s"] = _alternate(lambda: _input_rate(fer, seconds / 2, device),
                                                                     lambda: _input_rate(conv, seconds / 2, device), 1)
    for m in models:
        m.eval()
    out["infer_img_s"], out["conv_infer_img_s"] = _alternate(
        lambda: _infer_rate(models[0], lambda: fercore_infer_batches(x, device, layout), device, seconds / 2),
        lambda: _infer_rate(models[1], lambda: conventional_infer_batches(x, device, workers), device, seconds / 2))
    out["peak_mb"] = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                      else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    out["device"] = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    return out


def main() -> int:
    global ROUNDS, MIN_STEPS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=30.0,
                   help="seconds of timed training per backbone, both pipelines together (slow networks take longer)")
    p.add_argument("--backbones", default=None, help="comma-separated (default: every registered backbone)")
    p.add_argument("--small-stem", action="store_true", help="use the small-image stem where a backbone has one")
    p.add_argument("--scale", type=float, default=1.0, help="procedural scale; 1.0 gives 28,709 training images")
    p.add_argument("--rounds", type=int, default=ROUNDS, help="timed rounds per pipeline (the median counts)")
    p.add_argument("--min-steps", type=int, default=MIN_STEPS, help="training steps per timed round, at least")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    ROUNDS, MIN_STEPS = args.rounds, args.min_steps
    if args.one:
        print(json.dumps(one(args.one, args.small_stem, args.budget, args.scale)))
        return 0
    from fercore.classifiers import CLASSIFIERS
    from fercore.data import load

    load("procedural", scale=args.scale, seed=0)  # Draw and cache once, outside the timed subprocesses.
    names = args.backbones.split(",") if args.backbones else CLASSIFIERS.names()
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--budget", str(args.budget), "--scale", str(args.scale),
               "--rounds", str(args.rounds), "--min-steps", str(args.min_steps)]
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
          f"small stem: {'on where available' if args.small_stem else 'off'}; training rates: median of "
          f"{args.rounds} alternating rounds per pipeline")
    head = (f"{'backbone':<20}{'layout':>14}{'train img/s':>12}{'conv':>8}{'ratio':>7}{'input share':>12}{'conv input':>11}"
            f"{'infer img/s':>12}{'conv':>8}{'ratio':>7}{'peak MB':>9}")
    print(head)
    for r in rows:
        share = r["fercore_img_s"] / r["fercore_input_img_s"]  # fraction of a step's time spent making its batch
        conv_share = r["conv_img_s"] / r["conv_input_img_s"]
        print(f"{r['backbone']:<20}{r['layout']:>14}{r['fercore_img_s']:12.0f}{r['conv_img_s']:8.0f}"
              f"{r['fercore_img_s'] / r['conv_img_s']:7.2f}{share:12.1%}{conv_share:11.1%}"
              f"{r['infer_img_s']:12.0f}{r['conv_infer_img_s']:8.0f}{r['infer_img_s'] / r['conv_infer_img_s']:7.2f}"
              f"{r['peak_mb']:9.0f}")
    print("\nlayout: the memory format fercore's trainer uses for the backbone on this device (the conventional "
          "pipeline keeps PyTorch's default, contiguous).")
    print("input share: time to produce a batch / time of a whole training step (fercore: on the device; "
          "conventional: DataLoader with worker processes, measured alone; above 100 % the workers cannot keep up).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
