"""probes: label files, metrics against scikit-learn, the numpy head against torch, and probe
properties (planted signal decodes, random tables score at chance, determinism)."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from collapse_kit.errors import UserError
from probes import make_popularity
from probes.labels import BUNDLED_LABELS, load_item_labels, load_popularity
from probes.linear import (
    LinearHead, ProbeSettings, all_zero_baseline, average_precision, epoch_batches, linear_probe,
    multilabel_metrics, probe_with_baselines, train_head)

ROOT = Path(__file__).resolve().parents[1]
SHARED_GENRES = ROOT.parent / "shared" / "data" / "ml-100k" / "item_genres.csv"
FAST = ProbeSettings(seeds=2, epochs=10)


def _fixed_predictions(seed: int = 0):
    """Labels with an empty column and a rare one, and scores correlated with them."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((200, 8)) < [0.4, 0.2, 0.1, 0.05, 0.3, 0.0, 0.02, 0.5]).astype(int)
    scores = np.clip(0.35 * Y + rng.random(Y.shape) * 0.7, 0, 1)
    scores[:20, 1] = 0.5  # ties, exactly at the threshold
    return Y, scores


# -- metrics against scikit-learn --------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn_on_fixed_predictions(seed):
    Y, S = _fixed_predictions(seed)
    got = multilabel_metrics(Y, S, threshold=0.5)
    P = (S >= 0.5).astype(int)
    micro = precision_recall_fscore_support(Y, P, average="micro", zero_division=0)
    present = Y.any(axis=0)
    macro = precision_recall_fscore_support(Y[:, present], P[:, present], average="macro", zero_division=0)
    ap = average_precision_score(Y[:, present], S[:, present], average="macro")
    expected = dict(zip(("micro_precision", "micro_recall", "micro_f1"), micro[:3]))
    expected.update(zip(("macro_precision", "macro_recall", "macro_f1"), macro[:3]))
    expected["mean_average_precision"] = ap
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["n_macro_labels"] == present.sum()


def test_metrics_restricted_to_given_labels_match_sklearn():
    Y, S = _fixed_predictions(3)
    cols = np.array([0, 2, 4, 5])
    got = multilabel_metrics(Y, S, labels=cols)
    P = (S >= 0.5).astype(int)
    micro = precision_recall_fscore_support(Y[:, cols], P[:, cols], average="micro", zero_division=0)
    assert got["micro_f1"] == pytest.approx(micro[2], abs=1e-12)
    assert got["n_macro_labels"] == 3  # column 5 has no positive


def test_average_precision_with_ties_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300), 1)  # many ties
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_constant_scores_give_prevalence_as_ap():
    y = np.zeros(50, bool)
    y[:7] = True
    assert average_precision(y, np.zeros(50)) == pytest.approx(7 / 50)


def test_metrics_reject_non_binary_labels():
    with pytest.raises(UserError, match="only 0 and 1"):
        multilabel_metrics(np.full((3, 2), 2), np.zeros((3, 2)))


# -- the numpy head is torch's BatchNorm1d + Linear + Adam ---------------------------------------

def test_numpy_head_matches_torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices; extra threads only wait
    try:
        _compare_with_torch(torch)
    finally:
        torch.set_num_threads(threads)


def _compare_with_torch(torch):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 12)) * 3 + 1
    Y = (rng.random((150, 5)) < 0.3).astype(np.float64)
    head = LinearHead.init(12, 5, rng)
    ref = torch.nn.Sequential(torch.nn.BatchNorm1d(12), torch.nn.Linear(12, 5)).double()
    with torch.no_grad():
        ref[1].weight.copy_(torch.from_numpy(head.W))
        ref[1].bias.copy_(torch.from_numpy(head.b))
    batches = list(epoch_batches(150, 32, 3, np.random.default_rng(1)))  # the last batch has 22 items
    train_head(head, X, Y, batches, lr=0.01)
    opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    ref.train()
    for idx in batches:
        opt.zero_grad()
        loss_fn(ref(Xt[idx]), Yt[idx]).backward()
        opt.step()
    ref.eval()
    np.testing.assert_allclose(head.W, ref[1].weight.detach().numpy(), atol=1e-9)
    np.testing.assert_allclose(head.gamma, ref[0].weight.detach().numpy(), atol=1e-9)
    np.testing.assert_allclose(head.running_var, ref[0].running_var.numpy(), atol=1e-9)
    with torch.no_grad():
        expected = torch.sigmoid(ref(Xt)).numpy()
    np.testing.assert_allclose(head.predict_proba(X), expected, atol=1e-9)


def test_single_item_final_batch_is_skipped():
    batches = list(epoch_batches(65, 64, 2, np.random.default_rng(0)))
    assert [b.size for b in batches] == [64, 64]


# -- probe properties ----------------------------------------------------------------------------

def _planted(n=600, d=16, k=4, seed=0):
    """Labels that are thresholded linear functions of the table, about 25 % positive each."""
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n, d)).astype(np.float32)
    W = rng.standard_normal((d, k))
    logits = E @ W
    Y = (logits > np.quantile(logits, 0.75, axis=0)).astype(np.uint8)
    return E, Y


def test_planted_signal_scores_high():
    E, Y = _planted()
    r = linear_probe(E, Y, settings=ProbeSettings(seeds=3))
    assert r.mean["micro_f1"] > 0.8
    assert r.mean["mean_average_precision"] > 0.9


def test_random_table_scores_at_chance():
    E, Y = _planted()
    noise = np.random.default_rng(5).standard_normal(E.shape).astype(np.float32)
    r = linear_probe(noise, Y, settings=ProbeSettings(seeds=3))
    chance = all_zero_baseline(Y, settings=ProbeSettings(seeds=3))
    # mAP of constant scores is the prevalence (0.25); an uninformative table stays near it.
    assert chance.mean["mean_average_precision"] == pytest.approx(0.25, abs=0.03)
    assert abs(r.mean["mean_average_precision"] - chance.mean["mean_average_precision"]) < 0.06
    assert r.mean["micro_f1"] < 0.35


def test_probe_is_deterministic_for_a_seed():
    E, Y = _planted(n=200)
    a = linear_probe(E, Y, settings=FAST)
    b = linear_probe(E, Y, settings=FAST)
    assert a.per_seed == b.per_seed
    assert a.per_seed[0]["micro_f1"] != a.per_seed[1]["micro_f1"]
    assert a.sd["micro_f1"] > 0


def test_baselines_and_unlabelled_items():
    E, Y = _planted(n=200, seed=3)
    labelled = np.ones(200, bool)
    labelled[::4] = False
    out = probe_with_baselines(E, Y, settings=FAST, labelled=labelled,
                               popularity=np.arange(200, dtype=float))
    assert list(out) == ["model", "gaussian", "popularity", "all_zero"]
    zero = out["all_zero"].mean
    assert zero["micro_precision"] == zero["micro_recall"] == zero["micro_f1"] == 0.0
    assert out["model"].mean["micro_f1"] > out["gaussian"].mean["micro_f1"]


@pytest.mark.parametrize("kwargs, match", [
    ({"seeds": 0}, "seeds"), ({"batch_size": 1}, "batch_size"), ({"lr": -1.0}, "lr"),
    ({"test_fraction": 1.0}, "test_fraction"), ({"threshold": 0.0}, "threshold")])
def test_settings_are_validated(kwargs, match):
    with pytest.raises(UserError, match=match):
        ProbeSettings(**kwargs).validate()


def test_too_few_items_is_an_error():
    with pytest.raises(UserError, match="at least 10"):
        linear_probe(np.ones((5, 3), np.float32), np.ones((5, 2)))


# -- label files ---------------------------------------------------------------------------------

def _write(tmp_path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_genres():
    labels = load_item_labels("ml-100k-genres", 1008)
    assert labels.Y.shape == (1008, 26)
    assert labels.names[0] == "Action" and labels.names[-1] == "Western"
    assert int(labels.Y.any(axis=0).sum()) == 17  # 9 genres have no positive item
    assert labels.labelled.all()
    if SHARED_GENRES.exists():
        assert BUNDLED_LABELS["ml-100k-genres"].read_bytes() == SHARED_GENRES.read_bytes()


def test_user_label_file_is_read_by_item_id(tmp_path):
    path = _write(tmp_path, "item_id,a,b\n1,1,0\n3,0,1\n\n2,1,1\n")
    labels = load_item_labels(path, 3)
    np.testing.assert_array_equal(labels.Y, [[1, 0], [1, 1], [0, 1]])


def test_unlabelled_items_are_refused_unless_allowed(tmp_path):
    with pytest.raises(UserError, match=r"labels 2 of the table's 3 items .*item 2.*--padding drop"):
        load_item_labels(_write(tmp_path, "item_id,a\n1,1\n3,0\n"), 3)
    partial = load_item_labels(_write(tmp_path, "item_id,a\n1,1\n3,0\n"), 3, allow_unlabelled=True)
    np.testing.assert_array_equal(partial.labelled, [True, False, True])


def test_tab_separated_label_file(tmp_path):
    labels = load_item_labels(_write(tmp_path, "item_id\ta\n1\t1\n2\t0\n"), 2)
    np.testing.assert_array_equal(labels.Y[:, 0], [1, 0])


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("id,a\n1,1\n", "header must be 'item_id"),
    ("item_id\n1\n", "header must be 'item_id"),
    ("item_id,a\n", "no item rows"),
    ("item_id,a\nx,1\n", r"line 2: item_id 'x' is not an integer"),
    ("item_id,a\n0,1\n", "0 is the padding item"),
    ("item_id,a\n1,1\n4,0\n", r"item_id 4 is outside 1\.\.3.*right|item_id 4 is outside 1\.\.3"),
    ("item_id,a\n1,1\n1,0\n", "repeats line 2"),
    ("item_id,a\n1,2\n", "must be 0 or 1"),
    ("item_id,a,b\n1,1\n", "has 2 fields but the header has 3"),
    ("item_id,a\n1,0\n2,0\n3,0\n", "no item has a 1"),
])
def test_label_file_errors(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        load_item_labels(_write(tmp_path, text), 3)


def test_missing_label_file_names_bundled_sets():
    with pytest.raises(FileNotFoundError, match="bundled: ml-100k-genres"):
        load_item_labels("no-such-labels", 10)


def test_bundled_popularity_matches_the_dataset(tmp_path):
    counts = load_popularity("ml-100k", 1008)
    assert counts.sum() == 54413 and counts.min() >= 1
    source = ROOT / "adrec" / "datasets" / "ml-100k" / "sequences.tsv.gz"
    if source.exists():  # the bundled file is what make_popularity writes
        out = tmp_path / "pop.csv"
        make_popularity.main(["--out", str(out)])
        assert out.read_bytes() == (ROOT / "probes" / "data" / "ml-100k-popularity.csv").read_bytes()


def test_popularity_counts_from_sequences(tmp_path):
    path = tmp_path / "sequences.tsv.gz"
    with gzip.open(path, "wt", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerows([["user", "train", "valid", "test"], [0, "1 2 3", 4, 1], [1, "2", 3, 4]])
    total, train = make_popularity.count_interactions(path)
    assert total == [2, 2, 2, 2] and train == [1, 2, 1, 0]


def test_popularity_errors(tmp_path):
    with pytest.raises(UserError, match="no 'count' column"):
        load_popularity(_write(tmp_path, "item_id,n\n1,3\n"), 1)
    with pytest.raises(UserError, match="no count for item 2"):
        load_popularity(_write(tmp_path, "item_id,count\n1,3\n"), 2)
    with pytest.raises(UserError, match="must be a count >= 0"):
        load_popularity(_write(tmp_path, "item_id,count\n1,-3\n"), 1)


def test_probe_columns_are_the_tables_then_the_baselines_on_the_same_splits():
    from probes.linear import ProbeSettings, linear_probe, probe_columns, probe_with_baselines

    rng = np.random.default_rng(0)
    Y = (rng.random((120, 3)) < 0.3).astype(np.uint8)
    A, B = rng.standard_normal((120, 8)), rng.standard_normal((120, 8))
    pop = rng.integers(1, 50, 120)
    s = ProbeSettings(seeds=2, epochs=3)
    cols = probe_columns({"a": A, "b": B}, Y, settings=s, popularity=pop)
    assert [n for n, _ in cols] == ["a", "b", "Gaussian table", "popularity only", "all-zero"]
    base = probe_with_baselines(A, Y, settings=s, popularity=pop)
    assert cols[0][1].mean == base["model"].mean and cols[2][1].mean == base["gaussian"].mean
    assert cols[1][1].mean == linear_probe(B, Y, settings=s).mean
    assert [n for n, _ in probe_columns({"a": A}, Y, settings=s)] == ["a", "Gaussian table", "all-zero"]
    with pytest.raises(UserError, match="at least one table"):
        probe_columns({}, Y, settings=s)
