"""Seconds per training epoch, per full evaluation pass and peak memory (SASRec+, ADRec, this CPU).

Usage:  python benchmarks/bench_training.py [--epochs 5] [--out benchmarks/bench_training.md]
        [--models sasrec adrec] [--datasets ml-100k beauty]

Each configuration runs in its own subprocess so its peak resident memory (ru_maxrss) is its own.
Per configuration: one warm-up epoch (not timed), then ``--epochs`` timed training epochs (the
median is reported) and ``--evals`` timed full validation passes (strict protocol, median).
Batching: ``random`` (the default: a uniform shuffle of the users every epoch) against
``bucket`` (opt-in: length-bucketed batches trimmed to their longest sequence; it changes the
loss weighting, see adrec/data.py). Passes: ``auto`` (the trainer's default on a CPU,
``Batch.split_cells``: a batch's rows sorted by length, cut into passes of about 3,200 row x
position cells, each trimmed to its longest row; gradients accumulated to one optimizer step per
512-sequence batch, the same gradient), ``padded`` (fixed 64-row passes of full-width batches:
what a shuffled batch cost before split_cells) and ``whole`` (512 rows at once).
The training epoch is the trainer's own (``adrec.train.train_epoch``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PASSES = [("random", "auto"), ("bucket", "auto"), ("random", "padded")]

# The authors' code on this machine (issue 2): SASRec+ on ML-100K
AUTHORS = {"epoch_s": 2.75, "peak_gb": 3.8}


def training_setup(model: str, dataset: str, batching: str = "random", micro: str = "auto", *,
                   precision: str = "highest"):
    """What a timed training epoch (``adrec.train.train_epoch``) needs, built as the trainer
    builds it (seed 0, the allocator policy of ``collapse-kit train``, Adam, the batch iterator;
    ``precision``: ``TrainConfig.matmul_precision``): returns (model, dataset, optimizer, batches,
    cfg)."""
    import torch

    from adrec.config import TrainConfig
    from adrec.data import BatchIterator, load_dataset, training_pairs
    from adrec.models import build_model
    from adrec.train import retain_freed_memory

    retain_freed_memory()  # the allocator policy `collapse-kit train` sets
    torch.manual_seed(0)
    ds = load_dataset(dataset)
    rows = {"padded": 64, "whole": TrainConfig.batch_size}
    cfg = TrainConfig(micro_batch=rows.get(micro, 0), matmul_precision=precision)
    m = build_model(model, ds.n_items)

    opt = torch.optim.Adam(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    h, t = training_pairs(ds, cfg.max_len, prefixes=m.train_samples == "prefixes")  # as the trainer
    it = BatchIterator(h, t, max_len=cfg.max_len, batch_size=cfg.batch_size,
                       generator=torch.Generator().manual_seed(0), bucket=batching == "bucket",
                       trim=micro != "padded")
    return m, ds, opt, it, cfg


def run_one(model: str, dataset: str, batching: str, micro: str, epochs: int, evals: int, *,
            precision: str = "auto") -> dict:
    from adrec.config import resolve_matmul_precision
    from adrec.evaluate import evaluate
    from adrec.train import train_epoch

    if micro.startswith("cells"):  # the CPU auto rule with other budgets: cells[:C[:T]]
        import adrec.train

        budgets = micro.split(":")[1:]
        adrec.train.AUTO_CELLS = int(budgets[0]) if budgets else 3200
        adrec.train.AUTO_TOKENS = int(budgets[1]) if len(budgets) > 1 else None
    m, ds, opt, it, cfg = training_setup(model, dataset, batching, micro, precision=precision)
    times = []
    for e in range(epochs + 1):
        seconds = train_epoch(m, it, opt, cfg).seconds
        if e:  # epoch 0 is warm-up
            times.append(seconds)
    ev = []
    for _ in range(evals):
        t0 = time.perf_counter()
        evaluate(m, ds, "valid", protocol="strict")
        ev.append(time.perf_counter() - t0)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": model, "dataset": dataset, "batching": batching,
            "micro": micro,
            "precision": resolve_matmul_precision(cfg.matmul_precision, "cpu",
                                                  cpu_bf16=m.cpu_bf16),
            "epoch_s": statistics.median(times), "epoch_s_all": [round(x, 3) for x in times],
            "eval_s": statistics.median(ev) if ev else None, "peak_mb": peak_kb / 1024,
            "batches": len(it)}


def main() -> None:
    from adrec.config import CHOICES

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--evals", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each configuration")
    ap.add_argument("--out", default="benchmarks/bench_training.md")
    ap.add_argument("--models", nargs="+", default=["sasrec", "adrec"])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty"])
    ap.add_argument("--passes", nargs="+", default=[f"{b}/{p}" for b, p in PASSES],
                    help="BATCHING/PASSES pairs: random|bucket / auto|padded|whole|cells[:C[:T]]")
    ap.add_argument("--precision", default="auto", choices=CHOICES["matmul_precision"],
                    help="TrainConfig.matmul_precision of the training epochs (default: the "
                         "trainer's default, auto; evaluation is float32 either way)")
    ap.add_argument("--one", nargs=4, metavar=("MODEL", "DATASET", "BATCHING", "MICRO"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.epochs, args.evals, precision=args.precision)))
        return
    for x in args.passes:
        if not re.fullmatch(r"(random|bucket)/(auto|padded|whole|cells(:[1-9]\d*){0,2})", x):
            ap.error(f"--passes {x!r}: expected BATCHING/PASSES with BATCHING random or bucket "
                     "and PASSES auto, padded, whole or cells[:C[:T]] (positive integers), "
                     "e.g. random/cells:3200")
    configs = [(m, d, b, p) for m in args.models for d in args.datasets for b, p in
               (x.split("/", 1) for x in args.passes)]
    runs: dict[tuple, list[dict]] = {}
    load_before = os.getloadavg()[0]
    for rep in range(args.repeats):  # configurations interleaved, so slow spells hit all alike
        for cfg in configs:
            out = subprocess.run([sys.executable, __file__, "--one", *cfg, "--epochs",
                                  str(args.epochs), "--evals", str(args.evals),
                                  "--precision", args.precision],
                                 capture_output=True, text=True, check=True)
            runs.setdefault(cfg, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rep, runs[cfg][-1], file=sys.stderr, flush=True)
    rows = []
    for cfg, rs in runs.items():  # median over the repeats of each run's median epoch
        r = dict(rs[0])
        for key in ("epoch_s", "eval_s", "peak_mb"):
            values = [x[key] for x in rs if x[key] is not None]
            r[key] = statistics.median(values) if values else None
        r["epoch_s_runs"] = [round(x["epoch_s"], 3) for x in rs]
        rows.append(r)
    import torch

    lines = [
        "# Training and evaluation speed (SASRec+, ADRec)",
        "",
        f"Command: `python benchmarks/bench_training.py --epochs {args.epochs} "
        f"--evals {args.evals} --repeats {args.repeats} --models {' '.join(args.models)} "
        f"--datasets {' '.join(args.datasets)} --passes {' '.join(args.passes)} "
        f"--precision {args.precision}`  ",
        f"Training precision: {args.precision} (resolved here, per model: "
        f"{', '.join(sorted({r['model'] + ' ' + r['precision'] for r in rows}))}); "
        "evaluation float32.  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; seed 0.  ",
        f"Each configuration ran {args.repeats} times (fresh process each, configurations "
        "interleaved); a run's figure is the median of its timed epochs (after one warm-up "
        "epoch) and of its full validation passes (strict protocol, all items ranked); the table "
        "gives the median over the runs, and each run's s/epoch in the last column. Peak = the "
        "process's maximum resident memory.  ",
        f"1-minute load average before the first run: {load_before:.1f}, when the benchmark "
        f"ended: {os.getloadavg()[0]:.1f} (on 2 cores; the benchmark's own "
        "2 threads keep it near 2, so a value before above ~0.5 or after above ~2.5 means "
        "other processes shared the CPU and times are inflated).",
        "",
        "| model | dataset | batching | rows per pass | batches/epoch | s / epoch | s / eval pass "
        "| peak MB | s / epoch of each run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ev = "-" if r["eval_s"] is None else f"{r['eval_s']:.3f}"
        lines.append(f"| {r['model']} | {r['dataset']} | {r['batching']} | {r['micro']} | "
                     f"{r['batches']} | {r['epoch_s']:.3f} | {ev} | {r['peak_mb']:.0f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['epoch_s_runs'])} |")

    def pick(model, ds, batching, micro):
        return next((r for r in rows if (r["model"], r["dataset"], r["batching"], r["micro"]) ==
                     (model, ds, batching, micro)), None)

    lines.append("")
    ml = None
    if "sasrec" in args.models and "ml-100k" in args.datasets:
        ml = pick("sasrec", "ml-100k", "random", "auto")
    if ml is not None:
        lines.append(
            f"Authors' code on this machine (issue 2): SASRec+ on ML-100K {AUTHORS['epoch_s']} s "
            f"per epoch, peak {AUTHORS['peak_gb']} GB. Here (shuffled default): "
            f"{ml['epoch_s']:.2f} s per epoch ({AUTHORS['epoch_s'] / ml['epoch_s']:.1f}x faster), "
            f"peak {ml['peak_mb'] / 1024:.2f} GB.")
    for model in args.models:
        for ds in args.datasets:
            r, b, p = (pick(model, ds, "random", "auto"), pick(model, ds, "bucket", "auto"),
                       pick(model, ds, "random", "padded"))
            if r is None or b is None or p is None:
                continue
            lines.append(f"{model} {ds}: the shuffled default takes {r['epoch_s'] / b['epoch_s']:.2f}x "
                         f"the bucketed epoch time and {r['epoch_s'] / p['epoch_s']:.2f}x the "
                         f"padded shuffled one.  ")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
