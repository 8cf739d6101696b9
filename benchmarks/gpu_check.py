"""The GPU check: one command, under a hard cap, that measures what fercore claims for a GPU and writes it as JSON.

1. classifier_speed: resnet18 with the small stem, 30 epochs over FER2013's training size (28,709 procedural 48x48
   faces), batch 256, fercore's Trainer as a trial runs it (device-resident uint8 data, bf16 autocast,
   channels_last), with train.compile off and on: wall seconds, images/s, the share of the GPU's bf16 dense peak
   (training FLOPs per image, counted by torch's FlopCounterMode, x images/s / peak) and peak GPU memory; then the
   conventional pipeline (a DataLoader over PIL images with worker processes, the same network) for a few epochs,
   as a ratio per epoch. Goals: under 30 s for the 30 epochs, at least 5x the conventional pipeline.
2. trial_packing: a quickstart-sized sweep (real-only cnn3 and resnet18, and their cGAN top-ups, two seeds each)
   through `fersweep run` at 1, 0.5, 0.25 and 0.125 GPU per trial: trials per hour and mean GPU utilisation (NVML,
   or nvidia-smi, sampled every half second).
3. generators: each generator type's training and sampling images/s, at the sizes the report sweeps give it.
4. cpu_gpu_agreement: the same seed's cnn3 in fp32 (TF32 off) on the CPU and on the GPU: one step's loss and
   gradients from the same weights and batch, the first epoch's loss and the final validation macro-F1, each
   within the tolerance stated in TOLERANCE.

Never hangs: a watchdog ends the run at --cap seconds (default 420) with whatever was measured; each section has its
time slice (SLICES) and is skipped, with a note, when too little of the cap is left; a section that fails is
recorded with its error and the others still run. The JSON is rewritten after every measurement. Nothing is
downloaded. --dry-run runs every code path at tiny sizes on the CPU (logical GPUs for the packing sweep) in about a
minute; tests/test_gpu_check.py runs it.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--cap 420] [--peak-tflops F] [--dry-run]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
FER2013_TRAIN = 28_709

# bf16 dense tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name(); first match wins, so the
# more specific names come first. Others: --peak-tflops.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0))

# Shares of the cap per section, in the order they run: the headline first, the compiled run last (its first epoch
# compiles, for as long as that takes, and so delays nothing). What is left after the slices is kept for the
# table, the JSON and stopping child processes.
SLICES = {"classifier_speed": 0.25, "cpu_gpu_agreement": 0.07, "trial_packing": 0.30, "generators": 0.14,
          "classifier_speed_compiled": 0.20}
MIN_SLICE_S = {"classifier_speed": 20, "cpu_gpu_agreement": 8, "trial_packing": 25, "generators": 10,
               "classifier_speed_compiled": 15}
TABLE_ORDER = ("classifier_speed", "classifier_speed_compiled", "trial_packing", "generators",
               "cpu_gpu_agreement")  # the issue's order
GOALS = {"wall_30_epochs_s": 30.0, "conventional_ratio": 5.0}
# CPU vs GPU in fp32. One step from the same weights and batch differs only by summation order. Whole epochs differ
# also by the batch order and augmentation (torch's CPU and CUDA generators draw different streams from one seed):
# the first-epoch loss and final macro-F1 tolerances are ~4x the spread of CPU runs whose trainer seed alone differed
# (cnn3, 1,437 training and 180 validation images, 5 epochs, trainer seeds 0-3: first-epoch loss within 0.7 %, final
# val macro-F1 within 0.013; after 4 epochs it still spread 0.09, hence 5).
TOLERANCE = {"step_loss_rel": 1e-4, "step_grad_rel": 1e-3, "first_epoch_loss_rel": 0.03, "final_macro_f1_abs": 0.05}


@dataclass(frozen=True)
class Sizes:
    """What each section measures on; FULL on the GPU, DRY for --dry-run on the CPU."""

    backbone: dict  # the classifier speed's network
    scale: float  # procedural set of the classifier speed; 1.0 is FER2013's 28,709 training images
    image_size: int
    train_limit: int | None  # first N training images (the dry run), all when None
    epochs: int
    batch: int
    conventional_epochs: int
    compile_backend: str  # inductor as trials compile; the dry run traces the graphs without generating code
    max_workers: int  # DataLoader workers of the conventional pipeline, at most
    packing_fractions: tuple[float, ...]
    packing_seeds: int
    packing_policies: tuple[str, ...]  # augment.policy values of the grid: none (real only), balance (cGAN top-up)
    packing_fixed: dict = field(default_factory=dict)  # over the quickstart's fixed values
    packing_cpus: int | None = None  # logical CPUs of the packing's Ray instance (None: Ray counts them)
    logical_gpus: int | None = None  # logical GPUs declared to Ray (the dry run has no GPU)
    generator_scale: float = 0.1
    generator_budget: float = 0.6  # share of a type's slice for its timed training (the rest: probe, sampling)
    generator_extra: dict = field(default_factory=dict)  # over the report sweeps' sizes
    samples_per_class: int = 143  # ~1,000 images sampled per type
    agree_scale: float = 0.05
    agree_values: dict = field(default_factory=dict)


FULL = Sizes(backbone={"classifier.backbone": "resnet18", "classifier.small_stem": True}, scale=1.0, image_size=48,
             train_limit=None, epochs=30, batch=256, conventional_epochs=2,
             compile_backend="inductor", max_workers=8, packing_fractions=(1.0, 0.5, 0.25, 0.125), packing_seeds=2,
             packing_policies=("none", "balance"),
             agree_values={"classifier.epochs": 5, "classifier.batch_size": 64})
# The dry run's network is a narrow cnn3: on 2 busy CPU cores one resnet18 step took seconds and its graph ~10 s
# to trace for torch.compile; the code paths are the same.
DRY = Sizes(backbone={"classifier.backbone": "cnn3", "classifier.width": 8}, scale=0.01, image_size=24,
            train_limit=64, epochs=2, batch=32, conventional_epochs=1,
            compile_backend="aot_eager", max_workers=1, packing_fractions=(0.25,), packing_seeds=2,
            packing_policies=("none",),
            packing_fixed={"data.scale": 0.01, "classifier.epochs": 1, "generator.epochs": 1, "generator.width": 4,
                           "generator.latent_dim": 16, "generator.batch_size": 32, "classifier.batch_size": 32},
            packing_cpus=4, logical_gpus=1, generator_scale=0.005, generator_budget=0.0,
            generator_extra={"generator.width": 4, "generator.batch_size": 64, "generator.latent_dim": 16,
                             "generator.resolution": 32, "generator.sampling_steps": 2, "generator.mapping_layers": 1,
                             "generator.attention": False},
            samples_per_class=4, agree_scale=0.01,
            agree_values={"classifier.epochs": 2, "classifier.batch_size": 32, "classifier.width": 8})


class Run:
    """The results so far, the cap and its watchdog: the JSON is rewritten after every measurement, and at the cap
    the watchdog prints the table, writes the JSON, stops the child processes and ends the process."""

    def __init__(self, out: Path, cap_s: float, dry_run: bool):
        self.out, self.cap_s, self.start = out, cap_s, time.monotonic()
        self.lock = threading.RLock()
        self.children: list[subprocess.Popen] = []
        self.current = ""
        self.finished = False  # set once the table is printed: the watchdog then has nothing to do
        self.data = {"dry_run": dry_run, "cap_s": cap_s, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "device": device_name(), "torch": torch.__version__, "sections": {}}
        threading.Thread(target=self._watchdog, daemon=True).start()
        # A last resort should the watchdog thread never run (a C call holding the interpreter): SIGALRM's default
        # action ends the process; the JSON written after the last measurement stays.
        signal.alarm(int(cap_s) + 30)

    def left(self) -> float:
        return self.cap_s - (time.monotonic() - self.start)

    def section(self, name: str) -> dict:
        with self.lock:
            return self.data["sections"].setdefault(name, {"status": "running"})

    def save(self) -> None:
        from fercore.atomic import atomic_write

        with self.lock:
            self.data["wall_s"] = round(time.monotonic() - self.start, 1)
            text = json.dumps(self.data, indent=1, default=_plain)
        atomic_write(self.out, lambda f: f.write(text.encode()))

    def _watchdog(self) -> None:
        while self.left() > 0:
            time.sleep(min(1.0, max(self.left(), 0.01)))
        with self.lock:
            if self.finished:
                return
            self.data["aborted"] = f"the cap of {self.cap_s:.0f} s was reached during {self.current or 'set-up'}"
            sec = self.data["sections"].get(self.current.split(":")[0])  # "classifier_speed: fercore" -> its section
            if sec is not None and sec.get("status") == "running":
                sec["status"], sec["note"] = "partial", "cut off by the cap"
            stop_children(self.children)
            self.save()
            print_table(self.data)
            print(f"gpu_check: {self.data['aborted']}; partial results in {self.out}", file=sys.stderr, flush=True)
            os._exit(3)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def stop_children(children: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL, to every process in each child's session (each child is started as a session leader:
    a packing driver, and the Ray processes and workers it started, which stay in its session)."""
    sessions = {p.pid for p in children}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_members(sessions):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _session_members(sessions):
                time.sleep(0.2)
    for p in children:
        p.poll()  # reap


def _session_members(sessions: set[int]) -> list[int]:
    """Live processes (zombies aside) whose session is one of SESSIONS, this process excepted."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.getsid(int(entry)) in sessions and "State:\tZ" not in Path(f"/proc/{entry}/status").read_text():
                found.append(int(entry))
        except OSError:
            continue
    return found


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores), no CUDA"


def peak_tflops(override: float | None, name: str | None) -> tuple[float | None, str]:
    """The bf16 dense peak of the device called NAME (None: no GPU), and where the figure came from."""
    if override:
        return override, "--peak-tflops"
    if name is None:
        return None, "no GPU; pass --peak-tflops to compute the share anyway"
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"table entry {key!r}"
    return None, f"{name} is not in PEAK_BF16_TFLOPS; pass --peak-tflops"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: torch.device) -> float:
    """CUDA memory allocated at its peak; on the CPU the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# 1. Classifier speed.

def _speed_setup(sizes: Sizes):
    """The classifier speed's config, training and validation images (the data set is cached after its first draw)."""
    from fercore.config import resolve
    from fercore.data import load

    cfg = resolve({**sizes.backbone, "classifier.epochs": sizes.epochs, "classifier.batch_size": sizes.batch,
                   "data.image_size": sizes.image_size,
                   "train.precision": "bf16"})  # what auto is on CUDA; the dry run's CPU autocast runs the same code
    data = load("procedural", scale=sizes.scale, seed=0, image_size=sizes.image_size)
    (x, y), val = data.split("train"), data.split("val")
    if sizes.train_limit:
        x, y = x[:sizes.train_limit], y[:sizes.train_limit]
        val = (val[0][:sizes.train_limit // 2], val[1][:sizes.train_limit // 2])
    return cfg, (x, y), val


def classifier_speed(run: Run, sizes: Sizes, device: torch.device, deadline: float, peak: float | None) -> None:
    """fercore's Trainer with train.compile off, then the conventional pipeline; compile on runs last of all
    (classifier_speed_compiled): its first epoch compiles, and a compile that runs long then delays nothing."""
    from fercore.classifiers import build_classifier, model_layout
    from fercore.train import autocast_dtype

    sec = run.section("classifier_speed")
    cfg, train, val = _speed_setup(sizes)
    torch.manual_seed(0)
    layout = model_layout(build_classifier(cfg.classifier, sizes.image_size, 7), device)
    sec.update(backbone=sizes.backbone, images=len(train[0]), val_images=len(val[0]), image_size=sizes.image_size,
               batch=sizes.batch, epochs=sizes.epochs, precision=str(autocast_dtype(cfg.train.precision, device)),
               layout="channels_last" if layout == torch.channels_last else "contiguous",
               compile_backend=sizes.compile_backend, peak_tflops=peak,
               goal_wall_30_epochs_s=GOALS["wall_30_epochs_s"], goal_conventional_ratio=GOALS["conventional_ratio"])
    sec["train_flops_per_image"] = training_flops_per_image(cfg, sizes.image_size, device)
    run.save()
    total = deadline - time.monotonic()
    run.current = "classifier_speed: fercore"
    sec["fercore"] = {}
    trainer_epochs(cfg, train, val, device, sizes, time.monotonic() + 0.6 * total, False, peak,
                   sec["train_flops_per_image"], sec["fercore"], run)
    run.current = "classifier_speed: conventional"
    sec["conventional"] = {}
    for variant, same_step in (("as_users_run_it", False), ("same_step", True)):
        until = time.monotonic() + (deadline - time.monotonic()) / (1 if same_step else 2)
        sec["conventional"][variant] = conventional_epochs(cfg, train, val, device, sizes, until, same_step)
        _ratios(sec)
        run.save()
    sec["status"] = "ok"


def classifier_speed_compiled(run: Run, sizes: Sizes, device: torch.device, deadline: float,
                              peak: float | None) -> None:
    """The same Trainer run with train.compile on; its results join classifier_speed's."""
    sec = run.section("classifier_speed")
    if "train_flops_per_image" not in sec:
        raise RuntimeError("classifier_speed did not run: nothing to compare the compiled run with")
    cfg, train, val = _speed_setup(sizes)
    sec["fercore_compiled"] = {}
    run.section("classifier_speed_compiled")["note"] = "results in classifier_speed.fercore_compiled"
    trainer_epochs(cfg, train, val, device, sizes, deadline, True, peak, sec["train_flops_per_image"],
                   sec["fercore_compiled"], run)
    _ratios(sec)
    run.section("classifier_speed_compiled")["status"] = "ok"


def _ratios(sec: dict) -> None:
    """Conventional epoch time over fercore's, against compile off and against the faster of off and on."""
    runs = [sec[k]["steady_epoch_s"] for k in ("fercore", "fercore_compiled") if sec.get(k, {}).get("steady_epoch_s")]
    if not runs:
        return
    for conv in (sec.get("conventional") or {}).values():
        conv["ratio_vs_fercore"] = conv["epoch_s"] / runs[0]
        conv["ratio_vs_fercore_best"] = conv["epoch_s"] / min(runs)


def training_flops_per_image(cfg, image_size: int, device: torch.device, batch: int = 8) -> float:
    """FLOPs of one training step (forward and backward) per image, as torch's FlopCounterMode counts them
    (matrix multiplies and convolutions, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    from fercore.classifiers import build_classifier

    model = build_classifier(cfg.classifier, image_size, 7).to(device).train()
    xb = torch.randn(batch, 1, image_size, image_size, device=device)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(xb), torch.zeros(batch, dtype=torch.long, device=device)).backward()
    return counter.get_total_flops() / batch


def trainer_epochs(cfg, train, val, device, sizes: Sizes, until: float, compiled: bool, peak: float | None,
                   flops_per_image: float, out: dict, run: Run) -> None:
    """fercore's Trainer as a trial runs it, epoch by epoch until the budget of epochs or the slice ends, into OUT
    (saved after every epoch, so a run the cap cuts keeps what it measured). A cut run's 30-epoch time is its first
    epoch plus the median of the others for each remaining one."""
    from fercore.classifiers import build_classifier
    from fercore.params import Section
    from fercore.train import Trainer

    train_cfg = Section("train", {**cfg.train.values, "compile": compiled})
    torch.manual_seed(0)
    model = build_classifier(cfg.classifier, sizes.image_size, 7)
    _reset_peak(device)
    t_build = time.perf_counter()
    trainer = Trainer(model, train, val, cfg.classifier, train_cfg, seed=0, device=device,
                      compile_backend=sizes.compile_backend)
    times: list[float] = []
    _sync(device)
    t0 = time.perf_counter()
    out.update(setup_s=t0 - t_build, epochs_run=0, note="first epoch running" + (" (compiling)" if compiled else ""))
    run.save()
    n = len(train[0])
    for result in trainer.epochs():
        _sync(device)
        times.append(time.perf_counter() - t0 - sum(times))
        steady = float(np.median(times[1:])) if len(times) > 1 else times[0]
        wall = sum(times)
        with run.lock:
            out.pop("note", None)
            out.update(epochs_run=len(times), wall_s=wall, first_epoch_s=times[0], steady_epoch_s=steady,
                       wall_30_epochs_s=wall if len(times) == sizes.epochs else times[0] + steady * (sizes.epochs - 1),
                       extrapolated=len(times) < sizes.epochs, images_per_s=n / steady,
                       images_per_s_wall=n * len(times) / wall,
                       first_epoch_loss=out.get("first_epoch_loss", result.metrics["train_loss"]),
                       final_val_macro_f1=result.metrics["val_macro_f1"], peak_mem_mb=_peak_mb(device),
                       share_of_peak=flops_per_image * n / steady / (peak * 1e12) if peak else None)
            if compiled:
                out["compile_s_estimate"] = max(0.0, times[0] - steady)
        run.save()
        if time.monotonic() > until and not result.last:
            break


def conventional_epochs(cfg, train, val, device, sizes: Sizes, until: float, same_step: bool) -> dict:
    """The same network fed by a DataLoader over PIL images (benchmarks/pipelines.py), an epoch being a training
    pass and a validation pass like the Trainer's. As users run it: fp32 in PyTorch's default layout; same_step:
    with the Trainer's autocast and layout, so that only the input pipeline differs."""
    from pipelines import conventional_batches, conventional_infer_batches

    from fercore.classifiers import build_classifier, model_layout
    from fercore.train import autocast_dtype

    torch.manual_seed(0)
    model = build_classifier(cfg.classifier, sizes.image_size, 7)
    layout = model_layout(model, device) if same_step else torch.contiguous_format
    dtype = autocast_dtype(cfg.train.precision, device) if same_step else None
    model = model.to(device, memory_format=layout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.classifier.lr)
    workers = max(1, min(sizes.max_workers, (os.cpu_count() or 2) - 1))
    x, y = train
    steps, val_batch = len(x) // sizes.batch, 1024
    times = []
    for _ in range(sizes.conventional_epochs):
        t0 = time.perf_counter()
        model.train()
        batches = conventional_batches(x, y, device, workers, sizes.batch)
        for _ in range(steps):
            xb, yb = next(batches)
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = torch.nn.functional.cross_entropy(model(xb.contiguous(memory_format=layout)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        batches.close()
        model.eval()
        vb = conventional_infer_batches(val[0], device, workers, val_batch)
        with torch.no_grad():
            for _ in range(math.ceil(len(val[0]) / val_batch)):
                with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    torch.softmax(model(next(vb).contiguous(memory_format=layout)).float(), 1).cpu()
        vb.close()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if time.monotonic() > until:
            break
    return {"epochs_run": len(times), "epoch_s": float(np.median(times)), "images_per_s": len(x) / np.median(times),
            "workers": workers, "precision": str(dtype), "layout": "channels_last" if layout == torch.channels_last
            else "contiguous"}


# 2. Trial packing.

class GpuSampler(threading.Thread):
    """GPU utilisation (%) and memory used (MB) every PERIOD seconds: NVML when nvidia-ml-py is installed, else
    nvidia-smi; `available` is False where neither answers (no NVIDIA GPU)."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self.samples, self.halt = period, [], threading.Event()
        self.source, self._read = self._open()
        self.available = self._read is not None

    def _open(self):
        import importlib

        for module in ("pynvml", "ray._private.thirdparty.pynvml"):  # nvidia-ml-py, or the copy Ray ships
            try:
                nvml = importlib.import_module(module)
                nvml.nvmlInit()
                handle = nvml.nvmlDeviceGetHandleByIndex(0)
                return "nvml", lambda nvml=nvml, handle=handle: (nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                                                                 nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
            except Exception:  # noqa: BLE001 - not installed, or no driver
                continue

        def smi():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits", "-i", "0"], capture_output=True, text=True,
                                 timeout=5)
            util, mem = out.stdout.strip().splitlines()[0].split(",")
            return float(util), float(mem)

        try:
            smi()
            return "nvidia-smi", smi
        except Exception:  # noqa: BLE001 - no nvidia-smi, or it found no GPU
            return "none", None

    def run(self) -> None:
        while self.available and not self.halt.is_set():
            try:
                util, mem = self._read()
                self.samples.append((time.time(), float(util), float(mem)))
            except Exception:  # noqa: BLE001 - one missed sample is no reason to stop
                pass
            self.halt.wait(self.period)

    def window(self, t0: float, t1: float) -> dict:
        inside = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not inside:
            return {"gpu_util_mean": None, "gpu_mem_max_mb": None, "gpu_samples": 0}
        return {"gpu_util_mean": float(np.mean([u for u, _ in inside])),
                "gpu_mem_max_mb": float(max(m for _, m in inside)), "gpu_samples": len(inside)}


def packing_sweep(sizes: Sizes, fraction: float, budget_s: float) -> dict:
    """A quickstart-sized grid: real-only cnn3 and resnet18 and their cGAN top-ups (balance), packing_seeds seeds
    each, every trial to its end (no ASHA), as many at once as FRACTION of a GPU allows."""
    import yaml

    quick = yaml.safe_load((REPO / "sweeps" / "quickstart.yaml").read_text())
    fixed = {**quick["fixed"], "generator.type": "cgan", **sizes.packing_fixed}
    data = {**quick["data"], **{k.split(".", 1)[1]: fixed.pop(k) for k in list(fixed) if k.startswith("data.")}}
    concurrent = max(1, round(1 / fraction))
    return {"name": f"packing_{str(fraction).replace('.', '_')}", "data": data, "sampler": "grid",
            "grid": {"classifier.backbone": ["cnn3", "resnet18"], "augment.policy": list(sizes.packing_policies)},
            "fixed": fixed, "metric": "val_macro_f1", "mode": "max", "scheduler": {"type": "none"},
            "num_samples": 2 * len(sizes.packing_policies), "seeds": sizes.packing_seeds,
            "max_concurrent": concurrent, "max_failures": 0,
            "time_budget_s": max(5, int(budget_s)), "resources": {"cpu": 1, "gpu": fraction}}


def trial_packing(run: Run, sizes: Sizes, deadline: float, work: Path) -> None:
    """One driver process runs the sweep at each fraction in turn (one Ray instance, so Ray's start-up is paid once
    and is not in the trials per hour); this process samples the GPU meanwhile."""
    sec = run.section("trial_packing")
    sampler = GpuSampler()
    sampler.start()
    sec.update(fractions=list(sizes.packing_fractions),
               trials_per_fraction=2 * len(sizes.packing_policies) * sizes.packing_seeds,
               gpu_sampler=sampler.source, logical_gpus=sizes.logical_gpus, runs={})
    if not sampler.available:
        sec["note"] = "no NVIDIA GPU answered NVML or nvidia-smi: utilisation not sampled"
    results = work / "packing.jsonl"
    log = work / "packing.log"
    spec = {"sizes": {k: getattr(sizes, k) for k in ("packing_fractions", "packing_seeds", "packing_policies",
                                                     "packing_fixed", "packing_cpus", "logical_gpus")},
            "work": str(work), "results": str(results), "deadline_epoch": time.time() + deadline - time.monotonic()}
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--packing-driver", json.dumps(spec)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    run.children.append(proc)
    seen, cut = 0, False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            seen = _read_packing(results, seen, sec, sampler, run)
        cut = proc.poll() is None
        if cut:
            sec["note"] = "; ".join(filter(None, (sec.get("note"), "the slice ran out: the driver was stopped")))
    finally:
        stop_children([proc])
        sampler.halt.set()
    _read_packing(results, seen, sec, sampler, run)
    sec["driver_exit"] = proc.returncode
    if not sec["runs"]:
        sec["status"] = "partial" if cut else "error"
        if not cut:
            sec["error"] = f"the driver ended with status {proc.returncode}: " + log.read_text(errors="replace")[-1500:]
        return
    rates = {f: r["trials_per_hour"] for f, r in sec["runs"].items()}
    if rates:
        one = rates.get("1.0")
        sec["speedup_vs_whole_gpu"] = {f: v / one for f, v in rates.items()} if one else None
    sec["status"] = "ok" if len(sec["runs"]) == len(sizes.packing_fractions) else "partial"


def _read_packing(path: Path, seen: int, sec: dict, sampler: GpuSampler, run: Run) -> int:
    if not path.exists():
        return seen
    lines = path.read_text().splitlines()
    for line in lines[seen:]:
        r = json.loads(line)
        r.update(sampler.window(r["start"], r["end"]))
        sec["runs"][str(float(r["fraction"]))] = r
        run.save()
    return len(lines)


def packing_driver(spec: dict) -> int:
    """The driver process of trial_packing: `fersweep run` (fercore.cli.main) at each fraction, in one Ray
    instance, one JSON line per fraction."""
    import ray
    import yaml

    from fercore import cli
    from fercore.results import ResultsStore

    sizes = spec["sizes"]
    fractions = sizes["packing_fractions"]
    work = Path(spec["work"])
    ray.init(num_cpus=sizes["packing_cpus"], num_gpus=sizes["logical_gpus"], include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")
    print(f"Ray resources: {ray.cluster_resources()}", flush=True)
    sized = Sizes(**{**{k: getattr(FULL, k) for k in FULL.__dataclass_fields__}, **sizes})
    for i, fraction in enumerate(fractions):
        left = spec["deadline_epoch"] - time.time() - 5
        budget = left / (len(fractions) - i)
        if budget < 5:
            break
        sweep = packing_sweep(sized, fraction, budget)
        path = work / f"{sweep['name']}.yaml"
        path.write_text(yaml.safe_dump(sweep))
        storage = work / "results"
        start = time.time()
        rc = cli.main(["run", str(path), "--storage", str(storage), "--gpus-per-trial", str(fraction),
                       "--max-concurrent", str(sweep["max_concurrent"])])
        end = time.time()
        rows = ResultsStore(storage / sweep["name"]).trial_rows() if rc == 0 else []
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        done = [r for r in rows if r["status"] == "completed"]
        record = {"fraction": fraction, "concurrent": sweep["max_concurrent"], "exit": rc, "start": start,
                  "end": end, "wall_s": end - start, "trials": len(rows), "statuses": statuses,
                  "trials_per_hour": len(done) / (end - start) * 3600,
                  "mean_trial_s": float(np.mean([r["train_seconds"] for r in done])) if done else None,
                  "reasons": sorted({r["reason"] for r in rows if r["status"] != "completed"})[:3]}
        with open(spec["results"], "a") as f:
            f.write(json.dumps(record) + "\n")
    ray.shutdown()
    return 0


# 3. Generators.

def report_sweep_sizes() -> dict[str, dict]:
    """Per generator type, the generator.* values of the first report sweep (sweeps/*.yaml but the quickstart) that
    uses it: its fixed values, and a grid key's first value. Epochs are left to the time slice."""
    import yaml

    sizes: dict[str, dict] = {}
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        if path.stem == "quickstart":
            continue
        sweep = yaml.safe_load(path.read_text())
        values = {k: v for k, v in (sweep.get("fixed") or {}).items() if k.startswith("generator.")}
        values.update({k: v[0] for k, v in (sweep.get("grid") or {}).items() if k.startswith("generator.")})
        types = (sweep.get("grid") or {}).get("generator.type") or [values.get("generator.type")]
        for gtype in types:
            if gtype and gtype not in sizes:
                sizes[gtype] = {k: v for k, v in values.items() if k not in ("generator.type", "generator.epochs")}
                sizes[gtype]["from"] = path.name
    return sizes


def generators(run: Run, sizes: Sizes, device: torch.device, deadline: float, work: Path) -> None:
    """benchmarks/generators.py's run_type per type (one probe epoch, then as many epochs as its share of the slice
    holds, then ~1,000 samples), with the report sweeps' sizes instead of that benchmark's CPU-sized SETTINGS."""
    import generators as bench

    from fercore.config import section_params
    from fercore.data import load
    from fercore.generators import GENERATORS

    sec = run.section("generators")
    bench.SAMPLES_PER_CLASS = sizes.samples_per_class
    data = load("procedural", scale=sizes.generator_scale, seed=0)
    sec.update(train_images=len(data.split("train")[0]), samples=7 * sizes.samples_per_class, types={})
    from_sweeps = report_sweep_sizes()
    names = GENERATORS.names()
    for i, gtype in enumerate(names):
        run.current = f"generators: {gtype}"
        share = (deadline - time.monotonic()) / (len(names) - i)
        if share < 1:
            sec["types"][gtype] = {"status": "skipped", "note": "the slice ran out"}
            continue
        own = dict(from_sweeps.get(gtype, {}))
        source = own.pop("from", "defaults (no report sweep uses it)")
        # The benchmark's CPU settings are put back to the defaults unless the sweep sets them.
        defaults = {f"generator.{p.name}": p.default for p in section_params("generator", gtype)}
        extra = {k: defaults[k] for k in bench.SETTINGS.get(gtype, {}) if k in defaults}
        extra.update(own)
        extra.update({k: v for k, v in sizes.generator_extra.items() if k in defaults})
        if gtype == "folder":
            extra["generator.path"] = str(bench.write_folder_tree(work / "folder", sizes.generator_scale))
        try:
            r = bench.run_type(gtype, data, share * sizes.generator_budget, device, extra)
            sec["types"][gtype] = {
                "status": "ok", "sizes_from": source, "epochs": r["epochs"], "train_s": r["train_s"],
                "train_images_per_s": None if math.isnan(r["train_img_s"]) else r["train_img_s"],
                "sample_images_per_s": 1000 / r["sample_s_per_1000"],
                "settings": {k: v for k, v in extra.items() if k != "generator.path"}}
        except Exception as e:  # noqa: BLE001 - one type's failure is its row, not the section's end
            sec["types"][gtype] = {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
        run.save()
    bad = [t for t, r in sec["types"].items() if r["status"] != "ok"]
    sec["status"] = "ok" if not bad else "partial"


# 4. CPU and GPU agree.

class _StrictFp32:
    """TF32 off on CUDA while fp32 is compared (torch lets cuDNN convolutions use TF32 by default)."""

    def __enter__(self):
        self.kept = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.kept


def cpu_gpu_agreement(run: Run, sizes: Sizes, device: torch.device, deadline: float) -> None:
    from fercore.transforms import normalise
    from fercore.classifiers import build_classifier
    from fercore.config import resolve
    from fercore.data import load
    from fercore.train import Trainer

    sec = run.section("cpu_gpu_agreement")
    cfg = resolve({"classifier.backbone": "cnn3", "train.precision": "fp32", **sizes.agree_values})
    data = load("procedural", scale=sizes.agree_scale, seed=0)
    cpu = torch.device("cpu")
    sec.update(backbone="cnn3", precision="fp32, TF32 off", devices=["cpu", str(device)],
               train_images=len(data.split("train")[0]), epochs=cfg.classifier.epochs, tolerance=TOLERANCE)
    if device.type == "cpu":
        sec["note"] = "no GPU: both runs on the CPU (the code path, not the comparison)"
    with _StrictFp32():
        # One step from the same weights and batch, in eval mode: no dropout mask to draw, batch norm's statistics
        # fixed.
        torch.manual_seed(0)
        model = build_classifier(cfg.classifier, 48, 7).eval()
        xb = normalise(torch.from_numpy(data.split("train")[0][:128]))
        yb = torch.from_numpy(data.split("train")[1][:128]).long()
        step = []
        for dev in (cpu, device):
            m = copy.deepcopy(model).to(dev)
            loss = torch.nn.functional.cross_entropy(m(xb.to(dev)), yb.to(dev))
            loss.backward()
            step.append((loss.item(), torch.cat([p.grad.flatten().cpu() for p in m.parameters()])))
        (l_a, g_a), (l_b, g_b) = step
        sec["step_loss_rel"] = abs(l_a - l_b) / abs(l_a)
        sec["step_grad_rel"] = float((g_a - g_b).norm() / g_a.norm())
        # Whole runs of the same seed.
        runs = {}
        for dev in (cpu, device):
            run.current = f"cpu_gpu_agreement: {dev.type}"
            torch.manual_seed(cfg.seed)
            trainer = Trainer(build_classifier(cfg.classifier, 48, 7), data.split("train"), data.split("val"),
                              cfg.classifier, cfg.train, cfg.seed, dev)
            t0 = time.perf_counter()
            results = list(trainer.epochs())
            runs[f"{dev.type}_{len(runs)}"] = {"first_epoch_loss": results[0].metrics["train_loss"],
                                               "final_val_macro_f1": results[-1].metrics["val_macro_f1"],
                                               "seconds": time.perf_counter() - t0}
        (a, b) = runs.values()
        sec["runs"] = runs
        sec["first_epoch_loss_rel"] = abs(a["first_epoch_loss"] - b["first_epoch_loss"]) / a["first_epoch_loss"]
        sec["final_macro_f1_abs"] = abs(a["final_val_macro_f1"] - b["final_val_macro_f1"])
    sec["within_tolerance"] = {k: bool(sec[k] <= tol) for k, tol in TOLERANCE.items()}
    sec["agree"] = all(sec["within_tolerance"].values())
    sec["status"] = "ok"


# The table.

def _fmt(v, spec: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:{spec}}" if isinstance(v, (int, float)) else str(v)


def table_rows(data: dict) -> list[tuple[str, str, str, str]]:
    """(section, measure, value, goal or note) for every section, in the issue's order."""
    rows = []
    sections = data["sections"]
    for name in TABLE_ORDER:
        sec = sections.get(name)
        if name == "classifier_speed_compiled" and (sec or {}).get("status") == "ok":
            continue  # its rows are classifier_speed's
        if sec is None:
            rows.append((name, "-", "not run", ""))
            continue
        if sec.get("status") in ("skipped", "error"):
            rows.append((name, sec["status"], "", (sec.get("note") or sec.get("error") or "")[-120:]))
            continue
        if name == "classifier_speed":
            flops = sec.get("train_flops_per_image")
            rows.append((name, "train GFLOP / image", _fmt(flops / 1e9 if flops else None, ".3g"),
                         f"peak {_fmt(sec.get('peak_tflops'), '.0f')} TFLOP/s bf16"))
            for key, label in (("fercore", "fercore"), ("fercore_compiled", "fercore + compile")):
                r = sec.get(key)
                if not r:
                    continue
                if "wall_30_epochs_s" not in r:
                    rows.append((name, label, "-", r.get("note", "")))
                    continue
                cut = f" (est. from {r['epochs_run']})" if r["extrapolated"] else ""
                rows.append((name, f"{label}: {sec['epochs']} epochs, s", _fmt(r["wall_30_epochs_s"], ".2f") + cut,
                             f"goal < {GOALS['wall_30_epochs_s']:.0f} s"))
                share = r.get("share_of_peak")
                rows.append((name, f"{label}: images/s, share of peak", f"{r['images_per_s']:.0f}, "
                             + (f"{share:.1%}" if share is not None else "-"),
                             f"peak mem {_fmt(r['peak_mem_mb'], '.0f')} MB"))
                if "compile_s_estimate" in r:
                    rows.append((name, f"{label}: compile, s", _fmt(r["compile_s_estimate"]), "first epoch - steady"))
            for variant, conv in (sec.get("conventional") or {}).items():
                rows.append((name, f"conventional ({variant}): epoch s", _fmt(conv["epoch_s"], ".2f"),
                             f"ratio {_fmt(conv.get('ratio_vs_fercore'), '.1f')}x / best "
                             f"{_fmt(conv.get('ratio_vs_fercore_best'), '.1f')}x, goal >= "
                             f"{GOALS['conventional_ratio']:.0f}x"))
        elif name == "trial_packing":
            for f, r in sec.get("runs", {}).items():
                rows.append((name, f"{f} GPU/trial x{r['concurrent']}: trials/h",
                             f"{r['trials_per_hour']:.0f} ({r['statuses']})",
                             f"GPU util {_fmt(r.get('gpu_util_mean'), '.0f')} %"))
        elif name == "generators":
            for gtype, r in sec.get("types", {}).items():
                if r["status"] != "ok":
                    rows.append((name, gtype, r["status"], (r.get("error") or r.get("note", ""))[-120:]))
                    continue
                rows.append((name, f"{gtype}: train / sample img/s",
                             f"{_fmt(r['train_images_per_s'], '.0f')} / {_fmt(r['sample_images_per_s'], '.0f')}",
                             f"sizes: {r['sizes_from']}"))
        elif name == "cpu_gpu_agreement":
            for key, tol in TOLERANCE.items():
                ok = sec.get("within_tolerance", {}).get(key)
                rows.append((name, key, _fmt(sec.get(key), ".2e"),
                             f"tolerance {tol:g}: {'ok' if ok else 'NOT met' if ok is False else '-'}"))
        if sec.get("note"):
            rows.append((name, "note", "", sec["note"][-120:]))
    return rows


def print_table(data: dict) -> None:
    rows = table_rows(data)
    widths = [max(len(r[i]) for r in rows + [("section", "measure", "value", "")]) for i in range(3)]
    print(f"\nGPU check on {data['device']} (torch {data['torch']}){'; DRY RUN' if data['dry_run'] else ''}; "
          f"{data.get('wall_s', 0):.0f} s of a {data['cap_s']:.0f} s cap")
    print(f"{'section':<{widths[0]}}  {'measure':<{widths[1]}}  {'value':>{widths[2]}}  goal / note")
    for sec, measure, value, note in rows:
        print(f"{sec:<{widths[0]}}  {measure:<{widths[1]}}  {value:>{widths[2]}}  {note}")
    if data.get("aborted"):
        print(f"ABORTED: {data['aborted']}")
    sys.stdout.flush()


# The command.

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json", help="JSON file to write (rewritten after every measurement)")
    p.add_argument("--cap", type=float, default=420.0, help="hard cap on the whole run, seconds (default 7 minutes)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's bf16 dense peak, TFLOP/s, where PEAK_BF16_TFLOPS does not know it")
    p.add_argument("--dry-run", action="store_true", help="every code path at tiny sizes on the CPU")
    p.add_argument("--sections", default=",".join(SLICES), help="comma-separated subset, in the run order")
    p.add_argument("--packing-driver", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.packing_driver:
        return packing_driver(json.loads(args.packing_driver))
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run to check the code paths on the CPU",
              file=sys.stderr)
        return 2
    sizes = DRY if args.dry_run else FULL
    device = torch.device("cpu") if args.dry_run else torch.device("cuda")
    run = Run(Path(args.out), args.cap, args.dry_run)
    peak, peak_source = peak_tflops(args.peak_tflops, torch.cuda.get_device_name() if device.type == "cuda" else None)
    run.data.update(peak_tflops=peak, peak_source=peak_source, sizes=sizes.__dict__)
    run.save()
    wanted = [s for s in SLICES if s in args.sections.split(",")]
    reserve = args.cap * (1 - sum(SLICES.values())) if not args.dry_run else 5.0
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for i, name in enumerate(wanted):
            # A section's slice: its share of the cap, or more when earlier sections finished early.
            rest = sum(SLICES[s] for s in wanted[i:])
            slice_s = (run.left() - reserve) * SLICES[name] / rest
            run.current = name
            sec = run.section(name)
            if slice_s < MIN_SLICE_S[name] * (0.25 if args.dry_run else 1):
                sec.update(status="skipped", note=f"{run.left():.0f} s of the cap left: too little for this section")
                run.save()
                continue
            deadline = time.monotonic() + slice_s
            t0 = time.perf_counter()
            try:
                if name == "classifier_speed":
                    classifier_speed(run, sizes, device, deadline, peak)
                elif name == "classifier_speed_compiled":
                    classifier_speed_compiled(run, sizes, device, deadline, peak)
                elif name == "cpu_gpu_agreement":
                    cpu_gpu_agreement(run, sizes, device, deadline)
                elif name == "generators":
                    generators(run, sizes, device, deadline, Path(tmp))
                elif name == "trial_packing":
                    trial_packing(run, sizes, deadline, Path(tmp))
            except Exception as e:  # noqa: BLE001 - a failed section is recorded; the others still run
                traceback.print_exc()
                sec.update(status="error", error=f"{type(e).__name__}: {e}"[:1000])
            sec["seconds"] = time.perf_counter() - t0
            sec["slice_s"] = slice_s
            run.save()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    run.current = "the end"
    with run.lock:
        signal.alarm(0)
        run.finished = True
        run.save()
        print_table(run.data)
        print(f"wrote {args.out}")
    failed = [n for n, s in run.data["sections"].items() if s.get("status") == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
