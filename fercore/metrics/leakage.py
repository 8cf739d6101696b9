"""Near-duplicate audit: does any training image (synthetic or real) copy a test image? Row keys `leak_<set>_test`.

Since issue 16 the trial's audit is fercore.metrics.copies (flips, shifts, brightness, contrast, and since issue 22
small rotations and crops; validation; feature neighbours; memorisation), built on this module's hash; `audit` here
is the plain one-hash comparison and the figures below describe it alone.

Why: the disputed ResEmoteNet figures (anchors.md) came from augmented copies of test images that ended up in
training. A generator trained on the training split can still memorise, and a pipeline bug can still mix splits,
so every trial counts the training images that nearly duplicate a test image.

How: a DCT perceptual hash per image and Hamming distances between hashes.
- Hash: area-resize to 32 x 32 (a box filter written as two small matrices, so any input size works, batched),
  orthonormal 2-D DCT-II (scipy.fft.dctn), keep the top-left 16 x 16 block of low frequencies. The DC term is the
  mean brightness: it neither takes part in the median nor sets its bit (always 0), so a uniform brightness
  change leaves the hash unchanged. Each of the other 255 coefficients sets its bit when above their median, so
  every hash has 127 bits set and distances are even. 256 bits packed into four uint64 words.
- Comparison: XOR of packed hashes and a popcount (np.bitwise_count, a byte table on numpy < 2), every candidate
  against every test image in chunks, keeping each candidate's nearest test image: 20k x 4k pairs take about
  0.5 s, hashing 20k images about 1 s.
- A candidate "copies" a test image when their distance is <= THRESHOLD bits.

Why 256 bits and not the classic 64 (8 x 8 block): measured on procedural faces (48 x 48, scale 0.1, seed 0),
the 64-bit hash put honest different faces 2 bits apart while a copy with +-3 gray-level noise and +5 brightness
reached 8 bits: no threshold separates them. Faces share one layout, and 8 x 8 low frequencies see little more.

THRESHOLD = 24 of 256 bits, measured on the same procedural faces (5 draws of each alteration of 359 test images):
- altered copies of a test image lie from it: +-3 noise max 16 (99th percentile 12), +5 brightness max 8,
  both together max 16, +20 brightness max 16, contrast x1.1 max 12; +-8 noise median 10 but max 34, so heavy
  noise can escape; a shift by one pixel moves a copy 44 bits (median) and escapes: this audit finds copies,
  not re-crops;
- honest different faces: nearest training image of each test image 42-94 bits (1st percentile 48), 48 within
  one class; 18k faces of another seed vs the test split (6.4M pairs) min 36; within the training split min 38.
24 keeps 8 bits above the farthest light alteration and 12 below the closest honest pair. The hash ignores what a
FER label depends on (a few-pixel change of a mouth), so a flagged pair is a copy of one photograph, not two faces
with one expression. Re-check the gap on a real data set: a real set may hold near-identical photographs across
its splits, which this audit then reports, rightly, as leak_real_test.
"""
from __future__ import annotations

import numpy as np
from scipy.fft import dctn

from fercore.images import to_gray

HASH_SIZE = 32  # side the images are resized to before the DCT
LOW = 16  # side of the low-frequency block kept: 16 x 16 = 256 bits, four uint64 words
WORDS = LOW * LOW // 64
THRESHOLD = 24  # Hamming distance (bits of 256) at or below which a pair is a near-duplicate; see the docstring
CHUNK_PAIRS = 1 << 22  # (candidate, test) pairs compared per chunk: 4M distances at a time
NO_MATCH = LOW * LOW + 1  # the distance reported where there is nothing to compare with


def _box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in weights of area averaging: output cell i covers input span [i, i + 1) * n_in / n_out."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0, None)
    return overlap / overlap.sum(1, keepdims=True)


def phash(images: np.ndarray, batch: int = 4096) -> np.ndarray:
    """256-bit DCT perceptual hashes of uint8 N x H x W images (of N x H x W x 3 ones: their luma), uint64 N x 4."""
    images = to_gray(np.asarray(images)) if np.ndim(images) == 4 else np.asarray(images)
    assert images.ndim == 3, f"expected N x H x W grayscale images, got shape {images.shape}"
    rows, cols = _box_matrix(images.shape[1], HASH_SIZE), _box_matrix(images.shape[2], HASH_SIZE)
    out = np.empty((len(images), WORDS), dtype=np.uint64)
    for i in range(0, len(images), batch):
        x = images[i:i + batch].astype(np.float64)
        small = np.einsum("ph,nhw,qw->npq", rows, x, cols, optimize=True)
        low = dctn(small, type=2, norm="ortho", axes=(1, 2))[:, :LOW, :LOW].reshape(len(x), LOW * LOW)
        ac = low[:, 1:]
        bits = np.zeros(low.shape, dtype=bool)  # the DC bit stays 0
        bits[:, 1:] = ac > np.median(ac, axis=1, keepdims=True)
        out[i:i + batch] = np.packbits(bits, axis=1, bitorder="little").view("<u8")
    return out


_BYTE_COUNTS = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def popcount_table(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64, as uint8, by a byte lookup table: the fallback for numpy < 2."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _BYTE_COUNTS[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


popcount = getattr(np, "bitwise_count", popcount_table)  # numpy >= 2 counts bits natively


def _hashes(x: np.ndarray) -> np.ndarray:
    """Images (uint8 N x H x W) are hashed; a uint64 N x WORDS array is taken as hashes already."""
    x = np.asarray(x)
    if x.dtype == np.uint64 and x.ndim == 2 and x.shape[1] == WORDS:
        return x
    return phash(x)


def nearest(candidates: np.ndarray, reference: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate hash, the index of its nearest reference hash and their Hamming distance (NO_MATCH
    when there is no reference). exclude_self: candidates and reference are one set; an image is not its own match."""
    n, m = len(candidates), len(reference)
    index = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, NO_MATCH, dtype=np.uint16)
    if n == 0 or m == 0:
        return index, dist
    step = max(1, CHUNK_PAIRS // m)
    for i in range(0, n, step):
        c = candidates[i:i + step]
        # One word at a time: popcount over a 3-D (chunk, m, words) XOR and a sum were 7x slower.
        d = popcount(c[:, None, 0] ^ reference[None, :, 0]).astype(np.uint16)
        for w in range(1, WORDS):
            d += popcount(c[:, None, w] ^ reference[None, :, w])
        if exclude_self:
            rows = np.arange(len(d))
            d[rows, rows + i] = NO_MATCH
        index[i:i + step] = d.argmin(1)
        dist[i:i + step] = d[np.arange(len(d)), index[i:i + step]]
    return index, dist


def audit(candidates: np.ndarray, test: np.ndarray, threshold: int = THRESHOLD, show: int = 10) -> dict:
    """Candidates (images or hashes) that nearly duplicate a test image (images or hashes).

    Returns count (candidates within `threshold` bits of some test image), test_count (distinct test images
    among the nearest matches of those candidates), candidate_index / test_index / distance of every flagged
    candidate and its nearest test image (in candidate order), and pairs: the first `show` of them as
    (candidate, test, distance) tuples for messages.
    """
    index, dist = nearest(_hashes(candidates), _hashes(test))
    flagged = np.flatnonzero(dist <= threshold)
    return {"count": int(len(flagged)), "test_count": int(len(np.unique(index[flagged]))),
            "candidate_index": flagged, "test_index": index[flagged], "distance": dist[flagged].astype(np.int64),
            "pairs": [(int(c), int(index[c]), int(dist[c])) for c in flagged[:show]]}


def duplicates_within(images: np.ndarray, threshold: int = THRESHOLD) -> int:
    """Images (or hashes) of one set with another image of the same set within `threshold` bits."""
    _, dist = nearest(h := _hashes(images), h, exclude_self=True)
    return int((dist <= threshold).sum())


def leakage_rows(synthetic: np.ndarray, real_train: np.ndarray, test: np.ndarray,
                 threshold: int | None = None) -> dict[str, int]:
    """`leak_synthetic_test` and `leak_real_test`: synthetic and real training images that copy a test image, by
    the augmentation-aware audit of fercore.metrics.copies (flips, shifts, brightness, contrast) since issue 16;
    `audit` above stays the plain one-hash comparison. threshold: bits for copies.copy_rows (its default if None)."""
    from fercore.metrics.copies import COPY_THRESHOLD, copy_rows  # copies builds on this module's hash

    return copy_rows(synthetic, real_train, test, threshold=COPY_THRESHOLD if threshold is None else threshold)
