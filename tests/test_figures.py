"""collapse_kit.figures and the figure commands: functions return figures and write nothing;
scale labels are computed; saving is atomic; the CLI writes PNG and PDF (SVG on request)."""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure

from collapse_kit.cli import main
from collapse_kit.errors import UserError
from collapse_kit.figures import (
    kde_grid, mass_levels, normalized, output_paths, save_figure, spectrum_figure, stage_figure,
    table_spectrum, tsne_figure, tsne_scales)


def _blob(n=400, scale=1.0, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2)) * scale


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.axison]


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_tsne_figure_returns_a_figure_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = tsne_figure([_blob(), _blob(scale=0.5, seed=1)], ["model", "Gaussian"], rows=["ml-100k"] * 2)
    assert isinstance(fig, Figure)
    assert len(_visible_axes(fig)) == 2
    assert list(tmp_path.iterdir()) == []


def test_scale_labels_are_radius_ratios():
    big, small = _blob(), _blob(scale=0.25)
    fig = tsne_figure([big, small], ["wide", "narrow"])
    wide, narrow = _visible_axes(fig)
    assert _texts(wide) == ["\u00d71.0"] and _texts(narrow) == ["\u00d74.0"]
    # each panel is zoomed to its own size
    assert np.diff(wide.get_xlim())[0] == pytest.approx(4 * np.diff(narrow.get_xlim())[0])
    assert tsne_scales([big, small], ["r", "r"], ["wide", "narrow"], reference="narrow") == \
        pytest.approx([0.25, 1.0])


def test_scales_refuse_mismatched_rows_and_names():
    # regression: a short rows list used to give a short list of scales without a word
    big, small = _blob(), _blob(scale=0.25)
    with pytest.raises(UserError, match="one row and one name per map"):
        tsne_scales([big, small], ["r"], ["wide", "narrow"])
    with pytest.raises(UserError, match="one row and one name per map"):
        tsne_scales([big, small], ["r", "r"], ["wide"])


def test_shared_scale_uses_one_window_and_no_magnification():
    fig = tsne_figure([_blob(), _blob(scale=0.25)], ["a", "b"], shared_scale=True)
    a, b = _visible_axes(fig)
    assert np.diff(a.get_xlim())[0] == pytest.approx(np.diff(b.get_xlim())[0])
    assert _texts(a) == _texts(b) == []


def test_grid_models_across_datasets_down_with_blank_cells():
    maps = [_blob(seed=i) for i in range(3)]
    fig = tsne_figure(maps, ["A", "B", "A"], rows=["beauty", "beauty", "baby"])
    assert len(fig.axes) == 4 and len(_visible_axes(fig)) == 3  # (baby, B) is blank
    assert fig.axes[0].get_ylabel() == "beauty" and fig.axes[2].get_ylabel() == "baby"


def test_a_row_whose_first_column_is_blank_keeps_its_label():
    """Regression (Figure 10, 2026-12-03): Sports has no SASRec+ panel, and its row label went
    onto the hidden first axis, so the row had no name."""
    maps = [_blob(seed=i) for i in range(3)]
    fig = tsne_figure(maps, ["A", "B", "B"], rows=["beauty", "beauty", "sports"])
    labelled = {ax.get_ylabel(): ax.axison for ax in fig.axes if ax.get_ylabel()}
    assert labelled == {"beauty": True, "sports": True}
    assert fig.axes[3].get_ylabel() == "sports" and fig.axes[2].get_ylabel() == ""


def test_scales_are_per_row():
    maps = [_blob(), _blob(scale=0.5), _blob(scale=10), _blob(scale=1)]
    scales = tsne_scales(maps, ["x", "x", "y", "y"], ["a", "b", "a", "b"])
    assert scales == pytest.approx([1, 2, 1, 10])


@pytest.mark.parametrize("kwargs, match", [
    ({"names": ["a"]}, "one name per map"),
    ({"names": ["a", "a"]}, "share row"),
    ({"names": ["a", "b"], "reference": "c"}, "no panel named 'c'"),
])
def test_tsne_figure_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        tsne_figure([_blob(), _blob(seed=1)], **kwargs)


def test_contour_levels_enclose_the_stated_mass():
    Y = _blob(5000)
    xs, ys, density = kde_grid(Y, np.zeros(2), 5.0)
    assert density.sum() == pytest.approx(1.0)
    levels = mass_levels(density, (0.9, 0.5))
    assert density[density >= levels[1]].sum() == pytest.approx(0.5, abs=0.01)
    assert density[density >= levels[0]].sum() == pytest.approx(0.9, abs=0.01)


def test_spectrum_figure():
    rng = np.random.default_rng(0)
    E = rng.standard_normal((200, 16)) * np.geomspace(1, 0.01, 16)
    spectra = {"collapsed": table_spectrum(E), "Gaussian": table_spectrum(rng.standard_normal((200, 16)))}
    fig = spectrum_figure(spectra, reference="Gaussian")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.lines) == 2
    assert ax.lines[0].get_ydata()[0] == pytest.approx(1.0)
    assert normalized([4.0, 2, 2], normalize="sum") == pytest.approx([0.5, 0.25, 0.25])
    assert table_spectrum(E, kind="zscore").shape == (16,)
    with pytest.raises(UserError, match="kind"):
        table_spectrum(E, kind="svd")


def test_spectrum_figure_marks_a_spectrum_equal_to_an_earlier_one():
    # a frozen stage (ADRec's warm-up) has its parent's table: its line must not hide silently
    rng = np.random.default_rng(1)
    E = rng.standard_normal((100, 8))
    fig = spectrum_figure({"stage1": table_spectrum(E), "stage2": table_spectrum(E.copy()),
                           "other": table_spectrum(2 * E[:, ::-1] + 0.1 * rng.standard_normal((100, 8)))})
    labels = [line.get_label() for line in fig.axes[0].lines]
    styles = [line.get_linestyle() for line in fig.axes[0].lines]
    assert labels == ["stage1", "stage2 (= stage1)", "other"]
    assert styles == ["-", ":", "-"]


def test_stage_figure():
    fig = stage_figure({"m1": [1, 2, 3], "m2": [3, 2, 1], "m3": [0, 0, 1], "m4": [1, 1, 1]},
                       ["stage1", "stage2", "stage3"], reference={"m1": 2.5}, ncols=3)
    assert len(_visible_axes(fig)) == 4 and len(fig.axes) == 6
    with pytest.raises(UserError, match="2 value"):
        stage_figure({"m": [1, 2]}, ["a", "b", "c"])


# -- saving ----------------------------------------------------------------------------------------

def test_output_paths():
    assert [p.name for p in output_paths("out/fig.png")] == ["fig.png", "fig.pdf"]
    assert [p.name for p in output_paths("fig", ["png", "pdf", "svg"])] == ["fig.png", "fig.pdf", "fig.svg"]
    with pytest.raises(UserError, match="formats"):
        output_paths("fig", ["jpg"])


def test_save_writes_every_format(tmp_path):
    fig = spectrum_figure({"a": np.array([3.0, 2, 1])})
    paths = save_figure(fig, tmp_path / "spec", formats=["png", "pdf", "svg"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.pdf", "spec.png", "spec.svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    mask = os.umask(0)
    os.umask(mask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~mask for p in paths)  # not mkstemp's 0600


def test_save_is_atomic_when_a_format_fails(tmp_path, monkeypatch):
    fig = spectrum_figure({"a": np.array([3.0, 2, 1])})
    real = fig.savefig

    def failing(f, *, format, **kw):
        if format == "pdf":
            raise RuntimeError("disk full")
        return real(f, format=format, **kw)

    monkeypatch.setattr(fig, "savefig", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, tmp_path / "spec")
    assert list(tmp_path.iterdir()) == []  # neither the PNG nor a temporary file remains


# -- commands --------------------------------------------------------------------------------------

@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, scale in enumerate((1.0, 0.3)):
        centers = rng.standard_normal((3, 8)) * 6 * scale
        E = (centers[rng.integers(0, 3, 60)] + rng.standard_normal((60, 8))).astype(np.float32)
        path = tmp_path / f"model{i}.npy"
        np.save(path, E)
        paths.append(str(path))
    return paths


def test_tsne_command_writes_png_and_pdf(tables, tmp_path, capsys):
    out = tmp_path / "figs" / "tsne"
    out.parent.mkdir()
    code = main(["tsne", *tables, "-o", str(out), "--names", "A", "B", "--perplexity", "5",
                 "--iterations", "20", "--svg"])
    assert code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["tsne.pdf", "tsne.png", "tsne.svg"]
    assert "tsne.png" in capsys.readouterr().out


def test_plot_spectrum_and_stages_commands(tables, tmp_path):
    assert main(["plot-spectrum", *tables, "-o", str(tmp_path / "spec"), "--kind", "zscore"]) == 0
    assert main(["plot-stages", *tables, "-o", str(tmp_path / "stages"), "--names", "s1", "s2"]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"spec.png", "spec.pdf", "stages.png", "stages.pdf"}


@pytest.mark.parametrize("extra, match", [
    (["-o", "{tmp}/missing/fig"], "No such folder for -o"),
    (["-o", "{tmp}/fig", "--names", "only-one"], "1 name"),
    (["-o", "{tmp}/fig", "--names", "Gaussian", "B"], "named 'Gaussian'"),
    (["-o", "{tmp}/fig", "--perplexity", "30"], "lower the perplexity"),
    (["-o", "{tmp}/fig", "--perplexity", "inf"], "perplexity must be a finite positive number"),
    (["-o", "{tmp}/fig", "--dpi", "100000"], "dpi must be an integer from 10 to 1200"),
])
def test_tsne_command_errors_are_one_line(tables, tmp_path, capsys, extra, match):
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    assert main(["tsne", *tables, "--iterations", "5", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("collapse-kit: error:") and match in err[-1]
    assert not (tmp_path / "fig.png").exists()


# -- degenerate tables and bad output paths (regressions: issue 16) --------------------------------

def test_single_point_map_gets_a_panel_that_says_so():
    fig = tsne_figure([np.zeros((50, 2)), _blob()], ["collapsed", "Gaussian"])
    collapsed, gaussian = _visible_axes(fig)
    assert _texts(collapsed) == ["all 50 items at one point\n(complete collapse)"]
    assert _texts(gaussian) == ["\u00d71.0"]  # the point has no size; the other panel is x1
    assert tsne_scales([np.zeros((5, 2)), _blob()], ["r", "r"], ["a", "b"])[0] == math.inf
    with pytest.raises(UserError, match="reference panel 'collapsed' .* single point"):
        tsne_figure([np.zeros((50, 2)), _blob()], ["collapsed", "Gaussian"], reference="collapsed")
    fig = tsne_figure([np.zeros((50, 2))], ["only"], shared_scale=True)
    assert "complete collapse" in _texts(_visible_axes(fig)[0])[0]


def test_stage_figure_names_stages_without_a_finite_value():
    fig = stage_figure({"m": [1.0, math.nan, 2.0], "k": [math.nan] * 3}, ["s1", "s2", "s3"])
    m, k = _visible_axes(fig)
    assert _texts(m) == ["no finite value: s2"] and _texts(k) == ["no finite value: s1, s2, s3"]


def test_spectrum_figure_names_a_zero_spectrum_instead_of_failing():
    fig = spectrum_figure({"collapsed": np.zeros(4), "other": np.array([3.0, 2, 1, 0.5])})
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["collapsed: all zero (every row the same point)", "other"]


def test_regression_output_folders_are_refused_before_anything_is_written(tmp_path):
    # -o figs/ wrote figs.png beside the folder; FILE.pdf being a folder failed after the PNG.
    (tmp_path / "figs").mkdir()
    (tmp_path / "fig.pdf").mkdir()
    for target, match in ((f"{tmp_path}/figs/", "names a folder"), (f"{tmp_path}/figs", "names a folder"),
                          (f"{tmp_path}/new/", "names a folder"), (f"{tmp_path}/fig", "fig.pdf exists and is a folder")):
        with pytest.raises(UserError, match=match):
            output_paths(target)
    fig = spectrum_figure({"a": np.array([3.0, 2, 1])})
    with pytest.raises(UserError, match="fig.pdf exists and is a folder"):
        save_figure(fig, tmp_path / "fig")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "figs"]
    assert list((tmp_path / "figs").iterdir()) == []


@pytest.mark.parametrize("extra, match", [
    (["-o", "{tmp}/figs/"], "names a folder; give a file name inside it"),
    (["-o", "{tmp}/figs"], "names a folder; give a file name inside it"),
    (["-o", "{tmp}/fig"], "fig.pdf exists and is a folder"),
    (["-o", "{tmp}/ok", "--dpi", "100000"], "dpi must be an integer from 10 to 1200"),
    (["-o", "{tmp}/ok", "--dpi", "0"], "dpi must be an integer from 10 to 1200"),
])
def test_regression_figure_command_output_errors_are_one_line(tables, tmp_path, capsys, extra, match):
    (tmp_path / "figs").mkdir()
    (tmp_path / "fig.pdf").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    for command in ("plot-spectrum", "plot-stages"):
        assert main([command, *tables, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("collapse-kit: error:") and match in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_save_refuses_a_canvas_too_large_to_render(tmp_path):
    fig = spectrum_figure({"a": np.array([3.0, 2, 1])}, figsize=(60, 60))
    with pytest.raises(UserError, match="pixels.*lower the dpi"):
        save_figure(fig, tmp_path / "big", dpi=1200)
    with pytest.raises(UserError, match="dpi must be an integer"):
        save_figure(fig, tmp_path / "big", dpi=72.5)
    assert list(tmp_path.iterdir()) == []


def test_regression_tsne_of_a_collapsed_table_draws_a_note(tmp_path, capsys):
    # A fully collapsed table: a RuntimeWarning, then "t-SNE map contains NaN or Inf".
    np.save(tmp_path / "ones.npy", np.ones((40, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["tsne", str(tmp_path / "ones.npy"), "-o", str(tmp_path / "t"), "--perplexity",
                     "5", "--iterations", "5", "--no-gaussian"]) == 0
    assert "every row is the same point (complete collapse); drawn as one point" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ones.npy", "t.pdf", "t.png"]


def test_regression_figures_of_tables_with_undefined_metrics(tmp_path, capsys):
    # plot-stages of d > n tables failed on isotropy; plot-spectrum of a collapsed one on a
    # "spectrum of zeros".
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(tmp_path / f"w{i}.npy", rng.standard_normal((5, 8)))
    np.save(tmp_path / "ones.npy", np.ones((40, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["plot-stages", str(tmp_path / "w0.npy"), str(tmp_path / "w1.npy"),
                     "-o", str(tmp_path / "st")]) == 0
        err = capsys.readouterr().err
        assert "w0: isotropy not drawn: isotropy needs more items than dimensions" in err
        # the same-shape Gaussian reference is d > n too: its missing line is said as well
        assert "Gaussian: isotropy not drawn: isotropy needs more items than dimensions" in err
        assert main(["plot-spectrum", str(tmp_path / "ones.npy"), "-o", str(tmp_path / "sp")]) == 0
    assert {"st.png", "st.pdf", "sp.png", "sp.pdf"} <= {p.name for p in tmp_path.iterdir()}


def test_stage_values_are_the_metric_functions_values_with_the_undefined_ones_named():
    from collapse_kit import metrics
    from collapse_kit.figures import STAGE_METRICS, stage_values

    rng = np.random.default_rng(1)
    tall, wide = rng.standard_normal((60, 6)), rng.standard_normal((4, 6))
    values, undefined = stage_values([tall, wide], ["tall", "wide"])
    assert list(values) == [label for label, _ in STAGE_METRICS]
    assert values["effective rank"][0] == pytest.approx(metrics.effective_rank(tall), rel=1e-12)
    assert values["isotropy"][0] == pytest.approx(metrics.isotropy(tall), rel=1e-12)
    z = (wide - wide.mean(0)) / wide.std(0)  # the paper's top singular value: of zscore(E)
    assert values["top singular value"][1] == pytest.approx(
        np.linalg.svd(z, compute_uv=False)[0], rel=1e-6)
    # d > n: isotropy and the log-det KL are undefined (gaps in the panels), each named once
    assert np.isnan(values["isotropy"][1]) and np.isnan(values["KL to Gaussian (log-det)"][1])
    assert [line.split(";")[0] for line in undefined] == [
        "wide: isotropy not drawn: isotropy needs more items than dimensions",
        "wide: KL to Gaussian (log-det) not drawn: kl_to_gaussian_logdet needs more items than "
        "dimensions"]
    assert np.isfinite([v[0] for v in values.values()]).all()
