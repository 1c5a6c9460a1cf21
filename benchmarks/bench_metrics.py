"""Benchmark: every collapse metric of a Yelp-sized item table (64,669 x 128), time and peak memory.

Budget (issue 5): all metrics in at most 10 s and 2 GB peak memory on a 2-core machine, the
bootstrap excluded (timed separately here, per resample; so is the Gaussian null).

Each phase runs in a fresh child process so that its peak resident memory (ru_maxrss) is its own;
that peak includes the interpreter, numpy/scipy/scikit-learn and the 33 MB float32 table.

    python benchmarks/bench_metrics.py                      # writes benchmarks/bench_metrics.txt
    python benchmarks/bench_metrics.py --out - --repeats 1  # print only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_ITEMS, DIM = 64_669, 128  # Yelp in the ADRec paper's Table 7
TIME_BUDGET_S, MEMORY_BUDGET_MB = 10.0, 2048
HERE = Path(__file__).resolve().parent


def yelp_like_table(seed: int = 0):
    """A (64669, 128) float32 table with what trained tables have: clusters, a decaying
    spectrum and a shared offset (so KMeans, spectra and cosines all have work to do)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    decay = (np.arange(1, DIM + 1) ** -0.5).astype(np.float32)                  # (D,)
    centers = rng.standard_normal((64, DIM)).astype(np.float32) * 0.8           # (64, D)
    labels = rng.integers(0, 64, size=N_ITEMS)
    noise = rng.standard_normal((N_ITEMS, DIM), dtype=np.float32) * decay       # (N, D)
    table = (centers[labels] + noise) @ basis.astype(np.float32).T              # (N, D)
    return table + rng.standard_normal(DIM).astype(np.float32) * 0.3


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- phases (run in child processes) -------------------------------------------------------------

def phase_metrics(repeats: int) -> dict:
    import sklearn.cluster  # noqa: F401  (imports are not part of the metric time)

    from collapse_kit.analyze import compute_metrics

    E = yelp_like_table()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        values = compute_metrics(E)
        times.append(time.perf_counter() - start)
    return {"times": times, "peak_mb": peak_mb(), "silhouette": values["silhouette"],
            "isotropy": values["isotropy"]}


def phase_breakdown() -> dict:
    import numpy as np
    import sklearn.cluster  # noqa: F401

    from collapse_kit import metrics as M
    from collapse_kit.metrics._threads import thread_limit

    E = yelp_like_table()
    X = E.astype(np.float64)
    out = {}
    with thread_limit(1):  # as compute_metrics does by default
        _breakdown(M, X, out)
    return {"breakdown": out, "peak_mb": peak_mb()}


def _breakdown(M, X, out: dict) -> None:

    def timed(name, fn):
        start = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - start

    timed("spectra (one blocked QR, three d x d SVDs)", lambda: M.spectra(X))
    sp = M.spectra(X)
    timed("paper spectral metrics from spectra", lambda: [
        f(sp) for f in (M.top_singular_values, M.singular_value_variance, M.singular_value_entropy,
                        M.covariance_entropy, M.isotropy, M.kl_to_gaussian, M.kl_to_gaussian_logdet,
                        M.effective_rank, M.information_abundance, M.numerical_rank,
                        M.power_law_decay)])
    timed("kmeans (k=16, n_init=1, all items)", lambda: M.kmeans_labels(X))
    labels = M.kmeans_labels(X)
    timed("silhouette score (10,000-item sample)",
          lambda: M.silhouette_labels(X, labels, sample_size=10_000))
    timed("uniformity (10,000-item sample)", lambda: M.uniformity(X))
    timed("mean cosine + row norms", lambda: (M.mean_cosine_similarity(X), M.row_norm_stats(X)))


def phase_null() -> dict:
    from collapse_kit.analyze import compute_metrics
    from collapse_kit.metrics import gaussian_null

    import sklearn.cluster  # noqa: F401

    start = time.perf_counter()
    gaussian_null(compute_metrics, (N_ITEMS, DIM), n_draws=1, random_state=0)
    return {"time": time.perf_counter() - start, "peak_mb": peak_mb()}


def phase_bootstrap(resamples: int) -> dict:
    from collapse_kit.analyze import compute_metrics
    from collapse_kit.metrics import bootstrap_ci

    import sklearn.cluster  # noqa: F401

    E = yelp_like_table()
    start = time.perf_counter()
    bootstrap_ci(compute_metrics, E, n_resamples=resamples, random_state=0)
    elapsed = time.perf_counter() - start
    return {"time": elapsed, "per_resample": elapsed / resamples, "resamples": resamples,
            "peak_mb": peak_mb()}


def phase_cli() -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "yelp_like.npy"
        np.save(path, yelp_like_table())
        out = {}
        for label, extra in (("analyze --null-draws 0", ["--null-draws", "0"]),
                             ("analyze (default: with Gaussian null)", [])):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "collapse_kit.cli", "analyze", str(path),
                                   "--json", *extra], capture_output=True, text=True, check=True)
            child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            out[label] = {"time": time.perf_counter() - start, "peak_mb_children": child,
                          "silhouette_sample_size": json.loads(done.stdout)["silhouette_sample_size"]}
    return out


def run_child(phase: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--phase", phase, *args],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------

def machine() -> str:
    import numpy
    import scipy
    import sklearn

    from collapse_kit.tables import cpu_model

    model = cpu_model()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{os.cpu_count()} cores ({model}); Python {platform.python_version()}, numpy "
            f"{numpy.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}; "
            f"load average at start: {load}")


def report(repeats: int, resamples: int) -> str:
    head = machine()
    metrics = run_child("metrics", str(repeats))
    breakdown = run_child("breakdown")
    null = run_child("null")
    boot = run_child("bootstrap", str(resamples))
    cli = run_child("cli")
    median = statistics.median(metrics["times"])
    ok_time = median <= TIME_BUDGET_S
    ok_mem = metrics["peak_mb"] <= MEMORY_BUDGET_MB
    lines = [
        f"# bench_metrics: every collapse metric of a {N_ITEMS:,} x {DIM} table (Yelp's size)",
        f"# machine: {head}",
        "# made by: python benchmarks/bench_metrics.py (seeded synthetic table: 64 clusters, "
        "decaying spectrum, shared offset)",
        "",
        f"all metrics (compute_metrics; bootstrap and Gaussian null excluded), {repeats} runs:",
        f"  time      median {median:.2f} s   runs: "
        + ", ".join(f"{t:.2f}" for t in metrics["times"])
        + f"   budget {TIME_BUDGET_S:.0f} s: {'OK' if ok_time else 'OVER'}",
        f"  peak RSS  {metrics['peak_mb']:.0f} MB (whole process: interpreter, libraries, table)"
        f"   budget {MEMORY_BUDGET_MB} MB: {'OK' if ok_mem else 'OVER'}",
        "  silhouette scored on a seeded sample of 10,000 items (KMeans on all 64,669); "
        "uniformity over the pairs of 10,000 items",
        "",
        "breakdown (one run, one thread, float64 copy made beforehand):",
    ]
    lines += [f"  {name:<42} {t:6.2f} s" for name, t in breakdown["breakdown"].items()]
    lines += [
        f"  (peak RSS of that process: {breakdown['peak_mb']:.0f} MB)",
        "",
        "reported separately:",
        f"  Gaussian null, 1 draw (same metrics on a 64,669 x 128 N(0,1) table): "
        f"{null['time']:.2f} s, peak RSS {null['peak_mb']:.0f} MB",
        f"  bootstrap: {boot['per_resample']:.2f} s per resample ({boot['resamples']} resamples in "
        f"{boot['time']:.2f} s), peak RSS {boot['peak_mb']:.0f} MB; so --bootstrap 100 takes about "
        f"{100 * boot['per_resample'] / 60:.0f} min at this size",
    ]
    for label, r in cli.items():
        lines.append(f"  end to end `collapse-kit {label}` on a .npy (imports, load, output): "
                     f"{r['time']:.2f} s, peak RSS {r['peak_mb_children']:.0f} MB")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "bench_metrics.txt"), help="'-' for stdout")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=2)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("phase_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        fn = {"metrics": phase_metrics, "breakdown": phase_breakdown, "null": phase_null,
              "bootstrap": phase_bootstrap, "cli": phase_cli}[args.phase]
        print(json.dumps(fn(*(int(a) for a in args.phase_args))))
        return 0
    text = report(args.repeats, args.resamples)
    if args.out == "-":
        print(text, end="")
    else:
        Path(args.out).write_text(text)
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
