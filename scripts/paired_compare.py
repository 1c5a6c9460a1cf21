"""Paired comparison of two checkpoints on the same users: difference and bootstrap interval.

Usage: python scripts/paired_compare.py A.pt B.pt [--resamples 2000] [--seed 0]

Both checkpoints (collapse-kit format, with weights, same dataset) are evaluated on every user
of the valid and the test split (strict protocol, full ranking, each with its own config's
``max_len`` and seed). For HR@20 and NDCG@20 it prints A's and B's means, the mean per-user
difference B - A and a 95% percentile-bootstrap interval over users (users resampled with
replacement, the same resample for A and B, so the interval is for the paired difference). The
interval covers evaluation noise only: a second training seed can move a model by more.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adrec.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from adrec.data import load_dataset  # noqa: E402
from adrec.evaluate import compute_ranks, ranking_metrics  # noqa: E402

METRICS = ("HR@20", "NDCG@20")


def per_user(path: str) -> tuple[str, dict]:
    ck = load_checkpoint(path)
    dataset = load_dataset(ck["dataset"]["name"])
    cfg = ck.get("config") or {}
    model = model_from_checkpoint(ck)
    out = {split: ranking_metrics(compute_ranks(model, dataset, split,
                                                max_len=cfg.get("max_len", 50),
                                                seed=cfg.get("seed", 0)))
           for split in ("valid", "test")}
    return dataset.fingerprint, out


def paired_interval(diff: np.ndarray, resamples: int, rng: np.random.Generator
                    ) -> tuple[float, float]:
    means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean()
                      for _ in range(resamples)])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    (fa, a), (fb, b) = per_user(args.a), per_user(args.b)
    if fa != fb:
        sys.exit("the two checkpoints were trained on different data; a paired comparison "
                 "needs the same users")
    rng = np.random.default_rng(args.seed)
    print(f"A = {args.a}\nB = {args.b}\n")
    print("| split | metric | A | B | B - A | 95% interval (paired bootstrap) | users |")
    print("|---|---|---|---|---|---|---|")
    for split in ("valid", "test"):
        for m in METRICS:
            x, y = 100 * a[split][m], 100 * b[split][m]
            lo, hi = paired_interval(y - x, args.resamples, rng)
            print(f"| {split} | {m} | {x.mean():.3f} | {y.mean():.3f} | {(y - x).mean():+.3f} "
                  f"| [{lo:+.3f}, {hi:+.3f}] | {len(x)} |")


if __name__ == "__main__":
    main()
