"""`folder`: faces made elsewhere, served through the generator interface.

002_8bd063b910fbcebc.txt topped up FER2013 and RAF-DB with Stable Diffusion images drawn from prompts per class.
Such images, generated on another machine, are laid out one folder per class under generator.path (`happy/`,
`happiness/`, `Sad/`, ...: the data set's class names, FER2013's through the aliases of
`fercore.labels.canonical_class`; subfolders are searched, hidden
and stray top-level files ignored), and this type reads them once in fit() -- gray or RGB as the data set is,
resized to its size, with the same threaded reader as the class-per-folder data sets -- and draws from them in sample().

The images themselves are the state: save() stores them as one uint8 tensor per class, so a cached generator does
not depend on the folder staying where it was. Training images passed to fit() are not used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fercore.data.folders import _visible, _walk_files, read_images
from fercore.errors import ConfigError, DataError
from fercore.generators import GENERATORS
from fercore.generators.base import Generator, StepHook
from fercore.images import empty_images, image_shape
from fercore.labels import canonical_class
from fercore.params import Param

EXPECTED = "a folder with one subfolder of images per class, e.g. ROOT/happy/*.png, ROOT/sad/*.jpg"
FOLDER_PARAMS = (Param("path", "", help=f"{EXPECTED}; class names or aliases (angry, anger, happiness, ...)"),)


@GENERATORS.register("folder", params=FOLDER_PARAMS,
                     help="images made elsewhere (e.g. Stable Diffusion from prompts, as in 002), one folder per class")
class FolderImages(Generator):
    def __init__(self, values, image_size, num_classes, device, channels=1):
        super().__init__(values, image_size, num_classes, device, channels)
        if not str(values["path"]).strip():
            raise ConfigError(f"generator.path: empty; the folder type needs {EXPECTED}")
        self.images: list[np.ndarray] | None = None  # per class: uint8 n_c x H x W (x 3); None until fit() or load()
        self.steps_done = 0

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, on_step: StepHook | None = None) -> None:
        """Read and check the folder; every image is read now, so a bad file fails here and not mid-sweep."""
        root = Path(self.values["path"]).expanduser()
        if not root.is_dir():
            raise DataError(f"generator.path: {root} is not a folder; expected {EXPECTED}")
        paths: list[list[Path]] = [[] for _ in range(self.num_classes)]
        index = {c: i for i, c in enumerate(self.class_names)}  # the data set's classes
        for class_dir in _visible(root):
            if not class_dir.is_dir():
                continue  # A README or prompt list beside the class folders is not an image.
            name = class_dir.name.strip().lower()
            cls = canonical_class(name) or name
            if cls not in index:
                raise DataError(f"{class_dir}: unknown class folder {class_dir.name!r}; expected one of the data "
                                f"set's classes {', '.join(self.class_names)} (or an alias such as anger, happiness, "
                                "sadness)")
            paths[index[cls]] += sorted(_walk_files(class_dir))  # Alias folders of one class are merged.
        if not any(paths):
            raise DataError(f"{root}: no images found; expected {EXPECTED}")
        self.images = [read_images(p, self.image_size, self.channels) for p in paths]

    def counts(self) -> list[int]:
        """Images held per class."""
        return [len(p) for p in self._ready()]

    def sample(self, n: int, label: int, seed: int) -> np.ndarray:
        """A seeded draw of N images of class LABEL.

        Without replacement while the folder holds at least N images of the class; with fewer, with replacement,
        spread evenly: every image is used floor(N / n_c) times and a seeded subset of them once more, shuffled.
        A class with no images at all is an error, since nothing could stand for it.
        """
        pools = self._ready()
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} is not a class id in 0..{self.num_classes - 1}")
        pool = pools[label]
        if n <= 0:
            return empty_images(self.image_size, self.channels)
        if len(pool) == 0:
            have = ", ".join(f"{self.class_names[c]} {len(p)}" for c, p in enumerate(pools))
            raise DataError(f"{self.values['path']}: no images of class {self.class_names[label]!r} to draw {n} from "
                            f"(images per class: {have}); add a folder for it")
        rng = np.random.default_rng(seed)
        repeats, rest = divmod(n, len(pool))
        idx = np.concatenate([np.tile(np.arange(len(pool)), repeats), rng.choice(len(pool), rest, replace=False)])
        return pool[rng.permutation(idx)]

    def _ready(self) -> list[np.ndarray]:
        if self.images is None:
            raise RuntimeError("folder generator: call fit() or load() before sampling")
        return self.images

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"class{c}": torch.from_numpy(np.ascontiguousarray(p)) for c, p in enumerate(self._ready())}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pools = []
        for c in range(self.num_classes):
            t = state.get(f"class{c}")
            shape = image_shape(self.image_size, self.channels)
            if t is None or t.dtype != torch.uint8 or tuple(t.shape[1:]) != shape:
                raise DataError(f"folder generator: saved state lacks uint8 {'x'.join(map(str, shape))} "
                                f"images for class {c}")
            pools.append(t.cpu().numpy())
        self.images = pools
