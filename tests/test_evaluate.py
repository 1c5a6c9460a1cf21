"""HR/NDCG on hand-computed cases under both protocols."""
import math

import numpy as np
import pytest
import torch

from adrec.evaluate import (aggregate, best_of, evaluate, improved, ranking_metrics,
                            target_ranks)
from tests.conftest import make_dataset


def test_ranks_strict_excludes_padding_row():
    scores = torch.tensor([[9.0, 1.0, 5.0, 3.0],   # padding row 0 scores highest
                           [0.0, 4.0, 4.0, 1.0]])  # tie with the target
    target = torch.tensor([3, 2])
    assert target_ranks(scores, target, exclude_padding=False).tolist() == [3, 1]
    assert target_ranks(scores, target, exclude_padding=True).tolist() == [2, 1]


def test_metrics_hand_computed():
    m = ranking_metrics(np.array([1, 3, 7, 15, 30]))
    assert m["HR@5"].tolist() == [1, 1, 0, 0, 0]
    assert m["HR@10"].tolist() == [1, 1, 1, 0, 0]
    assert m["HR@20"].tolist() == [1, 1, 1, 1, 0]
    np.testing.assert_allclose(m["NDCG@5"], [1, 0.5, 0, 0, 0])  # 1/log2(4) = 0.5
    np.testing.assert_allclose(m["NDCG@20"], [1, 0.5, 1 / 3, 0.25, 0])  # log2(8)=3, log2(16)=4


def test_strict_is_per_user_mean():
    per_user = {"HR@10": np.array([1.0] * 3 + [0.0] * 7)}
    assert aggregate(per_user, "strict")["HR@10"] == pytest.approx(30.0)


def test_official_averages_batches_of_512():
    # 512 users with hit rate 0.5 and a last batch of 2 users who both hit
    v = np.array([1.0, 0.0] * 256 + [1.0, 1.0])
    official = aggregate({"HR@10": v}, "official")["HR@10"]
    assert official == round(100 * (0.5 + 1.0) / 2, 4) == 75.0
    assert aggregate({"HR@10": v}, "strict")["HR@10"] == pytest.approx(100 * 258 / 514)


def test_selection_rules():
    a = {k: 1.0 for k in ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")}
    b = dict(a)
    b["HR@5"] = 2.0  # only HR@5 improves
    assert improved(b, a, "official") and not improved(b, a, "strict")
    c = dict(a, **{"NDCG@20": 1.5})
    assert improved(c, a, "strict")
    run = best_of(b, a, "official")
    assert run["HR@5"] == 2.0 and run["NDCG@20"] == 1.0
    with pytest.raises(ValueError, match="protocol"):
        aggregate({"HR@10": np.ones(3)}, "loose")


class _Oracle(torch.nn.Module):
    """Scores the true next item of a fixed chain highest; row 0 above everything."""

    needs_full_width = False

    def __init__(self, n_items, padding_score):
        super().__init__()
        self.n_items, self.padding_score = n_items, padding_score

    def score_all(self, history, generator=None):
        nxt = history[:, -1] % self.n_items + 1
        s = torch.zeros(history.shape[0], self.n_items + 1)
        s[torch.arange(len(nxt)), nxt] = 1.0
        s[:, 0] = self.padding_score
        return s


def test_evaluate_end_to_end_protocols():
    ds = make_dataset()
    strict = evaluate(_Oracle(ds.n_items, 2.0), ds, "test", protocol="strict")
    official = evaluate(_Oracle(ds.n_items, 2.0), ds, "test", protocol="official")
    assert strict["HR@5"] == 100.0 and strict["NDCG@5"] == 100.0
    # official protocol scores the padding row: the target is always rank 2
    assert official["HR@5"] == 100.0
    assert official["NDCG@5"] == pytest.approx(100 / math.log2(3), abs=1e-4)


@pytest.mark.parametrize("name", ["sasrec", "diffurec"])
def test_one_pass_for_both_protocols_equals_a_pass_each(name):
    """evaluate_all scores once (the trainer's final evaluation); each protocol's metrics must be
    those of its own pass, also for a model whose scores are seeded samples."""
    from adrec.evaluate import evaluate_all
    from adrec.models import build_model

    ds = make_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds.n_items, {"hidden": 16} if name == "sasrec" else
                        {"hidden": 16, "steps": 4})
    both = evaluate_all(model, ds, "valid", seed=3)
    for protocol in ("strict", "official"):
        assert both[protocol] == evaluate(model, ds, "valid", protocol=protocol, seed=3)


def test_scoring_runs_at_highest_matmul_precision_and_restores_the_callers():
    seen = []

    class _Spy(_Oracle):
        def score_all(self, history, generator=None):
            seen.append(torch.get_float32_matmul_precision())
            return super().score_all(history, generator)

    ds = make_dataset()
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        evaluate(_Spy(ds.n_items, 2.0), ds, "test")
        assert seen and set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("name", ["sasrec", "stage1", "adrec", "diffurec", "dreamrec"])
def test_user_representations_reproduce_the_evaluation_ranks(name):
    """`export --what users` writes these vectors: multiplied by the item table they must rank
    every test target exactly as the evaluation did (same chunks, same seeded noise), here with
    a small score budget so the pass has several chunks and the noise stream spans them."""
    from adrec.evaluate import compute_ranks, target_ranks, user_representations
    from adrec.models import build_model

    ds = make_dataset()
    torch.manual_seed(0)
    args = {"hidden": 16} if name in ("sasrec", "stage1") else {"hidden": 16, "steps": 4}
    model = build_model(name, ds.n_items, args)
    budget = 7 * (ds.n_items + 1)  # chunks of 7 users
    reps = user_representations(model, ds, "test", seed=5, score_budget=budget)
    assert reps.shape == (ds.n_users, 16) and reps.dtype == np.float32
    E = model.item_embedding.weight.detach()
    scores = torch.from_numpy(reps) @ E.T
    mine = target_ranks(scores, torch.as_tensor(ds.test), exclude_padding=True).numpy()
    ranks = compute_ranks(model, ds, "test", seed=5, score_budget=budget)
    np.testing.assert_array_equal(mine, ranks)
    if name in ("adrec", "diffurec", "dreamrec"):  # sampled: another seed, other vectors
        other = user_representations(model, ds, "test", seed=6, score_budget=budget)
        assert not np.allclose(other, reps)
