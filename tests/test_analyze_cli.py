"""analyze() and the `collapse-kit analyze` / `compare` commands."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from collapse_kit.analyze import (
    BEYOND_KEYS, PAPER_KEYS, analyze, compute_metrics, format_analysis, format_comparison,
    to_jsonable)
from collapse_kit.cli import main
from collapse_kit.errors import UserError

REPO = Path(__file__).resolve().parents[1]
from tests.conftest import GENRES, OFFICIAL_CKPT as AUTHORS_CKPT  # noqa: E402


def table(n=120, d=8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) @ rng.standard_normal((d, d))).astype(np.float32)


def project_checkpoint(E: np.ndarray) -> dict:
    """A checkpoint dict in this project's format (what the trainer writes)."""
    t = torch.from_numpy(E)
    return {"format": "collapse-kit-checkpoint", "format_version": 1, "package_version": "0.1.0",
            "model": "adrec", "model_args": {}, "config": {}, "stage": "stage3", "parent": None,
            "dataset": {"name": "toy", "n_items": E.shape[0], "n_users": 10}, "metrics": {},
            "epoch": 2, "item_embeddings": t,
            "state_dict": {"item_embedding.weight": torch.cat([torch.zeros(1, E.shape[1]), t])}}


@pytest.fixture
def ckpt(tmp_path) -> Path:
    path = tmp_path / "run.pt"
    torch.save(project_checkpoint(table()), path)
    return path


# -- analyze() ----------------------------------------------------------------------------------

def test_analyze_returns_every_documented_key_with_null_and_settings():
    r = analyze(table())
    for key in PAPER_KEYS + BEYOND_KEYS + ("kl_to_gaussian_logdet",):
        assert key in r and f"{key}_gaussian" in r, key
    assert len(r["top5_singular_values"]) == 5
    assert (r["n_items"], r["dim"], r["silhouette_sample_size"], r["null_draws"]) == (120, 8, 120, 1)
    assert "silhouette_labels" not in r and "isotropy_ci_low" not in r


def test_every_key_is_documented():
    doc = (REPO / "docs/metrics.md").read_text()
    labels = np.arange(120) % 3
    r = analyze(table(), labels=labels, null_draws=2, bootstrap=2)
    r.update({"checkpoint": 1, "checkpoint_format": 1, "tensor": 1, "tensor_reason": 1,
              "shape": 1, "original_shape": 1, "padding_row_dropped": 1, "padding_reason": 1,
              "model": 1, "stage": 1, "dataset": 1, "epoch": 1})
    suffixes = ("_gaussian_std", "_gaussian", "_ci_low", "_ci_high", "_undefined")  # as `K_gaussian`...
    assert all(f"`K{s}`" in doc for s in suffixes)

    def documented(key):
        return f"`{key}`" in doc or any(key.endswith(s) and f"`{key[: -len(s)]}`" in doc
                                        for s in suffixes)

    assert [k for k in r if not documented(k)] == []
    collapsed = analyze(np.ones((40, 8)), null_draws=0)
    assert "silhouette_undefined" in collapsed
    assert [k for k in collapsed if not documented(k)] == []


def test_analyze_matches_the_metric_functions():
    from collapse_kit.metrics import effective_rank, isotropy

    X = table()
    r = analyze(X, null_draws=0)
    assert r["isotropy"] == isotropy(X) and r["effective_rank"] == effective_rank(X)
    assert "isotropy_gaussian" not in r


def test_analyze_is_deterministic_and_seed_moves_only_seeded_parts():
    X = table(n=300)
    a = analyze(X, silhouette_sample=100)
    assert a == analyze(X, silhouette_sample=100)
    b = analyze(X, silhouette_sample=100, seed=1)
    assert a["isotropy"] == b["isotropy"]  # no randomness
    assert a["silhouette"] != b["silhouette"] and a["isotropy_gaussian"] != b["isotropy_gaussian"]


def test_analyze_samples_large_tables_and_reports_the_size():
    r = analyze(table(n=400), silhouette_sample=150, uniformity_sample=100, null_draws=0)
    assert r["silhouette_sample_size"] == 150 and r["uniformity_sample_size"] == 100


def test_analyze_labels_report_the_labelled_items_and_classes():
    labels = np.where(np.arange(150) < 140, np.arange(150) % 3, -1)
    r = analyze(table(n=150), labels=labels, null_draws=0)
    assert r["silhouette_labels_n_items"] == 140 and r["silhouette_labels_n_classes"] == 3


def test_analyze_bootstrap_gives_intervals_for_every_metric():
    r = analyze(table(n=150), bootstrap=5, null_draws=0)
    assert r["isotropy_ci_low"] <= r["isotropy_ci_high"]
    assert len(r["top5_singular_values_ci_low"]) == 5
    assert r["bootstrap_resamples"] == 5 and r["bootstrap_confidence"] == 0.95


def test_analyze_validates_options():
    with pytest.raises(UserError, match="at least 2 resamples"):
        analyze(table(), bootstrap=1)
    with pytest.raises(UserError, match="confidence must be a float strictly between 0 and 1"):
        analyze(table(), confidence=95.0)
    with pytest.raises(UserError, match="null_draws must be >= 0"):
        analyze(table(), null_draws=-1)
    with pytest.raises(UserError, match="integer array of shape"):
        analyze(table(), labels=np.zeros(3, int))
    with pytest.raises(UserError, match="unknown metric group"):
        compute_metrics(table(), groups=("papr",))


def test_json_is_strict_and_turns_inf_into_null():
    r = to_jsonable({"a": math.inf, "b": np.float64(1.5), "c": [np.int64(2)], "d": "x"})
    assert r == {"a": None, "b": 1.5, "c": [2], "d": "x"}
    json.dumps(r, allow_nan=False)


# -- the analyze command --------------------------------------------------------------------------

def test_analyze_command_prints_a_readable_table(ckpt, capsys):
    assert main(["analyze", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "tensor      item_embeddings" in out and "120 x 8" in out
    assert "no padding row dropped" in out and "model adrec, stage stage3" in out
    assert "Paper (ADRec Table 5)" in out and "kl_to_gaussian_logdet" in out


def test_analyze_json_is_flat_and_keyed_by_metric(ckpt, capsys):
    assert main(["analyze", str(ckpt), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tensor"] == "item_embeddings" and r["shape"] == [120, 8]
    assert r["padding_row_dropped"] is False
    assert all(not isinstance(v, dict) for v in r.values())
    for key in PAPER_KEYS:
        assert key in r
    assert main(["analyze", str(ckpt), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["isotropy"] == r["isotropy"]


def test_analyze_csv_and_markdown(ckpt, capsys):
    assert main(["analyze", str(ckpt), "--format", "csv", "--null-draws", "0"]) == 0
    rows = dict(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows["key"] == "value" and float(rows["isotropy"]) > 0
    assert len(rows["top5_singular_values"].split()) == 5
    assert main(["analyze", str(ckpt), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| Paper (ADRec Table 5) | `isotropy` |" in out and "- **tensor**" in out


def test_analyze_bootstrap_seed_and_samples_from_the_cli(ckpt, capsys):
    args = ["analyze", str(ckpt), "--json", "--bootstrap", "3", "--seed", "5",
            "--silhouette-sample", "50", "--uniformity-sample", "all"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["seed"] == 5 and r["bootstrap_resamples"] == 3 and "isotropy_ci_high" in r
    assert r["silhouette_sample_size"] == 50 and r["uniformity_sample_size"] == 120


@pytest.mark.guards_readme
def test_analyze_authors_checkpoint_states_tensor_and_padding(capsys):
    assert main(["analyze", str(AUTHORS_CKPT), "--json", "--null-draws", "0"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tensor"] == "item_embedding.weight" and r["shape"] == [1008, 128]
    assert r["padding_row_dropped"] is True and r["original_shape"] == [1009, 128]
    assert [round(v, 2) for v in r["top5_singular_values"]] == [80.66, 71.78, 62.04, 57.02, 45.48]
    assert round(r["silhouette"], 3) == 0.013 and r["silhouette_sample_size"] == 1008


def test_analyze_with_genre_labels(capsys):
    assert main(["analyze", str(AUTHORS_CKPT), "--json", "--null-draws", "0",
                 "--labels", str(GENRES)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["silhouette_labels_n_items"] == 428 and -1 < r["silhouette_labels"] < 1


def test_analyze_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("collapse-kit: error: No such file") and "Traceback" not in err
    torch.save({"emb": torch.randn(10, 3), "cfg": Path("x")}, tmp_path / "p.pt")
    assert main(["analyze", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err
    assert "--trust-pickle" in err and err.count("\n") == 1


def test_analyze_key_option(tmp_path, capsys):
    torch.save({"a": torch.randn(40, 4), "b": torch.randn(30, 4)}, tmp_path / "m.pt")
    assert main(["analyze", str(tmp_path / "m.pt"), "--key", "b", "--json", "--null-draws", "0"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tensor"] == "b" and r["shape"] == [30, 4] and r["tensor_reason"] == "chosen with --key"


def test_analyze_subprocess(tmp_path):
    # The console script as users run it (python -m collapse_kit.cli where it is not installed).
    np.save(tmp_path / "e.npy", table())
    exe = shutil.which("collapse-kit") or str(Path(sys.executable).with_name("collapse-kit"))
    cmd = [exe] if Path(exe).exists() else [sys.executable, "-m", "collapse_kit.cli"]
    done = subprocess.run(cmd + ["analyze", str(tmp_path / "e.npy"), "--json", "--null-draws", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["shape"] == [120, 8] and result["checkpoint_format"] == "npy"
    done = subprocess.run(cmd + ["analyze", str(tmp_path / "nope.npy")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("collapse-kit: error:")
    assert "Traceback" not in done.stderr


# -- compare ------------------------------------------------------------------------------------

def test_compare_markdown_has_one_row_per_checkpoint_and_a_gaussian_row(tmp_path, capsys):
    for i in range(2):
        torch.save(project_checkpoint(table(seed=i)), tmp_path / f"m{i}.pt")
    assert main(["compare", str(tmp_path / "m0.pt"), str(tmp_path / "m1.pt"),
                 "--names", "SASRec+", "ADRec"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("| Model | Top 5 Singular Values | SV Variance")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["SASRec+", "ADRec", "Gaussian"]
    assert "SASRec+:" in captured.err and "item_embeddings 120x8" in captured.err


def test_compare_csv_latex_and_corrected(tmp_path, capsys):
    torch.save(project_checkpoint(table()), tmp_path / "a_b.pt")
    assert main(["compare", str(tmp_path / "a_b.pt"), "--format", "csv", "--corrected"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["model"] for r in rows] == ["a_b", "Gaussian"]
    assert "kl_to_gaussian_logdet" in rows[0] and len(rows[0]["top5_singular_values"].split()) == 5
    assert main(["compare", str(tmp_path / "a_b.pt"), "--format", "latex"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(r"\begin{tabular}") and r"a\_b &" in out and r"\bottomrule" in out


def test_compare_one_gaussian_row_per_shape(tmp_path, capsys):
    np.save(tmp_path / "a.npy", table(n=100))
    np.save(tmp_path / "b.npy", table(n=150))
    assert main(["compare", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]) == 0
    out = capsys.readouterr().out
    assert "Gaussian 100x8" in out and "Gaussian 150x8" in out


def test_compare_names_must_match(tmp_path, capsys):
    np.save(tmp_path / "a.npy", table())
    assert main(["compare", str(tmp_path / "a.npy"), "--names", "A", "B"]) == 2
    assert "--names got 2 name(s) for 1 checkpoints" in capsys.readouterr().err


@pytest.mark.guards_readme
def test_compare_reproduces_the_section5_row(capsys):
    assert main(["compare", str(AUTHORS_CKPT), "--names", "SASRec (shipped)"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["SASRec (shipped)", "[80.66, 71.78, 62.04, 57.02, 45.48]", "82.59", "4.814",
                     "4.656", "0.055", "9.779", "0.013"]


def test_format_comparison_rejects_unknown_format():
    with pytest.raises(UserError, match="unknown format 'html'"):
        format_comparison([], "html")
    with pytest.raises(UserError, match="unknown format 'xml'"):
        format_analysis({}, "xml")


# -- tables where some metrics are undefined (regressions: issue 16, item 8) ----------------------

def run_json(args, capsys) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn or numpy warning may reach the user
        assert main(args) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_regression_collapsed_table_reports_every_defined_metric(tmp_path, capsys):
    # np.ones used to fail with a silhouette error after two sklearn warnings.
    np.save(tmp_path / "t.npy", np.ones((100, 8)))
    r, err = run_json(["analyze", str(tmp_path / "t.npy"), "--json"], capsys)
    assert err == ""
    assert r["effective_rank"] == pytest.approx(1.0) and r["information_abundance"] == pytest.approx(1.0)
    assert r["numerical_rank"] == 1 and r["n_constant_columns"] == 8
    assert r["singular_value_variance"] == 0.0 and r["top5_singular_values"] == [0.0] * 5
    assert r["singular_value_entropy"] == 0.0 and r["isotropy"] == 0.0
    assert r["covariance_entropy"] == pytest.approx(math.log(8))  # the authors' clip: see docs
    assert r["mean_cosine_similarity"] == pytest.approx(1.0) and r["uniformity"] == pytest.approx(0.0)
    assert r["row_norm_std"] == 0.0 and r["row_norm_mean"] == pytest.approx(math.sqrt(8))
    assert r["kl_to_gaussian_logdet"] is None and "kl_to_gaussian_logdet_undefined" not in r  # +inf
    for key in ("silhouette", "power_law_alpha", "power_law_r2"):
        assert r[key] is None and r[key + "_undefined"], key
    assert "same point" in r["silhouette_undefined"]
    assert "covariance is zero" in r["power_law_alpha_undefined"]
    assert r["silhouette_gaussian"] is not None  # the same-shape Gaussian is not collapsed


def test_regression_collapsed_table_in_the_printed_table(tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.full((100, 8), 0.1))  # 0.1: its mean is not exact in floats
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["analyze", str(tmp_path / "t.npy"), "--null-draws", "0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  silhouette +undefined", out, re.M)
    assert re.search(r"^  power_law_alpha +undefined", out, re.M)
    assert re.search(r"^  effective_rank +1\.000", out, re.M)
    assert "undefined for this table:" in out and "  silhouette: every row of the table" in out
    assert main(["analyze", str(tmp_path / "t.npy"), "--format", "markdown", "--null-draws", "0"]) == 0
    assert "- `silhouette`: every row" in capsys.readouterr().out


def test_regression_compare_of_a_collapsed_table(tmp_path, capsys):
    np.save(tmp_path / "ones.npy", np.ones((100, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["compare", str(tmp_path / "ones.npy"), "--corrected"]) == 0
    captured = capsys.readouterr()
    row = [c.strip() for c in captured.out.splitlines()[2].strip("|").split("|")]
    assert row[0] == "ones" and row[7] == "n/a" and row[-1] == "1.000"  # silhouette, eff. rank
    assert "ones: silhouette is n/a: every row of the table is the same point" in captured.err


def test_regression_small_and_wide_tables_are_analysed(tmp_path, capsys):
    # A 10-row table and d > n used to be refused outright.
    rng = np.random.default_rng(0)
    np.save(tmp_path / "small.npy", rng.standard_normal((10, 8)))
    r, _ = run_json(["analyze", str(tmp_path / "small.npy"), "--json", "--bootstrap", "3"], capsys)
    assert r["silhouette"] is None and "n_clusters=16 must be below n_items=10" in r["silhouette_undefined"]
    assert r["silhouette_gaussian"] is None and r["silhouette_ci_low"] is None
    assert 0 < r["isotropy"] < 1 and r["isotropy_ci_low"] <= r["isotropy_ci_high"]
    torch.save({"emb": torch.randn(10, 16)}, tmp_path / "wide.pt")
    r, _ = run_json(["analyze", str(tmp_path / "wide.pt"), "--json"], capsys)
    for key in ("isotropy", "kl_to_gaussian", "kl_to_gaussian_logdet"):
        assert r[key] is None and "needs more items than dimensions" in r[key + "_undefined"]
        assert r[key + "_gaussian"] is None
    assert 1 <= r["effective_rank"] <= 10 and r["numerical_rank"] == 10
    assert len(r["top5_singular_values"]) == 5


@pytest.mark.parametrize("c", [1e30, 1e-30, 1e300, 1e-300])
def test_regression_analyze_is_invariant_to_a_global_scale(c):
    # float32 KMeans over/underflowed at 1e30 and 1e-30, and the authors' absolute 1e-9
    # epsilons moved the z-scored metrics, though docs/metrics.md says they are scale-invariant.
    X = table(n=200).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, b = analyze(X, null_draws=0), analyze(c * X, null_draws=0)
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("row_norm_"):
            assert b[key] == pytest.approx(c * a[key], rel=1e-12), key
        elif a[key] is not None:
            assert np.allclose(b[key], a[key], rtol=1e-6, atol=1e-12), key


def test_scale_safety_leaves_tables_of_ordinary_scale_unchanged():
    # Only tables far from unit scale are rescaled (by a power of two, exactly), so every number
    # of an ordinary table is the same bits as before.
    from collapse_kit.metrics._validation import UNSCALED_RANGE, power_of_two_scaled

    X = table().astype(np.float64)
    assert power_of_two_scaled(X)[0] is X
    for c in (1e30, 1e-30):
        Y, k = power_of_two_scaled(c * X)  # just inside the range, and exact
        assert UNSCALED_RANGE[0] <= np.abs(Y).max() <= UNSCALED_RANGE[1]
        assert np.array_equal(np.ldexp(Y, k), c * X)


def _bad_file(kind: str, path: Path) -> None:
    """Write one kind of damaged or unsupported file to ``path`` (a few bytes, made here)."""
    import zipfile

    buf = io.BytesIO()
    np.save(buf, table(20, 4))
    npy = buf.getvalue()
    if kind == "corrupt-deflate":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("emb.npy", npy)
        data = bytearray(path.read_bytes())
        start = data.find(b"emb.npy") + len("emb.npy") + 40  # inside the deflate stream
        data[start:start + 30] = bytes(b ^ 0x55 for b in data[start:start + 30])
        path.write_bytes(bytes(data))
    elif kind == "huge-header":
        header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 128), }"
        header += " " * (117 - len(header)) + "\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") +
                         header.encode() + bytes(72))
    elif kind in ("bytes-member", "damaged-header"):
        blob = b"hello" if kind == "bytes-member" else npy[:10] + b"((((((((((" + npy[20:]
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("a.npy", blob)
            zf.writestr("b.npy", npy)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("embedding table\n1 2 3\n")
    elif kind == "sparse":
        torch.save({"emb": torch.randn(20, 4).to_sparse()}, path)
    elif kind == "fifo":
        os.mkfifo(path)

        def unblock():  # a reader blocked on the FIFO (the bug) gets an end of file, not a hang
            for _ in range(60):
                time.sleep(1)
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # ENXIO: nobody is reading it (the fixed behaviour)
                    pass

        threading.Thread(target=unblock, daemon=True).start()


@pytest.mark.parametrize("kind, says", [
    ("corrupt-deflate", "is truncated or corrupt"),
    ("huge-header", "claims a float64 array of shape (100000000000, 128)"),
    ("bytes-member", "member 'a.npy'"),
    ("damaged-header", "has a damaged .npy header"),
    ("empty", "is empty (0 bytes)"),
    ("text", "it is a text file"),
    ("sparse", "is a sparse tensor (sparse_coo)"),
    ("fifo", "is a FIFO (named pipe), not a regular file"),
])
def test_regression_bad_files_are_one_line_errors(tmp_path, capsys, kind, says):
    # zlib.error, MemoryError, AttributeError, tokenize.TokenError, raw library messages and a
    # FIFO that blocked for ever (issue 16): now one line naming the problem, exit 2.
    path = tmp_path / "x.npz"
    _bad_file(kind, path)
    for command in (["analyze"], ["compare"]):
        assert main([*command, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("collapse-kit: error:"), err
        assert says in err and "Traceback" not in err
