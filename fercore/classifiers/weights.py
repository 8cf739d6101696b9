"""classifier.weights: start a backbone from a local state-dict file, or from torchvision's own ImageNet weights
(`imagenet`). Nothing is ever downloaded.

`imagenet` (the word; a file of that name is `./imagenet`) names, for a torchvision backbone, the file torchvision
itself would have downloaded for its default ImageNet weights (its weights enum's DEFAULT, e.g.
ResNet18_Weights.IMAGENET1K_V1 -> resnet18-f37072fd.pth), in the torch hub cache where torchvision would have put it:
torch.hub.get_dir()/checkpoints/, i.e. $TORCH_HOME/hub/checkpoints/ (default ~/.cache/torch/hub/checkpoints/). A
missing file is a ConfigError naming the full path and how to get the file there; the file is then loaded as any
torchvision ImageNet file below. Backbones torchvision has no weights for (linear, cnn3, resemotenet) refuse it.

Accepted files (read with torch.load(weights_only=True)):
- a state dict of the same backbone (model.state_dict() saved with torch.save), or a dict holding one under "model"
  (a fercore trainer checkpoint) or "state_dict"; "module." and "_orig_mod." prefixes (DataParallel, torch.compile)
  are removed, and DenseNet's old "norm.1"-style keys (torchvision's own densenet files have them) are renamed as
  torchvision renames them;
- a torchvision ImageNet state dict of the same architecture: when the file's first conv has 3 input channels and the
  model's has 1, the file's kernel is summed over its channels with ImageNet's input normalisation folded in (below),
  and a head whose shape differs (1000 classes) is skipped and keeps its fresh initialisation. A colour model
  (data.channels 3) keeps the file's 3-channel kernel, each channel with its own normalisation folded in, when the
  file's head does not fit the model's (an ImageNet file, not one saved from a fercore colour model).

Folding the normalisation. An ImageNet network expects each RGB channel c as (p - mean_c) / std_c, p the pixel in
[0, 1]; fercore feeds x = 2p - 1 (fercore.transforms.normalise) on one grey channel. For a grey image the RGB input is
(p, p, p), so the first conv's response is sum_c W_c * ((x + 1) / 2 - mean_c) / std_c + b: the one-channel kernel
sum_c W_c / (2 std_c) and the constant sum_c sum(W_c) * (1/2 - mean_c) / std_c per output channel. The constant
goes into the conv's bias, or, for a conv without one (ResNet, MobileNet, EfficientNet, ShuffleNet, DenseNet), into
the running mean of the batch norm that follows it (subtracted: exact in eval mode; in training mode the batch's own
mean removes a constant anyway). Exact away from the image border: the RGB network pads its normalised input with 0,
which is grey p = mean_c there, while the folded one pads x with 0, grey p = 0.5 - close to ImageNet's means.
A 3-channel file is taken to be normalised as torchvision's ImageNet weights are (IMAGENET_MEAN, IMAGENET_STD).
For colour input x_c = 2 p_c - 1 the same algebra without the sum over c gives the kernel W_c / (2 std_c) per
channel and the same constant.

Tolerated and reported with a warning: a first conv whose shape still differs after the channel sum (small_stem's 3x3
against ImageNet's 7x7; it keeps its fresh initialisation), a head of another shape or missing (fresh), missing batch-
norm num_batches_tracked counters. Anything else - a missing file, an unreadable one, keys the model lacks or lacks in
the file, other shape mismatches - is a ConfigError naming classifier.weights, the file and the first mismatching keys.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from fercore.errors import ConfigError

_SHOW = 5  # mismatching keys named per kind in an error message
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights expect (p - mean) / std per RGB channel
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = "imagenet"  # classifier.weights: torchvision's own ImageNet file for the backbone, from torch's cache
# torchvision's DenseNet files predate its module names: "denselayer1.norm.1.weight" is "denselayer1.norm1.weight"
# (the rename torchvision.models.densenet._load_state_dict applies to them).
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def imagenet_file(builder: str, backbone: str) -> str:
    """The path of torchvision's default ImageNet weights for torchvision.models.BUILDER (backbone BACKBONE) in the
    torch hub cache, where torchvision keeps what it downloads; a ConfigError saying how to put the file there when
    it is absent. Reading the weights enum downloads nothing; only the enum's URL gives torchvision's file name."""
    weights = torchvision.models.get_model_weights(builder).DEFAULT
    name = PurePosixPath(urlparse(weights.url).path).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / name  # get_dir() reads $TORCH_HOME at each call
    if not path.is_file():
        raise ConfigError(
            f"classifier.weights=imagenet: {path} not found (torchvision's {type(weights).__name__}.{weights.name} "
            f"for classifier.backbone={backbone}); nothing is downloaded. Put {name} in {path.parent}/ - on a machine "
            f"with internet, python -c \"import torchvision; torchvision.models.{builder}(weights='{weights.name}')\" "
            f"saves it to that machine's $TORCH_HOME/hub/checkpoints/ (default ~/.cache/torch/hub/checkpoints/); copy "
            f"it from there - or set TORCH_HOME to the folder that holds hub/checkpoints/{name}")
    return str(path)


def fold_imagenet_normalisation(w_rgb: torch.Tensor, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """An RGB first-conv kernel (out x 3 x kh x kw) -> the kernel for fercore's input in [-1, 1] (CHANNELS 1: grey,
    summed to one channel; 3: colour, per channel), and the constant per output channel the normalisation adds (see
    the module docstring)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    w = w_rgb.double()
    kernel = w / (2 * std)
    if channels == 1:
        kernel = kernel.sum(dim=1, keepdim=True)
    constant = (w * (0.5 - mean) / std).sum(dim=(1, 2, 3))
    return kernel.to(w_rgb.dtype), constant.to(w_rgb.dtype)


def _following_batch_norm(model: nn.Module, conv_path: str, channels: int) -> str | None:
    """The first BatchNorm after the module CONV_PATH (in registration order) with CHANNELS features, or None."""
    seen = False
    for name, module in model.named_modules():
        if name == conv_path:
            seen = True
        elif seen and isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_features == channels:
            return name
        elif seen and isinstance(module, nn.Conv2d):
            return None  # another conv first: the constant would not reach a batch norm unchanged
    return None


def _head_fits(file: dict[str, torch.Tensor], own: dict[str, torch.Tensor], head: str | None) -> bool:
    """Whether FILE holds a head of exactly the model's keys and shapes (a file saved from this kind of model)."""
    keys = [k for k in own if head is not None and k.startswith(head + ".")]
    return bool(keys) and all(k in file and file[k].shape == own[k].shape for k in keys)


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOW]) + (f", ... ({len(keys)} in all)" if len(keys) > _SHOW else "")


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"classifier.weights: {path}: no such file")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"classifier.weights: {path}: not a state dict saved with torch.save ({reason})") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise ConfigError(f"classifier.weights: {path}: expected a state dict (parameter name -> tensor), "
                          f"got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        for prefix in ("_orig_mod.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        old = _DENSENET_OLD_KEY.match(k)
        out[old.group(1) + old.group(2) if old else k] = v
    return out


def load_weights(model: nn.Module, path: str, backbone: str, first_conv: str | None = None,
                 head: str | None = None) -> list[str]:
    """Load PATH into MODEL in place; FIRST_CONV and HEAD are module paths given leeway as described above.

    Returns the notes on what was adapted or skipped (also issued as warnings when something stays fresh)."""
    file = read_state_dict(path)
    own = model.state_dict()
    merged = dict(own)
    notes: list[str] = []
    fresh: list[str] = []

    def under(key: str, prefix: str | None) -> bool:
        return prefix is not None and key.startswith(prefix + ".")

    # First conv: sum a 3-channel kernel to one channel, ImageNet's normalisation folded in; leave a conv of another
    # shape fresh.
    conv_keys = [k for k in own if under(k, first_conv)]
    constant: torch.Tensor | None = None  # the folded normalisation's offset per output channel
    if conv_keys and all(k in file for k in conv_keys):
        wkey = first_conv + ".weight"
        w = file[wkey]
        summed = w.shape != own[wkey].shape and w.dim() == 4 and w.shape[1] == 3 and own[wkey].shape[1] == 1
        colour = (w.dim() == 4 and w.shape[1] == 3 and own[wkey].shape[1] == 3
                  and not _head_fits(file, own, head))  # An ImageNet file: its 1000-class head is not the model's.
        if summed or colour:
            w, constant = fold_imagenet_normalisation(w, channels=own[wkey].shape[1])
        if any((w if k == wkey else file[k]).shape != own[k].shape for k in conv_keys):
            fresh.append(f"first conv {first_conv} ({_shape(file[wkey])} in the file, {_shape(own[wkey])} here)")
            constant = None
        else:
            merged[wkey] = w
            merged.update({k: file[k] for k in conv_keys if k != wkey})
            if summed:
                notes.append(f"{wkey}: summed over its 3 input channels with ImageNet's mean and std folded in")
            elif colour:
                notes.append(f"{wkey}: its 3 input channels kept, with ImageNet's mean and std folded in")
        file = {k: v for k, v in file.items() if not under(k, first_conv)}
    else:
        conv_keys = []  # Absent from the file: reported as missing below.

    # Head: load it only where every tensor fits; otherwise (or where the file has none) it stays fresh.
    head_keys = [k for k in own if under(k, head)]
    if head_keys:
        file_head = {k: v for k, v in file.items() if under(k, head)}
        if set(file_head) == set(head_keys) and all(v.shape == own[k].shape for k, v in file_head.items()):
            merged.update(file_head)
        else:
            shapes = ", ".join(f"{k} {_shape(v)}" for k, v in file_head.items()) or "none"
            notes.append(f"head {head} kept fresh (file: {shapes})")
        file = {k: v for k, v in file.items() if not under(k, head)}

    missing = [k for k in own if k not in file and k not in conv_keys and k not in head_keys
               and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in file if k not in own]
    mismatched = [f"{k} ({_shape(v)} in the file, {_shape(own[k])} here)" for k, v in file.items()
                  if k in own and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{len(missing)} missing keys ({_first(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected keys ({_first(unexpected)})" if unexpected else "",
                 f"{len(mismatched)} shape mismatches ({_first(mismatched)})" if mismatched else ""]
        raise ConfigError(f"classifier.weights: {path} does not fit classifier.backbone={backbone}: "
                          + "; ".join(p for p in parts if p))
    merged.update({k: v for k, v in file.items()})
    if constant is not None:
        notes.append(_fold_constant(model, merged, first_conv, constant, path))
    model.load_state_dict(merged)
    for item in fresh:
        notes.append(f"{item} kept fresh")
        warnings.warn(f"classifier.weights: {path}: {item} does not fit; it keeps its random initialisation",
                      stacklevel=2)
    return notes


def _fold_constant(model: nn.Module, merged: dict[str, torch.Tensor], first_conv: str, constant: torch.Tensor,
                   path: str) -> str:
    """Add the folded normalisation's CONSTANT to the first conv's bias, or take it from the running mean of the
    batch norm that follows a conv without one; says where it went."""
    bias = first_conv + ".bias"
    if bias in merged:
        merged[bias] = merged[bias] + constant.to(merged[bias].dtype)
        return f"{bias}: the normalisation's offset added"
    bn = _following_batch_norm(model, first_conv, len(constant))
    if bn is not None:
        mean = bn + ".running_mean"
        merged[mean] = merged[mean] - constant.to(merged[mean].dtype)
        return f"{mean}: the normalisation's offset subtracted"
    warnings.warn(f"classifier.weights: {path}: {first_conv} has no bias and no batch norm after it; ImageNet's "
                  f"mean is not folded in (its std is)", stacklevel=3)
    return f"{first_conv}: the normalisation's offset has nowhere to go and is left out"
