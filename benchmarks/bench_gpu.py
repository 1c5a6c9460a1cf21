"""GPU benchmarks (issue 15): SASRec+ epoch, ADRec validation pass, three-stage ADRec, on one GPU.

Usage:  python benchmarks/bench_gpu.py [--out benchmarks/gpu.md] [--dataset beauty]
        python benchmarks/bench_gpu.py --dry-run --out /tmp/gpu.md   # every step, tiny preset

Run it alone on the GPU (``scripts/gpu_bench.sh`` does): the timings are only meaningful with
no other job on the device. Every step goes through the trainer (``adrec.pipeline.train_model``,
the code path ``collapse-kit train`` takes), so the numbers are what a user's run gets:

1. SASRec+ on DATASET, ``--sasrec-epochs`` epochs (paper settings, one validation pass at the
   end): seconds per training epoch, the median over the epochs after the first (the first
   pays for kernel selection and allocator warm-up).
2. ADRec on DATASET, all three stages with early stopping (``--preset paper``): wall seconds
   end to end, each stage's training and evaluation seconds, test HR@20 / NDCG@20 (strict), and
   the seconds of one validation pass (the median over every pass of the run).
3. The streamed `collapse-kit analyze` of a seeded 1,000,000 x 128 table (every metric, a
   one-draw Gaussian null), its QR reductions in torch on the device, then in numpy on the
   host CPU (the collapse-analysis issue's GPU path).

The report is rewritten after each step (atomically), so a run stopped by a time limit keeps
what it measured. ``--dry-run`` runs every step on the tiny preset (2 epochs a stage, hidden 16,
4 diffusion steps) on whatever device there is, a CPU included, and says so in the report: it
checks the script, its numbers are not the benchmark.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Issue 15's goals, measured alone on one H100/H200.
GOALS = {"sasrec_epoch_s": 0.1, "valid_pass_s": 1.0, "adrec_total_s": 60.0}
TINY_MODEL = {"hidden": 16, "steps": 4}


def environment(device) -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = os.environ.get("COMMIT", "unknown (no git checkout; set COMMIT)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    return {"device": name, "torch": torch.__version__,
            "cuda": torch.version.cuda or "none", "host": platform.node(),
            "python": platform.python_version(), "code commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def bench_sasrec(ds, cfg, work: Path, model_args: dict, epochs: int) -> dict:
    from adrec.pipeline import train_model
    from adrec.train import read_log

    cfg = dataclasses.replace(cfg, epochs=epochs, eval_every=epochs)
    args = {k: v for k, v in model_args.items() if k != "steps"}  # SASRec+ has no diffusion
    train_model("sasrec", ds, cfg, work / "sasrec", model_args=args, progress=False)
    log = read_log(work / "sasrec" / "sasrec.log.jsonl")
    seconds = [r["seconds"] for r in log]  # at least 2 epochs: the first is not timed
    return {"epochs": len(seconds), "first_epoch_s": seconds[0],
            "sasrec_epoch_s": statistics.median(seconds[1:]),
            "valid_pass_s": [r["eval_seconds"] for r in log if "eval_seconds" in r][-1]}


def bench_adrec(ds, cfg, work: Path, model_args: dict) -> dict:
    from adrec.pipeline import train_model
    from adrec.train import read_log

    t0 = time.perf_counter()
    result = train_model("adrec", ds, cfg, work / "adrec", model_args=model_args, progress=False)
    wall = time.perf_counter() - t0
    passes = [r["eval_seconds"] for stage in ("stage1", "stage2", "stage3")
              for r in read_log(work / "adrec" / f"{stage}.log.jsonl") if "eval_seconds" in r]
    test = result.metrics["strict"]["test"]
    return {"adrec_total_s": wall, "stages": result.metrics["stages"],
            "valid_pass_s": statistics.median(passes), "valid_passes": len(passes),
            "test_hr20": test["HR@20"], "test_ndcg20": test["NDCG@20"]}


def bench_analyze(rows: int, d: int, device) -> dict:
    """Streamed `analyze` (every metric, a one-draw Gaussian null) of a seeded rows x d table
    held in memory, with its QR reductions in torch on ``device`` and, for comparison, in
    numpy on the host CPU (collapse_kit.analyze, device=...)."""
    import numpy as np

    from collapse_kit.analyze import analyze
    from collapse_kit.stream import ArraySource

    rng = np.random.default_rng(0)
    E = (rng.standard_normal((rows, d), dtype=np.float32)
         * np.linspace(2.0, 0.1, d, dtype=np.float32) + 0.3)
    out = {"analyze_rows": rows, "analyze_dim": d}
    for key, dev in (("analyze_device_s", str(device)), ("analyze_numpy_s", None)):
        t0 = time.perf_counter()
        r = analyze(ArraySource(E), stream=True, device=dev, null_draws=1)
        out[key] = time.perf_counter() - t0
        out.setdefault("analyze_effective_rank", r["effective_rank"])
    return out


def render(env: dict, dataset: str, preset: str, dry: bool, results: dict) -> str:
    lines = ["# GPU benchmarks (issue 15)", ""]
    if dry:
        lines += ["**Dry run** (`--dry-run`: tiny preset, hidden 16, 4 diffusion steps, on the "
                  "device below): it checks that every step runs; its numbers are not the "
                  "benchmark.", ""]
    lines += [f"Command: `python benchmarks/bench_gpu.py{' --dry-run' if dry else ''} "
              f"--dataset {dataset}` (`scripts/gpu_bench.sh`), preset `{preset}`, seed 0, "
              "run alone on the device.", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()] + [""]
    lines += ["| measurement | value | goal (one H100/H200, alone) | met |", "|---|---:|---:|---|"]

    def row(label, key, value, unit="s"):
        goal = GOALS.get(key)
        met = "" if goal is None or dry else ("yes" if value <= goal else "no")
        lines.append(f"| {label} | {value:.3f} {unit} | "
                     f"{f'<= {goal:g} {unit}' if goal is not None else ''} | {met} |")

    s = results.get("sasrec")
    if s:
        row(f"SASRec+ {dataset} epoch (median of epochs 2-{s['epochs']})", "sasrec_epoch_s",
            s["sasrec_epoch_s"])
        row(f"SASRec+ {dataset} first epoch", "", s["first_epoch_s"])
        row(f"SASRec+ {dataset} validation pass", "", s["valid_pass_s"])
    a = results.get("adrec")
    if a:
        row(f"ADRec {dataset} validation pass (median of {a['valid_passes']})", "valid_pass_s",
            a["valid_pass_s"])
        row(f"ADRec {dataset}, three stages end to end", "adrec_total_s", a["adrec_total_s"])
        for stage, m in a["stages"].items():
            lines.append(f"| ADRec {stage}: {m['epochs']} epochs, training / evaluation | "
                         f"{m['train_seconds']:.1f} s / {m['eval_seconds']:.1f} s | | |")
        lines.append(f"| ADRec {dataset} test HR@20 / NDCG@20 (strict, %) | "
                     f"{a['test_hr20']:.2f} / {a['test_ndcg20']:.2f} | | |")
    z = results.get("analyze")
    if z:
        size = f"{z['analyze_rows']:,} x {z['analyze_dim']}"
        row(f"streamed `analyze` of {size} (every metric + null), QR reductions on the device",
            "", z["analyze_device_s"])
        row(f"streamed `analyze` of {size}, QR reductions in numpy on the host CPU", "",
            z["analyze_numpy_s"])
    missing = [k for k in ("sasrec", "adrec", "analyze") if k not in results]
    if missing:
        lines += ["", f"Not measured (the run stopped before): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu.md"))
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--sasrec-epochs", type=int, default=12)
    ap.add_argument("--dry-run", action="store_true",
                    help="every step on the tiny preset, on any device (a CPU included)")
    args = ap.parse_args(argv)
    if args.sasrec_epochs < 2:
        ap.error("--sasrec-epochs must be at least 2 (the first epoch is not timed)")

    import torch

    from adrec.config import TrainConfig
    from adrec.data import load_dataset
    from adrec.config import PRESETS
    from collapse_kit.tables import atomic_write  # the reports' atomic writer

    if not args.dry_run and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device is visible; run it on a GPU machine, or add --dry-run "
              "to check the script on this one", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = "tiny" if args.dry_run else "paper"
    cfg = TrainConfig(**PRESETS[preset], seed=0)
    model_args = dict(TINY_MODEL) if args.dry_run else {}
    epochs = 2 if args.dry_run else args.sasrec_epochs
    ds = load_dataset(args.dataset)
    env = environment(device)
    out, results = Path(args.out), {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        rows, d = (20_000, 16) if args.dry_run else (1_000_000, 128)
        for key, step in (("sasrec", lambda: bench_sasrec(ds, cfg, work, model_args, epochs)),
                          ("adrec", lambda: bench_adrec(ds, cfg, work, model_args)),
                          ("analyze", lambda: bench_analyze(rows, d, device))):
            print(f"bench_gpu: {key} on {args.dataset} ({env['device']}) ...", file=sys.stderr,
                  flush=True)
            results[key] = step()
            atomic_write(out, render(env, args.dataset, preset, args.dry_run, results))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
