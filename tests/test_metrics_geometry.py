"""Row geometry: mean cosine, uniformity and row norms against scipy/sklearn and known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from sklearn.metrics.pairwise import cosine_similarity

from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics import mean_cosine_similarity, row_norm_stats, uniformity


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_mean_cosine_matches_sklearn_off_diagonal_mean():
    X = np.random.default_rng(0).standard_normal((150, 12)) + 0.5
    C = cosine_similarity(X)
    expected = (C.sum() - np.trace(C)) / (150 * 149)
    assert mean_cosine_similarity(X) == pytest.approx(expected, rel=1e-10)


def test_mean_cosine_known_answers():
    same_direction = np.outer(np.arange(1.0, 11.0), [1.0, 2.0, 3.0])
    assert mean_cosine_similarity(same_direction) == pytest.approx(1.0)
    antipodal = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert mean_cosine_similarity(antipodal) == pytest.approx(-1.0)


def test_mean_cosine_leaves_out_zero_rows():
    X = np.random.default_rng(1).standard_normal((40, 5))
    with_zero = np.vstack([X, np.zeros((3, 5))])
    assert mean_cosine_similarity(with_zero) == pytest.approx(mean_cosine_similarity(X))


def test_uniformity_matches_scipy_pdist():
    X = np.random.default_rng(2).standard_normal((300, 6))
    expected = math.log(np.mean(np.exp(-2 * pdist(unit(X), "sqeuclidean"))))
    assert uniformity(X, sample_size=None) == pytest.approx(expected, rel=1e-10)
    expected_t1 = math.log(np.mean(np.exp(-1 * pdist(unit(X), "sqeuclidean"))))
    assert uniformity(X, t=1.0, sample_size=None) == pytest.approx(expected_t1, rel=1e-10)


def test_uniformity_blocks_cover_every_pair_once(monkeypatch):
    # Regression guard for the block loop: a tiny block size must give the same sum.
    from collapse_kit.metrics import geometry

    X = np.random.default_rng(3).standard_normal((37, 4))
    full = uniformity(X, sample_size=None)
    monkeypatch.setattr(geometry, "BLOCK_ROWS", 5)
    assert uniformity(X, sample_size=None) == pytest.approx(full, rel=1e-12)


def test_uniformity_known_answers():
    collapsed = np.outer(np.arange(1.0, 21.0), [0.3, -1.0, 2.0])
    assert uniformity(collapsed) == pytest.approx(0.0, abs=1e-12)
    antipodal = np.array([[0.0, 2.0], [0.0, -3.0]])  # |u1 - u2|^2 = 4
    assert uniformity(antipodal) == pytest.approx(-8.0)


def test_uniformity_sample_is_seeded_and_close_to_exact():
    X = np.random.default_rng(4).standard_normal((1500, 8)) + 0.3
    a = uniformity(X, sample_size=500, random_state=7)
    assert a == uniformity(X, sample_size=500, random_state=7)
    assert a != uniformity(X, sample_size=500, random_state=8)
    assert a == pytest.approx(uniformity(X, sample_size=None), abs=0.02)


def test_uniformity_rejects_bad_t():
    with pytest.raises(UserError, match="t must be a positive number"):
        uniformity(np.eye(3), t=0)


def test_row_norm_stats_match_numpy():
    X = np.random.default_rng(5).standard_normal((60, 7))
    X[4] = 0
    norms = np.linalg.norm(X, axis=1)
    stats = row_norm_stats(X)
    assert stats == pytest.approx({"mean": norms.mean(), "std": norms.std(), "min": 0.0,
                                   "max": norms.max(), "n_zero_rows": 1})


def test_cosine_metrics_need_two_nonzero_rows():
    X = np.zeros((5, 3))
    X[0] = 1
    with pytest.raises(UndefinedMetric, match="at least 2 rows of non-zero norm"):
        mean_cosine_similarity(X)


def test_regression_row_geometry_is_overflow_safe():
    # Norms of 1e200-scale rows squared to inf; of 1e-200-scale rows to 0 (then 0/0 directions).
    X = np.random.default_rng(0).standard_normal((60, 5))
    stats = row_norm_stats(X)
    for c in (1e200, 1e-200):
        scaled = row_norm_stats(c * X)
        assert {k: scaled[k] / c for k in ("mean", "std", "min", "max")} == pytest.approx(
            {k: stats[k] for k in ("mean", "std", "min", "max")}, rel=1e-12)
        assert scaled["n_zero_rows"] == 0
        assert uniformity(c * X) == pytest.approx(uniformity(X), rel=1e-12)
        assert mean_cosine_similarity(c * X) == pytest.approx(mean_cosine_similarity(X), rel=1e-9)
