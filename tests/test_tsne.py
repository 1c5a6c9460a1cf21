"""collapse_kit.tsne: exact neighbours against scikit-learn, affinities against openTSNE's own,
map shape, determinism for a seed, cluster separation, settings validation."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from collapse_kit.errors import UserError
from collapse_kit.metrics import zscore
from collapse_kit.tsne import (
    FFT_FROM, PARALLEL_FROM, SHORT_FROM, OverlappedFFTGradient, TSNESettings, exact_neighbors, robust_extent, single_point, standardize, tsne_map)

# Few iterations and a small perplexity: the properties below hold long before convergence.
QUICK = TSNESettings(perplexity=10, early_exaggeration_iter=60, n_iter=60, method="bh", n_jobs=1)


def _clusters(n_per=40, d=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 12
    labels = np.repeat(np.arange(k), n_per)
    return (centers[labels] + rng.standard_normal((k * n_per, d))).astype(np.float32), labels


def test_exact_neighbors_match_sklearn():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    idx, dist = exact_neighbors(X, 15, block=64)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=16).fit(X).kneighbors(X)
    np.testing.assert_allclose(dist, ref_dist[:, 1:], atol=1e-4)
    assert (idx == ref_idx[:, 1:]).mean() > 0.99  # equal up to float ties
    assert not (idx == np.arange(300)[:, None]).any()


def test_exact_neighbors_exclude_only_the_row_itself_among_duplicates():
    X = np.array([[0.0, 0], [0, 0], [1, 0], [3, 0]], dtype=np.float32)
    idx, dist = exact_neighbors(X, 2)
    assert idx[0].tolist() == [1, 2] and idx[1].tolist() == [0, 2]
    np.testing.assert_allclose(dist[0], [0, 1])


def test_affinities_equal_openTSNE_exact_search():
    from openTSNE import affinity
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    X, _ = _clusters()
    ours = affinity.PerplexityBasedNN(perplexity=10, knn_index=PrecomputedNeighbors(*exact_neighbors(X, 30))).P
    ref = affinity.PerplexityBasedNN(X, perplexity=10, method="exact").P
    assert abs(ours - ref).max() < 1e-4 * ref.max()  # float32 distances against float64


def test_standardize_is_the_authors_zscore():
    X = np.random.default_rng(1).standard_normal((50, 4)) * [1, 5, 0.1, 3] + 7
    np.testing.assert_allclose(standardize(X), zscore(X), atol=1e-5)


def test_map_shape_and_determinism_for_a_seed():
    X, _ = _clusters()
    a = tsne_map(X, QUICK)
    b = tsne_map(X, QUICK)
    assert a.shape == (120, 2) and a.dtype == np.float64 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    other = tsne_map(X, TSNESettings(**{**QUICK.__dict__, "random_state": 7}))
    assert not np.allclose(a, other)


def test_fft_method_runs_and_is_deterministic():
    X, _ = _clusters(n_per=30)
    # FFT has a fixed grid cost per iteration (tens of ms), so only a few iterations here.
    for threads in (1, 2):  # 2 threads: the overlapped gradient
        s = TSNESettings(perplexity=8, early_exaggeration_iter=5, n_iter=5, method="fft", n_jobs=threads)
        np.testing.assert_array_equal(tsne_map(X, s), tsne_map(X, s))


def test_separated_clusters_stay_separated():
    X, labels = _clusters()
    Y = tsne_map(X, QUICK)
    idx, _ = exact_neighbors(Y.astype(np.float32), 5)
    assert (labels[idx] == labels[:, None]).mean() > 0.95


def test_method_and_threads_are_chosen_by_size():
    s = TSNESettings()
    assert s.method_for(FFT_FROM - 1) == "bh" and s.method_for(FFT_FROM) == "fft"
    assert s.threads_for(PARALLEL_FROM - 1) == 1
    assert PARALLEL_FROM < FFT_FROM  # Barnes-Hut on every core in between
    assert TSNESettings(method="fft").method_for(10) == "fft"
    assert TSNESettings(n_jobs=3).threads_for(10) == 3
    assert s.neighbors_for(150_000) == "exact" and s.neighbors_for(150_001) == "annoy"
    assert s.iterations_for(SHORT_FROM - 1) == 500 and s.iterations_for(SHORT_FROM) == 250
    assert TSNESettings(n_iter=100).iterations_for(10**6) == 100


def test_annoy_neighbours_give_a_map():
    X, labels = _clusters()
    Y = tsne_map(X, TSNESettings(**{**QUICK.__dict__, "neighbors": "annoy"}))
    idx, _ = exact_neighbors(Y.astype(np.float32), 5)
    assert (labels[idx] == labels[:, None]).mean() > 0.9


@pytest.mark.parametrize("kwargs, match", [
    ({"perplexity": 0}, "perplexity"), ({"n_iter": -1}, "n_iter"), ({"method": "exact"}, "method"),
    # regression: inf reached int(3 * perplexity) and raised OverflowError
    ({"perplexity": float("inf")}, "finite positive"), ({"perplexity": float("nan")}, "finite positive"),
    ({"n_jobs": 0}, "n_jobs"), ({"neighbors": "hnsw"}, "neighbors")])
def test_settings_are_validated(kwargs, match):
    with pytest.raises(UserError, match=match):
        TSNESettings(**kwargs).validate()


def test_too_few_items_for_the_perplexity():
    with pytest.raises(UserError, match="lower the perplexity"):
        tsne_map(np.random.default_rng(0).standard_normal((50, 4)), TSNESettings(perplexity=30))


def test_robust_extent_known_answer():
    rng = np.random.default_rng(0)
    square = rng.uniform(-1, 1, (20000, 2)) * [3, 1] + [5, -2]  # 6 x 2 box centred at (5, -2)
    center, half = robust_extent(square)
    np.testing.assert_allclose(center, [5, -2], atol=0.05)
    assert half == pytest.approx(3 * 0.99, rel=0.01)
    assert robust_extent(2 * square)[1] == pytest.approx(2 * half)
    with pytest.raises(UserError, match=r"\(n, 2\)"):
        robust_extent(np.zeros((4, 3)))


def test_overlapped_fft_gradient_equals_openTSNE():
    from openTSNE import affinity
    from openTSNE.nearest_neighbors import PrecomputedNeighbors
    from openTSNE.tsne import kl_divergence_fft

    X, _ = _clusters()
    P = affinity.PerplexityBasedNN(perplexity=10, knn_index=PrecomputedNeighbors(*exact_neighbors(X, 30))).P
    Y = np.random.default_rng(0).standard_normal((120, 2)) * 5
    params = {"n_interpolation_points": 3, "min_num_intervals": 50, "ints_in_interval": 1}
    ref_kl, ref_grad = kl_divergence_fft(Y, P, 1, params, should_eval_error=True, n_jobs=2)
    gradient = OverlappedFFTGradient.make()
    try:
        kl, grad = gradient(Y, P, 1, params, should_eval_error=True, n_jobs=2)
    finally:
        gradient.close()
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15 * abs(ref_grad).max())
    assert kl == pytest.approx(ref_kl, rel=1e-12)


def test_regression_map_of_identical_rows_is_one_point_without_warnings():
    # openTSNE's PCA start divided by a zero std: a RuntimeWarning, then a NaN map.
    X = np.full((60, 8), 0.3)
    assert single_point(X) and not single_point(_clusters()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for standardize_ in (True, False):
            Y = tsne_map(X, TSNESettings(**{**QUICK.__dict__, "standardize": standardize_}))
            np.testing.assert_array_equal(Y, np.zeros((60, 2)))


@pytest.mark.parametrize("c", [1e30, 1e-30])
def test_regression_map_is_scale_safe(c):
    # float32 distances of a 1e30 table overflow, of a 1e-30 one underflow; --raw too.
    X, labels = _clusters()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for standardize_ in (True, False):
            Y = tsne_map(c * X.astype(np.float64),
                         TSNESettings(**{**QUICK.__dict__, "standardize": standardize_}))
            idx, _ = exact_neighbors(Y.astype(np.float32), 5)
            assert np.isfinite(Y).all() and (labels[idx] == labels[:, None]).mean() > 0.95


def test_robust_extent_of_a_map_with_almost_every_point_at_one_place():
    Y = np.zeros((500, 2))
    Y[0] = [4.0, 2.0]  # the central 99% is one point; the extent falls back to all points
    center, half = robust_extent(Y)
    np.testing.assert_allclose(center, [2.0, 1.0])
    assert half == 2.0
    assert robust_extent(np.zeros((5, 2)))[1] == 0.0


# -- huge tables: --sample, and --transform (placing a table in another's map) ---------------------

def test_sample_for_map_uniform_and_stratified_by_popularity():
    from collapse_kit.tsne import sample_for_map

    rows, text = sample_for_map(1000, None)
    assert (rows == np.arange(1000)).all() and text == "all 1,000 items"
    assert sample_for_map(50, 100)[0].size == 50  # a table smaller than the sample: all of it
    rows, text = sample_for_map(1000, 120, seed=3)
    assert rows.size == 120 == np.unique(rows).size and (np.diff(rows) > 0).all()
    assert "uniform sample of 120 of 1,000" in text
    assert (sample_for_map(1000, 120, seed=3)[0] == rows).all()
    assert not (sample_for_map(1000, 120, seed=4)[0] == rows).all()
    # stratified: each popularity decile gives exactly its share (popularity = reversed index,
    # so decile j holds rows 100 j .. 100 j + 99)
    pop = np.arange(1000.0)[::-1]
    rows, text = sample_for_map(1000, 200, popularity=pop, seed=0)
    assert np.histogram(rows, bins=10, range=(0, 1000))[0].tolist() == [20] * 10
    assert "stratified by popularity" in text
    rows, _ = sample_for_map(1003, 101, popularity=np.arange(1003.0), seed=0)
    assert rows.size == 101 == np.unique(rows).size


def test_sample_for_map_needs_at_least_two_rows():
    from collapse_kit.tsne import sample_for_map

    with pytest.raises(UserError, match="at least 2 rows"):
        sample_for_map(100, 1)


def test_placing_a_table_in_another_map_puts_items_by_their_clusters():
    from collapse_kit.tsne import tsne_map_and_place

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 6
    ref_labels, new_labels = rng.integers(0, 4, 500), rng.integers(0, 4, 150)
    E = centres[ref_labels] + rng.normal(size=(500, 16))
    F = centres[new_labels] + rng.normal(size=(150, 16))
    Y, (Z,) = tsne_map_and_place(E, [F], TSNESettings(n_iter=150))
    assert Y.shape == (500, 2) and Z.shape == (150, 2)
    centroids = np.array([Y[ref_labels == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(((Z[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == new_labels).mean() > 0.95
    with pytest.raises(UserError, match="same space"):
        tsne_map_and_place(E, [F[:, :8]], TSNESettings(n_iter=10))


def test_tsne_command_samples_and_transforms(tmp_path, capsys):
    from collapse_kit.cli import main

    root = Path(__file__).resolve().parents[1] / "results/ml-100k-cpu-shuffled/runs/ml-100k"
    sasrec = str(root / "sasrec/s0-strict/sasrec.pt")
    assert main(["tsne", sasrec, "-o", str(tmp_path / "s"), "--sample", "200",
                 "--iterations", "50"]) == 0
    err = capsys.readouterr().err
    assert "a sample of 200 of 1,008 items stratified by popularity" in err
    assert "t-SNE Gaussian (ml-100k): 200x128" in err  # the reference panel has the sample's size
    assert (tmp_path / "s.png").exists()
    stage1, stage3 = (str(root / f"adrec/s0-strict/stage{i}.pt") for i in (1, 3))
    assert main(["tsne", stage1, stage3, "--names", "s1", "s3", "--transform", "-o",
                 str(tmp_path / "t"), "--iterations", "50"]) == 0
    assert "placing s3 in its map" in capsys.readouterr().err
    assert (tmp_path / "t.png").exists()


def test_tsne_command_refuses_a_lone_transform_or_a_stratify_of_another_size(tmp_path, capsys):
    from collapse_kit.cli import main

    root = Path(__file__).resolve().parents[1] / "results/ml-100k-cpu-shuffled/runs/ml-100k"
    sasrec = str(root / "sasrec/s0-strict/sasrec.pt")
    stage1 = str(root / "adrec/s0-strict/stage1.pt")
    assert main(["tsne", stage1, "--transform", "-o", str(tmp_path / "u")]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err
    assert main(["tsne", sasrec, "--stratify", "baby", "--sample", "100", "-o",
                 str(tmp_path / "v")]) == 2
    assert "4731 items, but the table has 1008 rows" in capsys.readouterr().err
    assert not (tmp_path / "u.png").exists() and not (tmp_path / "v.png").exists()


def test_panel_maps_samples_names_and_adds_one_gaussian_per_row():
    from collapse_kit.tsne import TSNESettings, panel_maps

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 4)), rng.standard_normal((40, 4))
    said = []
    maps, names, rows = panel_maps([a, b], ["A", "B"], ["row1", "row2"],
                                   TSNESettings(perplexity=5, n_iter=10), sample=30, seed=0,
                                   say=said.append)
    assert names == ["A\n(a uniform sample of 30 of 50 items (seed 0))",
                     "B\n(a uniform sample of 30 of 40 items (seed 0))", "Gaussian", "Gaussian"]
    assert rows == ["row1", "row2", "row1", "row2"]
    assert [m.shape for m in maps] == [(30, 2)] * 4  # the Gaussian panels take the sampled shape
    assert len(said) == 4 and said[2].startswith("t-SNE Gaussian (row1): 30x4")
    maps, names, _ = panel_maps([a, b], ["A", "B"], ["", ""],
                                TSNESettings(perplexity=5, n_iter=10), transform=True)
    assert names == ["A", "B (placed in A's map)"] and [m.shape for m in maps] == [(50, 2),
                                                                                   (40, 2)]
