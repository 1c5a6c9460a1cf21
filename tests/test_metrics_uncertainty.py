"""Gaussian null and bootstrap intervals: seeded, aligned, and telling real differences apart."""
from __future__ import annotations

import math

import numpy as np
import pytest

from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics import (
    bootstrap_ci, effective_rank, gaussian_null, gaussian_table, isotropy, silhouette_labels,
    singular_value_entropy)


def iso(E):
    return {"isotropy": isotropy(E), "sv": np.linalg.svd(E, compute_uv=False)[:2]}


def test_gaussian_table_is_seeded_standard_normal():
    G = gaussian_table(4000, 5, random_state=1)
    assert G.shape == (4000, 5)
    np.testing.assert_array_equal(G, gaussian_table(4000, 5, random_state=1))
    assert abs(G.mean()) < 0.02 and G.std() == pytest.approx(1, abs=0.02)


def test_null_is_seeded_and_draws_are_stable():
    one = gaussian_null(iso, (300, 10), random_state=3)
    assert one == gaussian_null(iso, (300, 10), random_state=3)
    assert one != gaussian_null(iso, (300, 10), random_state=4)
    assert one["isotropy"]["std"] == 0.0 and len(one["sv"]["mean"]) == 2
    three = gaussian_null(iso, (300, 10), n_draws=3, random_state=3)
    assert three["isotropy"]["std"] > 0
    # Draw 0 of a 3-draw null is the 1-draw null: adding draws keeps the earlier ones.
    first = iso(gaussian_table(300, 10, random_state=np.random.SeedSequence([3, 0])))
    assert first["isotropy"] == one["isotropy"]["mean"]


def test_null_isotropy_depends_on_shape_as_documented():
    narrow = gaussian_null(lambda E: {"iso": isotropy(E)}, (160, 128))["iso"]["mean"]
    wide = gaussian_null(lambda E: {"iso": isotropy(E)}, (20000, 8))["iso"]["mean"]
    assert narrow < 0.05 < 0.8 < wide


def test_null_passes_extra_arrays_through():
    labels = np.arange(200) % 4
    null = gaussian_null(lambda E, y: {"s": silhouette_labels(E, y)}, (200, 6), labels)
    assert abs(null["s"]["mean"]) < 0.05


def test_null_std_is_inf_when_a_draw_is_inf():
    null = gaussian_null(lambda E: {"x": math.inf}, (10, 2), n_draws=2)
    assert null["x"] == {"mean": math.inf, "std": math.inf}


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    X = np.random.default_rng(0).standard_normal((500, 8)) * np.linspace(2, 0.5, 8)
    fn = lambda E: {"erank": effective_rank(E)}  # noqa: E731
    ci = bootstrap_ci(fn, X, n_resamples=30, random_state=1)
    assert ci == bootstrap_ci(fn, X, n_resamples=30, random_state=1)
    assert ci["erank"]["low"] < effective_rank(X) < ci["erank"]["high"]


def test_bootstrap_keeps_labels_aligned_with_rows():
    X = np.random.default_rng(1).standard_normal((60, 3))
    X[:, 0] = np.arange(60)
    labels = np.arange(60)

    def check(E, y):
        assert np.array_equal(E[:, 0], y)  # each resampled row kept its own label
        return {"ok": 1.0}

    assert bootstrap_ci(check, X, labels, n_resamples=5)["ok"] == {"low": 1.0, "high": 1.0, "shift": 0.0}


def test_bootstrap_separates_different_tables_and_not_equal_ones():
    # The question: is 4.740 different from 4.848? Tables of the same kind overlap;
    # a markedly more collapsed table does not.
    rng = np.random.default_rng(2)
    fn = lambda E: {"h": singular_value_entropy(E)}  # noqa: E731
    flat = rng.standard_normal((400, 16))
    flat2 = rng.standard_normal((400, 16))
    # Scaling columns alone would not do: this entropy sees the column-standardised table.
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    steep = (rng.standard_normal((400, 16)) * np.arange(1, 17) ** -1.0) @ Q
    a, b, c = (bootstrap_ci(fn, t, n_resamples=40)["h"] for t in (flat, flat2, steep))
    assert a["low"] < b["high"] and b["low"] < a["high"]
    assert c["high"] < a["low"]


def test_bootstrap_validates_its_options():
    X = np.ones((5, 2)) + np.eye(5, 2)
    with pytest.raises(UserError, match="n_resamples must be >= 2"):
        bootstrap_ci(lambda E: {}, X, n_resamples=1)
    with pytest.raises(UserError, match="confidence"):
        bootstrap_ci(lambda E: {}, X, confidence=95.0)
    with pytest.raises(UserError, match="one entry per row"):
        bootstrap_ci(lambda E, y: {}, X, np.arange(3))


def test_regression_bootstrap_interval_contains_the_estimate_despite_duplicate_bias():
    # Regression: plain percentile intervals missed the estimate for n-dependent metrics
    # (authors' ML-100K isotropy 0.055 got [0.034, 0.041]): resampling duplicates ~1/3 of the
    # items, which lowers the isotropy by itself. The re-centred interval contains it.
    X = np.random.default_rng(5).standard_normal((300, 40))
    fn = lambda E: {"iso": isotropy(E)}  # noqa: E731
    ci = bootstrap_ci(fn, X, n_resamples=20)["iso"]
    assert ci["shift"] > 0  # resampled tables look less isotropic: the artefact is real
    assert ci["low"] <= isotropy(X) <= ci["high"]
    assert ci["high"] - ci["low"] < 0.1


def test_bootstrap_with_infinite_values_keeps_them():
    fn = lambda E: {"x": math.inf, "y": 1.0}  # noqa: E731
    ci = bootstrap_ci(fn, np.eye(6, 3) + 1, n_resamples=3)
    assert ci["x"]["low"] == ci["x"]["high"] == math.inf
    assert ci["y"] == {"low": 1.0, "high": 1.0, "shift": 0.0}


def test_undefined_values_give_undefined_null_and_interval():
    def metric(E):  # a metric that is undefined for some tables, as compute_metrics reports it
        try:
            return {"iso": isotropy(E), "erank": effective_rank(E)}
        except UndefinedMetric as exc:
            return {"iso": None, "iso_undefined": str(exc), "erank": effective_rank(E)}

    null = gaussian_null(metric, (5, 8), n_draws=2)
    assert null["iso"] == {"mean": None, "std": None} and null["erank"]["mean"] > 1
    assert "iso_undefined" not in null  # reasons are text, not values
    X = np.random.default_rng(0).standard_normal((5, 8))
    ci = bootstrap_ci(metric, X, n_resamples=3)
    assert ci["iso"] == {"low": None, "high": None, "shift": None} and ci["erank"]["low"] > 0
