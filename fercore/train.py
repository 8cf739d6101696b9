"""The classifier training loop: the whole training set lives on the device as uint8; batches are indexed,
normalised and augmented there. One epoch at a time is yielded to the caller, who reports it. The weights of the
best validation epoch are kept, so the caller can restore them before the one read of the test split, and the whole
trainer state can be saved and restored so a paused or restarted trial resumes exactly where it stopped."""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercore.atomic import atomic_write
from fercore.transforms import Strengths, augment, normalise
from fercore.classifiers import model_layout
from fercore.params import Section
from fercore.errors import ConfigError
from fercore.labels import CLASSES
from fercore.metrics.classification import class_weights
from fercore.metrics.metric_main import Read, calc_metric


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    metrics: dict[str, float]  # train_loss, lr, val_loss, val_accuracy, val_macro_f1, ...
    last: bool  # no epoch follows: the budget is spent or early stopping ended training


def pick_device(name: str) -> torch.device:
    """train.device as a torch device; asking for CUDA where there is none is the config's error, said before any
    tensor is placed (torch's own error would come later, as a traceback from deep inside a trial)."""
    if name == "cuda" and not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA device or driver is visible"
        raise ConfigError(f"train.device=cuda: CUDA is not available here ({why}; CUDA_VISIBLE_DEVICES="
                          f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}); use train.device=auto or cpu")
    flush_denormals()
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def flush_denormals() -> bool:
    """Make the CPU treat denormal floats as zero, where it can (x86 with SSE3; torch says whether it did). Why: as a
    small CNN trains, activations and gradients drift into the denormal range, where each operation is done in
    microcode: on FER2013 a convolution over denormal inputs ran 100x slower, and report 003's CNN went from ~45 s to
    ~135 s an epoch after epoch 4, with the same losses to three decimals once flushed (issue 22). Values below
    1.2e-38 carry nothing a classifier needs. Process-wide; every trial and generator calls it through
    pick_device."""
    return torch.set_flush_denormal(True)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype train.precision runs the forward pass in on DEVICE, or None for plain fp32. bf16 keeps fp32's
    range, so no loss scaling is needed; auto is bf16 on CUDA (tensor cores) and fp32 on the CPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _optimizer(model: nn.Module, cfg: Section) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]  # Frozen stages take no optimizer state.
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: Section, steps_per_epoch: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    return None


class Trainer:
    def __init__(self, model: nn.Module, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 classifier: Section, train_cfg: Section, seed: int, device: torch.device, num_classes: int = 7,
                 compile_backend: str = "inductor", class_names: tuple[str, ...] | None = None):
        """compile_backend: torch.compile's backend when train.compile is on (benchmarks/gpu_check.py's dry run
        traces with aot_eager, which makes no code and so needs no compiler warm-up). class_names: the data set's
        classes, which name the per-class validation figures (default: FER2013's, or class<i> beyond them)."""
        self.device = device
        self.cuda = device.type == "cuda"
        self.layout = model_layout(model, device)  # as the network's builder recorded it
        self.amp_dtype = autocast_dtype(train_cfg.precision, device)
        self.model = model.to(device, memory_format=self.layout)
        # Compile only the forward pass; state dicts stay those of the plain module.
        self.forward = torch.compile(self.model, backend=compile_backend) if train_cfg.compile else self.model
        self.cfg, self.strengths = classifier, Strengths.from_section(train_cfg)
        self.x = torch.from_numpy(np.ascontiguousarray(train[0])).to(device)
        self.y = torch.from_numpy(np.asarray(train[1])).long().to(device)
        self.val_x = torch.from_numpy(np.ascontiguousarray(val[0])).to(device)
        self.val_y = np.asarray(val[1])
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names is not None else default_class_names(num_classes)
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        torch.manual_seed(seed)  # Dropout draws from the global generator; its state is saved with the trainer.
        self.gen = torch.Generator(device=device).manual_seed(seed)
        # The training set's class weights (a mixed set's counts, synthetic images included): the loss it optimises,
        # which early stopping on val_loss and the plateau schedule then judge too (val_weighted_loss).
        self.class_weights = class_weights(train[1], num_classes) if classifier.class_weights else None
        weight = torch.tensor(self.class_weights, dtype=torch.float32, device=device) \
            if self.class_weights is not None else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=classifier.label_smoothing)
        self.steps_per_epoch = steps_per_epoch(len(self.x), classifier.batch_size)
        self.opt = _optimizer(self.model, classifier)
        self.sched = _scheduler(self.opt, classifier, self.steps_per_epoch)
        self.epoch = 0
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.stopped = False

    @property
    def steps(self) -> int:
        """Optimiser steps taken so far: every epoch takes steps_per_epoch (a last batch of one image is skipped)."""
        return self.epoch * self.steps_per_epoch

    def _autocast(self):
        # The same autocast on either device (CPU autocast runs train.precision=bf16 there too).
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    def epochs(self) -> Iterator[EpochResult]:
        while self.epoch < self.cfg.epochs and not self.stopped:
            train_loss = self._train_one_epoch()
            val = self.evaluate(self.val_x, self.val_y, "val")
            self.epoch += 1
            # The validation loss of the loss trained on: weighted by class when classifier.class_weights is on.
            val_loss = val.get("val_weighted_loss", val["val_loss"])
            score = early_stop_score(val, self.cfg.early_stop)
            if score > self.best_score:
                self.best_score, self.best_epoch, self.bad_epochs = score, self.epoch, 0
                self.best_state = copy.deepcopy(self.model.state_dict())
            else:
                self.bad_epochs += 1
            if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.sched.step(val_loss)
            self.stopped = 0 < self.cfg.patience <= self.bad_epochs
            metrics = {"train_loss": train_loss, "lr": self.opt.param_groups[0]["lr"], **val}
            yield EpochResult(self.epoch, metrics, last=self.stopped or self.epoch == self.cfg.epochs)

    def restore_best(self) -> None:
        """Load the weights of the epoch that early stopping judged best."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def _train_one_epoch(self) -> float:
        self.model.train()
        n, bs = len(self.x), self.cfg.batch_size
        order = torch.randperm(n, generator=self.gen, device=self.device)
        total = torch.zeros((), device=self.device)  # Summed on the device: no sync per batch.
        seen = 0
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            if len(idx) < 2:  # Batch norm cannot train on a single image.
                continue
            xb = augment(normalise(self.x[idx]), self.strengths, self.gen).contiguous(memory_format=self.layout)
            with self._autocast():
                loss = self.loss_fn(self.forward(xb), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.sched is not None and not isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.sched.step()
            total += loss.detach() * len(idx)
            seen += len(idx)
        return float(total) / max(seen, 1)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        self.model.eval()
        out = []
        for i in range(0, len(images), batch_size):
            xb = normalise(images[i:i + batch_size]).contiguous(memory_format=self.layout)
            with self._autocast():
                out.append(F.softmax(self.forward(xb).float(), dim=1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.num_classes), np.float32)

    def evaluate(self, images: torch.Tensor | np.ndarray, labels: np.ndarray, split: str) -> dict[str, float]:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        figures = metrics_from_proba(self.predict_proba(images), labels, split, self.class_weights, self.class_names,
                                     self.cfg.label_smoothing)
        # The split's absent classes are the data set's, the same every epoch: the trial row names the test split's.
        figures.pop(f"{split}_absent_classes", None)
        return figures

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed trainer needs to continue exactly: weights, optimizer, schedule, RNGs, counters."""
        return {
            "model": self.model.state_dict(), "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict() if self.sched is not None else {},
            "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.cuda else torch.zeros(0, dtype=torch.uint8),
            "epoch": self.epoch, "best_score": float(self.best_score), "best_epoch": self.best_epoch,
            "best_state": self.best_state or {}, "bad_epochs": self.bad_epochs, "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None and state["sched"]:
            self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        if self.cuda and len(state["cuda_rng"]):
            torch.cuda.set_rng_state(state["cuda_rng"])
        self.epoch, self.best_score, self.best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
        self.best_state = state["best_state"] or None
        self.bad_epochs, self.stopped = state["bad_epochs"], state["stopped"]

    def save(self, path) -> None:
        atomic_write(path, lambda f: torch.save(self.state_dict(), f))

    def load(self, path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))


def early_stop_score(metrics: dict[str, Any], early_stop: str | None) -> float | None:
    """The score an epoch's validation METRICS give under classifier.early_stop (higher is better; the first epoch
    with the best one is kept): val_macro_f1, or minus the validation loss of the loss trained on (weighted by class
    when classifier.class_weights is on). None when the metrics lack it."""
    if early_stop == "val_macro_f1":
        return metrics.get("val_macro_f1")
    loss = metrics.get("val_weighted_loss", metrics.get("val_loss"))
    return None if loss is None else -loss


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Optimiser steps an epoch over IMAGES training images takes: a last batch of one image is skipped (batch norm
    cannot train on it)."""
    return max(1, images // batch_size + (images % batch_size >= 2))


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """FER2013's names for up to seven classes; class<i> for a model with more and no names given."""
    return CLASSES[:num_classes] if num_classes <= len(CLASSES) else tuple(f"class{i}" for i in range(num_classes))


def metrics_from_proba(proba: np.ndarray, labels: np.ndarray, split: str, weights: np.ndarray | None = None,
                       class_names: tuple[str, ...] | None = None, label_smoothing: float = 0.0) -> dict[str, Any]:
    """The registered classification metric (fercore.metrics.metric_main: cross-entropy, then the classification
    figures, per class named by CLASS_NAMES) of predicted class probabilities: one code path for the epochs and the
    test read. With class WEIGHTS, also `<split>_weighted_loss` after the loss: the loss trained on, as torch's
    CrossEntropyLoss(weight=, label_smoothing=) computes it, sum_i [(1 - e) w_(y_i) nll_i + e / K sum_c w_c
    (-log p_ic)] / sum_i w_(y_i) for LABEL_SMOOTHING e and K classes (`<split>_loss` stays the plain mean of nll,
    comparable across trials)."""
    labels = np.asarray(labels)
    names = tuple(class_names) if class_names is not None else default_class_names(proba.shape[1])
    figures = calc_metric("classification", read=Read(split, labels, proba, names))
    if weights is None:
        return figures
    eps = 1e-12  # A probability of exactly 0 for the true class would make the loss infinite.
    log_p = np.log(np.asarray(proba, dtype=np.float64) + eps)
    nll = -log_p[np.arange(len(labels)), labels]
    class_w = np.asarray(weights, dtype=np.float64)
    w = class_w[labels]
    smoothed = -(log_p * class_w).sum(1) / proba.shape[1]  # the uniform target's share, weighted per class
    per_image = (1 - label_smoothing) * w * nll + label_smoothing * smoothed
    loss_key = f"{split}_loss"
    weighted = {f"{split}_weighted_loss": float(per_image.sum() / w.sum()) if w.sum() > 0 else float("nan")}
    return {loss_key: figures.pop(loss_key), **weighted, **figures}


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """train.deterministic: inside, torch picks deterministic kernels (an op that has none warns rather than fails,
    so a backbone with one such op still trains) and cuDNN neither benchmarks nor picks nondeterministic
    algorithms; cuBLAS gets the fixed workspace it needs to be repeatable. The process's previous settings are
    restored on leaving, so a sweep worker's next trial runs as its own config says."""
    if not enabled:
        yield
        return
    kept = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    # Read by cuBLAS when its handle is made: a process whose first CUDA work is this trial's gets it.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(kept[0], warn_only=kept[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = kept[2], kept[3]
        if kept[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
