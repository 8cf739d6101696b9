"""Copy audit that survives augmentation: does a training image (synthetic or real) copy a test or validation
image after a flip, a shift of up to SHIFT pixels, both, a +-15 % brightness or contrast change, JPEG, a slight
blur, or a rotation or crop-and-resize such as fercore's own train.rotate and train.crop make?

Why: the plain DCT hash (leakage.py) puts a horizontally flipped copy or a copy shifted by one pixel ~44 bits from
its source, farther than distinct faces, so an augmented copy of a test image escaped it (issue 16); the windows
below then missed every copy rotated by 5 degrees or cropped to 92 % and resized back on FER2013 (issue 22).

How (`CopyIndex`, `nearest_copy`):
- Windows: every image is hashed on its central crop, SHIFT pixels in from each side (the same 256-bit DCT hash
  as leakage.phash). A reference (test, validation or training) image is hashed at 2 x 25 windows: itself and its
  mirror image, each cropped at offsets -SHIFT..SHIFT in x and y. A copy shifted by (dx, dy) with any fill at its
  border has a central crop equal, pixel for pixel, to one of those windows, so an integer shift or flip costs 0
  bits; brightness and contrast change only the DC term and the scale of the AC terms, which the hash ignores
  (up to clipping at 0 and 255).
- Comparing every candidate with 50 hashes of every reference image is 50 times today's audit, so a shortlist
  first: thumbnails (the central crop area-averaged to THUMB x THUMB, mean removed, unit norm: blind to
  brightness and contrast) of the candidate against the two mirror images of each reference image; the SHORTLIST
  best-correlated (reference, mirror) pairs are then compared with all their 25 windows. A candidate's distance
  is the smallest over those windows; a copy is within COPY_THRESHOLD bits.
- Alignment (copy_geometry, since issue 22): a candidate no window matches is aligned to a few of its shortlisted
  reference images by a fitted rotation, scale and shift, and its distance to the aligned reference image's hash
  counts too. The index keeps the gray images for it.
- Feature neighbours (`feature_neighbours`): cosine similarity of a classifier's features (the reference
  classifier's penultimate layer) above FEATURE_THRESHOLD, reported apart from copies: a feature neighbour may be
  the same face re-photographed, or two faces the classifier cannot tell apart.

Calibration on real faces (benchmarks/leakage_calibration.py --data FER2013, 48 x 48 gray, 28709 training, 3589
validation, 3589 test images; 2 shared CPU cores), COPY_THRESHOLD 16 kept; copies planted from 700 test faces,
each looked up in the whole test split, caught at <= 16 bits, windows alone (before) -> with alignment:
- flips, shifts of 1-2 px (zero or edge fill), flip + shift, brightness and contrast +-12 %: 700 -> 700 of 700,
  0-10 bits; JPEG quality 60 700 -> 700 (at most 14 bits); Gaussian blur 0.6 px 700 -> 700 (at most 16).
- rotations by 3, 5, -5, 10 degrees and flip + 5 degrees: 0-1 -> 698-699; crops keeping 96 % or 92 % of each side
  (centre or corner) resized back: 0 -> 698-699; a 5-degree rotation then JPEG 60: 0 -> 698 (the copies found lie
  0 bits from their source in the median, 2-4 at the 99th percentile, 12 after JPEG).
- as fercore.transforms makes them: train.rotate 5: 206 -> 700; train.rotate 15: 64 -> 693; train.crop 0.1 and
  0.2: 214 and 108 -> 699; rotate 15 + crop 0.2 + flip 0.5: 3 -> 689.
- not caught: larger geometry (train.rotate 30: 440 of 700, beyond MAX_ANGLE and the shortlist; train.crop 0.4:
  597, zooms past copy_geometry.SCALES), other warps (perspective, elastic), erasing, heavy noise, and many of
  FER2013's own duplicates with a watermark or a local edit: of the ~450 training faces 17-48 bits from a test
  face, the ones viewed were mostly the same photograph; the threshold stays at 16, calibrated on distinct faces.
- distinct faces: FER2013's splits share real duplicates, so a face's nearest match in another split is not
  always another face. Distinct here: the 28176 training faces the windows do not flag against the test split.
  The alignment flags 764 of them (2.7 %); 141 of those, drawn at random and near the threshold, viewed side by
  side: every one the same photograph re-cropped, re-toned or watermarked, none two faces. False positives ~0,
  95 % upper bound 16 of 28176 (5.8e-4, rule of three over the 141 judged); the windows' 0 by this definition
  (48 of their own flags at 9-16 bits viewed: one photograph each).
- FER2013's own cross-split copies (split_leakage: train -> test, train -> val, val -> test): 533, 451, 67 ->
  1297, 1296, 164.
- speed, the 28709 training faces against the test split, two runs as busy as the 2 shared cores were: windows
  9.9 / 16.6 s (2905 / 1728 a second), with alignment 17.4 / 25.5 s (1654 / 1124 a second, 1.8x / 1.5x; only
  the candidates no window matches are aligned, 0.3 ms each); plain hash 1.4 / 2.7 s. The index build is the
  same hashing (14-55 s for 3589 images, once per data set and split, cached) and keeps the gray images too:
  23 -> 31 MiB for the test split.

Calibration on procedural faces (the same benchmark without --data; fercore.data.load("procedural", scale=0.1,
seed=0), 48 x 48: 359 test, 359 validation, 2873 training images):
- planted copies of all 359 test images under each of alterations.ALTERATIONS (exact, flip, shift 1 and 2 px with
  zero or edge fill, flip + shift 1 and 2, brightness and contrast x1.15 and x0.85, flip + shift + brightness /
  contrast): 0 bits for flips, shifts and the x1.15 tones (hashed on the reference side), at most 6 bits for x0.85;
  every copy found with its source; the plain hash (leakage.audit) caught none of the flipped or shifted ones.
  Rotations by 5 degrees (and flipped), a 92 % crop and a 96 % corner crop: 357, 357, 347, 358 of 359 found (none
  before); procedural faces look alike, and the shortlist's thumbnails rank another face above a zoomed copy's
  source more often than on real faces.
- distinct faces against the test split's windows and alignment: training split min 30 bits (1st percentile 40),
  validation split min 28 (windows alone: 32), 2873 faces of seed 1 min 32.
- COPY_THRESHOLD = 16: 10 bits above the farthest planted window copy, 12 below the closest distinct pair; false
  positives on distinct images 0 of 6105 (95 % upper bound 4.9e-4, rule of three).
- FEATURE_THRESHOLD = 0.999 cosine of the reference classifier's features (cnn3, 6 epochs on the same set):
  distinct faces reach 0.998 (training split vs test: median 0.984, 107 of 2873 at or above 0.995), while
  altered copies range 0.88-1.0 (flip median 0.991, 2-px shift median 0.964). On procedural faces the feature space
  does not separate copies from distinct faces, so the threshold sits above every distinct pair (0 false
  positives of 5746) and catches only the nearest copies; the hash audit is the one that counts copies.
- Speed, 20 000 candidates against 4 000 reference images: plain audit 3.2 s, windows 11.8 s, with alignment
  22.9 s (1.9x the windows: more procedural pairs pass the alignment's gates), given the reference index, whose
  build takes 37 s once per data set and split (cached by fercore.cache.split_hashes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fercore.images import to_gray
from fercore.metrics.alterations import brightness, contrast
from fercore.metrics.leakage import NO_MATCH, WORDS, _box_matrix, phash, popcount

SHIFT = 2  # largest shift, in pixels, that a copy may have in x and y
SIDE = 2 * SHIFT + 1  # windows per axis
VARIANTS = 2 * SIDE * SIDE  # mirror x window offsets: 50
THUMB = 8  # side of the shortlist's thumbnails
THUMB_OFFSETS = (-1, 1)  # thumbnail windows per axis: every shift in -2..2 lies within a pixel of one of them
SHORTLIST = 64  # (reference image, mirror) pairs per candidate compared hash by hash
COPY_THRESHOLD = 16  # bits of 256 at or below which a candidate copies a reference image; see the docstring
# Brightening and raising contrast clip bright pixels at 255, which the hash does see (28 bits at x1.15 on
# procedural faces), so reference windows are hashed at those tones too; darkening and lowering contrast clip little.
TONES = (lambda x: x, lambda x: brightness(x, 1.15), lambda x: contrast(x, 1.15))
FEATURE_THRESHOLD = 0.999  # cosine at or above which two images are feature neighbours; see the docstring
CHUNK = 512  # candidates per block: 512 x 8 thumbnails x 4k reference images of float32 = 64 MiB

Features = Callable[[np.ndarray], np.ndarray]  # uint8 N x H x W images -> N x D features


def _check(images: np.ndarray) -> np.ndarray:
    # Colour images are hashed by their luma: a copy is a copy in any colour, and one index serves both layouts.
    images = to_gray(np.asarray(images)) if np.ndim(images) == 4 else np.asarray(images)
    if images.ndim != 3 or images.shape[1] <= 2 * SHIFT + 8 or images.shape[2] <= 2 * SHIFT + 8:
        raise ValueError(f"expected N x H x W grayscale images larger than {2 * SHIFT + 8} pixels, got {images.shape}")
    return images


def _crop(images: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
    """The central crop, SHIFT pixels in from each side, moved by (dy, dx)."""
    h, w = images.shape[1:]
    return images[:, SHIFT + dy:h - SHIFT + dy, SHIFT + dx:w - SHIFT + dx]


def thumbnails(images: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
    """float32 N x THUMB^2: central crops (moved by dy, dx) area-averaged, mean removed, unit norm (zero for a
    flat image)."""
    crop = _crop(images, dy, dx).astype(np.float32)
    rows, cols = _box_matrix(crop.shape[1], THUMB), _box_matrix(crop.shape[2], THUMB)
    small = np.einsum("ph,nhw,qw->npq", rows.astype(np.float32), crop, cols.astype(np.float32),
                      optimize=True).reshape(len(crop), -1)
    small -= small.mean(1, keepdims=True)
    norm = np.linalg.norm(small, axis=1, keepdims=True)
    return small / np.where(norm > 0, norm, 1)


def candidate_hashes(images: np.ndarray) -> np.ndarray:
    """uint64 N x WORDS: hashes of the central crops."""
    return phash(_crop(_check(images)))


@dataclass(frozen=True)
class CopyIndex:
    """What a reference split is hashed into once (fercore.cache.split_hashes keeps one per data set and split)."""

    hashes: np.ndarray  # uint64 N x 2 x len(TONES)*SIDE*SIDE x WORDS: per image, per mirror, per tone and window
    thumbs: np.ndarray  # float32 N x 2 x len(THUMB_OFFSETS)^2 x THUMB^2: per image, per mirror, per thumb window
    images: np.ndarray  # uint8 N x H x W: the gray images, which the geometric stage (copy_geometry) aligns
    image_shape: tuple[int, int]  # H, W of the reference images; candidates must match

    def __len__(self) -> int:
        return len(self.hashes)

    def arrays(self) -> dict[str, np.ndarray]:
        """What to save; CopyIndex.from_arrays rebuilds it."""
        return {"hashes": self.hashes, "thumbs": self.thumbs, "images": self.images,
                "image_shape": np.array(self.image_shape)}

    @classmethod
    def from_arrays(cls, arrays) -> "CopyIndex":
        return cls(np.asarray(arrays["hashes"]), np.asarray(arrays["thumbs"]), np.asarray(arrays["images"]),
                   tuple(int(v) for v in arrays["image_shape"]))


def build_index(images: np.ndarray) -> CopyIndex:
    """Hash every window of every reference image and its mirror image."""
    images = _check(images)
    n = len(images)
    hashes = np.empty((n, 2, len(TONES), SIDE * SIDE, WORDS), dtype=np.uint64)
    thumbs = np.empty((n, 2, len(THUMB_OFFSETS) ** 2, THUMB * THUMB), dtype=np.float32)
    for m, view in enumerate((images, images[:, :, ::-1])):
        for k, (dy, dx) in enumerate((dy, dx) for dy in THUMB_OFFSETS for dx in THUMB_OFFSETS):
            thumbs[:, m, k] = thumbnails(view, dy, dx)
        for t, tone in enumerate(TONES):
            toned = tone(view)
            for k, (dy, dx) in enumerate((dy, dx) for dy in range(-SHIFT, SHIFT + 1) for dx in range(-SHIFT, SHIFT + 1)):
                hashes[:, m, t, k] = phash(_crop(toned, dy, dx))
    return CopyIndex(hashes.reshape(n, 2, -1, WORDS), thumbs, np.ascontiguousarray(images), tuple(images.shape[1:]))


def _as_index(reference) -> CopyIndex:
    return reference if isinstance(reference, CopyIndex) else build_index(reference)


def shortlist(candidates: np.ndarray, index: CopyIndex, size: int = SHORTLIST) -> np.ndarray:
    """int64 N x size (reference image, mirror) pairs, as 2 * image + mirror, whose thumbnails (best of their
    thumb windows) correlate best with each candidate's thumbnail, best first."""
    thumbs = thumbnails(candidates)
    pairs = 2 * len(index)
    size = min(size, pairs)
    ref = index.thumbs.reshape(-1, index.thumbs.shape[-1])
    out = np.empty((len(thumbs), size), dtype=np.int64)
    for i in range(0, len(thumbs), CHUNK):
        corr = (thumbs[i:i + CHUNK] @ ref.T).reshape(-1, pairs, index.thumbs.shape[2]).max(2)
        top = np.argpartition(-corr, size - 1, axis=1)[:, :size]
        order = np.argsort(-np.take_along_axis(corr, top, 1), axis=1, kind="stable")
        out[i:i + CHUNK] = np.take_along_axis(top, order, 1)
    return out


def nearest_copy(candidates: np.ndarray, reference, size: int = SHORTLIST, geometry: bool = True,
                 threshold: int = COPY_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate image, the reference image it is closest to under flips, shifts and tones (the windows),
    and the distance in bits (NO_MATCH with no reference). reference: images or a CopyIndex. geometry: candidates
    farther than `threshold` from every window are also aligned to their best-correlated shortlisted references by
    rotation, scale and shift (copy_geometry); their distance is the smaller of the two stages'."""
    candidates = _check(candidates)
    index = _as_index(reference)
    n = len(candidates)
    best = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, NO_MATCH, dtype=np.uint16)
    if n == 0 or len(index) == 0:
        return best, dist
    if candidates.shape[1:] != index.image_shape:
        raise ValueError(f"candidate images are {candidates.shape[1:]}, reference images {index.image_shape}")
    windows = index.hashes.reshape(2 * len(index), -1, WORDS)
    cand = candidate_hashes(candidates)
    for i in range(0, n, CHUNK):
        short = shortlist(candidates[i:i + CHUNK], index, size)  # c x s pairs of (image, mirror)
        win = windows[short]  # c x s x tones * windows x WORDS
        c = cand[i:i + CHUNK]
        d = popcount(win[..., 0] ^ c[:, None, None, 0]).astype(np.uint16)
        for w in range(1, WORDS):
            d += popcount(win[..., w] ^ c[:, None, None, w])
        d = d.min(2)  # c x s: the best window of each shortlisted pair
        pick = d.argmin(1)
        rows = np.arange(len(d))
        best[i:i + CHUNK], dist[i:i + CHUNK] = short[rows, pick] // 2, d[rows, pick]
        far = np.flatnonzero(dist[i:i + CHUNK] > threshold) if geometry else []
        if len(far):
            from fercore.metrics import copy_geometry  # torch: loaded when an audit runs, not with fercore.metrics

            found, d = copy_geometry.geometric_nearest(candidates[i + far], c[far], index, short[far])
            nearer = d < dist[i + far]
            at = i + far[nearer]
            best[at], dist[at] = found[nearer] // 2, d[nearer]
    return best, dist


def copy_audit(candidates: np.ndarray, reference, threshold: int = COPY_THRESHOLD, show: int = 10,
               geometry: bool = True) -> dict:
    """Candidates that copy a reference image under a flip, shift, brightness or contrast change, or (geometry)
    a small rotation or crop: count, reference_count (distinct reference images copied), candidate_index /
    reference_index / distance of every flagged candidate, and the first `show` as (candidate, reference, distance)
    pairs."""
    index, dist = nearest_copy(candidates, reference, geometry=geometry, threshold=threshold)
    flagged = np.flatnonzero(dist <= threshold)
    return {"count": int(len(flagged)), "reference_count": int(len(np.unique(index[flagged]))),
            "candidate_index": flagged, "reference_index": index[flagged],
            "distance": dist[flagged].astype(np.int64),
            "pairs": [(int(c), int(index[c]), int(dist[c])) for c in flagged[:show]]}


def feature_similarity(candidate_features: np.ndarray, reference_features: np.ndarray) -> np.ndarray:
    """Each candidate's largest cosine similarity with a reference feature vector (-1 with no reference)."""
    out = np.full(len(candidate_features), -1.0)
    if len(candidate_features) == 0 or len(reference_features) == 0:
        return out  # before normalising: an empty array has no row length to reshape to (real_ratio 0 keeps no real)
    a = _unit(candidate_features)
    b = _unit(reference_features)
    for i in range(0, len(a), CHUNK):
        out[i:i + CHUNK] = (a[i:i + CHUNK] @ b.T).max(1)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(len(x), -1)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def feature_neighbours(candidate_features: np.ndarray, reference_features: np.ndarray,
                       threshold: float = FEATURE_THRESHOLD) -> int:
    """Candidates whose features have cosine >= threshold with some reference image's features."""
    return int((feature_similarity(candidate_features, reference_features) >= threshold).sum())


def memorised_share(generated: np.ndarray, train, threshold: int = COPY_THRESHOLD) -> float:
    """Share of a generator's images that copy a training image (images or a CopyIndex) under the same
    alterations; NaN for no generated images."""
    if len(generated) == 0:
        return float("nan")
    return copy_audit(generated, train, threshold)["count"] / len(generated)


def copy_rows(synthetic: np.ndarray, real_train: np.ndarray, test, val=None, train=None,
              features: Features | None = None, threshold: int = COPY_THRESHOLD,
              feature_threshold: float = FEATURE_THRESHOLD, test_images: np.ndarray | None = None,
              val_images: np.ndarray | None = None, real_copies: dict | None = None) -> dict[str, float]:
    """A trial's audit, as row keys:
    - leak_synthetic_test, leak_real_test: synthetic / real training images that copy a test image (flips, shifts
      up to SHIFT pixels, brightness and contrast, small rotations and crops included);
    - leak_synthetic_val, leak_real_val: the same against the validation split (when `val` is given);
    - leak_feature_synthetic_test, leak_feature_real_test (and _val): images whose `features` have cosine >=
      feature_threshold with a test (validation) image's, counted apart from copies (when `features` is given:
      images -> N x D, e.g. the reference classifier's features_and_proba(images)[0]);
    - gen_memorised_share: the share of synthetic images that copy a training image (when `train`, the training
      split's images or CopyIndex, is given; NaN without synthetic images).
    test, val, train: images or a CopyIndex built once per data set (fercore.cache.split_hashes). Feature
    neighbours need the images: test_images / val_images when test / val are given as a CopyIndex.
    real_copies: per reference split ("test", "val"), whether each of real_train's images copies it, found once per
    data set (fercore.cache.split_copies): counted instead of auditing the real images again."""
    rows: dict[str, float] = {}
    refs = {"test": (test, test_images)}
    if val is not None:
        refs["val"] = (val, val_images)
    sources = {"synthetic": synthetic, "real": real_train}
    for split, (reference, images) in refs.items():
        index = _as_index(reference)
        for name, candidates in sources.items():
            if name == "real" and real_copies is not None:
                rows[f"leak_real_{split}"] = int(np.count_nonzero(real_copies[split]))
                continue
            rows[f"leak_{name}_{split}"] = copy_audit(candidates, index, threshold)["count"]
    if features is not None:
        cand_features = {name: features(images) if len(images) else np.zeros((0, 1)) for name, images in sources.items()}
        for split, (reference, images) in refs.items():
            images = reference if images is None else images
            if isinstance(images, CopyIndex):
                raise ValueError(f"feature neighbours need the {split} images: pass {split}_images")
            ref_features = features(images)
            for name in sources:
                rows[f"leak_feature_{name}_{split}"] = feature_neighbours(cand_features[name], ref_features,
                                                                          feature_threshold)
    if train is not None:
        rows["gen_memorised_share"] = memorised_share(synthetic, train, threshold)
    return rows


SPLIT_PAIRS = (("train", "test"), ("train", "val"), ("val", "test"))  # (candidates, reference) within a data set


def split_copy_flags(data, indexes: dict | None = None, threshold: int = COPY_THRESHOLD) -> dict[str, np.ndarray]:
    """Near-copies between a data set's own splits, image by image: {"train_test": bool per image of train, True
    where it copies a test image, "train_val": ..., "val_test": ...}. data: a FaceSet (anything with
    .split(name) -> (images, labels)); indexes: CopyIndex per reference split name, built here when missing. A pair
    with an empty split flags nothing."""
    indexes = dict(indexes or {})
    out = {}
    for cand, ref in SPLIT_PAIRS:
        candidates, reference = data.split(cand)[0], data.split(ref)[0]
        if len(candidates) == 0 or len(reference) == 0:
            out[f"{cand}_{ref}"] = np.zeros(len(candidates), bool)
            continue
        index = indexes.get(ref)
        if index is None:
            index = indexes[ref] = build_index(reference)
        _, distance = nearest_copy(candidates, index, threshold=threshold)
        out[f"{cand}_{ref}"] = distance <= threshold
    return out


def split_leakage(data, indexes: dict | None = None, threshold: int = COPY_THRESHOLD) -> dict[str, int]:
    """split_copy_flags counted: {"train_test": images of train that copy a test image, "train_val": ...,
    "val_test": ...}."""
    return {pair: int(flags.sum()) for pair, flags in split_copy_flags(data, indexes, threshold).items()}
