"""The analysis scripts under scripts/: their pure parts against known answers."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_selection_overshoot_is_the_peak_over_its_neighbours():
    gap = _load("valid_test_gap")
    assert gap.selection_overshoot(np.array([1.0, 2.0, 5.0, 2.0, 1.0, 0.0])) == \
        pytest.approx(5.0 - 1.5)
    assert gap.selection_overshoot(np.array([3.0, 1.0])) == pytest.approx(2.0)  # edge peak
    assert np.isnan(gap.selection_overshoot(np.array([3.0])))


def test_paired_interval_matches_the_normal_approximation():
    paired = _load("paired_compare")
    rng = np.random.default_rng(1)
    diff = rng.normal(0.3, 2.0, 4000)
    lo, hi = paired.paired_interval(diff, 2000, np.random.default_rng(0))
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert lo == pytest.approx(diff.mean() - 1.96 * se, abs=0.25 * se)
    assert hi == pytest.approx(diff.mean() + 1.96 * se, abs=0.25 * se)
    assert paired.paired_interval(np.full(50, 0.7), 100, rng) == pytest.approx((0.7, 0.7))


@pytest.mark.parametrize("bad", ["random/cell", "random/cells:0", "shuffled/auto",
                                 "random/cells:1:2:3"])
def test_bench_training_refuses_a_malformed_passes_value_in_one_line(bad):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_training.py"),
                        "--passes", "random/auto", bad], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert f"--passes {bad!r}" in r.stderr and "Traceback" not in r.stderr


def test_pack_runs_keeps_the_tables_the_reports_read():
    keep = _load("pack_runs").keep_table
    assert keep("ml-100k", "adrec", "s0-strict", "stage1.pt")
    assert keep("toys", "sasrec", "s0-strict", "sasrec.pt")  # Table 5 of Toys needs it
    assert keep("toys", "adrec", "s0-strict", "best.pt")
    assert not keep("toys", "adrec", "s0-strict", "stage3.pt")  # best.pt holds the same table
    assert keep("sports", "adrec", "s0-strict", "best.pt")
    assert not keep("sports", "sasrec", "s0-strict", "sasrec.pt")
    assert not keep("baby", "sasrec", "s1-strict", "sasrec.pt")  # only seed 0 strict is analysed
    assert keep("toys", "sasrec", "s0-official", "sasrec.pt")  # Table 5's fallback
    assert not keep("baby", "sasrec", "s1-official", "sasrec.pt")
