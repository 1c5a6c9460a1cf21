"""The streamed path: collapse_kit.stream sources, spectra_streamed, analyze(..., stream=True),
io.open_embeddings and `collapse-kit analyze --stream`."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from collapse_kit import stream
from collapse_kit.analyze import analyze, compute_metrics, compute_metrics_streamed
from collapse_kit.cli import main
from collapse_kit.errors import UserError
from collapse_kit.io import load_embeddings, open_embeddings
from collapse_kit.metrics import gaussian_table, silhouette, spectra
from collapse_kit.metrics._validation import ColumnStats, power_of_two_scaled, sample_rows
from collapse_kit.metrics.spectrum import spectra_streamed
from collapse_kit.stream import (ArraySource, FileRowsSource, GaussianSource, MultinomialWeights,
                                 resample_seed, summarize)

REPO = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-6, 1e-12  # ATOL: values that are rounding noise, e.g. 1e-34 for a dead column


def planted(n=20_000, d=32, rank=4, seed=0) -> np.ndarray:
    """Rank-4 signal, a shared offset and faint full-rank noise, float32: a collapsed-looking
    table whose every metric is still well defined."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))         # (n, d)
    return (0.3 * signal + 0.5 + 1e-2 * rng.standard_normal((n, d))).astype(np.float32)


def with_constant_column(n=20_000, d=32, seed=1) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, d)) @ np.diag(np.linspace(0.2, 2, d))
    X[:, 7] = 0.125  # a dead dimension
    return X


def assert_same_values(a: dict, b: dict, *, skip=()) -> None:
    """Every key of a and b equal: the same keys, texts and flags equal, numbers to RTOL."""
    assert a.keys() == b.keys(), set(a) ^ set(b)
    for key in a:
        if key in skip or key in ("streamed", "stream_block_rows"):
            continue
        va, vb = a[key], b[key]
        if va is None or isinstance(va, (str, bool)):
            assert va == vb, key
        else:
            np.testing.assert_allclose(vb, va, rtol=RTOL, atol=ATOL, err_msg=key)


# -- streamed == in memory --------------------------------------------------------------------

def test_streamed_equals_in_memory_for_every_key_on_a_planted_low_rank_table():
    X = planted()
    labels = np.where(np.arange(X.shape[0]) % 4 == 0, np.arange(X.shape[0]) % 3, -1)
    # silhouette_sample=None: KMeans and the silhouette see every row on both paths.
    kw = dict(labels=labels, null_draws=0, silhouette_sample=None, uniformity_sample=3000)
    a, b = analyze(X, **kw), analyze(X, stream=True, block_rows=3000, **kw)
    assert not a["streamed"] and a["stream_block_rows"] is None
    assert b["streamed"] and b["stream_block_rows"] == 3000
    assert_same_values(a, b)
    assert a["numerical_rank"] == b["numerical_rank"] == 32 and b["effective_rank"] < 8


def test_streamed_equals_in_memory_with_a_constant_column_and_sampled_rows():
    X = with_constant_column()
    a = analyze(X, null_draws=0)                 # samples of 10,000 of the 20,000 rows
    b = analyze(X, null_draws=0, stream=True)    # default block: 2**22 / 32 rows
    assert b["n_constant_columns"] == a["n_constant_columns"] == 1
    assert b["kl_to_gaussian_logdet"] == a["kl_to_gaussian_logdet"] == np.inf
    assert b["uniformity_sample_size"] == a["uniformity_sample_size"] == 10_000
    # The KMeans silhouette is the one documented difference: the streamed KMeans is fitted
    # on the silhouette's seeded sample, not on every row.
    assert_same_values(a, b, skip=("silhouette",))
    rows = sample_rows(X.shape[0], 10_000, 0)
    assert b["silhouette"] == silhouette(X[rows], sample_size=None)


def test_block_size_one_and_block_size_n_give_the_same_values():
    X = planted(n=1500, d=12)
    labels = np.arange(1500) % 4
    kw = dict(labels=labels, groups=("paper", "corrected", "beyond"), silhouette_sample=600,
              uniformity_sample=600)
    one = compute_metrics_streamed(X, block_rows=1, **kw)
    whole = compute_metrics_streamed(X, block_rows=1500, **kw)
    assert_same_values(whole, one)
    s1, sn = spectra_streamed(ArraySource(X), block_rows=1), spectra(X)
    for field in ("raw", "centered", "standardized"):
        np.testing.assert_allclose(getattr(s1, field), getattr(sn, field), rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_column_stats_track_the_power_of_two_exponent_exactly(scale):
    # Blocks growing in size: the running exponent changes mid-stream and must end where
    # power_of_two_scaled puts the whole table, with means and stds of the scaled table.
    rng = np.random.default_rng(2)
    X = scale * rng.standard_normal((900, 5)) * np.repeat([1e-3, 1.0, 300.0], 300)[:, None]
    stats = ColumnStats(5)
    for i in range(0, 900, 100):
        stats.update(X[i:i + 100])
    scaled, k = power_of_two_scaled(X)
    assert stats.exponent == k
    np.testing.assert_allclose(stats.means(), scaled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.stds(), scaled.std(axis=0), rtol=1e-12)
    sp = spectra_streamed(ArraySource(X), block_rows=100)
    assert sp.scale_exponent == spectra(X).scale_exponent == k
    np.testing.assert_allclose(sp.raw, spectra(X).raw, rtol=1e-12)


def test_automatic_threshold_and_stream_option(monkeypatch, tmp_path):
    X = planted(n=1200, d=8)
    np.save(tmp_path / "t.npy", X)
    assert not analyze(X, null_draws=0)["streamed"]       # an array: streamed only if asked
    assert not analyze(tmp_path / "t.npy", null_draws=0)["streamed"]
    monkeypatch.setattr(stream, "STREAM_MIN_ROWS", 1000)
    auto = analyze(tmp_path / "t.npy", null_draws=0)
    assert auto["streamed"] and auto["n_items"] == 1200
    assert not analyze(ArraySource(X), null_draws=0, stream=False)["streamed"]


def test_stream_option_refuses_other_values():
    X = planted(n=1200, d=8)
    with pytest.raises(UserError, match="stream must be None"):
        analyze(X, stream="yes")


# -- files ------------------------------------------------------------------------------------

def test_npy_and_safetensors_sources_read_the_same_table(tmp_path):
    X = planted(n=3000, d=16)
    np.save(tmp_path / "c.npy", X)
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    save_file({"item_embedding.weight": torch.from_numpy(np.vstack([X[:1] * 0 + 7, X])),
               "other": torch.zeros(3)}, tmp_path / "m.safetensors")
    save_file({"emb": torch.from_numpy(X).to(torch.bfloat16)}, tmp_path / "b.safetensors")
    for name in ("c.npy", "f.npy", "m.safetensors", "b.safetensors"):
        table, meta = open_embeddings(tmp_path / name, stream=True)
        loaded, loaded_meta = load_embeddings(tmp_path / name)
        assert isinstance(table, FileRowsSource) and meta == {**loaded_meta}, name
        np.testing.assert_array_equal(table.read_all(), loaded.astype(np.float64))
        np.testing.assert_array_equal(table.take([5, 0, 5]), loaded[[5, 0, 5]])
        blocks = list(table.iter_blocks(700))
        assert [b.shape[0] for b in blocks] == [700] * 4 + [200]
    # the padding row of `item_embedding.weight` (ADRec/RecBole) is dropped by name, as loading does
    assert open_embeddings(tmp_path / "m.safetensors", stream=True).meta["padding_row_dropped"]
    kw = dict(null_draws=0, silhouette_sample=None, uniformity_sample=1000)
    assert_same_values(analyze(X, **kw), analyze(tmp_path / "m.safetensors", stream=True, **kw))


def test_padding_auto_drops_a_zero_row0_of_a_streamed_npy(tmp_path):
    X = planted(n=50, d=4)
    np.save(tmp_path / "p.npy", np.vstack([np.zeros((1, 4), np.float32), X]))
    table, meta = open_embeddings(tmp_path / "p.npy", stream=True)
    assert meta["padding_row_dropped"] and table.shape == (50, 4)
    np.testing.assert_array_equal(table.read_all(), X)
    kept, _ = open_embeddings(tmp_path / "p.npy", stream=True, padding="keep")
    assert kept.shape == (51, 4)


def test_open_embeddings_without_stream_is_load_embeddings(tmp_path):
    X = planted(n=300, d=8)
    np.save(tmp_path / "t.npy", X)
    table, meta = open_embeddings(tmp_path / "t.npy")
    loaded, loaded_meta = load_embeddings(tmp_path / "t.npy")
    assert isinstance(table, np.ndarray) and meta == loaded_meta
    np.testing.assert_array_equal(table, loaded)


# -- the command ------------------------------------------------------------------------------

def run_json(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_cli_stream_flag_gives_the_same_json(tmp_path, capsys):
    X = planted(n=2000, d=16)
    np.save(tmp_path / "t.npy", X)
    args = ["analyze", str(tmp_path / "t.npy"), "--json", "--silhouette-sample", "all",
            "--uniformity-sample", "800"]
    a = run_json(args, capsys)
    b = run_json(args + ["--stream"], capsys)
    assert a["streamed"] is False and a["stream_block_rows"] is None
    assert b["streamed"] is True and b["stream_block_rows"] == 2**22 // 16
    assert_same_values(a, b)


def test_cli_streams_large_files_on_its_own(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(stream, "STREAM_MIN_ROWS", 1000)
    np.save(tmp_path / "big.npy", planted(n=1000, d=8))
    np.save(tmp_path / "small.npy", planted(n=999, d=8))
    argv = ["--json", "--null-draws", "0"]
    assert run_json(["analyze", str(tmp_path / "big.npy")] + argv, capsys)["streamed"] is True
    assert run_json(["analyze", str(tmp_path / "small.npy")] + argv, capsys)["streamed"] is False


@pytest.mark.parametrize("kind, says", [
    ("ints", "must hold floating-point embeddings; got dtype int64"),
    ("oned", "must be 2-D (n_items, d); got a 1-D array"),
    ("nan", "has a non-finite row 2345 (1 NaN and 0 Inf entries"),
    ("inf", "has a non-finite row 2999 (0 NaN and 2 Inf entries"),
    ("zeros", "is all zeros"),
])
def test_bad_streamed_input_is_one_error_line(tmp_path, capsys, kind, says):
    X = planted(n=3000, d=8).astype(np.float64)
    if kind == "nan":
        X[2345, 3] = np.nan
    elif kind == "inf":
        X[2999, :2] = np.inf
    data = {"ints": np.arange(60).reshape(30, 2), "oned": X[:, 0],
            "zeros": np.zeros_like(X)}.get(kind, X)
    np.save(tmp_path / "bad.npy", data)
    rc = main(["analyze", str(tmp_path / "bad.npy"), "--stream", "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert "bad.npy" in err


def test_a_nan_is_named_by_its_row_in_the_whole_table_not_in_its_block():
    X = planted(n=3000, d=8).astype(np.float64)
    X[2345, 3] = np.nan  # row 245 of the fourth block of 700 rows
    with pytest.raises(UserError, match="E has a non-finite row 2345 "):
        analyze(X, stream=True, block_rows=700)
    with pytest.raises(UserError, match="non-finite row 2345 "):
        spectra_streamed(ArraySource(X), block_rows=700)


def test_popularity_options_refuse_a_streamed_table(tmp_path, capsys):
    np.save(tmp_path / "t.npy", planted(n=100, d=4))
    counts = "".join(f"{i},{i}\n" for i in range(1, 101))
    (tmp_path / "pop.csv").write_text("item_id,count\n" + counts)
    rc = main(["analyze", str(tmp_path / "t.npy"), "--stream",
               "--popularity", str(tmp_path / "pop.csv")])
    assert rc == 2 and "need the table in memory" in capsys.readouterr().err


# -- Gaussian null ----------------------------------------------------------------------------

@pytest.mark.parametrize("block_rows", [1, 13, 500, 10_000])
def test_gaussian_source_draws_exactly_gaussian_table(block_rows):
    seed = np.random.SeedSequence([3, 1])
    blocks = np.vstack(list(GaussianSource(777, 9, random_state=seed).iter_blocks(block_rows)))
    np.testing.assert_array_equal(blocks, gaussian_table(777, 9, random_state=seed))
    np.testing.assert_array_equal(GaussianSource(777, 9, random_state=seed).take([700, 3, 3]),
                                  gaussian_table(777, 9, random_state=seed)[[700, 3, 3]])


def test_streamed_gaussian_null_equals_the_in_memory_null():
    X = planted(n=2500, d=16)
    labels = np.arange(2500) % 3
    kw = dict(labels=labels, null_draws=2, silhouette_sample=None, uniformity_sample=700, seed=5)
    a, b = analyze(X, **kw), analyze(X, stream=True, block_rows=400, **kw)
    nulls = [k for k in a if k.endswith(("_gaussian", "_gaussian_std"))]
    assert len(nulls) > 40 and a["silhouette_gaussian"] is not None
    assert_same_values({k: a[k] for k in nulls}, {k: b[k] for k in nulls})


# -- bootstrap --------------------------------------------------------------------------------

def test_multinomial_weights_resample_n_rows_whatever_the_blocks():
    for blocks in ([1000], [1] * 7 + [993], [333, 333, 334]):
        w = _weights(1000, blocks, 4)
        assert w.sum() == 1000 and w.shape == (1000,) and (w >= 0).all()
    # replayed with the same seed and blocks: the same weights (pass 1 and pass 2 agree)
    blocks = [300, 300, 300, 100]
    np.testing.assert_array_equal(_weights(1000, blocks, 2), _weights(1000, blocks, 2))
    # E[w_i] = 1 and Var[w_i] = 1 - 1/n, as for n draws with replacement
    W = np.stack([_weights(200, [64, 64, 72], r) for r in range(2000)])
    assert abs(W.mean() - 1) < 1e-12 and abs(W.var() - (1 - 1 / 200)) < 0.03


def _weights(n, blocks, r, seed=0):
    gen = MultinomialWeights(n, resample_seed(seed, r))
    return np.concatenate([gen.next(b) for b in blocks])


def test_a_streamed_resample_is_the_metrics_of_the_repeated_rows():
    # The bootstrap's exact part: weights w give exactly the metrics of the table with row i
    # repeated w_i times (what an in-memory resample computes), up to rounding.
    X = planted(n=900, d=10).astype(np.float64)
    summary = summarize(ArraySource(X), block_rows=250, n_resamples=2, seed=7)
    for r, resample in enumerate(summary.resamples):
        w = _weights(900, [250, 250, 250, 150], r, seed=7).astype(int)
        repeated = np.repeat(X, w, axis=0)                                 # (900, d)
        exact = compute_metrics(repeated, groups=("paper", "corrected", "beyond"))
        sp = spectra(repeated)
        for field in ("raw", "centered", "standardized"):
            np.testing.assert_allclose(getattr(resample.spectra, field), getattr(sp, field),
                                       rtol=1e-10, err_msg=field)
        stats = resample.geometry.norm_stats()
        assert stats["mean"] == pytest.approx(exact["row_norm_mean"], rel=1e-12)
        assert stats["std"] == pytest.approx(exact["row_norm_std"], rel=1e-10)
        assert resample.geometry.mean_cosine() == pytest.approx(exact["mean_cosine_similarity"],
                                                                rel=1e-10)


def test_streamed_bootstrap_intervals_contain_the_value_and_have_a_sane_width():
    X = planted(n=3000, d=12)
    kw = dict(null_draws=0, bootstrap=20, silhouette_sample=500, uniformity_sample=500)
    b = analyze(X, stream=True, block_rows=512, **kw)
    a = analyze(X, **kw)
    assert b["bootstrap_resamples"] == 20 and b["bootstrap_confidence"] == 0.95
    for key in ("isotropy", "effective_rank", "row_norm_mean", "mean_cosine_similarity",
                "uniformity", "silhouette"):
        assert b[f"{key}_ci_low"] <= b[key] <= b[f"{key}_ci_high"], key
    # Both resample n rows with replacement: interval widths agree within sampling noise.
    for key in ("effective_rank", "row_norm_mean", "mean_cosine_similarity"):
        wa = a[f"{key}_ci_high"] - a[f"{key}_ci_low"]
        wb = b[f"{key}_ci_high"] - b[f"{key}_ci_low"]
        assert 0.4 < wb / wa < 2.5, (key, wa, wb)
    assert b == analyze(X, stream=True, block_rows=512, **kw)  # seeded


# -- memory -----------------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_streamed_peak_memory_stays_far_below_the_table(tmp_path):
    # A 200,000 x 64 float32 file (51 MB; 102 MB as float64). After a warm-up, the streamed
    # analyze may raise the process's peak resident memory only a little; the in-memory path
    # (the control, showing that the measure sees a table) raises it by the float64 table.
    # Peak = VmHWM, reset with /proc/self/clear_refs: a child's ru_maxrss starts from its
    # parent's (pytest's) peak, so it cannot measure an increase here.
    np.lib.format.open_memmap(tmp_path / "t.npy", mode="w+", dtype=np.float32,
                              shape=(200_000, 64))[:] = planted(n=200_000, d=64)
    script = textwrap.dedent(f"""
        import json, numpy as np
        from collapse_kit.analyze import analyze
        def rss(field):
            return next(int(l.split()[1]) for l in open("/proc/self/status")
                        if l.startswith(field)) / 1024
        def increase(run):
            open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS now
            start = rss("VmRSS")
            r = run()
            return rss("VmHWM") - start, r
        kw = dict(null_draws=0, silhouette_sample=2000, uniformity_sample=2000)
        analyze(np.random.default_rng(0).standard_normal((3000, 64)), stream=True, **kw)
        path = {str(tmp_path / 't.npy')!r}
        streamed, r = increase(lambda: analyze(path, stream=True, block_rows=8192, **kw))
        in_memory, _ = increase(lambda: analyze(path, stream=False, **kw))
        print(json.dumps({{"streamed": streamed, "in_memory": in_memory, "n": r["n_items"]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert mb["n"] == 200_000
    assert mb["streamed"] < 40, mb          # blocks of 4 MB and two 2,000-row samples
    assert mb["in_memory"] > 100, mb        # the float32 and float64 copies: 154 MB


def test_the_torch_path_of_the_reductions_equals_numpys():
    """device=...: the streamed QR reductions in torch (here on the CPU; "cuda" on a GPU) give
    the numpy path's metrics, bootstrap resamples included."""
    rng = np.random.default_rng(5)
    E = rng.standard_normal((3000, 16)) @ np.diag(np.linspace(3, 0.1, 16)) + 0.5
    a = analyze(E, stream=True, block_rows=700, null_draws=1, bootstrap=3)
    b = analyze(E, device="cpu", block_rows=700, null_draws=1, bootstrap=3)
    assert a["device"] is None and b["device"] == "cpu" and b["streamed"] is True
    for key, value in a.items():
        if key == "device":
            continue
        if isinstance(value, float):
            assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        elif isinstance(value, list):
            np.testing.assert_allclose(b[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
        else:
            assert b[key] == value, key
    with pytest.raises(UserError, match="a device runs the streamed path"):
        analyze(E, device="cpu", stream=False)


def test_cli_device_cuda_without_a_gpu_is_one_clear_error(tmp_path, capsys, monkeypatch):
    import torch

    from collapse_kit.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    np.save(tmp_path / "e.npy", np.random.default_rng(0).standard_normal((500, 8)))
    assert main(["analyze", str(tmp_path / "e.npy"), "--stream", "--device", "cuda"]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "e.npy"), "--stream", "--json", "--null-draws",
                 "0"]) == 0  # auto without a GPU: numpy
    assert json.loads(capsys.readouterr().out)["device"] is None
