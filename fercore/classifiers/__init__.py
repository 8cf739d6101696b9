"""Classifier backbones, registered by name. Each entry builds an nn.Module from config values; none trains itself."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fercore.errors import ConfigError
from fercore.params import Section
from fercore.registry import Entry, Registry


@dataclass(frozen=True)
class ClassifierEntry(Entry):
    # target: (classifier section, image size, number of classes, input channels) -> network.
    # oneDNN's CPU convolutions ran 15-25 % faster on channels_last tensors for most backbones here (training steps
    # at batch 128, 48x48, 2 cores); ConvNeXt's permutes and LayerNorm made it ~7 % slower instead.
    channels_last_cpu: bool = True


CLASSIFIERS: Registry[ClassifierEntry] = Registry("backbone", "classifier.backbone", ClassifierEntry)


# The attribute build_classifier sets on each network: whether its entry trains faster channels_last on the CPU.
CHANNELS_LAST_CPU = "fercore_channels_last_cpu"


def memory_format(backbone: str, device: torch.device) -> torch.memory_format:
    """The layout the backbone trains fastest in on DEVICE: channels_last on CUDA (bf16 tensor cores) and on the
    CPU where the entry says so, the default contiguous layout otherwise."""
    return _layout(CLASSIFIERS.get(backbone).channels_last_cpu, device)


def model_layout(model: nn.Module, device: torch.device) -> torch.memory_format:
    """The layout MODEL trains fastest in on DEVICE, as build_classifier recorded it on the network: a trainer handed
    a model needs no registry to know it. A network built elsewhere (the reference cnn3) gets an entry's default."""
    return _layout(getattr(model, CHANNELS_LAST_CPU, ClassifierEntry.channels_last_cpu), device)


def _layout(channels_last_cpu: bool, device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" or channels_last_cpu else torch.contiguous_format


def build_classifier(cfg: Section, image_size: int, num_classes: int, in_channels: int = 1) -> nn.Module:
    """The network CFG names for IN_CHANNELS x image_size x image_size inputs (1 gray, 3 colour), checked by one
    forward pass of a blank image: a backbone that downsamples an image of this size to nothing is a ConfigError,
    not a failure in the first training step."""
    entry = CLASSIFIERS.get(cfg.backbone)
    model = entry.target(cfg, image_size, num_classes, in_channels)
    setattr(model, CHANNELS_LAST_CPU, entry.channels_last_cpu)  # The layout travels with the network (model_layout).
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as e:
        hint = " (classifier.small_stem=true downsamples less)" if getattr(cfg, "small_stem", True) is False else ""
        raise ConfigError(f"data.image_size={image_size} is too small for classifier.backbone={cfg.backbone}{hint}: "
                          f"{str(e).splitlines()[0]}") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, num_classes):
        raise RuntimeError(f"classifier.backbone={cfg.backbone} gave outputs of shape {tuple(out.shape)}")
    return model


# Register the built-in backbones.
from fercore.classifiers import builtin as _builtin  # noqa: E402,F401
