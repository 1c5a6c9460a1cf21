"""Seconds per training epoch at each ``matmul_precision``, interleaved (ML-100K, this CPU).

Usage (alone on the machine):

    python benchmarks/bench_matmul_precision.py [--rounds 3] [--epochs 3] \
        [--out benchmarks/bench_matmul_precision.md]

For each round and model (``stage1``, ``adrec``) and each precision (``highest``, ``medium``),
one child process builds the model, runs one untimed warm-up epoch and ``--epochs`` timed
epochs of the trainer's training step (``Batch.split`` + ``micro_batch_rows``, Adam), with
``torch.set_float32_matmul_precision`` set as ``train_stage`` sets it. The precisions alternate
inside each round so that drift in the machine's speed hits both alike; the report gives every
epoch, the per-run medians and the mean of the medians.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

MODELS = ("stage1", "adrec")
PRECISIONS = ("highest", "medium")


def run_one(model: str, precision: str, epochs: int) -> list[float]:
    import torch

    from adrec.config import TrainConfig
    from adrec.data import BatchIterator, load_dataset, training_pairs
    from adrec.models import build_model
    from adrec.config import matmul_precision
    from adrec.train import micro_batch_rows, retain_freed_memory

    retain_freed_memory()
    torch.manual_seed(0)
    ds = load_dataset("ml-100k")
    cfg = TrainConfig()
    m = build_model(model, ds.n_items)
    opt = torch.optim.Adam(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    h, t = training_pairs(ds, cfg.max_len)
    it = BatchIterator(h, t, max_len=cfg.max_len, batch_size=cfg.batch_size,
                       generator=torch.Generator().manual_seed(0), bucket=True,
                       trim=not m.needs_full_width)
    times = []
    with matmul_precision(precision):
        for e in range(epochs + 1):
            m.train()
            t0 = time.perf_counter()
            for b in it:
                opt.zero_grad(set_to_none=True)
                for part in b.split(micro_batch_rows(m, cfg, torch.device("cpu"),
                                                     b.history.shape[1])):
                    m(part)["loss"].backward()
                opt.step()
            if e:  # epoch 0 is the warm-up
                times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/bench_matmul_precision.md")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "PRECISION"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_one(a.child[0], a.child[1], a.epochs)))
        return
    import torch

    runs: dict[tuple[str, str], list[list[float]]] = {}
    for r in range(a.rounds):
        for model in MODELS:
            order = PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]
            for precision in order:
                out = subprocess.run([sys.executable, __file__, "--epochs", str(a.epochs),
                                      "--child", model, precision],
                                     check=True, capture_output=True, text=True).stdout
                runs.setdefault((model, precision), []).append(json.loads(out.splitlines()[-1]))
                print(model, precision, runs[(model, precision)][-1], file=sys.stderr)
    cmd = "python benchmarks/bench_matmul_precision.py" + (
        f" --rounds {a.rounds}" if a.rounds != 3 else "") + (
        f" --epochs {a.epochs}" if a.epochs != 3 else "")
    lines = [
        "# Training epoch time at each matmul_precision (ML-100K, interleaved)", "",
        f"- command: `{cmd}`",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: 2-core CPU dev machine ({platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {a.rounds} rounds, precisions alternating inside "
        f"each round; {a.epochs} timed epochs per run after one warm-up epoch", "",
        "| model | precision | epochs (s), one run per round | median of each run | "
        "mean of the medians |", "|---|---|---|---|---|"]
    means = {}
    for model in MODELS:
        for precision in PRECISIONS:
            rs = runs[(model, precision)]
            meds = [statistics.median(x) for x in rs]
            means[(model, precision)] = statistics.mean(meds)
            lines.append(f"| {model} | {precision} | "
                         + "; ".join(", ".join(f"{v:.2f}" for v in x) for x in rs)
                         + f" | {', '.join(f'{v:.2f}' for v in meds)} | "
                           f"**{means[(model, precision)]:.2f}** |")
    lines.append("")
    for model in MODELS:
        hi, me = means[(model, "highest")], means[(model, "medium")]
        lines.append(f"- {model}: medium takes {me / hi:.2f}x the time of highest "
                     f"({(1 - me / hi) * 100:.0f}% less time)")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
