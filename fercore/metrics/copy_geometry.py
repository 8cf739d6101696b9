"""The copy audit's geometric stage (fercore.metrics.copies): a copy rotated by a few degrees or cropped and resized
back (fercore.transforms' train.rotate and train.crop) moves its pixels by more than the hash tolerates (on FER2013
a 5-degree rotation puts a copy ~54 bits from its source, a 92 % crop ~66), so such a copy escapes copies.py's windows.

How, for each candidate the windows did not match:
- Pick GEO_PAIRS (reference image, mirror) pairs from its shortlist (copies.shortlist): the best by plain thumbnails
  and the best by thumbnails of the candidate rotated or zoomed out (VIEWS, which undo a rotation or a crop),
  alternately.
- Align each pair's reference image to the candidate by a similarity transform (rotation, scale, shift) fitted by
  Gauss-Newton (inverse compositional Lucas-Kanade) on mean-removed, unit-variance images (blind to brightness and
  contrast), coarse to fine (LEVELS: 12 x 12, 24 x 24, 48 x 48 for 48 x 48 images); a pair whose fit correlates
  less than a level's gate with the candidate, or worse than its candidate's best few, stops there (distinct
  faces mostly: the gates save the finer levels' time).
- A fit outside MAX_ANGLE, SCALES or MAX_SHIFT is no copy. Otherwise the reference image is resampled by it
  (bilinear, edge padding: what train.rotate and train.crop do) and hashed on its central crop like the candidate;
  the distance is the Hamming distance of the two hashes, judged by copies.COPY_THRESHOLD like the windows'. A
  rotated or cropped copy then lies 0-4 bits from its source; distinct faces stay far (the alignment cannot line
  up another face's details). The calibration is in copies.py's docstring.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from fercore.metrics import copies
from fercore.metrics.leakage import _box_matrix

GEO_PAIRS = 4  # shortlisted (reference, mirror) pairs aligned per candidate
# (pooling factor, Gauss-Newton steps, correlation a pair must reach to go on, most pairs per candidate that go
# on, best first): copies' fits correlate >= 0.92 at 12 x 12 and >= 0.96 at 24 x 24 (1st percentiles, FER2013,
# rotations to 15 degrees, 85 % crops, JPEG + blur); a crop of a smooth procedural face, only 0.84 at 12 x 12
# before its fit converges at 24 x 24.
LEVELS = ((4, 6, 0.75, 4), (2, 4, 0.9, 2), (1, 2, None, 2))
MAX_ANGLE = 20.0  # degrees either way a fitted rotation may reach (train.rotate: 0 by default, 15 in sweeps)
SCALES = (0.8, 1.15)  # fitted scale range: below 0.8 is a zoom past train.crop 0.36; above, a copy zoomed out
MAX_SHIFT = 0.25  # largest fitted shift, in half image widths (6 pixels of 48)
VIEWS = ((0, 1.0), (7, 1.0), (-7, 1.0), (14, 1.0), (-14, 1.0), (0, 1 / 0.92), (0, 1 / 0.85))  # (degrees, scale)
BORDER = 2  # pixels left out of the fit at each side (copies.SHIFT): a shifted copy's border is fill


@contextmanager
def _one_thread():
    """Run on one thread: the stage's tensors are small (a few MB), where more threads cost more than they save,
    and on a shared CPU (parallel trials) they wait on each other: 2000 candidates took 9 s on 2 threads of 2 busy
    cores, 1.9 s on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _standard(x: torch.Tensor) -> torch.Tensor:
    """Mean removed, unit variance per image: blind to brightness and contrast, as the hash is."""
    x = x - x.mean((-2, -1), keepdim=True)
    return x / x.square().mean((-2, -1), keepdim=True).clamp_min(1e-6).sqrt()


def _pixels(h: int, w: int, b: int = 0) -> torch.Tensor:
    """(h - 2b) x (w - 2b) x 3 homogeneous coordinates of pixel centres b in from each side, in grid_sample's
    [-1, 1] units (align_corners False)."""
    xs = (2 * torch.arange(b, w - b, dtype=torch.float32) + 1) / w - 1
    ys = (2 * torch.arange(b, h - b, dtype=torch.float32) + 1) / h - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y, torch.ones_like(x)], -1)


def _sample(images: torch.Tensor, coords: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """P x 1 x H x W images read at coords mapped by m (P x 3 x 3): bilinear, edge padding (train.rotate's)."""
    x, y = coords[..., 0], coords[..., 1]
    a = m[:, :2, :, None, None]  # P x 2 x 3 x 1 x 1: broadcast, as a batched 3 x 2 matmul is slow on the CPU
    grid = torch.stack([a[:, 0, 0] * x + a[:, 0, 1] * y + a[:, 0, 2], a[:, 1, 0] * x + a[:, 1, 1] * y + a[:, 1, 2]], -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _similarity(dp: torch.Tensor) -> torch.Tensor:
    """P x 3 x 3 matrices of parameter steps (a, b, tx, ty): [[1 + a, -b, tx], [b, 1 + a, ty], [0, 0, 1]]."""
    a, b, tx, ty = dp.unbind(1)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([1 + a, -b, tx], 1), torch.stack([b, 1 + a, ty], 1),
                        torch.stack([zero, zero, one], 1)], 1)


def align(cand: torch.Tensor, ref: torch.Tensor, which: torch.Tensor, m: torch.Tensor, factor: int,
          steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine m (P x 3 x 3: candidate pixel -> reference pixel, grid_sample units) so that ref (P x 1 x H x W)
    resampled by it matches cand[which] (cand: C x 1 x H x W), on images average-pooled by `factor`. Returns m and
    each pair's correlation after the last step (1 for a perfect fit)."""
    c = F.avg_pool2d(cand, factor) if factor > 1 else cand
    r = F.avg_pool2d(ref, factor) if factor > 1 else ref
    h, w = c.shape[-2:]
    b = max(1, BORDER // factor)
    coords = _pixels(h, w, b)
    template = _standard(c[..., b:h - b, b:w - b])
    # Inverse compositional: the candidate's gradient (per grid unit) times the similarity's Jacobian at identity
    # gives steepest-descent images and a 4 x 4 Hessian once per candidate, whatever the pair.
    scaled = c / c[..., b:h - b, b:w - b].std((-2, -1), keepdim=True).clamp_min(1e-3)
    gx = (scaled[..., b:h - b, b + 1:w - b + 1] - scaled[..., b:h - b, b - 1:w - b - 1]) * (w / 4)
    gy = (scaled[..., b + 1:h - b + 1, b:w - b] - scaled[..., b - 1:h - b - 1, b:w - b]) * (h / 4)
    x, y = coords[..., 0], coords[..., 1]
    sd = torch.stack([gx * x + gy * y, gy * x - gx * y, gx, gy], -1).reshape(len(c), -1, 4)
    sd_t = sd.transpose(1, 2)
    # A ridge relative to the Hessian's own scale: a nearly flat candidate (its std just above the clamp) has
    # gradients thousands of times a face's, and a fixed 1e-4 vanishes beside them in float32: singular (a smoke run
    # of real_ratio_grid at data.scale 0.01, its one-epoch generator's images, failed so). ~1e-6 of a face's own.
    hess = sd_t @ sd
    ridge = 1e-4 + 1e-6 * hess.diagonal(dim1=-2, dim2=-1).sum(-1)
    h_inv = torch.linalg.inv(hess + ridge[:, None, None] * torch.eye(4))
    for _ in range(steps):
        err = (_standard(_sample(r, coords, m)) - template[which]).reshape(len(r), -1, 1)
        dp = (h_inv[which] @ (sd_t[which] @ err))[..., 0]
        # No step where it is not finite, and none past half a scale or turn, so the similarity stays invertible
        # (det (1+a)^2 + b^2 >= 1/4); a refinement step is far smaller.
        dp = torch.nan_to_num(dp, nan=0.0, posinf=0.0, neginf=0.0).clamp(-0.5, 0.5)
        m = m @ torch.linalg.inv(_similarity(dp))
    corr = (_standard(_sample(r, coords, m)) * template[which]).mean((-3, -2, -1))
    return m, corr


def plausible(m: torch.Tensor) -> torch.Tensor:
    """Fits within MAX_ANGLE, SCALES and MAX_SHIFT (and finite): the transforms a copy may have undergone."""
    a, b = m[:, 0, 0], m[:, 1, 0]
    angle = torch.rad2deg(torch.atan2(b, a)).abs()
    scale = torch.sqrt(a * a + b * b)
    shift = m[:, :2, 2].abs().amax(1)
    ok = (angle <= MAX_ANGLE) & (scale >= SCALES[0]) & (scale <= SCALES[1]) & (shift <= MAX_SHIFT)
    return ok & torch.isfinite(m).all(2).all(1)


def resample(images: np.ndarray, m: torch.Tensor) -> np.ndarray:
    """uint8 P x H x W images resampled by P affine maps (bilinear, edge padding), as uint8."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None]
    out = _sample(x, _pixels(*images.shape[1:]), m)
    return out[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def _view_maps() -> torch.Tensor:
    """3 x 3 maps of VIEWS: a candidate resampled by one undoes a rotation by `degrees` and a zoom by 1 / scale."""
    rad = torch.deg2rad(torch.tensor([v[0] for v in VIEWS], dtype=torch.float32))
    scale = torch.tensor([v[1] for v in VIEWS], dtype=torch.float32)
    cos, sin, zero = rad.cos() * scale, rad.sin() * scale, torch.zeros(len(VIEWS))
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1),
                        torch.stack([zero, zero, zero + 1], 1)], 1)


def _among_best(owner: torch.Tensor, corr: torch.Tensor, most: int) -> torch.Tensor:
    """Whether each pair is among the `most` best-correlated pairs of its candidate (owner: sorted ascending)."""
    order = torch.argsort(owner * 4.0 - corr, stable=True)  # by candidate, then best first (|corr| <= 1)
    first = torch.searchsorted(owner[order], owner[order], right=False)
    rank = torch.empty_like(owner)
    rank[order] = torch.arange(len(owner)) - first
    return rank < most


def pick_pairs(candidates: np.ndarray, index, short: np.ndarray) -> np.ndarray:
    """GEO_PAIRS of each candidate's shortlisted pairs (C x S, best first by plain thumbnails) to align: the best
    plain and the best under VIEWS alternately, without repeats. A zoomed copy's own thumbnail can correlate
    better with another face than with its source: on procedural faces a 92 % crop's source was among the first
    four by plain thumbnails for 85 % of the faces, by both for 98 %."""
    n, k, v = len(candidates), min(GEO_PAIRS, short.shape[1]), len(VIEWS)
    # Thumbnails of the views as copies.thumbnails makes them: the central crop, area-averaged. Every candidate is
    # read through the same V maps: the candidates go in as channels of one image, the maps' grids side by side.
    h, w = candidates.shape[1:]
    x = torch.from_numpy(np.ascontiguousarray(candidates)).float()[None]  # 1 x C x H x W
    views = _sample(x.expand(v, -1, -1, -1), _pixels(h, w, copies.SHIFT), _view_maps())  # V x C x h x w
    rows = torch.from_numpy(_box_matrix(h - 2 * copies.SHIFT, copies.THUMB)).float()
    cols = torch.from_numpy(_box_matrix(w - 2 * copies.SHIFT, copies.THUMB)).float()
    thumbs = (rows @ views @ cols.T).transpose(0, 1).reshape(n, v, -1)
    thumbs = thumbs - thumbs.mean(-1, keepdim=True)
    thumbs = (thumbs / thumbs.norm(dim=-1, keepdim=True).clamp_min(1e-6)).numpy()
    ref = index.thumbs.reshape(-1, *index.thumbs.shape[2:])[short]  # C x S x thumb windows x THUMB^2
    corr = np.einsum("nvd,nswd->nsvw", thumbs, ref, optimize=True).reshape(n, short.shape[1], -1).max(2)
    viewed = np.take_along_axis(short, np.argsort(-corr, 1, kind="stable"), 1)
    out = np.empty((n, k), dtype=short.dtype)
    for i in range(n):
        out[i] = list(dict.fromkeys(p for pair in zip(short[i], viewed[i]) for p in pair))[:k]
    return out


def geometric_nearest(candidates: np.ndarray, cand_hashes: np.ndarray, index, short: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate (uint8 C x H x W, its hashes C x WORDS), the pair (2 * image + mirror) of its shortlist
    (short: C x S, best first) whose reference image lies nearest it once aligned, and that distance in bits
    (-1 and 2^16 - 1 where no pair aligns). index: a copies.CopyIndex."""
    n = len(candidates)
    best = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, np.iinfo(np.uint16).max, dtype=np.uint16)
    if n == 0 or short.shape[1] == 0:
        return best, dist
    with torch.no_grad(), _one_thread():
        pairs = pick_pairs(candidates, index, short)
        refs = index.images[pairs.ravel() // 2]
        flip = (pairs.ravel() % 2).astype(bool)
        refs[flip] = refs[flip, :, ::-1]
        cand = torch.from_numpy(np.ascontiguousarray(candidates)).float()[:, None]
        rows = torch.arange(pairs.size)  # the pairs still in play, as rows of pairs.ravel()
        m = torch.eye(3).repeat(len(rows), 1, 1)
        for factor, steps, gate, most in LEVELS:
            if len(rows) == 0:
                return best, dist
            if min(candidates.shape[1:]) // factor < 8:
                continue  # too small to fit at this level
            owner = rows // pairs.shape[1]
            m, corr = align(cand, torch.from_numpy(refs[rows.numpy()]).float()[:, None], owner, m, factor, steps)
            keep = (corr >= gate if gate is not None else plausible(m)) & _among_best(owner, corr, most)
            rows, m = rows[keep], m[keep]
        if len(rows) == 0:
            return best, dist
        rows = rows.numpy()
        warped = resample(refs[rows], m)
    live = rows // pairs.shape[1]
    h, c = copies.candidate_hashes(warped), cand_hashes[live]
    d = copies.popcount(h[:, 0] ^ c[:, 0]).astype(np.uint16)
    for w in range(1, h.shape[1]):
        d += copies.popcount(h[:, w] ^ c[:, w])
    order = np.lexsort((d, live))  # each candidate's nearest aligned pair first
    first = order[np.r_[True, live[order][1:] != live[order][:-1]]]
    best[live[first]], dist[live[first]] = pairs.ravel()[rows[first]], d[first]
    return best, dist
