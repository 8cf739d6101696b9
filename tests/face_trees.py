"""Small image trees shaped like subject-coded facial-expression sets, for the subject-aware split tests.

- ck_tree: CK+-like. ROOT/<class>/S005_001_00000011.png: each subject has a sequence per class it shows, and the
  frames of a sequence are near-identical (one procedural face, a little pixel noise per frame), so a split that
  puts frames of one sequence in train and test makes near-copies the audit counts.
- jaffe_tree: JAFFE-like. ROOT/<class>/KA.AN1.39.png: subject KA, class AN, a few distinct faces per class.

Faces come from fercore.data.procedural's renderer, so distinct faces are far apart in the copy audit's hashes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fercore.data.procedural import _render_split
from fercore.labels import CLASSES

CK_GROUP = r"^S(\d+)_"
JAFFE_GROUP = r"^([A-Z]{2})\."
JAFFE_CODES = {"angry": "AN", "disgust": "DI", "fear": "FE", "happy": "HA", "sad": "SA", "surprise": "SU",
               "neutral": "NE"}


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


# CK+'s own class folders (no neutral), each drawn as the procedural expression of the FER2013 class at the same
# place in RENDERED_AS (contempt as the one left: neutral's face; the split tests only need classes to differ).
CK_PLUS = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
CK_PLUS_RENDERED_AS = ("angry", "neutral", "disgust", "fear", "happy", "sad", "surprise")


def ck_tree(root: Path, subjects: int = 12, classes_per_subject: int = 4, frames: int = 4, size: int = 48,
            seed: int = 0, names: tuple[str, ...] = CLASSES) -> Path:
    """A CK+-like tree under ROOT (returned); subjects * classes_per_subject sequences of FRAMES near-identical
    frames each. Every class is shown by some subjects (each subject takes classes_per_subject classes in turn).
    NAMES: the class folders, FER2013's (default) or CK_PLUS (then contempt and no neutral, as CK+ has)."""
    rendered = CK_PLUS_RENDERED_AS if names == CK_PLUS else names
    rng = np.random.default_rng(seed)
    for s in range(subjects):
        shown = [(s * classes_per_subject + j) % len(names) for j in range(classes_per_subject)]
        faces = _render_split(rng, np.asarray([CLASSES.index(rendered[c]) for c in shown]), size)
        for seq, (cls, face) in enumerate(zip(shown, faces), start=1):
            for f in range(frames):
                noise = rng.integers(-2, 3, size=face.shape)
                frame = np.clip(face.astype(np.int64) + noise, 0, 255).astype(np.uint8)
                _save(root / names[cls] / f"S{s + 5:03d}_{seq:03d}_{f + 1:08d}.png", frame)
    return root


def jaffe_tree(root: Path, subjects: int = 8, per_class: int = 2, size: int = 48, seed: int = 1) -> Path:
    """A JAFFE-like tree under ROOT (returned): every subject shows every class PER_CLASS times, distinct faces."""
    rng = np.random.default_rng(seed)
    codes = [chr(ord("A") + i // 26) + chr(ord("A") + i % 26) for i in range(10, 10 + subjects)]
    number = 1
    for code in codes:
        labels = np.repeat(np.arange(len(CLASSES)), per_class)
        for cls, face, k in zip(labels, _render_split(rng, labels, size), np.tile(np.arange(per_class), len(CLASSES))):
            name = CLASSES[cls]
            _save(root / name / f"{code}.{JAFFE_CODES[name]}{k + 1}.{number}.png", face)
            number += 1
    return root
