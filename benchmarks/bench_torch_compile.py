"""Does ``torch.compile`` speed up ADRec training on the CPU? Eager vs compiled, one process each.

The question behind it (issue 3's speed target): about half of a CPU ADRec epoch is elementwise
work (GELU, dropout multiplies, layer norms, copies) that a compiler could fuse. This times
ADRec training epochs on ML-100K (randomly initialised model, stage-3 shapes: batches of 512,
length-bucketed, 64-row micro-batches, as the trainer) in three modes:

* ``eager``: the project as it runs;
* ``blocks``: every transformer ``Block.forward`` wrapped in ``torch.compile(dynamic=True)``
  (Inductor, C++ code generated and compiled with the machine's gcc);
* ``loss``: the whole ``model.loss`` compiled (``dynamic=True``).

Under compilation the dropout layers use ``F.dropout`` (the project's numpy-seeded masks cannot be
traced), so compiled runs draw other masks than eager ones. Each mode runs in its own process
with an empty Inductor cache (a fresh directory), so epoch 1 includes the compilation.

Usage (alone on the machine):

    python benchmarks/bench_torch_compile.py --epochs 4 --out benchmarks/bench_torch_compile.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

MODES = ("eager", "blocks", "loss")


def run_mode(mode: str, epochs: int) -> dict:
    import torch
    import torch.nn.functional as F

    from adrec.models import layers
    from adrec.train import train_epoch
    from bench_training import training_setup  # benchmarks/ is on sys.path

    if mode != "eager":
        eager_forward = layers.Dropout.forward

        def forward(self, x):
            if torch.compiler.is_compiling():
                return F.dropout(x, self.p, self.training)
            return eager_forward(self, x)

        layers.Dropout.forward = forward
    model, _, opt, batches, cfg = training_setup("adrec", "ml-100k")
    loss_fn = model.loss
    if mode == "blocks":
        for mod in model.modules():
            if isinstance(mod, layers.Block):
                mod.forward = torch.compile(mod.forward, dynamic=True)
    elif mode == "loss":
        loss_fn = torch.compile(model.loss, dynamic=True)
    times, error = [], None
    try:
        for _ in range(epochs):
            times.append(train_epoch(model, batches, opt, cfg, forward=loss_fn).seconds)
    except Exception as exc:  # a mode that cannot compile is a result, not a crash
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        traceback.print_exc()
    return {"mode": mode, "epoch_s": [round(t, 3) for t in times], "error": error}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_mode(a.child, a.epochs)))
        return

    import torch

    results = []
    for mode in a.modes:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--epochs",
                                   str(a.epochs)], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
        lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        r = json.loads(lines[-1]) if lines else {"mode": mode, "epoch_s": [],
                                                 "error": proc.stderr.strip()[-300:]}
        r["process_s"] = round(wall, 1)
        results.append(r)
        print(json.dumps(r), flush=True)

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out = ["# torch.compile and ADRec training on the CPU", "",
           f"- command: `python benchmarks/bench_torch_compile.py --epochs {a.epochs}`",
           f"- date: {now}",
           f"- machine: {os.cpu_count()}-core CPU dev machine, torch {torch.__version__}",
           "- workload: ADRec training epochs on ML-100K (stage-3 shapes), one process per "
           "mode, empty Inductor cache", "",
           "| mode | epoch 1 (with compilation) | later epochs, median | process wall | error |",
           "|---|---|---|---|---|"]
    for r in results:
        first = f"{r['epoch_s'][0]:.2f} s" if r["epoch_s"] else "-"
        rest = (f"{statistics.median(r['epoch_s'][1:]):.2f} s" if len(r["epoch_s"]) > 1
                else "-")
        out.append(f"| {r['mode']} | {first} | {rest} | {r['process_s']} s | "
                   f"{r['error'] or ''} |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
