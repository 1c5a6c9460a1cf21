"""Collapse and popularity (issue 17, part 1): the correlation metrics against scipy and planted
answers, the head / torso / tail split, the analysis keys, and `analyze` / `compare` with
--dataset / --popularity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from collapse_kit.analyze import compute_metrics
from collapse_kit.cli import main
from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics.popularity import (
    correlation, correlation_interval, popularity_direction_correlation, popularity_groups,
    popularity_norm_correlation)
from collapse_kit.popularity import popularity_analysis

ROOT = Path(__file__).resolve().parents[1]
SASREC = ROOT / "results/ml-100k-cpu-shuffled/runs/ml-100k/sasrec/s0-strict/sasrec.pt"


def _popularity(n=400, seed=0):
    """Heavy-tailed, distinct popularity values (a Zipf law over the items, shuffled)."""
    return np.random.default_rng(seed).permutation(5000.0 / np.arange(1, n + 1) ** 1.1)


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, size=300).astype(float)  # many ties
    y = x + rng.normal(size=300)
    assert correlation(x, y, method="spearman") == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert correlation(x, y, method="pearson") == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    with pytest.raises(UndefinedMetric, match="same for every item"):
        correlation(np.ones(10), np.arange(10.0))
    with pytest.raises(UserError, match="unknown correlation method"):
        correlation(x, y, method="kendall")


def test_norms_a_monotone_function_of_popularity_give_spearman_one():
    rng = np.random.default_rng(2)
    p = rng.permutation(np.arange(1, 401) ** 1.5)  # distinct counts: rounding makes no ties
    directions = rng.normal(size=(p.size, 16))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    E = directions * np.log1p(p)[:, None] ** 0.5 + 0  # norm = sqrt(log(1 + p)), increasing
    res = popularity_norm_correlation(E, p)
    assert res["spearman"] == pytest.approx(1.0, abs=1e-12)
    assert res["pearson"] == pytest.approx(stats.pearsonr(np.linalg.norm(E, axis=1), p)[0],
                                           abs=1e-12)
    assert popularity_norm_correlation(-3.0 * E, p)["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("strength, where", [(8.0, 1), (1.2, 3)])
def test_a_planted_popularity_direction_is_found_at_its_index(strength, where):
    """Popularity planted along one axis, with two stronger unrelated axes when ``where`` = 3:
    the search finds it at that singular direction with |rho| = 1 (a monotone function)."""
    p = _popularity(600, seed=3)
    rng = np.random.default_rng(4)
    n, d = p.size, 12
    E = 0.05 * rng.normal(size=(n, d))
    signal = np.log1p(p)
    signal = (signal - signal.mean()) / signal.std()
    E[:, 5] += strength * signal
    if where == 3:
        E[:, 0] += 4.0 * rng.normal(size=n)
        E[:, 1] += 3.0 * rng.normal(size=n)
    res = popularity_direction_correlation(E, p, k=5)
    assert res["index"] == where
    assert abs(res["spearman"]) > 0.99
    assert len(res["per_direction"]) == 5
    assert all(abs(r) < 0.2 for i, r in enumerate(res["per_direction"]) if i != where - 1)
    # a rotation of the space changes nothing
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rot = popularity_direction_correlation(E @ Q, p, k=5)
    assert rot["index"] == where and rot["spearman"] == pytest.approx(res["spearman"], abs=1e-9)


def test_head_torso_tail_split():
    p = np.array([5, 1, 9, 9, 0, 3, 7, 2, 8.0])
    g = popularity_groups(p)
    assert np.bincount(g).tolist() == [3, 3, 3]
    assert sorted(p[g == 0]) == [8, 9, 9] and sorted(p[g == 2]) == [0, 1, 2]
    g = popularity_groups(p, (0.2, 0.5))
    assert np.bincount(g).tolist() == [2, 3, 4]
    assert set(p[g == 0]) == {9}
    for bad in ((0.5, 0.2), (0, 0.5), (0.2, 1.0), "x"):
        with pytest.raises(UserError, match="0 < a < b < 1"):
            popularity_groups(p, bad)


@pytest.fixture(scope="module")
def analysed():
    """A table whose row norms grow with popularity, and its popularity analysis (computed once:
    the bootstrap takes a moment)."""
    p = _popularity(300, seed=5)
    rng = np.random.default_rng(6)
    E = rng.normal(size=(300, 32)) * np.log1p(p)[:, None]  # norm grows with popularity
    res = popularity_analysis(E, p, bootstrap=50, null_draws=1, seed=3)
    return p, E, res


def test_analysis_keys_interval_and_null(analysed):
    _, _, res = analysed
    for key in ("popularity_norm_spearman", "popularity_norm_pearson",
                "popularity_direction_spearman", "popularity_direction_index"):
        assert res[key] is not None, key
    assert res["popularity_norm_spearman_ci_low"] <= res["popularity_norm_spearman"] \
        <= res["popularity_norm_spearman_ci_high"]
    assert res["popularity_norm_spearman"] > 0.5
    assert abs(res["popularity_norm_spearman_gaussian"]) < 0.2  # noise: about 0


def test_analysis_head_torso_tail_blocks_are_the_metrics_of_their_rows(analysed):
    p, E, res = analysed
    groups = popularity_groups(p)
    for g, name in enumerate(("head", "torso", "tail")):
        block = res[name]
        rows = np.flatnonzero(groups == g)
        assert block["n_items"] == rows.size == 100
        assert block["popularity_max"] == p[rows].max()
        want = compute_metrics(E[rows], seed=3)
        assert block["effective_rank"] == pytest.approx(want["effective_rank"], rel=1e-12)
        assert block["silhouette"] == pytest.approx(want["silhouette"], rel=1e-12)
    assert res["head"]["row_norm_mean"] > res["tail"]["row_norm_mean"]


def test_correlation_interval_of_a_monotone_pair_is_one():
    lo, hi = correlation_interval(np.arange(50.0), np.arange(50.0) ** 2, n_resamples=20)
    assert lo == pytest.approx(1.0, abs=1e-12) and hi == pytest.approx(1.0, abs=1e-12)


def test_analysis_of_equal_popularity_is_undefined_with_the_reason(analysed):
    _, E, _ = analysed
    # every item equally popular: the correlations are undefined, with the reason
    flat = popularity_analysis(E, np.full(300, 4.0), groups=False, null_draws=0)
    assert flat["popularity_norm_spearman"] is None
    assert "same for every item" in flat["popularity_norm_spearman_undefined"]


def _training_counts():
    from adrec.data import load_dataset

    ds = load_dataset("ml-100k")
    return np.bincount(np.concatenate(ds.train), minlength=ds.n_items + 1)[1:]


def test_analyze_with_a_dataset_or_a_counts_file(tmp_path, capsys):
    assert main(["analyze", str(SASREC), "--json", "--dataset", "ml-100k", "--null-draws", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("stable_rank", "participation_ratio", "popularity_norm_spearman",
                "popularity_norm_pearson", "popularity_direction_spearman",
                "popularity_direction_index", "head", "torso", "tail"):
        assert key in out, key
    for name in ("head", "torso", "tail"):
        assert {"singular_value_entropy", "effective_rank", "silhouette"} <= set(out[name])
    assert out["head"]["n_items"] + out["torso"]["n_items"] + out["tail"]["n_items"] == 1008
    from collapse_kit.io import load_embeddings

    E = load_embeddings(SASREC).table
    counts = _training_counts()
    want = popularity_norm_correlation(E, counts)
    assert out["popularity_norm_spearman"] == pytest.approx(want["spearman"], abs=1e-12)
    assert out["popularity_source"].startswith("training interactions of ml-100k")
    # the same counts from a file give the same numbers
    path = tmp_path / "counts.csv"
    path.write_text("item_id,count\n" + "".join(f"{i + 1},{c}\n" for i, c in enumerate(counts)))
    assert main(["analyze", str(SASREC), "--json", "--popularity", str(path),
                 "--null-draws", "0"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("popularity_norm_spearman", "popularity_direction_spearman", "head"):
        assert again[key] == out[key], key
    # the text table prints the popularity block
    assert main(["analyze", str(SASREC), "--dataset", "ml-100k", "--popularity-split",
                 "0.2,0.5"]) == 0
    text = capsys.readouterr().out
    assert "Collapse and popularity" in text and "head       202" in text


def test_compare_with_a_dataset_draws_the_popularity_figure(tmp_path, capsys):
    fig = tmp_path / "pop"
    assert main(["compare", str(SASREC), str(SASREC), "--names", "a", "b", "--dataset",
                 "ml-100k", "--popularity-figure", str(fig), "--format", "csv"]) == 0
    out = capsys.readouterr()
    lines = out.out.split("Collapse and popularity")[1].strip().splitlines()[1:]
    assert lines[0].startswith("table,rho(pop, norm)")
    assert lines[1].split(",")[1:] == lines[2].split(",")[1:]
    assert (tmp_path / "pop.png").stat().st_size > 10_000 and (tmp_path / "pop.pdf").exists()


def test_popularity_errors_are_one_line(tmp_path, capsys):
    bad_ids = tmp_path / "bad.csv"
    bad_ids.write_text("item_id,count\n1,4\n5000,2\n")
    cases = [
        (["analyze", str(SASREC), "--dataset", "baby"], "has 4731 items but the table has 1008"),
        # the counts file is named as such, not as a "label file" (a message fixed 2026-12-07)
        (["analyze", str(SASREC), "--popularity", str(bad_ids)],
         "item_id 5000 is outside 1..1008, the items of the embedding table; is this popularity "
         "file"),
        (["analyze", str(SASREC), "--dataset", "ml-100k", "--popularity", str(bad_ids)],
         "not both"),
        (["analyze", str(SASREC), "--popularity-split", "0.2,0.5"], "needs --dataset"),
        (["compare", str(SASREC), "--popularity-figure", str(tmp_path / "f")], "needs --dataset"),
        (["analyze", str(SASREC), "--dataset", "no-such-set"], "no-such-set"),
    ]
    for argv, message in cases:
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, (argv, err)
    with pytest.raises(SystemExit) as exit_:  # argparse: one line, exit 2
        main(["analyze", str(SASREC), "--dataset", "ml-100k", "--popularity-split", "0.5,0.2"])
    assert exit_.value.code == 2 and "0 < A < B < 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [bad_ids]
