"""The classifier training loop: the whole training set lives on the device as uint8; batches are indexed,
normalised and augmented there. One epoch at a time is yielded to the caller, who reports it; the weights of the
best validation epoch are kept so the caller can restore them before the one read of the test split."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercore.augment.batch import augment, normalise
from fercore.config import Section
from fercore.metrics import classification_metrics


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    metrics: dict[str, float]  # train_loss, val_loss, val_accuracy, val_macro_f1, ...
    last: bool  # no epoch follows


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class Trainer:
    def __init__(self, model: nn.Module, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 classifier: Section, train_cfg: Section, seed: int, device: torch.device):
        self.model = model.to(device)
        self.device = device
        self.cfg, self.train_cfg = classifier, train_cfg
        self.x = torch.from_numpy(np.ascontiguousarray(train[0])).to(device)
        self.y = torch.from_numpy(train[1]).long().to(device)
        self.val_x = torch.from_numpy(np.ascontiguousarray(val[0])).to(device)
        self.val_y = val[1]
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=classifier.lr, weight_decay=classifier.weight_decay)
        self.best_score = -np.inf
        self.best_state: dict[str, torch.Tensor] | None = None

    def epochs(self) -> Iterator[EpochResult]:
        total = self.cfg.epochs
        for epoch in range(1, total + 1):
            train_loss = self._train_one_epoch()
            metrics = {"train_loss": train_loss, **self.evaluate(self.val_x, self.val_y, "val")}
            if metrics["val_macro_f1"] > self.best_score:
                self.best_score = metrics["val_macro_f1"]
                self.best_state = copy.deepcopy(self.model.state_dict())
            yield EpochResult(epoch, metrics, last=epoch == total)

    def restore_best(self) -> None:
        """Load the weights of the epoch with the best validation macro-F1."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def _train_one_epoch(self) -> float:
        self.model.train()
        n, bs = len(self.x), self.cfg.batch_size
        order = torch.randperm(n, generator=self.gen, device=self.device)
        total, seen = 0.0, 0
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            if len(idx) < 2:  # Batch norm cannot train on a single image.
                continue
            xb = augment(normalise(self.x[idx]), self.train_cfg.flip, self.train_cfg.translate, self.gen)
            loss = F.cross_entropy(self.model(xb), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        return total / max(seen, 1)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        self.model.eval()
        out = [F.softmax(self.model(normalise(images[i:i + batch_size])), dim=1).float().cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, 7), np.float32)

    def evaluate(self, images: torch.Tensor | np.ndarray, labels: np.ndarray, split: str) -> dict[str, float]:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return metrics_from_proba(self.predict_proba(images), labels, split)


def metrics_from_proba(proba: np.ndarray, labels: np.ndarray, split: str) -> dict[str, float]:
    """Cross-entropy and the classification metrics of predicted class probabilities."""
    eps = 1e-12  # A probability of exactly 0 for the true class would make the loss infinite.
    loss = float(-np.mean(np.log(proba[np.arange(len(labels)), labels] + eps))) if len(labels) else float("nan")
    return {f"{split}_loss": loss, **classification_metrics(labels, proba.argmax(1), split)}
