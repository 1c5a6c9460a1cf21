"""Property tests over random shapes (hypothesis), known answers, and input validation.

Which invariance each metric has is stated in its docstring; these tests hold them to it:
* row permutation: every metric except the KMeans silhouette (k-means++ seeding reads row order);
* orthogonal rotation: the metrics of the raw table; not the paper's z-scored ones (tested too);
* global scale: everything except the row norms, which scale with it;
* per-column scale: the paper's z-scored metrics.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collapse_kit.analyze import compute_metrics
from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics import (
    covariance_entropy, effective_rank, information_abundance, isotropy, kl_to_gaussian,
    kl_to_gaussian_logdet, mean_cosine_similarity, numerical_rank, power_law_decay, row_norm_stats,
    silhouette, silhouette_labels, singular_value_entropy, singular_value_variance, spectra,
    top_singular_values, uniformity)

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tables(draw, min_d=2, max_d=10, max_extra_rows=50):
    """A random (n, d) table, n > d + 1: correlated Gaussian rows with a random offset."""
    d = draw(st.integers(min_d, max_d))
    n = draw(st.integers(d + 2, d + 2 + max_extra_rows))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mix = rng.standard_normal((d, d)) * rng.uniform(0.1, 3.0, size=d)
    return rng.standard_normal((n, d)) @ mix + rng.standard_normal(d) * draw(st.floats(0, 3))


def rotation(d, seed):
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def raw_metrics(X, labels):
    """Metrics of the raw table: invariant to rotations."""
    sp = spectra(X)
    norms = row_norm_stats(X)
    return {"cov_entropy": covariance_entropy(sp), "erank": effective_rank(sp),
            "ia": information_abundance(sp), "rank": numerical_rank(sp),
            "alpha": power_law_decay(sp)[0], "cos": mean_cosine_similarity(X),
            "unif": uniformity(X, sample_size=None), "norm_mean": norms["mean"],
            "norm_max": norms["max"], "sil_labels": silhouette_labels(X, labels, sample_size=None)}


def zscored_metrics(X):
    """The paper's metrics of zscore(X): invariant to per-column scale, not to rotations."""
    sp = spectra(X)
    return {"top5": list(top_singular_values(sp, 2)), "var": singular_value_variance(sp),
            "sv_entropy": singular_value_entropy(sp), "iso": isotropy(sp),
            "kl": kl_to_gaussian(sp), "kl_logdet": kl_to_gaussian_logdet(sp)}


def zscore_slack(*Xs) -> float:
    """How far the authors' z-score epsilon (``(x - mean) / (std + 1e-9)``) can move a z-scored
    metric between tables that are equal up to column scales: a relative change of about
    ``1e-9 / std`` per column, std taken as the metrics take it, after the table's power-of-two
    rescaling. Negligible for ordinary tables (about 1e-8 for unit columns), not for a column
    whose std is tiny next to the largest entry (then zscore(c X) != zscore(X) in the 7th digit).
    Regression: a 2-column table with one column 60x narrower, scaled by c = 0.0117, moved the
    paper's KL (0.00167) by 1.7e-8 and failed a fixed 1e-9 / 1e-5 tolerance."""
    from collapse_kit.metrics._validation import power_of_two_scaled
    from collapse_kit.metrics.spectrum import ZSCORE_EPS

    smallest = min(float(power_of_two_scaled(np.asarray(X, float))[0].std(axis=0).min())
                   for X in Xs)
    return 1e-9 + 4 * Xs[0].shape[1] * ZSCORE_EPS / smallest


def assert_close(a: dict, b: dict, rel=1e-6, abs=1e-9):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=rel, abs=abs), k


# -- invariances --------------------------------------------------------------------------------

@FAST
@given(X=tables(), seed=st.integers(0, 1000))
def test_row_permutation_invariance(X, seed):
    labels = np.arange(len(X)) % 3
    perm = np.random.default_rng(seed).permutation(len(X))
    assert_close(raw_metrics(X[perm], labels[perm]), raw_metrics(X, labels))
    assert_close(zscored_metrics(X[perm]), zscored_metrics(X))


@FAST
@given(X=tables(), seed=st.integers(0, 1000))
def test_rotation_invariance_of_raw_table_metrics(X, seed):
    labels = np.arange(len(X)) % 3
    Q = rotation(X.shape[1], seed)
    assert_close(raw_metrics(X @ Q, labels), raw_metrics(X, labels))


def test_paper_zscored_metrics_are_not_rotation_invariant():
    # Documented fact, not a wish: z-scoring happens along the coordinate axes.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6)) * [5, 1, 1, 1, 1, 0.2]
    assert abs(isotropy(X @ rotation(6, 1)) - isotropy(X)) > 0.01


@FAST
@given(X=tables(), c=st.floats(1e-2, 1e3))
def test_global_scale_invariance(X, c):
    labels = np.arange(len(X)) % 3
    a, b = raw_metrics(c * X, labels), raw_metrics(X, labels)
    assert a.pop("norm_mean") == pytest.approx(c * b.pop("norm_mean"))
    assert a.pop("norm_max") == pytest.approx(c * b.pop("norm_max"))
    assert_close(a, b, rel=1e-6)
    assert_close(zscored_metrics(c * X), zscored_metrics(X), rel=1e-5, abs=zscore_slack(c * X, X))


@FAST
@given(X=tables(), seed=st.integers(0, 1000))
def test_per_column_scale_invariance_of_paper_metrics(X, seed):
    scales = np.random.default_rng(seed).uniform(0.1, 10.0, size=X.shape[1])
    assert_close(zscored_metrics(X * scales), zscored_metrics(X), rel=1e-5,
                 abs=zscore_slack(X * scales, X))


@FAST
@given(X=tables(max_d=6))
def test_ranges(X):
    n, d = X.shape
    sp = spectra(X)
    assert 1 - 1e-9 <= effective_rank(sp) <= d + 1e-9
    assert 1 - 1e-9 <= information_abundance(sp) <= d + 1e-9
    assert 0 <= isotropy(sp) <= 1
    assert 0 <= singular_value_entropy(sp) <= math.log(d) + 1e-12
    assert 0 <= covariance_entropy(sp) <= math.log(d) + 1e-12
    assert kl_to_gaussian_logdet(sp) >= -1e-9
    assert -1 / (n - 1) - 1e-9 <= mean_cosine_similarity(X) <= 1 + 1e-9
    assert -8 - 1e-9 <= uniformity(X) <= 1e-12


# -- known answers ------------------------------------------------------------------------------

def test_isotropic_gaussian_known_answers():
    G = np.random.default_rng(0).standard_normal((20000, 8))
    sp = spectra(G)
    ratio = math.sqrt(8 / 20000)  # Marchenko-Pastur edges (1 -/+ sqrt(d/n))^2
    assert isotropy(sp) == pytest.approx((1 - ratio) ** 2 / (1 + ratio) ** 2, abs=0.03)
    assert kl_to_gaussian_logdet(sp) < 0.01
    assert effective_rank(sp) == pytest.approx(8, abs=0.01)
    assert covariance_entropy(sp) == pytest.approx(math.log(8), abs=1e-3)
    assert abs(mean_cosine_similarity(G)) < 1e-3


@FAST
@given(n=st.integers(3, 60), d=st.integers(2, 10), seed=st.integers(0, 1000))
def test_rank_one_table_known_answers(n, d, seed):
    rng = np.random.default_rng(seed)
    X = np.outer(rng.uniform(0.5, 2.0, n), rng.standard_normal(d))  # every row along one vector
    sp = spectra(X)
    assert effective_rank(sp) == pytest.approx(1.0)
    assert information_abundance(sp) == pytest.approx(1.0)
    assert numerical_rank(sp) == 1
    assert mean_cosine_similarity(X) == pytest.approx(1.0)
    assert uniformity(X) == pytest.approx(0.0, abs=1e-9)
    if n > d:
        assert kl_to_gaussian_logdet(sp) == math.inf


@FAST
@given(d=st.integers(2, 8), seed=st.integers(0, 1000))
def test_two_separated_clusters_known_answer(d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((80, d)) * 0.1
    X[:40] += 10.0
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    assert silhouette_labels(X, labels) > 0.9
    assert silhouette(X, n_clusters=2) > 0.9


def test_constant_columns_give_documented_values_not_nan():
    X = np.random.default_rng(0).standard_normal((200, 6))
    X[:, 2] = 3.5
    values = compute_metrics(X)
    flat = [v for value in values.values() for v in np.atleast_1d(value)]
    assert not any(math.isnan(v) for v in flat)
    assert values["isotropy"] == pytest.approx(0.0, abs=1e-12)
    assert values["kl_to_gaussian_logdet"] == math.inf
    assert math.isfinite(values["kl_to_gaussian"])
    assert values["numerical_rank"] == 6  # a constant column is not a dependent one when uncentred


@pytest.mark.parametrize("value", [1.0, 0.1, -3.7, 1e30])
def test_regression_table_of_identical_rows_known_answers(value):
    # Complete collapse: every row the same point (issue 16, item 8). 0.1 and -3.7 are values
    # whose column mean numpy's summation misses by an ulp: the centred table must still be 0.
    X = np.full((50, 6), value)
    X[:, 1] = 2 * value
    sp = spectra(X)
    assert effective_rank(sp) == pytest.approx(1.0) and information_abundance(sp) == pytest.approx(1.0)
    assert numerical_rank(sp) == 1
    assert not sp.centered.any() and not sp.standardized.any()  # exact zeros, not rounding noise
    assert singular_value_variance(sp) == 0.0 and singular_value_entropy(sp) == 0.0
    assert covariance_entropy(sp) == pytest.approx(math.log(6))  # the authors' 1e-9 clip
    assert isotropy(sp) == 0.0 and kl_to_gaussian_logdet(sp) == math.inf
    assert mean_cosine_similarity(X) == pytest.approx(1.0)
    assert uniformity(X) == pytest.approx(0.0, abs=1e-12)
    norms = row_norm_stats(X)
    assert norms["std"] == 0.0 and norms["min"] == norms["max"] == norms["mean"]
    with pytest.raises(UndefinedMetric, match="covariance is zero"):
        power_law_decay(sp)
    with pytest.raises(UndefinedMetric, match="same point"):
        silhouette(X)
    with pytest.raises(UndefinedMetric, match="same point"):
        silhouette_labels(X, np.arange(50) % 2)


def test_analyze_reports_undefined_metrics_as_none_with_the_reason():
    values = compute_metrics(np.ones((30, 4)))
    undefined = {k for k, v in values.items() if v is None}
    assert undefined == {"silhouette", "power_law_alpha", "power_law_r2", "participation_ratio"}
    assert all(isinstance(values[k + "_undefined"], str) for k in undefined)
    assert values["effective_rank"] == pytest.approx(1.0)
    assert values["stable_rank"] == pytest.approx(1.0)


# -- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, error, match", [
    (np.ones(10), UserError, "must be 2-D.*1-D"),
    (np.ones((3, 4, 5)), UserError, "must be 2-D.*3-D"),
    (np.arange(20).reshape(10, 2), TypeError, "floating-point"),
    (np.ones((1, 4)), UserError, "1 row"),
    (np.ones((5, 0)), UserError, "no columns"),
    (np.zeros((5, 3)), UserError, "all zeros"),
    (np.array([[1.0, np.nan], [2.0, 3.0], [1.0, 1.0]]), UserError, "1 NaN and 0 Inf.*row 0"),
    (np.array([[1.0, 2.0], [np.inf, 3.0], [1.0, 1.0]]), UserError, "0 NaN and 1 Inf.*row 1"),
])
def test_bad_input_is_refused_by_every_metric(bad, error, match):
    for metric in (effective_rank, isotropy, mean_cosine_similarity, silhouette):
        with pytest.raises(error, match=match):
            metric(bad)


def test_more_dimensions_than_items():
    X = np.random.default_rng(0).standard_normal((10, 16))
    assert effective_rank(X) <= 10 and numerical_rank(X) == 10  # spectra are defined
    for metric in (isotropy, kl_to_gaussian, kl_to_gaussian_logdet):
        with pytest.raises(UndefinedMetric, match="needs more items than dimensions.*n_items=10, d=16"):
            metric(X)


def test_torch_tensors_are_accepted():
    import torch

    X = torch.randn(50, 4, requires_grad=True)
    assert effective_rank(X) == pytest.approx(effective_rank(X.detach().numpy()))
    assert effective_rank(X.to(torch.bfloat16)) > 1


def test_global_scale_invariance_holds_up_to_the_zscore_epsilon():
    """The falsifying example CI found (hypothesis, 2026-12-03): the deviation is the
    epsilon's, bounded by ``zscore_slack``, and it shrinks as the columns' std grows."""
    X = np.array([[-1.19511797, -0.42652678], [2.13198095, -0.27913649], [0.25659128, -0.00832859],
                  [-1.6588756, -0.34327302], [-0.95626475, -0.52741099], [-0.24411652, 0.22374993],
                  [-0.21866087, -0.19256591], [2.87226812, -0.40858477], [0.63905876, -0.44646709],
                  [-5.57385972, 0.54253907], [-0.6495764, -0.59184542], [-3.1358997, -0.12424982],
                  [0.0577844, -0.08993156], [-4.3712792, -0.17001123], [2.57074744, 0.39536704],
                  [-1.50161477, 0.09113388], [-4.47206668, -0.48559951], [2.48103642, 0.32307451]])
    c = 0.01171875
    gap = abs(kl_to_gaussian(c * X) - kl_to_gaussian(X))
    assert 1e-9 < gap <= zscore_slack(c * X, X)
    wide = abs(kl_to_gaussian(4.0 * X) - kl_to_gaussian(X))  # columns 340x wider than c X's
    assert wide < gap / 10
