"""The valid/test drop of finished runs, and how much of it model selection can explain.

Usage: python scripts/valid_test_gap.py RESULTS_FOLDER [RESULTS_FOLDER ...]

For every strict-protocol run under FOLDER/runs/<dataset>/<model>/s<seed>-strict/ and each of its
selected stages (sasrec.pt, stage1.pt, stage3.pt, ...) it prints, in NDCG@20 percentage points:

* ``drop``: selected valid minus test (both from the stage checkpoint's metrics);
* ``sel``: the selection overshoot bound: the selected evaluation's valid NDCG@20 minus the mean
  of the (up to four) evaluations around it (epochs +-5 and +-10). Picking the maximum of noisy
  evaluations inflates the selected valid number by at most about this much (the neighbours'
  mean also carries any real peak of the curve, so this over-states the bias);
* ``se``: the standard error of a split's NDCG@20 over its users, sd(per-user NDCG@20)/sqrt(n),
  when the checkpoint still has its weights (re-evaluated here, strict protocol); otherwise "-".

A drop much larger than ``sel`` and than ``sqrt(2) se`` is a real difference between the valid
and the test targets, not selection bias. Output: one Markdown table on stdout.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adrec.checkpoint import model_from_checkpoint, safe_load  # noqa: E402
from adrec.data import load_dataset  # noqa: E402
from adrec.evaluate import compute_ranks, ranking_metrics  # noqa: E402
from adrec.train import read_log  # noqa: E402

STAGES = ("sasrec", "stage1", "stage3", "dreamrec", "diffurec")


def selection_overshoot(valid: np.ndarray) -> float:
    best = int(np.argmax(valid))
    around = [valid[j] for j in range(max(0, best - 2), min(len(valid), best + 3)) if j != best]
    return float(valid[best] - np.mean(around)) if around else float("nan")


def split_se(ckpt: dict) -> str:
    if ckpt.get("weights_stripped"):
        return "-"
    model = model_from_checkpoint(ckpt)
    dataset = load_dataset(ckpt["dataset"]["name"])
    max_len = (ckpt.get("config") or {}).get("max_len", 50)
    out = []
    for split in ("valid", "test"):
        per_user = ranking_metrics(compute_ranks(model, dataset, split, max_len=max_len))
        v = 100.0 * per_user["NDCG@20"]
        out.append(f"{v.std(ddof=1) / np.sqrt(len(v)):.2f}")
    return " / ".join(out)


def main(folders: list[str]) -> None:
    print("| run | stage | valid NDCG@20 | test NDCG@20 | drop | sel | se (valid / test) |")
    print("|---|---|---|---|---|---|---|")
    for folder in folders:
        for run in sorted(Path(folder).glob("runs/*/*/s*-strict")):
            for stage in STAGES:
                path = run / f"{stage}.pt"
                if not path.exists():
                    continue
                ckpt = safe_load(path)
                m = ckpt["metrics"]["strict"]
                valid = np.array([r["valid"]["NDCG@20"] for r in read_log(
                    run / f"{stage}.log.jsonl") if "valid" in r])
                v, t = m["valid"]["NDCG@20"], m["test"]["NDCG@20"]
                print(f"| {run.relative_to(Path(folder) / 'runs')} | {stage} | {v:.2f} | {t:.2f} "
                      f"| {v - t:+.2f} | {selection_overshoot(valid):+.2f} | {split_se(ckpt)} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
