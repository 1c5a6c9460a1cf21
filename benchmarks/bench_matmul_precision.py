"""Seconds per training epoch at each ``matmul_precision``, interleaved (ML-100K, this CPU).

Usage (alone on the machine):

    python benchmarks/bench_matmul_precision.py [--rounds 3] [--epochs 3] \
        [--out benchmarks/bench_matmul_precision.md]

For each round and model (``stage1``, ``adrec``) and each precision (``highest``, ``medium``),
one child process runs ``bench_training.run_one`` (one untimed warm-up epoch, then ``--epochs``
timed epochs of the trainer's ``train_epoch``: ``Batch.split`` + ``micro_batch_rows``, Adam) at
``TrainConfig.matmul_precision`` = the precision (``train_epoch`` sets
``torch.set_float32_matmul_precision`` from it). The precisions alternate
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
from datetime import datetime, timezone
from pathlib import Path

MODELS = ("stage1", "adrec")
PRECISIONS = ("highest", "medium")


def run_one(model: str, precision: str, epochs: int) -> list[float]:
    """Timed epochs of bench_training's run of ``model`` (bucketed batches, auto micro-batches,
    no evaluation) under ``precision``."""
    from bench_training import run_one as time_epochs  # benchmarks/ is on sys.path

    return time_epochs(model, "ml-100k", "bucket", "auto", epochs, 0,
                       precision=precision)["epoch_s_all"]


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
