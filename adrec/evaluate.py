"""Full-ranking evaluation: HR@k and NDCG@k over all items, two declared protocols.

Rank r (1-based) of the target = 1 + the number of candidates scoring strictly higher.
HR@k = 1[r <= k]; NDCG@k = 1[r <= k] / log2(r + 1) (one relevant item, ideal DCG = 1).
Reported in percent.

Protocols (official-implementation.md section 1.5):

* ``strict`` (default): the padding row 0 is not a candidate; metrics are exact per-user means;
  model selection on valid NDCG@20.
* ``official``: the authors' pipeline: row 0 is scored like an item; each metric is averaged within
  consecutive batches of 512 users (in user order), the batch means are averaged with equal
  weight, x100 and rounded to 4 decimals; the model is kept when any of the six valid metrics
  improves.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from adrec.config import matmul_precision
from adrec.data import SequenceDataset, eval_histories, left_pad

KS = (5, 10, 20)
PROTOCOLS = ("strict", "official")
METRIC_NAMES = tuple(f"{m}@{k}" for m in ("HR", "NDCG") for k in KS)
OFFICIAL_BATCH = 512


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def target_ranks(scores: torch.Tensor, target: torch.Tensor, *, exclude_padding: bool
                 ) -> torch.Tensor:
    """1-based rank of ``target`` (B,) among the scores (B, N+1); ties count in the target's favour.

    With ``exclude_padding`` row 0 is not a candidate. Scores must be finite (ValueError
    otherwise): ``NaN > x`` is false, so a NaN score would never outrank the target.
    """
    if scores.ndim != 2 or target.shape != scores.shape[:1]:
        raise ValueError(f"scores must be (B, N+1) and target (B,); got {tuple(scores.shape)} "
                         f"and {tuple(target.shape)}")
    s = scores.float()
    finite = torch.isfinite(s)
    if exclude_padding:
        finite[:, 0] = True
    if not bool(finite.all()):
        users = int((~finite).any(1).sum())
        raise ValueError(f"the model scored NaN or infinity for {users} of {len(s)} users: its "
                         "weights are not finite (a diverged run?) or overflowed; no metric "
                         "is defined (a NaN would count as a hit)")
    tgt = s.gather(1, target[:, None])  # (B, 1)
    higher = s > tgt
    if exclude_padding:
        higher[:, 0] = False
    return higher.sum(1) + 1


def ranking_metrics(ranks: np.ndarray, ks=KS) -> dict[str, np.ndarray]:
    """Per-user HR@k and NDCG@k (fractions, not percent) from 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 1 or (ranks < 1).any():
        raise ValueError("ranks must be a 1-D array of 1-based ranks")
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = hit.astype(np.float64)
        out[f"NDCG@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
    return {name: out[name] for name in METRIC_NAMES if name in out}


def aggregate(per_user: dict[str, np.ndarray], protocol: str = "strict") -> dict[str, float]:
    """Average per-user metrics into percentages under ``protocol``."""
    check_protocol(protocol)
    out = {}
    for name, v in per_user.items():
        if protocol == "strict":
            out[name] = float(100.0 * v.mean())
        else:
            means = [v[i:i + OFFICIAL_BATCH].mean() for i in range(0, len(v), OFFICIAL_BATCH)]
            out[name] = round(float(100.0 * np.mean(means)), 4)
    return out


def official_user_weights(n_users: int, batch: int = OFFICIAL_BATCH) -> np.ndarray:
    """Each user's weight in the official protocol's mean (``aggregate(..., "official")`` is
    ``100 * sum(weights * per_user)``): the mean of per-batch means over ``batch``-user batches
    in file order, so a user of the last, short batch weighs ``full batch / last batch`` times
    more than the others. Sums to 1."""
    if n_users < 1 or batch < 1:
        raise ValueError(f"need n_users >= 1 and batch >= 1, got {n_users} and {batch}")
    n_batches = -(-n_users // batch)
    sizes = np.full(n_users, batch, dtype=np.float64)
    last = n_users - (n_batches - 1) * batch
    sizes[(n_batches - 1) * batch:] = last
    return 1.0 / (n_batches * sizes)


def improved(new: dict[str, float], best: dict[str, float] | None, protocol: str) -> bool:
    """Model selection: strict -> valid NDCG@20 improves; official -> any of the six improves."""
    if best is None:
        return True
    if protocol == "strict":
        return new["NDCG@20"] > best["NDCG@20"]
    return any(new[k] > best[k] for k in METRIC_NAMES)


def best_of(new: dict[str, float], best: dict[str, float] | None, protocol: str) -> dict:
    """The running 'best' record: the selected metrics (strict) or per-metric maxima (official)."""
    if best is None or protocol == "strict":
        return dict(new) if improved(new, best, protocol) else best
    return {k: max(new[k], best[k]) for k in new}


def compute_ranks(model, dataset: SequenceDataset, split: str, *, protocol: str = "strict",
                  max_len: int = 50, device: str | torch.device = "cpu", seed: int = 0,
                  score_budget: int = 1 << 24) -> np.ndarray:
    """Rank of each user's target (user order) under a full ranking, computed in chunks.

    Users are processed in length order so short histories are not padded to ``max_len`` (unless
    the model needs full width), in chunks of at most ``score_budget`` scores, so memory stays
    bounded for large catalogues. ``seed`` fixes any sampling noise of diffusion models.
    """
    return compute_ranks_all(model, dataset, split, protocols=(protocol,), max_len=max_len,
                             device=device, seed=seed, score_budget=score_budget)[protocol]


def compute_ranks_all(model, dataset: SequenceDataset, split: str, *,
                      protocols: tuple[str, ...] = PROTOCOLS, max_len: int = 50,
                      device: str | torch.device = "cpu", seed: int = 0,
                      score_budget: int = 1 << 24) -> dict[str, np.ndarray]:
    """:func:`compute_ranks` for several protocols from one scoring pass: the protocols differ
    only in whether the padding row competes, so the scores (and a diffusion model's seeded
    samples) are computed once; each protocol's ranks equal a pass of its own. Scores are
    computed with full float32 matrix products, whatever the training precision."""
    return scoring_pass(model, dataset, split, protocols=protocols, max_len=max_len,
                        device=device, seed=seed, score_budget=score_budget).ranks


class ScoringPass(NamedTuple):
    ranks: dict[str, np.ndarray]   # protocol -> rank of each user's target (user order)
    top: np.ndarray | None         # (U, topk) the top-k items of each user (padding excluded)


@torch.no_grad()
@matmul_precision("highest")
def scoring_pass(model, dataset: SequenceDataset, split: str, *,
                 protocols: tuple[str, ...] = PROTOCOLS, topk: int = 0, max_len: int = 50,
                 device: str | torch.device = "cpu", seed: int = 0,
                 score_budget: int = 1 << 24) -> ScoringPass:
    """One pass over ``split``'s users: the target ranks under each protocol and, with
    ``topk`` > 0, each user's ``topk`` highest-scored items (ids 1..n; the padding row never
    competes; ties by lower id), best first."""
    for protocol in protocols:
        check_protocol(protocol)
    n_users = len(dataset.train)
    ranks = {p: np.empty(n_users, dtype=np.int64) for p in protocols}
    k = min(int(topk), dataset.n_items)
    top = np.empty((n_users, k), dtype=np.int64) if k > 0 else None
    generator = torch.Generator(device=device).manual_seed(seed)  # one stream for the pass
    for idx, h, tgt in _eval_chunks(model, dataset, split, max_len=max_len, device=device,
                                    score_budget=score_budget):
        scores = model.score_all(h, generator=generator)
        if scores.shape != (len(idx), dataset.n_items + 1):
            raise ValueError(f"model scored {tuple(scores.shape)}, expected "
                             f"({len(idx)}, {dataset.n_items + 1}): checkpoint and dataset "
                             "do not match")
        for p in protocols:
            r = target_ranks(scores, tgt, exclude_padding=(p == "strict"))
            ranks[p][idx] = r.cpu().numpy()
        if top is not None:
            top[idx] = _top_items(scores, k).cpu().numpy()
    return ScoringPass(ranks, top)


def _top_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` best item ids (1..n) per row of ``scores`` (B, n + 1), padding row 0 excluded;
    equal scores: the lower id first (a stable sort, so the result does not depend on the
    top-k kernel)."""
    items = scores[:, 1:]
    order = torch.sort(items, dim=1, descending=True, stable=True).indices[:, :k]
    return order + 1


def recommendation_popularity(top: np.ndarray, popularity: np.ndarray, ks=KS, *,
                              head_fraction: float = 0.2) -> dict[str, float]:
    """Popularity of what a model recommends, from each user's top items ``top`` (U, >= max ks;
    ids 1..n) and each item's popularity (n,), e.g. its training interactions:

    * ``coverage@K``: share of the catalogue (%) that appears in any user's top K;
    * ``avg_popularity@K``: mean popularity of the recommended items, over users and slots;
    * ``head_share@K``: share (%) of the top-K slots taken by the ``head_fraction`` (20 %) most
      popular items (ranked by popularity, ties by lower id; ceil(0.2 n) items).
    """
    popularity = np.asarray(popularity, dtype=np.float64)
    n = popularity.size
    if top.ndim != 2 or top.shape[1] < max(ks):
        raise ValueError(f"need each user's top {max(ks)} items; got shape {top.shape}")
    n_head = int(np.ceil(head_fraction * n))
    head = np.zeros(n + 1, dtype=bool)
    head[np.argsort(-popularity, kind="stable")[:n_head] + 1] = True
    out = {}
    for k in ks:
        items = top[:, :k]
        out[f"coverage@{k}"] = 100.0 * np.unique(items).size / n
        out[f"avg_popularity@{k}"] = float(popularity[items - 1].mean())
        out[f"head_share@{k}"] = 100.0 * float(head[items].mean())
    return out


@torch.no_grad()
@matmul_precision("highest")
def user_representations(model, dataset: SequenceDataset, split: str = "test", *,
                         max_len: int = 50, device: str | torch.device = "cpu", seed: int = 0,
                         score_budget: int = 1 << 24) -> np.ndarray:
    """The sequence representation of every user (user order), (U, D) float32: the vectors
    :func:`compute_ranks_all` ranks the items with (``model.represent``), computed in the same
    chunks with the same seeded noise, so ``representations @ E.T`` reproduces the ranks of
    an evaluation with the same ``seed`` and ``score_budget``."""
    out = None
    generator = torch.Generator(device=device).manual_seed(seed)  # as in compute_ranks_all
    for idx, h, _ in _eval_chunks(model, dataset, split, max_len=max_len, device=device,
                                  score_budget=score_budget):
        rep = model.represent(h, generator=generator)
        if out is None:
            out = np.empty((len(dataset.train), rep.shape[1]), dtype=np.float32)
        out[idx] = rep.float().cpu().numpy()
    return out


def _eval_chunks(model, dataset: SequenceDataset, split: str, *, max_len: int, device,
                 score_budget: int):
    """(user indices, left-padded histories, targets) of one evaluation pass, in chunks of at
    most ``score_budget`` scores, users in length order so short histories are not padded to
    ``max_len`` (unless the model needs full width). The model is in eval mode meanwhile."""
    hists, targets = eval_histories(dataset, split, max_len)
    n = len(hists)
    lengths = np.array([min(len(h), max_len) for h in hists])
    order = np.argsort(lengths, kind="stable")
    chunk = max(1, min(OFFICIAL_BATCH, score_budget // (dataset.n_items + 1)))
    full_width = bool(getattr(model, "needs_full_width", False))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, n, chunk):
            idx = order[i:i + chunk]
            width = max_len if full_width else int(lengths[idx].max())
            h = left_pad([hists[j] for j in idx], max_len, width).to(device)
            yield idx, h, torch.as_tensor(targets[idx], device=device)
    finally:
        model.train(was_training)


def evaluate(model, dataset: SequenceDataset, split: str, *, protocol: str = "strict",
             max_len: int = 50, device: str | torch.device = "cpu", seed: int = 0
             ) -> dict[str, float]:
    """HR/NDCG@{5,10,20} in percent for ``split`` ('valid' or 'test') under ``protocol``."""
    ranks = compute_ranks(model, dataset, split, protocol=protocol, max_len=max_len,
                          device=device, seed=seed)
    return aggregate(ranking_metrics(ranks), protocol)


def evaluate_all(model, dataset: SequenceDataset, split: str, *,
                 protocols: tuple[str, ...] = PROTOCOLS, max_len: int = 50,
                 device: str | torch.device = "cpu", seed: int = 0) -> dict[str, dict[str, float]]:
    """``{protocol: evaluate(..., protocol=protocol)}`` from one scoring pass."""
    ranks = compute_ranks_all(model, dataset, split, protocols=protocols, max_len=max_len,
                              device=device, seed=seed)
    return {p: aggregate(ranking_metrics(r), p) for p, r in ranks.items()}
