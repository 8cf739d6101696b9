"""classifier.weights: start a backbone from a local state-dict file. Nothing is ever downloaded.

Accepted files (read with torch.load(weights_only=True)):
- a state dict of the same backbone (model.state_dict() saved with torch.save), or a dict holding one under "model"
  (a fercore trainer checkpoint) or "state_dict"; "module." and "_orig_mod." prefixes (DataParallel, torch.compile)
  are removed;
- a torchvision ImageNet state dict of the same architecture: when the file's first conv has 3 input channels and the
  model's has 1, the file's kernel is summed over its channels (a grey image x gives the response the RGB image
  (x, x, x) would), and a head whose shape differs (1000 classes) is skipped and keeps its fresh initialisation.

Tolerated and reported with a warning: a first conv whose shape still differs after the channel sum (small_stem's 3x3
against ImageNet's 7x7; it keeps its fresh initialisation), a head of another shape or missing (fresh), missing batch-
norm num_batches_tracked counters. Anything else - a missing file, an unreadable one, keys the model lacks or lacks in
the file, other shape mismatches - is a ConfigError naming classifier.weights, the file and the first mismatching keys.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from fercore.errors import ConfigError

_SHOW = 5  # mismatching keys named per kind in an error message


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
        out[k] = v
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

    # First conv: sum a 3-channel kernel to one channel; leave a conv of another shape fresh.
    conv_keys = [k for k in own if under(k, first_conv)]
    if conv_keys and all(k in file for k in conv_keys):
        wkey = first_conv + ".weight"
        w = file[wkey]
        if w.shape != own[wkey].shape and w.dim() == 4 and w.shape[1] == 3 and own[wkey].shape[1] == 1:
            w = w.sum(dim=1, keepdim=True)
            notes.append(f"{wkey}: summed over its 3 input channels")
        if any((w if k == wkey else file[k]).shape != own[k].shape for k in conv_keys):
            fresh.append(f"first conv {first_conv} ({_shape(file[wkey])} in the file, {_shape(own[wkey])} here)")
        else:
            merged[wkey] = w
            merged.update({k: file[k] for k in conv_keys if k != wkey})
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
    model.load_state_dict(merged)
    for item in fresh:
        notes.append(f"{item} kept fresh")
        warnings.warn(f"classifier.weights: {path}: {item} does not fit; it keeps its random initialisation",
                      stacklevel=2)
    return notes
