"""The conventional input pipeline that fercore's device-resident batches are compared against, shared by
benchmarks/classifier_speed.py and benchmarks/gpu_check.py: a torch DataLoader over PIL images with torchvision
transforms in worker processes, as a typical PyTorch training script feeds a network.

Both generators run until closed; closing one ends its DataLoader iterator and with it the worker processes.
"""
from __future__ import annotations

import numpy as np
import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def conventional_batches(x_u8: np.ndarray, y: np.ndarray, device: torch.device, workers: int, batch: int):
    """Training batches: flip and a 2-pixel shift (fercore's defaults), ToTensor, Normalize, shuffled, last partial
    batch dropped."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class Faces(Dataset):
        def __init__(self):
            self.t = transforms.Compose([transforms.RandomHorizontalFlip(),
                                         transforms.RandomAffine(0, translate=(2 / 48, 2 / 48)),
                                         transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

        def __len__(self):
            return len(x_u8)

        def __getitem__(self, i):
            return self.t(Image.fromarray(x_u8[i])), int(y[i])

    loader = DataLoader(Faces(), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda")
    while True:
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def conventional_infer_batches(x_u8: np.ndarray, device: torch.device, workers: int, batch: int,
                               limit: int | None = None):
    """Inference batches of the first LIMIT images (all by default): ToTensor + Normalize, in order."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    n = len(x_u8) if limit is None else min(limit, len(x_u8))

    class Faces(Dataset):
        t = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

        def __len__(self):
            return n

        def __getitem__(self, i):
            return self.t(Image.fromarray(x_u8[i]))

    loader = DataLoader(Faces(), batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda")
    while True:
        for xb in loader:
            yield xb.to(device, non_blocking=True)
