"""The analysis scripts under scripts/: their pure parts against known answers."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name, folder="scripts"):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
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


@pytest.mark.parametrize("flag,expected", [([], None), (["--precision", "highest"], "highest")])
def test_bench_training_trains_at_the_precision_it_is_given(flag, expected):
    """Regression: bench_training timed float32 epochs whatever the trainer's default was; it
    now takes --precision (default auto, the trainer's default) and reports what it resolved to."""
    import json
    import subprocess
    import sys

    from adrec.config import resolve_matmul_precision

    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--one",
                        "sasrec", "ml-100k", "random", "auto", "--epochs", "1", "--evals", "0",
                        *flag], capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["precision"] == (expected or resolve_matmul_precision("auto", "cpu", cpu_bf16=True))


@pytest.mark.parametrize("script", ["bench_training.py", "profile_stages.py"])
def test_benchmark_precision_flag_refuses_an_unknown_value_in_one_line(script):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--precision", "low"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--precision" in r.stderr and "'low'" in r.stderr
    assert "Traceback" not in r.stderr


def test_pack_runs_keeps_the_tables_the_reports_read():
    keep = _load("pack_runs").keep_table
    assert keep("ml-100k", "adrec", "s0-strict", "stage1.pt")
    assert keep("toys", "sasrec", "s0-strict", "sasrec.pt")  # Table 5 of Toys needs it
    assert keep("toys", "adrec", "s0-strict", "best.pt")
    assert not keep("toys", "adrec", "s0-strict", "stage3.pt")  # best.pt holds the same table
    assert keep("sports", "adrec", "s0-strict", "best.pt")
    assert keep("sports", "sasrec", "s0-strict", "sasrec.pt")  # one archive per model: fits
    assert keep("sports", "dreamrec", "s0-strict", "dreamrec.pt")  # Table 5 and Figure 10
    assert keep("sports", "diffurec", "s0-strict", "diffurec.pt")
    assert not keep("baby", "adrec-no-mse", "s0-strict", "best.pt")  # ablations: metrics only
    assert not keep("baby", "sasrec", "s1-strict", "sasrec.pt")  # only seed 0 strict is analysed
    assert keep("toys", "sasrec", "s0-official", "sasrec.pt")  # Table 5's fallback
    assert not keep("baby", "sasrec", "s1-official", "sasrec.pt")


def test_official_user_weights_reproduce_the_batch_mean():
    from adrec.evaluate import aggregate, official_user_weights

    rng = np.random.default_rng(3)
    for n in (1, 511, 512, 513, 938, 1025, 11268):
        v = rng.random(n)
        w = official_user_weights(n)
        assert w.sum() == pytest.approx(1.0)
        assert 100 * (w * v).sum() == pytest.approx(aggregate({"m": v}, "official")["m"],
                                                     abs=1e-4)
    w = official_user_weights(1025)  # 3 batches: 512, 512, 1
    assert w[-1] == pytest.approx(1 / 3) and w[0] == pytest.approx(1 / (3 * 512))
    w = official_user_weights(11268)  # Toys: 23 batches, the last of 4 users
    assert w[-4:].sum() == pytest.approx(1 / 23) and w[-4] == pytest.approx(1 / 92)
    assert np.allclose(official_user_weights(1024), 1 / 1024)  # full batches: the exact mean
    with pytest.raises(ValueError):
        official_user_weights(0)


def test_seen_elsewhere_counts_other_users_only():
    script = _load("official_averaging")
    owners = script.pair_owners([[1, 2, 3], [2, 3, 4], [5, 6]])
    assert owners == {(1, 2): {0}, (2, 3): {0, 1}, (3, 4): {1}, (5, 6): {2}}
    # user 0: (3, 4) is in user 1's sequence; user 1: (2, 3) only in user 0's -> True;
    # user 2: (6, 7) nowhere; user 1 asking (3, 4) of itself would not count
    assert script.seen_elsewhere(owners, [3, 2, 6], [4, 3, 7]).tolist() == [True, True, False]
    assert script.seen_elsewhere(owners, [1, 3, 5], [2, 4, 6]).tolist() == [False, False, False]


def test_official_averaging_refuses_a_light_checkpoint_in_one_line(tmp_path):
    import subprocess
    import sys

    light = ROOT / "results/ml-100k-cpu-shuffled/runs/ml-100k/sasrec/s0-strict/sasrec.pt"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "official_averaging.py"),
                        str(light), str(tmp_path / "missing.pt")], capture_output=True, text=True)
    assert r.returncode == 1 and "weights stripped" in r.stderr and "Traceback" not in r.stderr


def test_bench_training_trains_each_model_on_the_samples_the_trainer_uses():
    """Regression: the benchmark built one sample per user for every model, so a "DiffuRec
    epoch" timed 938 sequences instead of DiffuRec's 30,619 prefix samples on ML-100K."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_training
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from adrec.data import load_dataset, training_pairs

    ds = load_dataset("ml-100k")
    for model, prefixes in (("diffurec", True), ("sasrec", False)):
        _, _, _, it, cfg = bench_training.training_setup(model, "ml-100k")
        hists, _ = training_pairs(ds, cfg.max_len, prefixes=prefixes)
        assert len(it.hists) == len(hists)
    assert len(training_pairs(ds, 50, prefixes=True)[0]) == 30619


def test_gpu_bench_dry_run_runs_every_step_and_writes_the_report(tmp_path):
    """scripts/gpu_bench.sh --dry-run: the GPU benchmark script end to end on the tiny preset
    (CPU here): a report with every measurement, marked as a dry run."""
    import os
    import re
    import subprocess

    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    text = (tmp_path / "gpu-dry-run.md").read_text()
    assert "**Dry run**" in text and "- torch: " in text and "- code commit: " in text
    for label in ("SASRec+ beauty epoch", "ADRec beauty validation pass",
                  "ADRec beauty, three stages end to end", "ADRec stage1: 2 epochs",
                  "ADRec stage3: 2 epochs", "streamed `analyze` of 20,000 x 16"):
        assert f"| {label}" in text, label
    hr, ndcg = map(float, re.search(r"\(strict, %\) \| ([\d.]+) / ([\d.]+)", text).groups())
    assert 0 <= ndcg <= hr <= 100
    assert "| yes |" not in text and "| no |" not in text  # a dry run judges no goal
    assert not list(tmp_path.glob(".*.tmp"))


def test_gpu_bench_refuses_without_a_gpu_or_with_an_unknown_argument(tmp_path):
    import subprocess
    import sys

    import torch

    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), "--fast"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown argument '--fast'" in r.stderr
    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--out",
                            str(tmp_path / "gpu.md")], capture_output=True, text=True)
        assert r.returncode == 2 and "no CUDA device" in r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "gpu.md").exists()


def test_setup_checks_the_install_outside_the_checkout(tmp_path):
    """Regression: setup.sh checked `import collapse_kit, adrec, ...` from the checkout's root,
    where they import through the working directory, so a checkout carried to a fresh machine
    (its .setup-stamp newer than pyproject.toml) was never installed. A stand-in python records
    where each check runs; run from the root, setup.sh must still see the packages missing and
    install."""
    import os
    import subprocess
    log = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$(pwd) $*" >> {log}\n'
                    '[ "$1" = "-c" ] && [ "$2" = "import torch" ] && exit 0\n'
                    f'[ "$1" = "-c" ] && [ "$(pwd)" = "{ROOT}" ] && exit 0\n'
                    '[ "$1" = "-c" ] && exit 1\nexit 0\n')
    fake.chmod(0o755)
    stamp = ROOT / ".setup-stamp"
    had = stamp.exists()
    before = stamp.stat().st_mtime if had else None
    try:
        subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], check=True, cwd=ROOT,
                       env={**os.environ, "PYTHON": str(fake)}, timeout=60)
    finally:
        if had:
            os.utime(stamp, (before, before))
        else:
            stamp.unlink(missing_ok=True)
    calls = log.read_text().splitlines()
    assert any("-m pip install" in c for c in calls), calls
    check = [c for c in calls if "import collapse_kit" in c]
    assert check and not check[0].startswith(f"{ROOT} "), check


def test_pack_runs_writes_one_archive_per_model_with_the_kept_tables(tmp_path):
    """Regression: one archive per dataset could not hold Sports' seed-0 tables under 16 MB, so
    SASRec+'s was dropped (Table 5 and Figure 10 lost it). Now one archive per model."""
    import tarfile

    import torch

    pack = _load("pack_runs")
    root = tmp_path / "src" / "top" / "runs" / "sports"
    for name, run, ckpt in [("sasrec", "s0-strict", "sasrec.pt"), ("adrec", "s0-strict", "best.pt"),
                            ("adrec", "s0-strict", "stage3.pt"), ("sasrec", "s1-strict", "sasrec.pt")]:
        d = root / name / run
        d.mkdir(parents=True, exist_ok=True)
        torch.save({"item_embeddings": torch.ones(5, 4), "state_dict": {"w": torch.ones(3)}},
                   d / ckpt)
        (d / "train.out").write_text("{}\n")
        (d / f"{ckpt}.resume.pt").write_text("resume state: never packed")
    pack.main(str(tmp_path / "src"), str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "top-sports-adrec.tar.gz", "top-sports-sasrec.tar.gz"]
    rows = {}
    for archive in (tmp_path / "out").iterdir():
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            assert not any(n.endswith(".resume.pt") for n in names)
            tar.extractall(tmp_path / "x", filter="data")
            rows.update({n: torch.load(tmp_path / "x" / n, weights_only=True)
                         for n in names if n.endswith(".pt")})
    shape = {n.split("runs/sports/")[1]: tuple(c["item_embeddings"].shape) for n, c in rows.items()}
    assert shape == {"sasrec/s0-strict/sasrec.pt": (5, 4), "adrec/s0-strict/best.pt": (5, 4),
                     "adrec/s0-strict/stage3.pt": (0, 4), "sasrec/s1-strict/sasrec.pt": (0, 4)}
    assert all(c["state_dict"] == {} and c["weights_stripped"] for c in rows.values())


def test_profile_stages_counts_product_flops_from_shapes():
    prof = _load("profile_stages", "benchmarks")
    assert prof.product_flops("aten::mm", [[64, 32], [32, 16]]) == 2 * 64 * 32 * 16
    assert prof.product_flops("aten::addmm", [[16], [64, 32], [32, 16], [], []]) == 2 * 64 * 32 * 16
    assert prof.product_flops("aten::bmm", [[8, 5, 4], [8, 4, 3]]) == 2 * 8 * 5 * 4 * 3
    assert prof.product_flops("aten::add", [[3], [3]]) == 0
    assert prof.product_flops("aten::mm", [[], []]) == 0  # unrecorded shapes: no guess


def test_profile_stages_puts_each_operator_in_its_category(monkeypatch):
    """A real profile of known operators: products split into dense layers and item logits by
    the item count, softmaxes by kind, the dropout and optimizer scopes, FLOPs from shapes."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from adrec.models import layers

    prof = _load("profile_stages", "benchmarks")
    monkeypatch.setattr(layers.Dropout, "forward", layers.Dropout.forward)  # restored after
    prof.scoped_dropout()
    n_rows = 37
    x, w = torch.randn(64, 32), torch.randn(32, 16)
    E = torch.randn(n_rows, 16, requires_grad=True)
    drop = layers.Dropout(0.5).train()
    opt = torch.optim.Adam([E], lr=0.1)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        h = torch.mm(x, w)                                    # dense: 2*64*32*16
        logits = torch.mm(h, E.T)                             # logits: 2*64*16*37
        F.log_softmax(logits, -1)                             # item softmax / CE
        torch.softmax(torch.randn(4, 2, 5, 5), -1)            # attention softmax
        drop(torch.randn(1000))
        E.grad = torch.ones_like(E)
        opt.step()
    by_cat, total, flops = prof.summarise(p.events(), n_rows)
    assert flops == 2 * 64 * 32 * 16 + 2 * 64 * 16 * 37
    for c in ("matrix products", "logits", "item softmax / CE", "attention", "dropout",
              "optimizer"):
        assert by_cat[c] > 0, c
    assert total == pytest.approx(sum(by_cat.values()))


def test_count_epoch_flops_equals_the_products_of_sasrec_by_hand():
    """One SASRec+ epoch on ML-100K (d = 128, 2 blocks, FFN 4d): the forward Linear layers are
    addmm, 2 x tokens x (4 d^2 + 8 d^2) per block; their backward (input and weight gradients)
    twice that, as mm; the item scores (no bias) 2 x tokens x (n + 1) x d forward and twice that
    backward, as mm. Attention's bmm depends on the length groups and is only bounded."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        flops = _load("count_epoch_flops", "benchmarks").count_one("sasrec", "ml-100k")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    d, tokens, n = 128, flops["target_tokens"], flops["n_items"]
    assert flops["rows"] == 938 and flops["batches"] == 2 and tokens == 30_619
    linear = 2 * tokens * 12 * d * d * 2  # two blocks
    assert flops["by_op"]["addmm"] == linear
    assert flops["by_op"]["mm"] == 2 * linear + 6 * tokens * (n + 1) * d
    # attention: per block QK^T and PV (2 x 2 x queries x keys x d forward, twice that
    # backward), at most 938 x 50 query positions (padded within a group) and 50 keys
    assert 0 < flops["by_op"]["bmm"] <= 2 * 12 * (938 * 50) * 50 * d
    assert flops["flops"] == sum(flops["by_op"].values())
