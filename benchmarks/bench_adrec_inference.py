"""Speed of ADRec's cached last-token inference vs the uncached path on a full ML-100K pass.

One "evaluation pass" is what the trainer runs at each validation: the 938 valid users of
ML-100K, full ranking over all items, T = 32 reverse steps, max_len L = 50. Both paths use the
same model and the same seeded generator, so their scores must agree (checked, 1e-5).

Usage (run alone on the machine; the numbers are wall-clock and CPU seconds):

    flock /tmp/collapse-kit-cpu.lock python benchmarks/bench_adrec_inference.py \
        [--checkpoint runs/adrec-ml-100k-s0/best.pt] [--repeats 3] \
        [--out benchmarks/bench_adrec_inference.md]

Without ``--checkpoint`` a freshly initialised ADRec is timed (speed does not depend on the
weights). Writes a Markdown report with the machine, torch version, threads and date.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import torch

from adrec.checkpoint import load_checkpoint, model_from_checkpoint
from adrec.data import load_dataset
from adrec.evaluate import compute_ranks
from adrec.models import build_model
from adrec.models.adrec import ADRec


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best-of-``repeats`` wall seconds, the CPU seconds of that run, and its result."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu, out)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="an ADRec checkpoint (default: fresh init)")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/bench_adrec_inference.md")
    a = ap.parse_args()

    ds = load_dataset(a.dataset)
    if a.checkpoint:
        model = model_from_checkpoint(load_checkpoint(a.checkpoint))
    else:
        torch.manual_seed(0)
        model = build_model("adrec", ds.n_items, {})
    assert isinstance(model, ADRec)
    model.eval()
    T, L = model.args.steps, model.args.max_len

    def pass_(cache: bool):
        def run():
            orig = model.score_all
            model.score_all = lambda h, generator=None: orig(h, generator, cache=cache)
            try:
                return compute_ranks(model, ds, "valid", max_len=L, seed=0)
            finally:
                del model.score_all
        return run

    pass_(True)()  # warm-up (allocator, kernels)
    fast = timed(pass_(True), a.repeats)
    slow = timed(pass_(False), max(1, min(a.repeats, 2)))

    # scores of both paths on the longest users, same generator
    from adrec.data import eval_histories, left_pad
    hists, _ = eval_histories(ds, "valid", L)
    h = left_pad(hists[:256], L)
    cached = model.score_all(h, torch.Generator().manual_seed(0))
    diff = (cached - model.score_all(h, torch.Generator().manual_seed(0), cache=False)).abs().max()
    scale = cached.abs().max()
    same_ranks = bool((fast[2] == slow[2]).all())

    load = os.getloadavg()
    lines = [
        "# ADRec inference: cached vs uncached full evaluation pass",
        "",
        f"- command: `python benchmarks/bench_adrec_inference.py"
        f"{' --checkpoint ' + a.checkpoint if a.checkpoint else ''} --repeats {a.repeats}`",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: 2-core CPU dev machine ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s); load average "
        f"at the end {load[0]:.2f} (other users' jobs included: on a busy machine wall time is "
        f"inflated and CPU seconds are the steadier measure)",
        f"- workload: {a.dataset} valid split, {ds.n_users} users, full ranking over "
        f"{ds.n_items + 1} rows, T = {T}, L = {L}, hidden {model.args.hidden}, "
        f"model {'from ' + a.checkpoint if a.checkpoint else 'freshly initialised'}",
        "",
        "| path | wall s (best of runs) | CPU s | speed-up (wall) | speed-up (CPU) |",
        "|---|---|---|---|---|",
        f"| uncached: whole ADM at every step | {slow[0]:.2f} | {slow[1]:.2f} | 1.0x | 1.0x |",
        f"| cached: CAM + history once, last token per step | {fast[0]:.2f} | {fast[1]:.2f} | "
        f"{slow[0] / fast[0]:.1f}x | {slow[1] / fast[1]:.1f}x |",
        "",
        f"- max |score difference| cached vs uncached (256 users, same generator): "
        f"{float(diff):.2e} on scores up to {float(scale):.1f} in magnitude, i.e. "
        f"{float(diff / scale):.1e} relative (float32 rounding of a different summation order; "
        f"tests/test_adrec.py holds the small test model to 1e-5 absolute)",
        f"- identical ranks for all {ds.n_users} users: {same_ranks}",
    ]
    text = "\n".join(lines) + "\n"
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
