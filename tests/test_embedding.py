"""Jensen-Shannon distance on the real data's fixed 2-D PCA grid: 0 for one distribution, 1 for disjoint ones."""
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from fercore.labels import CLASSES
from fercore.metrics.embedding import (embedding_jsd, embedding_jsd_rows, embedding_sample, grid_histogram,
                                       real_projection)


@pytest.fixture(scope="module")
def gaussian():
    return np.random.default_rng(0).normal(size=(40000, 16))


def test_two_halves_of_one_sample_score_near_zero(gaussian):
    big = embedding_jsd(gaussian[:20000], gaussian[20000:])
    small = embedding_jsd(gaussian[:2000], gaussian[2000:4000])
    # What remains is the finite-sample floor of the module docstring, shrinking with the sample size.
    assert big < 0.12 and big < small < 0.35
    assert embedding_jsd(gaussian, gaussian) == pytest.approx(0, abs=1e-6)


def test_disjoint_sets_score_near_one(gaussian):
    assert embedding_jsd(gaussian[:4000], gaussian[4000:8000] + 100) > 0.99
    assert embedding_jsd(gaussian[:4000], gaussian[4000:8000] - 100) > 0.99


def test_monotone_in_a_shift(gaussian):
    real, syn = gaussian[:5000], gaussian[5000:10000]
    scores = [embedding_jsd(real, syn + shift) for shift in (0, 0.25, 0.5, 1, 2, 4)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] > 0.95


def test_the_ruler_is_fixed_by_the_real_set_alone(gaussian):
    real = gaussian[:3000] * np.r_[5.0, 3.0, np.ones(14)]  # leading axes: features 0 and 1
    mean, axes = real_projection(real)
    assert np.abs(axes[:2]).round(1).tolist() in ([[1, 0], [0, 1]], [[0, 1], [1, 0]])
    # Synthetic sets are judged on the real axes: a move orthogonal to both is invisible here (the documented
    # blind spot that the Frechet distance covers), a move along one is not.
    syn = gaussian[3000:6000] * np.r_[5.0, 3.0, np.ones(14)]
    away = np.r_[0, 0, 50.0, np.zeros(13)]
    away -= axes @ (axes.T @ away)
    assert embedding_jsd(real, syn + away) == pytest.approx(embedding_jsd(real, syn), abs=1e-9)
    assert embedding_jsd(real, syn + 50 * axes[:, 0]) > 0.95  # 10 standard deviations of that axis


def test_histogram_clips_into_edge_cells_and_keeps_the_mass():
    points = np.array([[-10.0, 0.5], [0.5, 0.5], [10.0, 10.0]])
    p = grid_histogram(points, np.zeros(2), np.ones(2), bins=4, smoothing=0).reshape(4, 4)
    assert p[0, 2] == p[2, 2] == p[3, 3] == pytest.approx(1 / 3)
    q = grid_histogram(points, np.zeros(2), np.ones(2), bins=4)
    assert q.sum() == pytest.approx(1) and (q > 0).all()
    assert jensenshannon(p.ravel(), p.ravel()[::-1], base=2) <= 1


def test_rows_per_class():
    rng = np.random.default_rng(1)
    real_y, syn_y = rng.integers(0, 6, 3000), rng.integers(0, 6, 3000)  # no "neutral" (class 6) at all
    real_f = rng.normal(size=(3000, 8)) + real_y[:, None]
    syn_f = rng.normal(size=(3000, 8)) + syn_y[:, None]
    syn_f[syn_y == 3] += 10  # one class drifted off
    rows = embedding_jsd_rows((real_f, real_y), (syn_f, syn_y))
    assert set(rows) == {"gen_embedding_jsd"} | {f"gen_embedding_jsd_{c}" for c in CLASSES}
    assert math.isnan(rows["gen_embedding_jsd_neutral"])
    assert rows["gen_embedding_jsd_happy"] > 0.95
    assert all(rows[f"gen_embedding_jsd_{c}"] < 0.5 for c in ("angry", "disgust", "fear", "sad", "surprise"))


def test_a_projection_fitted_once_gives_the_figures_and_points_fitted_inside(gaussian):
    """quality_and_embedding fits the real PCA once and passes it to both; the results must not change."""
    rng = np.random.default_rng(3)
    real, syn = gaussian[:400], gaussian[400:700] + 0.7
    real_y, syn_y = rng.integers(0, 7, len(real)), rng.integers(0, 7, len(syn))
    projection = real_projection(real)
    assert embedding_jsd(real, syn, projection=projection) == embedding_jsd(real, syn)
    assert embedding_jsd_rows((real, real_y), (syn, syn_y), projection=projection) == \
        embedding_jsd_rows((real, real_y), (syn, syn_y))
    given = embedding_sample((real, real_y), (syn, syn_y), 20, projection=projection)
    fitted = embedding_sample((real, real_y), (syn, syn_y), 20)
    assert all(np.array_equal(given[k], fitted[k]) for k in ("source", "label", "x", "y"))
    assert len(given["x"]) == 7 * 20 * 2
