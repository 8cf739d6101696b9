"""Shared by the backbones: their common entry params, a dropout-before-head layer, module paths, stage freezing.

Freezing (classifier.freeze_stages) follows one rule for every backbone that offers it: a backbone is a stem
(stage 0), N numbered stages and a head; freeze_stages=K freezes the stem and stages 1..K (K=0 freezes nothing,
K=N freezes everything but the head). Frozen parameters get requires_grad=False, and the modules whose behaviour
depends on train/eval mode (batch norm, dropout, stochastic depth) are switched to eval-only variants: batch-norm
running statistics stay fixed and frozen features are deterministic even while the rest of the model trains.
The switch changes only the Python class of those modules, so state-dict keys are unchanged.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from torch import nn
from torchvision.ops import StochasticDepth

from fercore.params import Param

WEIGHTS = Param("weights", "", help=(
    "local state-dict file (torch.save) to start from, never downloaded; a 3-channel torchvision ImageNet file has "
    "its first conv summed to one channel and a head of another shape skipped; empty: random init"))
IMAGENET_WEIGHTS = Param("weights", "", help=(  # the torchvision backbones': WEIGHTS, or torchvision's ImageNet file
    "'imagenet': torchvision's own ImageNet file for this backbone from $TORCH_HOME/hub/checkpoints/ (never "
    "downloaded); or a local state-dict file (torch.save); a 3-channel ImageNet file has its first conv summed to one "
    "channel with ImageNet's mean and std folded in and its head skipped; empty: random init"))
SMALL_STEM = Param("small_stem", False, help=(
    "3x3 stride-1 first conv and no stem pooling: 48x48 detail is kept (8x less downsampling, ~16x the compute); "
    "off: the torchvision stem with a one-channel first conv"))


def freeze_param(n_stages: int, stages: str) -> Param:
    return Param("freeze_stages", 0, 0, n_stages, help=(
        f"freeze the stem and the first N of {n_stages} stages ({stages}); their batch norm stays in eval mode; "
        f"0 trains everything, {n_stages} only the head (000 froze resnet18's first 2)"))


class DropoutLinear(nn.Linear):
    """The final classifier layer: dropout on its input, then a Linear. Its state-dict keys are a plain Linear's."""

    def __init__(self, in_features: int, out_features: int, dropout: float):
        super().__init__(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return super().forward(self.dropout(x))


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


# Eval-only variants of the mode-dependent layers found in the backbones' stages.
class _EvalOnly:
    def train(self, mode: bool = True):
        return super().train(False)


class FrozenBatchNorm2d(_EvalOnly, nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics and never updates them."""


class FrozenDropout(_EvalOnly, nn.Dropout):
    pass


class FrozenStochasticDepth(_EvalOnly, StochasticDepth):
    pass


_FROZEN_CLASS = {nn.BatchNorm2d: FrozenBatchNorm2d, nn.Dropout: FrozenDropout, StochasticDepth: FrozenStochasticDepth}
_MODE_DEPENDENT = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd, StochasticDepth)


def freeze_modules(modules: Iterable[nn.Module]) -> None:
    """requires_grad=False for every parameter below MODULES, and their mode-dependent layers made eval-only."""
    for root in modules:
        for p in root.parameters():
            p.requires_grad_(False)
        for m in root.modules():
            if type(m) in _FROZEN_CLASS:
                m.__class__ = _FROZEN_CLASS[type(m)]  # A subclass adding only train(): state and keys unchanged.
            elif isinstance(m, _MODE_DEPENDENT) and not isinstance(m, _EvalOnly):
                raise TypeError(f"freeze_modules: no eval-only variant of {type(m).__name__}")
        root.eval()


def freeze_stages(model: nn.Module, stages: Sequence[Sequence[str]], n: int) -> None:
    """Freeze stage 0 (the stem) and stages 1..n, each given as module paths in MODEL; n=0 freezes nothing."""
    if not 0 <= n < len(stages):
        raise ValueError(f"freeze_stages={n}: this backbone has {len(stages) - 1} stages")
    if n:
        freeze_modules(get_module(model, path) for stage in stages[: n + 1] for path in stage)
