"""Benchmark: `collapse-kit analyze` of a table of millions of items, streamed: time, peak RSS.

Targets (the streaming issue): 1,000,000 x 128 float32 in at most 60 s with at most 1.5 GB peak
resident memory; 10,000,000 x 128 (5.1 GB on disk) with at most 2 GB peak. Every metric, the
Gaussian null with one draw (generated block by block), no bootstrap.

The table is written to a temporary folder as a .npy (a seeded table with clusters, a decaying
spectrum and a shared offset, like a trained one), by a child process, in chunks, so no process
holds it whole. Each analysis runs in a fresh child (`collapse-kit analyze X.npy --stream
--json --null-draws 1`, imports included), whose peak resident memory is its own: the parent
stays small, and the child's ru_maxrss and /proc VmHWM are both recorded.

    python benchmarks/bench_streaming.py                 # 10^6 rows: bench_streaming.{txt,json}
    python benchmarks/bench_streaming.py --ten-million   # also 10^7 rows (needs 5.1 GB of disk)
    python benchmarks/bench_streaming.py --rows 20000 --out -   # a quick check, printed only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DIM = 128
TARGETS = {1_000_000: (60.0, 1536), 10_000_000: (None, 2048)}  # rows: (seconds, MB)
CHUNK_ROWS = 100_000


# -- phases (run in child processes) -------------------------------------------------------------

def phase_write(path: str, rows: int, dim: int) -> dict:
    """Write a seeded (rows, dim) float32 .npy in chunks of CHUNK_ROWS rows."""
    import numpy as np

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    basis = basis.astype(np.float32)
    decay = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)               # (D,)
    centers = rng.standard_normal((64, dim)).astype(np.float32) * 0.8        # (64, D)
    offset = rng.standard_normal(dim).astype(np.float32) * 0.3
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
        for i in range(0, rows, CHUNK_ROWS):
            b = min(CHUNK_ROWS, rows - i)
            labels = rng.integers(0, 64, size=b)
            noise = rng.standard_normal((b, dim), dtype=np.float32) * decay  # (b, D)
            chunk = (centers[labels] + noise) @ basis.T + offset              # (b, D)
            f.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
    return {"time": time.perf_counter() - start, "bytes": os.path.getsize(path)}


def phase_analyze(path: str) -> dict:
    """`collapse-kit analyze PATH --stream --json --null-draws 1`: its time and this process's
    peak resident memory."""
    import contextlib
    import io

    from collapse_kit.cli import main

    start = time.perf_counter()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # main() imports what the command needs
        rc = main(["analyze", path, "--stream", "--json", "--null-draws", "1"])
    result = json.loads(out.getvalue()) if rc == 0 else {}
    return {"rc": rc, "analyze": time.perf_counter() - start,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "vmhwm_mb": _vmhwm_mb(), "streamed": result.get("streamed"),
            "stream_block_rows": result.get("stream_block_rows"),
            "silhouette_sample_size": result.get("silhouette_sample_size"),
            "uniformity_sample_size": result.get("uniformity_sample_size"),
            "effective_rank": result.get("effective_rank"), "isotropy": result.get("isotropy")}


def _vmhwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_child(phase: str, *args: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--phase", phase, *args], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall"] = time.perf_counter() - start
    return out


# -- report ---------------------------------------------------------------------------------------

def machine() -> dict:
    import numpy

    from collapse_kit.tables import cpu_model

    model = cpu_model()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except OSError:
        commit = "unknown"
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "numpy": numpy.__version__, "load_average": list(os.getloadavg()),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit}


def measure(rows: int, folder: Path) -> dict:
    path = folder / f"table_{rows}x{DIM}.npy"
    written = run_child("write", str(path), str(rows), str(DIM))
    try:
        run = run_child("analyze", str(path))
    finally:
        path.unlink(missing_ok=True)
    seconds, mb = TARGETS.get(rows, (None, None))
    return {"rows": rows, "dim": DIM, "file_bytes": written["bytes"],
            "write_seconds": written["time"], **run, "target_seconds": seconds, "target_mb": mb}


def report(runs: list[dict], head: dict) -> str:
    load = ", ".join(f"{v:.2f}" for v in head["load_average"])
    lines = [
        "# bench_streaming: `collapse-kit analyze X.npy --stream --json --null-draws 1` "
        "(every metric, Gaussian null of 1 draw)",
        f"# machine: {head['cores']} cores ({head['cpu']}); Python {head['python']}, numpy "
        f"{head['numpy']}; load average at start: {load}",
        f"# date: {head['date']}; commit: {head['commit']}",
        "# made by: python benchmarks/bench_streaming.py (seeded float32 table: 64 clusters, "
        "decaying spectrum, shared offset)",
        "",
    ]
    for r in runs:
        peak = r["vmhwm_mb"] if r["vmhwm_mb"] is not None else r["ru_maxrss_mb"]
        verdict = []
        if r["target_seconds"] is not None:
            verdict.append(f"time budget {r['target_seconds']:.0f} s: "
                           f"{'OK' if r['wall'] <= r['target_seconds'] else 'OVER'}")
        if r["target_mb"] is not None:
            verdict.append(f"memory budget {r['target_mb']} MB: "
                           f"{'OK' if peak <= r['target_mb'] else 'OVER'}")
        lines += [
            f"{r['rows']:,} x {r['dim']} float32 ({r['file_bytes'] / 1e6:,.0f} MB on disk, "
            f"written in {r['write_seconds']:.1f} s):",
            f"  wall time  {r['wall']:.1f} s (the child process, start to exit; its "
            f"`collapse-kit analyze` call {r['analyze']:.1f} s)",
            f"  peak RSS   {peak:.0f} MB (VmHWM; ru_maxrss {r['ru_maxrss_mb']:.0f} MB)",
            f"  streamed {r['streamed']}, blocks of {r['stream_block_rows']} rows; silhouette on "
            f"{r['silhouette_sample_size']} rows, uniformity on {r['uniformity_sample_size']}",
            f"  {'; '.join(verdict) if verdict else 'no target at this size'}",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the table (10^6)")
    parser.add_argument("--ten-million", action="store_true", help="also a 10^7-row table")
    parser.add_argument("--tmp", help="folder for the temporary .npy (default: the system's)")
    parser.add_argument("--out", default=str(HERE / "bench_streaming.txt"),
                        help="report file ('-' for stdout only); the JSON goes next to it")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("phase_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        fn = {"write": lambda p, n, d: phase_write(p, int(n), int(d)),
              "analyze": phase_analyze}[args.phase]
        print(json.dumps(fn(*args.phase_args)))
        return 0
    sizes = [args.rows] + ([10_000_000] if args.ten_million else [])
    folder = Path(tempfile.mkdtemp(prefix="bench_streaming_", dir=args.tmp))
    try:
        free = shutil.disk_usage(folder).free
        need = max(sizes) * DIM * 4
        if need > free:
            raise SystemExit(f"{folder} has {free / 1e9:.1f} GB free; the table needs "
                             f"{need / 1e9:.1f} GB (use --tmp)")
        head = machine()
        runs = [measure(n, folder) for n in sizes]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = report(runs, head)
    print(text, end="")
    if args.out != "-":
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(
            json.dumps({"machine": head, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
