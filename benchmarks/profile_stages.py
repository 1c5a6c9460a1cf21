"""Where an ADRec run's CPU time goes, per stage, next to the matrix-product floor (issue 15).

Usage:  python benchmarks/profile_stages.py [--dataset ml-100k] [--batches 0] [--threads 0]
        [--precision auto] [--out benchmarks/profile_stages.md]

For each of ADRec's stages (stage 1: the pre-training SASRec; warm-up: ADRec with the item
table frozen; stage 3: everything trained) one untimed warm-up epoch, then one epoch under
``torch.profiler`` (``--batches N``: only the first N batches), and one full validation pass
(strict protocol, the cached last-token inference). The training epoch is the trainer's
(``adrec.train.train_epoch``: ``adrec.train.micro_batches``, Adam, one step per 512-sequence
batch). Each profiled operator's self time goes to one category:

* matrix products: the dense layers (Q/K/V/output projections, FFN, CAM, time MLP);
* logits: the products with the item table (``x E^T`` and its gradients: any operand with
  N + 1 rows);
* item softmax / CE: ``log_softmax``, ``nll_loss`` and their backward;
* attention: the score and value products (``bmm``), the attention softmax and SDPA;
* dropout: everything under ``Dropout.forward`` (recorded as a scope, its numpy mask words
  included) and its mask compare; the backward's mask multiply counts as an other operator;
* optimizer: everything under ``Optimizer.step``;
* GELU, LayerNorm; other operators (copies, indexing, elementwise, reductions);
* outside operators: wall time minus the operators' self time: Python, the autograd engine's
  bookkeeping, the batch iterator, numpy's dropout words (``adrec.models.layers.random_words``).

The floor is the epoch's matrix-product FLOPs (2 m k n per product, from the recorded shapes)
at the peak this machine reaches on a large float32 ``mm`` at the same thread count, measured
here. The profiler adds overhead: the report gives the profiled epoch's wall time and an
unprofiled one. A timing is meaningful on a quiet machine only: the report records the load.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CATEGORIES = ("matrix products", "logits", "item softmax / CE", "attention", "dropout",
              "optimizer", "GELU", "LayerNorm", "other operators")
PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm"}


def product_flops(name: str, shapes) -> int:
    """2 m k n of one recorded product from its input shapes (0 for any other operator)."""
    try:
        if name == "aten::mm":
            (m, k), (_, n) = shapes[0], shapes[1]
            return 2 * m * k * n
        if name == "aten::addmm":  # (bias, a (m, k), b (k, n))
            (m, k), (_, n) = shapes[1], shapes[2]
            return 2 * m * k * n
        if name == "aten::bmm":
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            return 2 * b * m * k * n
    except (ValueError, TypeError, IndexError):
        return 0
    return 0


def category(name: str, shapes, scopes: set[str], n_rows: int) -> str:
    """The category of one operator from its name, input shapes and enclosing scopes."""
    if any(s.startswith("Optimizer.step") for s in scopes):
        return "optimizer"
    if "dropout" in scopes or name == "aten::ge":
        return "dropout"
    if name == "aten::bmm" or "softmax" in name and "log_softmax" not in name \
            or "scaled_dot_product" in name or "_flash_attention" in name:
        return "attention"
    if name in PRODUCTS:
        dims = {d for s in shapes or () for d in (s or ())}
        return "logits" if n_rows in dims else "matrix products"
    if "log_softmax" in name or "nll_loss" in name or "cross_entropy" in name:
        return "item softmax / CE"
    if "gelu" in name:
        return "GELU"
    if "layer_norm" in name:
        return "LayerNorm"
    return "other operators"


def summarise(events, n_rows: int) -> tuple[dict[str, float], float, int]:
    """Per-category operator self time (s), the total, and the products' FLOPs."""
    by_cat = dict.fromkeys(CATEGORIES, 0.0)
    flops = 0
    total = 0.0
    for ev in events:
        if ev.name in ("dropout",) or ev.name.startswith("Optimizer.step"):
            # the scopes' own (Python) time: numpy's dropout words, Adam's loop over tensors
            seconds = ev.self_cpu_time_total / 1e6
            by_cat["dropout" if ev.name == "dropout" else "optimizer"] += seconds
            total += seconds
            continue
        if not ev.name.startswith("aten::"):
            continue
        scopes, p = set(), ev.cpu_parent
        while p is not None:
            scopes.add(p.name)
            p = p.cpu_parent
        seconds = ev.self_cpu_time_total / 1e6
        by_cat[category(ev.name, ev.input_shapes, scopes, n_rows)] += seconds
        total += seconds
        flops += product_flops(ev.name, ev.input_shapes)
    return by_cat, total, flops


def peak_gflops(size: int = 1536, repeats: int = 8) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def stages(dataset: str, precision: str):
    """(dataset, cfg, [(name, model, optimizer, batches, frozen ids)]) for stage 1, the warm-up
    and stage 3 (frozen ids: None = leave requires_grad as it is), training at ``precision``
    (``TrainConfig.matmul_precision``)."""
    import torch

    from bench_training import training_setup

    m1, ds, opt1, it1, cfg = training_setup("stage1", dataset, precision=precision)
    m, _, _, it, _ = training_setup("adrec", dataset, precision=precision)
    emb = {id(p) for p in m.embedding_parameters()}
    warm = [p for p in m.parameters() if id(p) not in emb]
    opt_w = torch.optim.Adam(warm, lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt3 = torch.optim.Adam(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return ds, cfg, [("stage 1 (pre-training)", m1, opt1, it1, None),
                     ("warm-up (E frozen)", m, opt_w, it, emb),
                     ("stage 3 (all trained)", m, opt3, it, set())]


def measure(run, batches: int, n_rows: int) -> dict:
    """``run()`` once untimed, once timed, once under the profiler: the row of the report."""
    from torch.profiler import ProfilerActivity, profile

    run()  # warm-up, untimed
    t0 = time.perf_counter()
    run()
    plain = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        run()
        wall = time.perf_counter() - t0
    by_cat, total, flops = summarise(prof.events(), n_rows)
    return {"batches": batches, "plain_s": plain, "wall_s": wall, "ops_s": total,
            "by_cat": by_cat, "flops": flops}


def profile_epoch(model, opt, batches, cfg, n_rows: int, limit: int, freeze) -> dict:
    import itertools

    from adrec.train import train_epoch

    if freeze is not None:
        for p in model.parameters():
            p.requires_grad_(id(p) not in freeze)
    chosen = list(itertools.islice(iter(batches), limit or None))
    return measure(lambda: train_epoch(model, chosen, opt, cfg), len(chosen), n_rows)


def profile_eval(model, ds, n_rows: int) -> dict:
    from adrec.evaluate import evaluate

    return measure(lambda: evaluate(model, ds, "valid", protocol="strict"), 1, n_rows)


def scoped_dropout():
    """Record every Dropout.forward as a profiler scope named "dropout"."""
    import torch

    from adrec.models import layers

    forward = layers.Dropout.forward

    def recorded(self, x, *args, **kwargs):  # forward(x, full=None): pass the rest through
        with torch.profiler.record_function("dropout"):
            return forward(self, x, *args, **kwargs)

    layers.Dropout.forward = recorded


def render(rows, meta) -> str:
    head = ["stage", "batches", "unprofiled s", "profiled s", "floor s"] + list(CATEGORIES) + [
        "outside operators"]
    lines = ["# Where an ADRec run's CPU time goes, per stage (issue 15)", "",
             *[f"- {k}: {v}" for k, v in meta.items()], "",
             "Seconds of the profiled epoch (operators' self time by category; shares of the "
             "profiled wall time in brackets). floor = the epoch's matrix-product FLOPs at the "
             "measured peak.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows:
        cells = [name, str(r["batches"]), f"{r['plain_s']:.2f}", f"{r['wall_s']:.2f}",
                 f"{r['floor_s']:.2f}"]
        outside = max(r["wall_s"] - r["ops_s"], 0.0)
        for v in [*(r["by_cat"][c] for c in CATEGORIES), outside]:
            cells.append(f"{v:.2f} ({100 * v / r['wall_s']:.0f}%)")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Matrix-product work: " + "; ".join(
        f"{name} {r['flops'] / 1e12:.3f} TFLOP" for name, r in rows), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    from adrec.config import CHOICES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--batches", type=int, default=0, help="profile the first N batches (0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--precision", default="auto", choices=CHOICES["matmul_precision"],
                    help="TrainConfig.matmul_precision of the training epochs (default: the "
                         "trainer's default, auto)")
    ap.add_argument("--out", default="benchmarks/profile_stages.md")
    args = ap.parse_args(argv)
    import torch

    from adrec.config import resolve_matmul_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    scoped_dropout()
    load = os.getloadavg()
    peak = peak_gflops()
    ds, cfg, plan = stages(args.dataset, args.precision)
    n_rows = ds.n_items + 1
    rows = []
    for name, model, opt, batches, freeze in plan:
        r = profile_epoch(model, opt, batches, cfg, n_rows, args.batches, freeze)
        r["floor_s"] = r["flops"] / (peak * 1e9)
        rows.append((name, r))
        print(name, f"{r['wall_s']:.2f} s", flush=True)
    r = profile_eval(plan[-1][1], ds, n_rows)
    r["floor_s"] = r["flops"] / (peak * 1e9)
    rows.append(("validation pass (ADRec)", r))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except OSError:
        commit = "unknown"
    resolved = ", ".join(sorted({resolve_matmul_precision(args.precision, "cpu",
                                                          cpu_bf16=model.cpu_bf16)
                                 for _, model, *_ in plan}))
    meta = {"command": "python benchmarks/profile_stages.py " + " ".join(argv or sys.argv[1:]),
            "dataset": args.dataset,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"torch {torch.__version__}, {torch.get_num_threads()} threads",
            "code": commit,
            "training precision": f"{args.precision} (resolved for stage 1 and ADRec: "
                                  f"{resolved})",
            "load average before (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in load),
            "load average after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "measured float32 mm peak": f"{peak:.0f} GFLOP/s (1536 x 1536 products)"}
    text = render(rows, meta)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
