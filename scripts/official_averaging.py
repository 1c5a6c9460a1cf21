"""How much the official protocol's batch means move a checkpoint's numbers, and why.

Usage: python scripts/official_averaging.py CKPT [CKPT ...] [--device cpu]

The authors' evaluation averages each metric over 512-user batches in file order and then
averages the batch means, so the users of the last, short batch weigh more than the others
(``adrec.evaluate.official_user_weights``). For each full checkpoint (weights not stripped) and
each split it re-ranks every user once and prints one Markdown row: users and last-batch size,
the last batch's share of the official mean, HR@20 and NDCG@20 as the exact mean over users
(strict), as the official batch mean of the same strict ranks, as the official protocol proper
(row 0 competing too), and the exact mean of the last batch alone. A last column describes the
last batch's users from the data only: the share of them whose (valid, test) item pair (for the
test split; (last history item, valid) for valid) occurs as consecutive items in some other
user's training sequence, against the same share over all users.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adrec.evaluate import OFFICIAL_BATCH, official_user_weights  # noqa: E402


def pair_owners(train: list[list[int]]) -> dict[tuple[int, int], set[int]]:
    """Every pair of consecutive items in the training sequences -> the users who have it."""
    owners: dict[tuple[int, int], set[int]] = {}
    for u, seq in enumerate(train):
        for a, b in zip(seq, seq[1:]):
            owners.setdefault((a, b), set()).add(u)
    return owners


def seen_elsewhere(owners: dict[tuple[int, int], set[int]], firsts: list[int],
                   seconds: list[int]) -> np.ndarray:
    """Per user u: does the pair (firsts[u], seconds[u]) occur as consecutive items in the
    training sequence of a user other than u? (``owners``: ``pair_owners(train)``.)"""
    return np.array([bool(owners.get((a, b), set()) - {u})
                     for u, (a, b) in enumerate(zip(firsts, seconds))])


def rows(path: str, device: str) -> list[str]:
    from adrec.checkpoint import load_checkpoint, model_from_checkpoint
    from adrec.data import load_dataset
    from adrec.evaluate import compute_ranks_all, ranking_metrics

    ckpt = load_checkpoint(path)
    if ckpt.get("weights_stripped"):
        raise ValueError(f"{path} is a light checkpoint (weights stripped); give the full "
                         "checkpoint of the run")
    model = model_from_checkpoint(ckpt).to(device)
    ds = load_dataset(ckpt["dataset"]["name"])
    max_len = (ckpt.get("config") or {}).get("max_len", 50)
    n = len(ds.train)
    w = official_user_weights(n)
    last = (n - 1) % OFFICIAL_BATCH + 1  # users in the last batch
    tail = slice(n - last, n)
    owners = pair_owners(ds.train)
    out = []
    for split in ("valid", "test"):
        ranks = compute_ranks_all(model, ds, split, max_len=max_len, device=device)
        strict, official = ranking_metrics(ranks["strict"]), ranking_metrics(ranks["official"])
        if split == "test":
            seen = seen_elsewhere(owners, list(ds.valid), list(ds.test))
        else:
            seen = seen_elsewhere(owners, [s[-1] for s in ds.train], list(ds.valid))
        cells = []
        for k in ("HR@20", "NDCG@20"):
            cells.append(f"{100 * strict[k].mean():.2f} / {100 * (w * strict[k]).sum():.2f} / "
                         f"{100 * (w * official[k]).sum():.2f} / {100 * strict[k][tail].mean():.1f}")
        out.append(f"| {path} | {split} | {n} / {last} | {w[tail].sum():.3f} | {cells[0]} | "
                   f"{cells[1]} | {seen[tail].mean():.2f} vs {seen.mean():.2f} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", metavar="CKPT")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    print("| checkpoint | split | users / last batch | last batch's weight | HR@20 exact / batch "
          "mean / official / last batch | NDCG@20 exact / batch mean / official / last batch | "
          "pair seen elsewhere: last batch vs all |")
    print("|---|---|---|---|---|---|---|")
    for path in args.checkpoints:
        try:
            for row in rows(path, args.device):
                print(row, flush=True)
        except (OSError, ValueError, KeyError) as exc:
            print(f"official_averaging: {path}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
