"""Spectrum metrics beyond the paper: known answers and cross-checks with numpy/scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import entropy, linregress

from collapse_kit.errors import UserError
from collapse_kit.metrics import (
    covariance_entropy, effective_rank, information_abundance, numerical_rank, power_law_decay,
    shannon_entropy, singular_value_entropy, singular_values, spectra, top_singular_values, zscore)


def table_with_spectrum(s, n=200, seed=0):
    """A centred (n, len(s)) table whose singular values are exactly ``s``.

    U's columns are orthonormal and orthogonal to the all-ones vector, so the table is centred and
    its raw and centred spectra are both ``s``.
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, len(s)))
    U, _ = np.linalg.qr(A - A.mean(axis=0))
    V, _ = np.linalg.qr(rng.standard_normal((len(s), len(s))))
    return (U * np.asarray(s, dtype=float)) @ V.T


def test_singular_values_match_scipy():
    X = np.random.default_rng(0).standard_normal((120, 10))
    np.testing.assert_allclose(singular_values(X), scipy.linalg.svdvals(X), rtol=1e-12)
    np.testing.assert_allclose(singular_values(X, center=True),
                               scipy.linalg.svdvals(X - X.mean(0)), rtol=1e-12)


def test_zscore_is_population_standardisation():
    X = np.random.default_rng(1).standard_normal((50, 4)) * [1, 2, 3, 4] + 5
    Z = zscore(X)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), 1, atol=1e-8)


def test_effective_rank_known_answers():
    assert effective_rank(table_with_spectrum(np.ones(8))) == pytest.approx(8)
    assert effective_rank(table_with_spectrum([5.0, 0, 0, 0])) == pytest.approx(1)
    s = np.array([4.0, 2.0, 1.0, 1.0])
    assert effective_rank(table_with_spectrum(s)) == pytest.approx(math.exp(entropy(s / s.sum())))


def test_information_abundance_known_answers():
    assert information_abundance(table_with_spectrum(np.ones(6))) == pytest.approx(6)
    assert information_abundance(table_with_spectrum([3.0, 1.5, 1.5])) == pytest.approx(2)


def test_numerical_rank_matches_numpy():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100, 3)) @ rng.standard_normal((3, 12))  # rank 3 in 12 columns
    assert numerical_rank(X) == np.linalg.matrix_rank(X) == 3
    assert numerical_rank(rng.standard_normal((100, 12))) == 12
    with pytest.raises(UserError, match="rtol"):
        numerical_rank(X, rtol=2.0)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_power_law_recovers_a_known_exponent(alpha):
    # Covariance eigenvalues lambda_i = i^-alpha  <=>  centred singular values ~ i^(-alpha/2).
    X = table_with_spectrum(np.arange(1, 33) ** (-alpha / 2), n=400)
    got_alpha, r2 = power_law_decay(X)
    assert got_alpha == pytest.approx(alpha, rel=1e-9) and r2 == pytest.approx(1.0)


def test_power_law_matches_scipy_linregress():
    X = np.random.default_rng(3).standard_normal((300, 20)) * np.linspace(3, 0.5, 20)
    lam = singular_values(X, center=True) ** 2 / 299
    fit = linregress(np.log(np.arange(1, 21)), np.log(lam))
    alpha, r2 = power_law_decay(X)
    assert alpha == pytest.approx(-fit.slope, rel=1e-10)
    assert r2 == pytest.approx(fit.rvalue**2, rel=1e-10)


def test_power_law_of_rank_one_table_is_infinite():
    X = np.outer(np.arange(1.0, 21.0), np.ones(5))
    assert power_law_decay(X) == (math.inf, 1.0)


def test_power_law_of_identical_rows_is_undefined():
    from collapse_kit.errors import UndefinedMetric

    with pytest.raises(UndefinedMetric, match="same point"):
        power_law_decay(np.full((20, 5), 0.1))


def test_zscore_of_a_constant_column_is_exactly_zero_at_any_scale():
    X = np.random.default_rng(0).standard_normal((30, 3))
    X[:, 1] = 0.1
    Z = zscore(X)
    assert not Z[:, 1].any()
    np.testing.assert_allclose(zscore(1e-30 * X), Z, rtol=1e-6, atol=1e-12)  # the 1e-9 stays negligible


def test_shannon_entropy_matches_scipy():
    w = np.array([3.0, 1.0, 0.0, 2.0])
    assert shannon_entropy(w) == pytest.approx(entropy(w))


def test_shannon_entropy_of_an_empty_spectrum_is_zero():
    assert shannon_entropy(np.zeros(4)) == 0.0  # scipy: nan


def test_entropies_of_a_flat_spectrum_are_ln_d():
    X = table_with_spectrum(np.ones(16), n=300)
    assert singular_value_entropy(X) == pytest.approx(math.log(16), abs=0.02)
    assert covariance_entropy(X) == pytest.approx(math.log(16), abs=0.02)


def test_spectra_object_gives_the_same_values_as_the_table():
    X = np.random.default_rng(4).standard_normal((80, 6))
    sp = spectra(X)
    for f in (effective_rank, information_abundance, numerical_rank, covariance_entropy,
              singular_value_entropy):
        assert f(sp) == f(X)
    np.testing.assert_array_equal(top_singular_values(sp, 3), top_singular_values(X, 3))


def test_top_k_larger_than_the_spectrum_is_an_error():
    with pytest.raises(UserError, match="k=9 exceeds the 6 singular values"):
        top_singular_values(np.random.default_rng(0).standard_normal((20, 6)), 9)


@pytest.mark.parametrize("shape", [(300, 12), (12, 30), (31, 30), (5000, 6)])
@pytest.mark.parametrize("block", [2048, 7])
def test_spectra_equal_direct_svds(monkeypatch, shape, block):
    # spectra() derives all three spectra from one blocked QR; they must equal direct SVDs,
    # also with several blocks, fewer items than dimensions, a constant column and a
    # rank-deficient table (exact zeros must stay near zero).
    from collapse_kit.metrics import spectrum

    monkeypatch.setattr(spectrum, "QR_BLOCK_ROWS", block)
    rng = np.random.default_rng(sum(shape))
    n, d = shape
    X = rng.standard_normal((n, d)) + 3.0
    X[:, 1] = 2.5
    X[:, 2] = X[:, 3] - 2 * X[:, 4]
    sp = spectra(X)
    k = min(n, d)
    for got, matrix in ((sp.raw, X), (sp.centered, X - X.mean(0)), (sp.standardized, zscore(X))):
        want = scipy.linalg.svdvals(matrix)[:k]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10 * want[0])
    assert numerical_rank(sp) == np.linalg.matrix_rank(X)


def _planted(s, n=50, d=6, seed=0, centre=True):
    """A table with singular values s (of the centred table when ``centre``, which then has
    column means 0: its columns are orthogonal to the ones vector)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, len(s)))
    if centre:
        A -= A.mean(axis=0)
    U, _ = np.linalg.qr(A)
    V, _ = np.linalg.qr(rng.standard_normal((d, len(s))))
    return U @ np.diag(s) @ V.T


def test_stable_rank_and_participation_ratio_known_answers():
    from collapse_kit.errors import UndefinedMetric
    from collapse_kit.metrics import participation_ratio, stable_rank

    E = _planted([3.0, 2.0, 1.0])
    assert stable_rank(E) == pytest.approx(14 / 9, rel=1e-12)           # (9 + 4 + 1) / 9
    assert participation_ratio(E) == pytest.approx(14**2 / 98, rel=1e-12)  # (sum s^2)^2 / sum s^4
    flat = _planted([1.0] * 6)
    assert stable_rank(flat) == pytest.approx(6, rel=1e-12)
    assert participation_ratio(flat) == pytest.approx(6, rel=1e-12)
    # an offset shared by every row is one strong direction of E, but no variance
    shifted = flat + 10.0
    assert stable_rank(shifted) < 1.1 and participation_ratio(shifted) == pytest.approx(6, rel=1e-9)
    assert stable_rank(7.5 * E) == pytest.approx(stable_rank(E), rel=1e-12)  # scale-free
    assert stable_rank(np.ones((10, 4))) == pytest.approx(1.0)
    with pytest.raises(UndefinedMetric, match="same point"):
        participation_ratio(np.ones((10, 4)))
    with pytest.raises(UserError, match="all zeros"):  # no table to measure: an input error
        stable_rank(np.zeros((10, 4)))
