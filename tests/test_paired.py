"""Issue 17, parts 1-2: the popularity of what a model recommends (`evaluate`: coverage@K,
avg_popularity@K, head_share@K) and paired significance (`evaluate A --against B`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import wilcoxon

from adrec.evaluate import (METRIC_NAMES, compute_ranks, ranking_metrics,
                            recommendation_popularity, scoring_pass)
from collapse_kit.cli import main
from collapse_kit.errors import UserError
from collapse_kit.paired import paired_comparison


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny ML-100K checkpoints: SASRec seeds 0 and 1, stage-1 seed 0 (1 epoch each)."""
    from adrec.config import TrainConfig
    from adrec.data import load_dataset
    from adrec.pipeline import train_model

    ds = load_dataset("ml-100k")
    root = tmp_path_factory.mktemp("paired")
    out = {}
    for name, model, seed in (("a0", "sasrec", 0), ("a1", "sasrec", 1), ("b0", "stage1", 0)):
        result = train_model(model, ds, TrainConfig(epochs=1, batch_size=256, seed=seed),
                             root / name, model_args={"hidden": 16, "n_heads": 2, "n_blocks": 1},
                             progress=False)
        out[name] = str(result.checkpoint)
    return ds, out


def test_recommendation_popularity_known_answers():
    top = np.array([[1, 2, 3], [1, 4, 3]])
    pop = np.array([10.0, 0.0, 5.0, 1.0, 0.0])  # item 1 is the head (ceil(0.2 * 5) = 1 item)
    out = recommendation_popularity(top, pop, ks=(1, 3))
    assert out["coverage@1"] == pytest.approx(20.0)       # {1} of 5 items
    assert out["coverage@3"] == pytest.approx(80.0)       # {1, 2, 3, 4}
    assert out["avg_popularity@1"] == pytest.approx(10.0)
    assert out["avg_popularity@3"] == pytest.approx((10 + 0 + 5 + 10 + 1 + 5) / 6)
    assert out["head_share@1"] == pytest.approx(100.0)
    assert out["head_share@3"] == pytest.approx(100 * 2 / 6)


def test_top_items_exclude_padding_and_agree_with_the_ranks(runs):
    from adrec.checkpoint import load_checkpoint, model_from_checkpoint

    ds, paths = runs
    model = model_from_checkpoint(load_checkpoint(paths["a0"]))
    run = scoring_pass(model, ds, "test", protocols=("strict",), topk=20)
    assert run.top.shape == (ds.n_users, 20) and run.top.min() >= 1
    assert all(len(set(row)) == 20 for row in run.top)
    # a target ranked r <= 20 sits at position r of the user's top list
    r = run.ranks["strict"]
    hit = np.flatnonzero(r <= 20)
    assert hit.size > 0
    assert (run.top[hit, r[hit] - 1] == ds.test[hit]).all()
    np.testing.assert_array_equal(r, compute_ranks(model, ds, "test"))


def test_evaluate_json_reports_the_popularity_of_the_recommendations(runs, capsys):
    ds, paths = runs
    assert main(["evaluate", paths["a0"], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for split in ("valid", "test"):
        for k in (5, 10, 20):
            assert 0 < out[split][f"coverage@{k}"] <= 100
            assert 0 <= out[split][f"head_share@{k}"] <= 100
            assert out[split][f"avg_popularity@{k}"] > 0
        assert out[split]["coverage@5"] <= out[split]["coverage@20"]
    assert main(["evaluate", paths["a0"]]) == 0
    assert "head_share@20" in capsys.readouterr().out


def test_paired_comparison_against_scipy_and_known_answers():
    rng = np.random.default_rng(0)
    a = [rng.random(500) * 100]
    b = [a[0] - 1.0 + rng.normal(size=500)]
    res = paired_comparison(a, b, n_resamples=500, random_state=1)
    d = a[0] - b[0]
    assert res["delta"] == pytest.approx(d.mean(), abs=1e-12)
    assert res["a"] - res["b"] == pytest.approx(res["delta"], abs=1e-9)
    assert res["p_wilcoxon"] == pytest.approx(wilcoxon(d).pvalue, rel=1e-12)
    lo, hi = res["ci95"]
    se = d.std(ddof=1) / np.sqrt(d.size)
    assert lo < res["delta"] < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)  # the normal interval's width
    same = paired_comparison(a, a, n_resamples=50)
    assert same["delta"] == 0 and same["ci95"] == [0, 0] and same["p_wilcoxon"] is None
    assert "rank alike" in same["p_wilcoxon_undefined"]
    # two seed pairs: each user's difference is the mean over the pairs
    two = paired_comparison([a[0], a[0] + 2], [b[0], b[0]], n_resamples=50)
    assert two["delta"] == pytest.approx(d.mean() + 1.0, abs=1e-12)


def test_paired_comparison_refuses_unmatched_runs_or_users():
    rng = np.random.default_rng(0)
    a = [rng.random(500) * 100]
    b = [a[0] - 1.0 + rng.normal(size=500)]
    with pytest.raises(UserError, match="as many B runs"):
        paired_comparison([a[0]], [b[0], b[0]])
    with pytest.raises(UserError, match="same users"):
        paired_comparison([a[0]], [b[0][:10]])


def test_evaluate_against_is_the_paired_difference_of_the_two_evaluations(runs, capsys):
    ds, paths = runs
    from adrec.checkpoint import load_checkpoint, model_from_checkpoint

    assert main(["evaluate", paths["a0"], "--against", paths["b0"], "--json",
                 "--bootstrap", "500"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == 1 and out["n_users"] == ds.n_users
    per = {}
    for name in ("a0", "b0"):
        model = model_from_checkpoint(load_checkpoint(paths[name]))
        per[name] = ranking_metrics(compute_ranks(model, ds, "test"))
    for m in METRIC_NAMES:
        r = out["test"][m]
        assert set(r) >= {"delta", "ci95", "p_wilcoxon"}
        d = 100 * (per["a0"][m] - per["b0"][m])
        assert r["delta"] == pytest.approx(d.mean(), abs=1e-9)
        assert r["ci95"][0] <= r["delta"] <= r["ci95"][1]
        if d.any():
            assert r["p_wilcoxon"] == pytest.approx(wilcoxon(d).pvalue, rel=1e-9)
    # a model against itself: no difference anywhere
    assert main(["evaluate", paths["a0"], "--against", paths["a0"], "--json"]) == 0
    self_ = json.loads(capsys.readouterr().out)
    assert all(self_["test"][m]["delta"] == 0 and self_["test"][m]["p_wilcoxon"] is None
               for m in METRIC_NAMES)
    # seeds pooled: A seeds 0 and 1 against B seed 0 twice
    assert main(["evaluate", paths["a0"], paths["a1"], "--against", paths["b0"], paths["b0"],
                 "--json", "--bootstrap", "200"]) == 0
    pooled = json.loads(capsys.readouterr().out)
    assert pooled["pairs"] == 2
    assert main(["evaluate", paths["a0"], "--against", paths["b0"]]) == 0
    text = capsys.readouterr().out
    assert "Wilcoxon" in text and "NDCG@20" in text


def test_paired_errors_are_one_line(runs, tmp_path, capsys):
    ds, paths = runs
    from adrec.config import TrainConfig
    from adrec.pipeline import train_model
    from tests.conftest import make_dataset

    other = train_model("sasrec", make_dataset(), TrainConfig(epochs=1, batch_size=64),
                        tmp_path / "other", model_args={"hidden": 8, "n_heads": 1},
                        progress=False).checkpoint
    cases = [
        (["evaluate", paths["a0"], paths["a1"]], "several are for a paired comparison"),
        (["evaluate", paths["a0"], paths["a1"], "--against", paths["b0"]],
         "one checkpoint per CKPT"),
        (["evaluate", paths["a0"], "--against", paths["b0"], "--bootstrap", "5"],
         "at least 100"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, (argv, err)
    assert main(["evaluate", paths["a0"], "--against", str(other), "--dataset", "ml-100k"]) == 2
    assert "items" in capsys.readouterr().err


def test_checkpoints_keep_the_test_ranks_for_later_paired_comparisons(runs):
    """The trainer saves each test user's strict rank (test_ranks); stripping the weights keeps
    them, so two light runs can still be compared user by user."""
    from adrec.checkpoint import load_checkpoint, model_from_checkpoint, strip_weights

    ds, paths = runs
    ckpt = load_checkpoint(paths["a0"])
    saved = ckpt["test_ranks"]
    assert saved.dtype.is_floating_point is False and saved.shape == (ds.n_users,)
    model = model_from_checkpoint(ckpt)
    np.testing.assert_array_equal(saved.numpy(), compute_ranks(model, ds, "test", seed=0))
    metrics = ranking_metrics(saved.numpy())
    assert 100 * metrics["NDCG@20"].mean() == pytest.approx(
        ckpt["metrics"]["strict"]["test"]["NDCG@20"], abs=1e-9)
    assert strip_weights(ckpt)["test_ranks"] is saved


def _light(path, tmp_path, name):
    """A light copy of a checkpoint: weights stripped, test ranks kept (scripts/pack_runs.py)."""
    from adrec.checkpoint import atomic_save, load_checkpoint, strip_weights

    return str(atomic_save(strip_weights(load_checkpoint(path)), tmp_path / f"{name}.pt"))


def test_stored_ranks_compare_light_runs_as_ranking_their_users_again(runs, tmp_path, capsys):
    """`evaluate --against --stored-ranks` on light (stripped) checkpoints gives the test
    comparison that ranking the users again gives for the full ones (SASRec+ and stage 1 rank
    without sampling noise, so the saved ranks are exactly those), and no valid split."""
    ds, paths = runs
    light = {name: _light(paths[name], tmp_path, name) for name in ("a0", "a1", "b0")}
    # the full checkpoints, ranked again
    assert main(["evaluate", paths["a0"], paths["a1"], "--against", paths["b0"], paths["b0"],
                 "--json", "--bootstrap", "300"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["ranks"] == "computed"
    assert main(["evaluate", light["a0"], light["a1"], "--against", light["b0"], light["b0"],
                 "--json", "--bootstrap", "300", "--stored-ranks"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["ranks"] == "stored" and "valid" not in stored
    assert stored["pairs"] == 2 and stored["n_users"] == ds.n_users
    assert stored["test"] == again["test"]
    # the text form says where the ranks come from and shows the test split only
    assert main(["evaluate", light["a0"], "--against", light["b0"], "--stored-ranks"]) == 0
    text = capsys.readouterr().out
    assert "stored at training" in text and "\ntest\n" in text and "\nvalid\n" not in text


class FakeRun:  # what study.report.paired_cell reads of a Run
    def __init__(self, model, path, ckpt=None):
        from adrec.checkpoint import load_checkpoint

        self.spec = type("Spec", (), {"model": model, "variant": None,
                                      "protocol": "strict", "seed": 0})()
        self._path = path
        self._ckpt = load_checkpoint(path) if ckpt is None else ckpt

    def checkpoint(self, stage=None):
        return self._ckpt

    def path(self, stage=None):
        return self._path


def test_reports_paired_cell_names_damaged_ranks(runs, tmp_path):
    """Regression: the report's cell read `test_ranks` without the shape check that
    `evaluate --stored-ranks` makes, so a damaged vector failed inside ranking_metrics; it now
    fails with the same message naming the file."""
    from adrec.checkpoint import load_checkpoint
    from collapse_kit.study import report

    ds, paths = runs
    bad = load_checkpoint(paths["b0"])
    bad["test_ranks"] = bad["test_ranks"][:5]
    with pytest.raises(ValueError, match=r"bad\.pt: its test_ranks \(shape \(5,\)\) .* damaged"):
        report.paired_cell([FakeRun("stage1", "runs/bad.pt", bad), FakeRun("sasrec", paths["a0"])],
                           "stage1", None, "strict")
    bad["test_ranks"] = load_checkpoint(paths["b0"])["test_ranks"].clone()
    bad["test_ranks"][0] = 0  # ranks start at 1
    with pytest.raises(ValueError, match="damaged"):
        report.paired_cell([FakeRun("stage1", "runs/bad.pt", bad), FakeRun("sasrec", paths["a0"])],
                           "stage1", None, "strict")


def test_stored_ranks_equal_the_reports_paired_cell(runs, tmp_path, capsys):
    """The reports' "vs SASRec+" cell (study.report.paired_cell: NDCG@20, 2000 resamples, seed
    0) is what `evaluate --stored-ranks` prints for the same runs."""
    from collapse_kit.study import report

    ds, paths = runs
    a, b = _light(paths["b0"], tmp_path, "b0"), _light(paths["a0"], tmp_path, "a0")
    assert main(["evaluate", a, "--against", b, "--stored-ranks", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["test"]["NDCG@20"]

    cell = report.paired_cell([FakeRun("stage1", a), FakeRun("sasrec", b)], "stage1", None,
                              "strict")
    expected = (f"{r['delta']:+.2f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}], "
                f"p {r['p_wilcoxon']:.2g} (1 seed)")
    assert cell == expected


def test_stored_ranks_errors_are_one_line(runs, tmp_path, capsys):
    from adrec.checkpoint import atomic_save, load_checkpoint, strip_weights

    ds, paths = runs
    light = _light(paths["a0"], tmp_path, "a0")
    old = strip_weights(load_checkpoint(paths["b0"]))
    del old["test_ranks"]  # a run from before 2026-12-06
    old_path = str(atomic_save(old, tmp_path / "old.pt"))
    bad = load_checkpoint(paths["b0"])
    bad["test_ranks"] = bad["test_ranks"][:5]
    bad_path = str(atomic_save(bad, tmp_path / "bad.pt"))
    other = load_checkpoint(paths["b0"])
    other["dataset"] = {**other["dataset"], "name": "beauty", "n_items": 6086}
    other_path = str(atomic_save(other, tmp_path / "other.pt"))
    cases = [
        # a light run without the flag: the error points at it
        (["evaluate", light, "--against", paths["b0"]], "--stored-ranks` compares those"),
        (["evaluate", light, "--against", old_path, "--stored-ranks"],
         "has no stored per-user test ranks"),
        (["evaluate", light, "--against", bad_path, "--stored-ranks"], "damaged"),
        (["evaluate", light, "--against", other_path, "--stored-ranks"],
         "trained on other data (beauty, 6086 items)"),
        (["evaluate", light, "--against", paths["b0"], "--stored-ranks", "--protocol",
          "official"], "--protocol official cannot change them (drop it,"),
        (["evaluate", light, "--against", paths["b0"], "--stored-ranks", "--model", "sasrec",
          "--dataset", "ml-100k"], "--model, --dataset cannot change them (drop them,"),
        (["evaluate", light, "--stored-ranks"], "add --against CKPT"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, (argv, err)
