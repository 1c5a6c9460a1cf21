"""Silhouette scores: sklearn agreement, known answers, sampling and errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics import kmeans_labels, silhouette, silhouette_labels


def two_clusters(n=100, d=6, gap=50.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[: n // 2, 0] += gap
    labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    return X, labels


def test_silhouette_labels_matches_sklearn():
    X = np.random.default_rng(1).standard_normal((120, 5))
    labels = np.random.default_rng(2).integers(0, 4, 120)
    assert silhouette_labels(X, labels, sample_size=None) == pytest.approx(
        silhouette_score(X, labels), rel=1e-10)


def test_two_separated_clusters_score_near_one():
    X, labels = two_clusters()
    # Within-cluster distance ~ sqrt(2 d) = 3.5, between ~ 50: silhouette ~ 1 - 3.5/50.
    assert silhouette_labels(X, labels) > 0.9
    assert silhouette(X, n_clusters=2) > 0.9


def test_kmeans_finds_the_two_clusters():
    X, labels = two_clusters()
    found = kmeans_labels(X, n_clusters=2)
    assert len({(a, b) for a, b in zip(found, labels)}) == 2  # a relabelling of the truth


def test_silhouette_of_gaussian_noise_is_near_zero():
    G = np.random.default_rng(3).standard_normal((400, 16))
    assert abs(silhouette(G)) < 0.05
    assert abs(silhouette_labels(G, np.arange(400) % 5)) < 0.05


def test_silhouette_sampling_is_seeded_and_reported_by_size():
    X, labels = two_clusters(n=600, gap=3.0)
    exact = silhouette_labels(X, labels, sample_size=None)
    a = silhouette_labels(X, labels, sample_size=200, random_state=1)
    assert a == silhouette_labels(X, labels, sample_size=200, random_state=1)
    assert a != exact and a == pytest.approx(exact, abs=0.05)
    assert silhouette_labels(X, labels, sample_size=600) == exact  # no sampling when all fit


def test_silhouette_labels_are_invariant_to_row_order():
    X, labels = two_clusters(gap=2.0)
    perm = np.random.default_rng(4).permutation(len(X))
    assert silhouette_labels(X[perm], labels[perm], sample_size=None) == pytest.approx(
        silhouette_labels(X, labels, sample_size=None), rel=1e-12)


def test_silhouette_errors():
    X, labels = two_clusters(n=20)
    with pytest.raises(UserError, match="n_clusters=20 must be below n_items=20"):
        silhouette(X, n_clusters=20)
    with pytest.raises(UserError, match="between 2 and"):
        silhouette_labels(X, np.zeros(20, int))
    with pytest.raises(UserError, match=r"labels must have shape \(20,\)"):
        silhouette_labels(X, labels[:5])
    with pytest.raises(UserError, match="sample_size must be >= 2"):
        silhouette(X, sample_size=1)


def test_regression_fewer_distinct_rows_than_clusters_is_undefined_without_warnings():
    # A collapsed table: KMeans used to warn (ConvergenceWarning) and the silhouette then failed.
    X = np.repeat(np.random.default_rng(0).standard_normal((3, 5)), 20, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UndefinedMetric, match="only 3 distinct rows, fewer than n_clusters=16"):
            silhouette(X)
        with pytest.raises(UndefinedMetric, match="same point"):
            kmeans_labels(np.ones((40, 3)))
        assert silhouette(X, n_clusters=2) > 0.5  # defined once there are enough distinct rows


def test_regression_kmeans_and_silhouette_are_scale_safe():
    # float32 KMeans overflowed (1e30: inf distances) or underflowed (1e-30: all distances 0).
    X, labels = two_clusters(n=80)
    reference = kmeans_labels(X, n_clusters=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for c in (1e30, 1e-30, 1e300):
            np.testing.assert_array_equal(kmeans_labels(c * X, n_clusters=4), reference)
            assert silhouette(c * X, n_clusters=4) == pytest.approx(silhouette(X, n_clusters=4))
            assert silhouette_labels(c * X, labels) == pytest.approx(silhouette_labels(X, labels))


def test_too_few_items_for_the_clusters_is_undefined():
    with pytest.raises(UndefinedMetric, match="n_clusters=16 must be below n_items=10"):
        silhouette(np.random.default_rng(0).standard_normal((10, 4)))
