"""t-SNE speed: collapse_kit.tsne (openTSNE + exact neighbours) against scikit-learn's TSNE.

Usage:  flock /tmp/collapse-kit-cpu.lock python benchmarks/bench_tsne.py [--out benchmarks/bench_tsne.md]

Tables of the sizes the ADRec paper maps: 6,086 x 128 (Beauty's items) and 64,669 x 128 (Yelp's),
and 15,000 x 128 in between (where the default gradient switches from Barnes-Hut to FFT).
Trained tables of those sizes are not in the repository, so each is a seeded synthetic table with
structure (50 Gaussian clusters in a 16-dimensional subspace, plus noise, which dominates the
distances between items of one cluster). Both methods get the
same column-standardised input, PCA initialisation and perplexity 30:

* collapse_kit: ``tsne_map`` defaults (exact neighbours; all cores from 5,000 items, the FFT
  gradient from 10,000; 250 exaggerated + 500 normal iterations, 250 + 250 from 20,000 items);
  for the large table also with 500 normal iterations (``collapse_kit_500``), and with the
  other gradient forced (``collapse_kit_bh``, ``collapse_kit_fft``) to check the switch;
* scikit-learn: ``TSNE(init="pca", random_state=2024)`` with its defaults (Barnes-Hut, 1000
  iterations), as the authors' notebook, with ``n_jobs`` = all cores.

Every run is its own subprocess. Reported: wall and CPU seconds (CPU counts all threads; on a
machine that other jobs share, CPU time is the steadier number), the 1-minute load average
before the run, and two measures of the map's quality over 1,000 sampled items: the fraction of
each item's 10 nearest neighbours in the standardised input that stay among its 10 nearest in the
map (low for every method here, since within a cluster the input neighbours are mostly noise),
and cluster purity, the fraction of its 10 nearest neighbours in the map from its own cluster.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from collapse_kit.tsne import SHORT_FROM, TSNESettings

SIZES = (6086, 15000, 64669)
D = 128
SEED = 2024


def make_table(n: int, d: int = D, seed: int = 0):
    """(table (n, d) float32, cluster of each row (n,)): 50 clusters in a 16-d subspace + noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, 16)) * 1.5              # (50, 16); clusters overlap a little
    labels = rng.integers(0, 50, n)
    latent = centers[labels] + rng.standard_normal((n, 16))    # (n, 16)
    mixing = rng.standard_normal((16, d)) / 4                  # (16, d)
    return (latent @ mixing + 0.5 * rng.standard_normal((n, d))).astype(np.float32), labels


def cluster_purity(Y, labels, *, k: int = 10, sample: int = 1000, seed: int = 0) -> float:
    """Mean fraction of each item's k nearest neighbours in the map Y from its own cluster."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = rng.choice(Y.shape[0], size=min(sample, Y.shape[0]), replace=False)
    d2 = (Y**2).sum(1)[None, :] - 2 * Y[rows] @ Y.T
    d2[np.arange(rows.size), rows] = np.inf
    nn = np.argpartition(d2, k, axis=1)[:, :k]
    return float((labels[nn] == labels[rows, None]).mean())


def neighbour_preservation(X, Y, *, k: int = 10, sample: int = 1000, seed: int = 0) -> float:
    """Mean |kNN_X(i) & kNN_Y(i)| / k over ``sample`` items (exact neighbours in both)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = rng.choice(X.shape[0], size=min(sample, X.shape[0]), replace=False)

    def knn(A):
        A = np.asarray(A, dtype=np.float64)
        d2 = (A**2).sum(1)[None, :] - 2 * A[rows] @ A.T        # (sample, n) up to a row constant
        d2[np.arange(rows.size), rows] = np.inf                # not itself
        return np.argpartition(d2, k, axis=1)[:, :k]

    a, b = knn(X), knn(Y)
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(a, b)]))


def run_one(method: str, n: int) -> dict:
    from collapse_kit.tsne import TSNESettings, standardize, tsne_map

    E, labels = make_table(n)
    X = standardize(E)
    load = os.getloadavg()[0]
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if method.startswith("collapse_kit"):
        forced = method.rsplit("_", 1)[1] if method.endswith(("_bh", "_fft")) else "auto"
        settings = TSNESettings(random_state=SEED, n_iter=500 if method.endswith("_500") else None,
                                method=forced)
        Y = tsne_map(E, settings)
        detail = (f"{settings.method_for(n)}, 250+{settings.iterations_for(n)} iterations, "
                  f"{settings.threads_for(n)} thread(s)")
    else:
        from sklearn.manifold import TSNE

        Y = TSNE(n_components=2, init="pca", random_state=SEED, n_jobs=os.cpu_count()).fit_transform(X)
        detail = "barnes_hut, 1000 iterations"
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"method": method, "n": n, "d": D, "run_at": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}",
            "wall_s": wall, "cpu_s": cpu, "load_before": load,
            "detail": detail, "knn10_preserved": neighbour_preservation(X, Y),
            "cluster_purity": cluster_purity(Y, labels),
            "input_purity": cluster_purity(X.astype("float64"), labels)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/bench_tsne.md")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--methods", nargs="+", default=["collapse_kit", "collapse_kit_500",
                                                      "collapse_kit_bh", "collapse_kit_fft",
                                                      "sklearn"],
                    help="collapse_kit (defaults), collapse_kit_500 (500 normal iterations, run "
                         "only where the default is 250), collapse_kit_bh / _fft (that gradient "
                         "forced, run only where the default uses the other), sklearn")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before giving up")
    ap.add_argument("--keep", metavar="JSON",
                    help="an earlier run's JSON: its rows for (method, size) pairs not rerun now "
                         "are kept in the report")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "N"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    rows = []
    to_run = list(args.sizes)
    if args.keep:
        rerun = {(m, n) for m in args.methods for n in args.sizes}
        rows = [r for r in json.loads(Path(args.keep).read_text()) if (r["method"], r["n"]) not in rerun]
        args.sizes = sorted(set(args.sizes) | {r["n"] for r in rows})
    for n in to_run:
        for method in args.methods:
            if method == "collapse_kit_500" and n < SHORT_FROM:
                continue  # the default already runs 500 normal iterations there
            if method.endswith(("_bh", "_fft")) and (
                    TSNESettings().method_for(n) == method.rsplit("_", 1)[1]
                    or (method.endswith("_bh") and n >= SHORT_FROM)):
                continue  # the default already uses it, or Barnes-Hut would take many minutes
            try:
                out = subprocess.run([sys.executable, __file__, "--one", method, str(n)],
                                     capture_output=True, text=True, check=True, timeout=args.timeout)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            except subprocess.TimeoutExpired:
                rows.append({"method": method, "n": n, "d": D, "timeout": args.timeout})
            print(rows[-1], file=sys.stderr, flush=True)
    order = {"collapse_kit": 0, "collapse_kit_500": 1, "collapse_kit_bh": 2,
             "collapse_kit_fft": 3, "sklearn": 4}
    rows.sort(key=lambda r: (r["n"], order.get(r["method"], 5)))
    write_report(rows, args)


def write_report(rows: list[dict], args) -> None:
    import openTSNE
    import sklearn

    lines = [
        "# t-SNE speed: collapse_kit.tsne against scikit-learn's TSNE",
        "",
        "Command: `python benchmarks/bench_tsne.py"
        + "".join(f" {a}" for a in sys.argv[1:]) + "`  ",
        f"Report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC (each run's start: "
        f"`run_at` in the JSON); machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared with other jobs; the load average before each run is "
        f"listed); openTSNE {openTSNE.__version__}, scikit-learn {sklearn.__version__}.  ",
        "Synthetic structured tables (see the script's docstring), column-standardised, PCA "
        "initialisation, perplexity 30, seed 2024. kNN kept = mean fraction of each item's 10 "
        "nearest input neighbours that stay among its 10 nearest in the map; purity = mean "
        "fraction of its 10 nearest map neighbours from its own cluster (1,000 items).",
        "",
        "| items x d | method | gradient, iterations | wall s | CPU s | load before | kNN kept | purity |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "timeout" in r:
            lines.append(f"| {r['n']:,} x {r['d']} | {r['method']} | | > {r['timeout']:.0f} | | | | |")
            continue
        lines.append(f"| {r['n']:,} x {r['d']} | {r['method']} | {r['detail']} | {r['wall_s']:.1f} | "
                     f"{r['cpu_s']:.1f} | {r['load_before']:.1f} | {r['knn10_preserved']:.3f} | "
                     f"{r['cluster_purity']:.3f} |")
    for n in args.sizes:
        done = [r for r in rows if r["n"] == n and "input_purity" in r]
        if done:
            lines.append(f"\n{n:,} items: purity of the input's own 10 nearest neighbours "
                         f"{done[0]['input_purity']:.3f} (for reference).")
        ours = next((r for r in rows if r["n"] == n and r["method"] == "collapse_kit" and "wall_s" in r), None)
        ref = next((r for r in rows if r["n"] == n and r["method"] == "sklearn" and "wall_s" in r), None)
        if ours and ref:
            lines.append(f"{n:,} items: collapse_kit {ref['wall_s'] / ours['wall_s']:.1f}x faster "
                         f"in wall time, {ref['cpu_s'] / ours['cpu_s']:.1f}x less CPU time.")
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
