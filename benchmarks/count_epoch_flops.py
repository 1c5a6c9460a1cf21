"""Matrix-product FLOPs of one training epoch, per model and dataset (issue 15: the physical
floor of an epoch, and whether DiffuRec's epoch can reach 3x SASRec+'s).

Usage:  python benchmarks/count_epoch_flops.py [--models sasrec diffurec] [--datasets beauty]
        [--out benchmarks/epoch_flops.md]

Runs one real training epoch of each model (the trainer's own ``adrec.train.train_epoch``, built
by ``bench_training.training_setup``: seed 0, shuffled batches, the CPU's automatic passes,
float32) under ``torch.utils.flop_counter.FlopCounterMode``, which counts the floating-point
operations of every matrix product (mm, addmm, bmm, scaled dot-product attention) of the forward
and the backward passes. Element-wise work (LayerNorm, GELU, dropout, softmax, Adam) is not
counted: the numbers are a floor on the work, not a model of the time. Counts do not depend on
the machine or its load, so this may run beside other jobs; it times nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def count_one(model: str, dataset: str) -> dict:
    """FLOPs of one epoch of ``model`` on ``dataset``: the total and per operator, with the
    epoch's rows (training samples), target tokens and batches."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from adrec.train import train_epoch
    from bench_training import training_setup

    m, ds, opt, it, cfg = training_setup(model, dataset, precision="highest")
    tokens = sum(int(np.count_nonzero(t[-cfg.max_len:])) for t in it.tgts)
    with FlopCounterMode(display=False) as counter:
        train_epoch(m, it, opt, cfg)
    by_op = counter.get_flop_counts().get("Global", {})
    return {"model": model, "dataset": dataset, "n_items": ds.n_items, "rows": len(it.hists),
            "target_tokens": tokens, "batches": len(it), "flops": counter.get_total_flops(),
            "by_op": {str(op).replace("aten.", ""): n for op, n in by_op.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["sasrec", "adrec", "diffurec", "dreamrec"])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty"])
    ap.add_argument("--out", default="benchmarks/epoch_flops.md")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "DATASET"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(count_one(*args.one)))
        return
    results = []
    for dataset in args.datasets:
        for model in args.models:  # one process each: a model's setup cannot leak into the next
            out = subprocess.run([sys.executable, __file__, "--one", model, dataset],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(results[-1]["model"], dataset, f"{results[-1]['flops'] / 1e12:.3f} TFLOP",
                  file=sys.stderr, flush=True)
    Path(args.out).write_text(render(results))
    print(f"wrote {args.out}", file=sys.stderr)


def render(results: list[dict]) -> str:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            cwd=Path(__file__).resolve().parent, text=True).stdout.strip()
    commit = commit or "unknown"
    models = " ".join(dict.fromkeys(r["model"] for r in results))
    datasets = " ".join(dict.fromkeys(r["dataset"] for r in results))
    lines = [
        "# Matrix-product FLOPs of one training epoch (forward + backward)",
        "",
        f"Command: `python benchmarks/count_epoch_flops.py --models {models} "
        f"--datasets {datasets}`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; code {commit}; "
        f"{platform.machine()}, torch {torch.__version__}; seed 0, shuffled batches, float32.  ",
        "Counted by torch's FlopCounterMode over one real epoch of the trainer "
        "(adrec.train.train_epoch): matrix products only (mm, addmm, bmm, attention); "
        "element-wise work is not counted. A count, not a timing: it does not depend on the "
        "machine's load.",
        "",
        "| dataset | model | rows | target tokens | batches | TFLOP / epoch | x SASRec+ | "
        "TFLOP by operator |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {r["dataset"]: r["flops"] for r in results if r["model"] == "sasrec"}
    for r in results:
        ops = ", ".join(f"{op} {n / 1e12:.3f}"
                        for op, n in sorted(r["by_op"].items(), key=lambda kv: -kv[1]))
        ratio = (f"{r['flops'] / base[r['dataset']]:.2f}" if r["dataset"] in base else "-")
        lines.append(f"| {r['dataset']} | {r['model']} | {r['rows']:,} | {r['target_tokens']:,} "
                     f"| {r['batches']} | {r['flops'] / 1e12:.3f} | {ratio} | {ops} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
