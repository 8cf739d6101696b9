"""Real faces for the tests: a fixed stratified subset of FER2013 from the shared Kaggle image archive, written in the
three layouts fercore reads.

The archive is ../shared/data/fer2013-images.tar.gz beside the project (CI has it there too), or the path in
FERCORE_FER2013_ARCHIVE. It is unpacked in memory, once per test run; only the subset's files are written, into a
temporary folder. A missing archive fails the tests that need it, naming where it was looked for: it never turns
them into a pass or a skip.

The subset: PER_CLASS faces of every class in each of the archive's splits (train, validation, test), so disgust, the
rare class, is there too. Within each split/class folder the files are ranked by a keyed hash of their names
(SUBSET_KEY) and the first PER_CLASS taken: the same files on every run and machine, whatever numpy's RNG does.

Written three ways (RealFaces):
- tree: the archive's own layout, train/validation/test/<class>/<name>.jpg, the original JPG bytes;
- csv: a FER2013 CSV (emotion,pixels,Usage) of the decoded pixels, emotion in FER2013's order (FER2013_LABELS) and
  Usage Training/PublicTest/PrivateTest for train/validation/test;
- rafdb: a RAF-DB folder, basic/EmoLabel/list_patition_label.txt with RAF-DB's own label numbers (RAFDB_LABELS) and
  basic/Image/aligned/<name>_aligned.jpg, the original JPG bytes. RAF-DB has no validation split: as in RAF-DB, the
  subset's train and validation faces are its train_ images and the reader carves validation out of them; test
  faces are its test_ images.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ARCHIVE_ENV = "FERCORE_FER2013_ARCHIVE"
DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013-images.tar.gz"
PER_CLASS = {"train": 40, "validation": 30, "test": 30}  # faces per class; the archive has 436 / 56 / 55 disgust
SUBSET_KEY = b"fercore-real-faces-1"  # change it and the subset (and SUBSET_DIGEST in the tests) changes
# Written out here, not taken from fercore, so that a reader with a wrong table disagrees with these files.
FER2013_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # emotion 0..6
RAFDB_LABELS = {"surprise": 1, "fear": 2, "disgust": 3, "happy": 4, "sad": 5, "angry": 6, "neutral": 7}
USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}
FACESET_SPLIT = {"train": "train", "validation": "val", "test": "test"}  # archive folder -> FaceSet split


@dataclass(frozen=True)
class Face:
    split: str  # the archive's split folder: train, validation or test
    label: str  # the class folder, one of FER2013_LABELS
    name: str  # the file name in the archive, e.g. Training_10118481.jpg
    jpg: bytes = field(repr=False)

    def pixels(self) -> np.ndarray:
        with Image.open(io.BytesIO(self.jpg)) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)


@dataclass(frozen=True)
class RealFaces:
    archive: Path
    faces: tuple[Face, ...]  # in (split, class, rank) order
    tree: Path
    csv: Path
    rafdb: Path

    def of(self, *splits: str) -> list[Face]:
        return [f for f in self.faces if f.split in splits]

    def digest(self) -> str:
        """Names and bytes of the subset's files, in order: what a test pins so the subset stays the same."""
        h = hashlib.blake2b(digest_size=8)
        for f in self.faces:
            h.update(f"{f.split}/{f.label}/{f.name} {hashlib.blake2b(f.jpg, digest_size=8).hexdigest()}\n".encode())
        return h.hexdigest()


def archive_path() -> Path:
    """The archive, from FERCORE_FER2013_ARCHIVE or beside the project; the calling test fails when it is missing."""
    path = Path(os.environ.get(ARCHIVE_ENV) or DEFAULT_ARCHIVE)
    if not path.is_file():
        where = f"from {ARCHIVE_ENV}" if os.environ.get(ARCHIVE_ENV) else "../shared/data/ beside the project"
        pytest.fail(f"real-data test: the FER2013 image archive is missing: looked for {path} ({where}); put "
                    f"fer2013-images.tar.gz there or set {ARCHIVE_ENV} to its path", pytrace=False)
    return path


def draw_subset(archive: Path, per_class: dict[str, int] = PER_CLASS) -> tuple[Face, ...]:
    """PER_CLASS faces of every class of every split, the same ones every run (see the module docstring)."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.read_bytes()))) as tar:
        by_folder: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] in per_class:
                by_folder.setdefault((parts[1], parts[2]), []).append(member)
        faces = []
        for split in per_class:
            for label in FER2013_LABELS:
                members = by_folder.get((split, label), [])
                assert len(members) >= per_class[split], (
                    f"{archive}: fer2013/{split}/{label}/ holds {len(members)} images, fewer than the "
                    f"{per_class[split]} the subset takes; is it the Kaggle FER2013 image release?")
                members.sort(key=lambda m: hashlib.blake2b(m.name.encode(), key=SUBSET_KEY).digest())
                for m in members[:per_class[split]]:
                    faces.append(Face(split, label, m.name.rsplit("/", 1)[1], tar.extractfile(m).read()))
    return tuple(faces)


def write_tree(root: Path, faces: tuple[Face, ...]) -> Path:
    for f in faces:
        (root / f.split / f.label).mkdir(parents=True, exist_ok=True)
        (root / f.split / f.label / f.name).write_bytes(f.jpg)
    return root


def write_csv(path: Path, faces: tuple[Face, ...]) -> Path:
    lines = ["emotion,pixels,Usage"]
    lines += [f"{FER2013_LABELS.index(f.label)},{' '.join(map(str, f.pixels().ravel()))},{USAGE[f.split]}"
              for f in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_rafdb(root: Path, faces: tuple[Face, ...]) -> Path:
    """ROOT/basic/... (see the module docstring); returns ROOT. Names are numbered per RAF-DB split, as RAF-DB's are."""
    images = root / "basic" / "Image" / "aligned"
    images.mkdir(parents=True)
    lines, number = [], {"train": 0, "test": 0}
    for f in faces:
        split = "test" if f.split == "test" else "train"
        number[split] += 1
        stem = f"{split}_{number[split]:05d}"
        (images / f"{stem}_aligned.jpg").write_bytes(f.jpg)
        lines.append(f"{stem}.jpg {RAFDB_LABELS[f.label]}")
    (root / "basic" / "EmoLabel").mkdir()
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def real_faces(tmp_path_factory) -> RealFaces:
    """The subset, drawn and written once per test run (about a second)."""
    archive = archive_path()
    faces = draw_subset(archive)
    root = tmp_path_factory.mktemp("real-faces")
    return RealFaces(archive, faces, write_tree(root / "fer2013", faces), write_csv(root / "fer2013.csv", faces),
                     write_rafdb(root / "rafdb", faces))
