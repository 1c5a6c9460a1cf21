"""Figures of embedding collapse: t-SNE density panels (the ADRec paper's Figures 1 and 10), a
singular-value spectrum figure and a figure of metrics across training stages.

Figure functions take arrays and return a ``matplotlib.figure.Figure``; they never write files
and never touch pyplot's global state (so they run headless and in notebooks alike). The caller
saves with ``save_figure``, which writes every requested format atomically.

t-SNE panels follow the authors' notebook (official-implementation.md section 6): a 30 x 30
histogram of the points in percent (empty bins transparent, white through pink to dark purple),
grey iso-density contour lines of a Gaussian KDE (Scott's bandwidth), a grey-blue background, no
axes, ticks or colour bar. The authors chose each panel's zoom by hand and wrote "xk" labels by
hand; here the zoom and the label are computed: a panel's size is its robust half-width (half
the larger side of the box between the 0.5th and 99.5th percentiles of each coordinate), each
window is that box's centre +- 1.25 half-widths, and "xk" = reference half-width / panel
half-width, the magnification that makes it as large as the reference panel (default: the
largest panel in its row, so k >= 1, as in the paper). With ``shared_scale`` every panel gets the same window instead
and no magnification is applied or printed. A map whose points all coincide (the t-SNE of a
completely collapsed table) has no size: its panel shows the one point and says so, with no
"xk" label.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from collapse_kit.errors import UserError
from collapse_kit.tsne import robust_extent

FORMATS = ("png", "pdf", "svg")
# PNG resolutions accepted: screen to print quality (the default is 200). 100,000 dpi would ask
# matplotlib for a 5e5 x 3.6e5-pixel canvas and fail with a MemoryError after minutes.
DPI_RANGE = (10, 1200)
# Largest PNG canvas rendered (pixels): 2.7e8 is a 1 GB RGBA buffer; Agg itself stops at 2^16 a side.
MAX_PIXELS = 2**28
BACKGROUND = "#EAEAF2"  # seaborn's "dark" style, as in the notebook
# White through pink to dark purple, like seaborn's cubehelix_palette(start=2.7, light=1).
DENSITY_CMAP = LinearSegmentedColormap.from_list(
    "collapse_density", ["#ffffff", "#f2c6d6", "#d17fa8", "#8e4a8c", "#4b2358", "#1e0f26"])
CONTOUR_MASS = (0.95, 0.75, 0.5, 0.25)  # each contour encloses this fraction of the KDE's mass
MARGIN = 1.25                           # window half-width = MARGIN * robust half-width


# -- t-SNE panels ----------------------------------------------------------------------------------

def _check_map(Y, name: str) -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[1] != 2 or Y.shape[0] < 3:
        raise UserError(f"t-SNE map {name!r} must be (n >= 3, 2); got shape {Y.shape}")
    if not np.isfinite(Y).all():
        raise UserError(f"t-SNE map {name!r} contains NaN or Inf")
    return Y


def kde_grid(Y: np.ndarray, center: np.ndarray, half_width: float, *, size: int = 128):
    """A Gaussian KDE of the points Y (n, 2) on a size x size grid over center +- half_width.

    Binned KDE: a fine histogram smoothed with a Gaussian of Scott's bandwidth per axis
    (std * n^(-1/6)); O(n + size^2) instead of O(n * size^2). Returns (xs, ys, density (size, size)),
    density indexed [y, x] and summing to 1 over the grid.
    """
    from scipy.ndimage import gaussian_filter

    edges = [np.linspace(c - half_width, c + half_width, size + 1) for c in center]
    H, _, _ = np.histogram2d(Y[:, 0], Y[:, 1], bins=edges)   # (size, size) indexed [x, y]
    bin_width = 2 * half_width / size
    bandwidth = Y.std(axis=0) * Y.shape[0] ** (-1 / 6)       # Scott's rule in 2-D
    density = gaussian_filter(H.T, sigma=(bandwidth[1] / bin_width, bandwidth[0] / bin_width),
                              mode="constant")
    total = density.sum()
    centers = [0.5 * (e[1:] + e[:-1]) for e in edges]
    return centers[0], centers[1], density / total if total > 0 else density


def mass_levels(density: np.ndarray, masses: Sequence[float] = CONTOUR_MASS) -> np.ndarray:
    """Density values whose upper level sets hold the given fractions of the total mass.

    The contour at the level for 0.5 encloses the densest region that holds half the mass
    (seaborn's iso-proportion levels). Returns increasing, distinct levels.
    """
    flat = np.sort(density.ravel())[::-1]
    cum = np.cumsum(flat)
    cum /= cum[-1]
    levels = [flat[min(np.searchsorted(cum, m), flat.size - 1)] for m in masses]
    return np.unique(np.asarray(levels))


def draw_tsne_panel(ax, Y, *, half_width: float, center=None, scale_label: str | None = None,
                    name: str | None = None, bins: int = 30) -> None:
    """Draw one density panel of the map Y (n, 2) on ``ax``: histogram, contours, labels.

    The window is ``center`` +- ``half_width`` (default centre: that of ``robust_extent``)."""
    Y = _check_map(Y, name or "map")
    center = robust_extent(Y)[0] if center is None else np.asarray(center, dtype=np.float64)
    # Histogram over the data's range, as the notebook's sns.histplot, in percent of the points.
    H, xe, ye = np.histogram2d(Y[:, 0], Y[:, 1], bins=bins)
    H = 100.0 * H.T / Y.shape[0]
    ax.pcolormesh(xe, ye, np.ma.masked_equal(H, 0), cmap=DENSITY_CMAP, vmin=0, shading="flat",
                  rasterized=True)
    xs, ys, density = kde_grid(Y, center, half_width * 1.5)
    levels = mass_levels(density)
    if levels.size and levels[-1] > 0:
        ax.contour(xs, ys, density, levels=levels[levels > 0], colors="0.6", linewidths=0.8)
    ax.set_xlim(center[0] - half_width, center[0] + half_width)
    ax.set_ylim(center[1] - half_width, center[1] + half_width)
    _plain_square_axes(ax)
    if scale_label:
        ax.text(0.04, 0.96, scale_label, transform=ax.transAxes, ha="left", va="top",
                fontsize=10, fontweight="bold", color="0.15")
    if name:
        ax.set_title(name, fontsize=10, pad=4)


def _plain_square_axes(ax) -> None:
    """Equal aspect, the map background, no ticks and no frame."""
    ax.set_aspect("equal")
    ax.set_facecolor(BACKGROUND)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def draw_single_point_panel(ax, Y, *, name: str | None = None) -> None:
    """Draw the panel of a map Y (n, 2) whose points all coincide: the point and a note saying so."""
    Y = _check_map(Y, name or "map")
    x, y = Y[0]
    ax.plot([x], [y], marker="o", markersize=6, color=DENSITY_CMAP(0.8), linestyle="none")
    ax.set_xlim(x - 1, x + 1)
    ax.set_ylim(y - 1, y + 1)
    _plain_square_axes(ax)
    ax.text(0.5, 0.2, f"all {Y.shape[0]} items at one point\n(complete collapse)",
            transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.15")
    if name:
        ax.set_title(name, fontsize=10, pad=4)


def scale_text(k: float) -> str:
    """"x3.2" for a magnification k (one decimal below 10, none above)."""
    return f"\u00d7{k:.0f}" if k >= 10 else f"\u00d7{k:.1f}"


def tsne_scales(maps: Sequence[np.ndarray], rows: Sequence[str], names: Sequence[str], *,
                reference: str | None = None, coverage: float = 0.99) -> list[float]:
    """Magnification k of every map: reference half-width / map half-width, within each row.

    The reference is the map named ``reference`` in the same row, or the row's largest map.
    A map whose points all coincide gets inf (it has no size); a named reference that is such a
    map is refused, since nothing can be measured against it.
    """
    if not len(maps) == len(rows) == len(names):
        raise UserError(f"give one row and one name per map; got {len(maps)} map(s), "
                        f"{len(rows)} row(s) and {len(names)} name(s)")
    radii = [robust_extent(Y, coverage=coverage)[1] for Y in maps]
    out = []
    for i, row in enumerate(rows):
        in_row = [j for j, r in enumerate(rows) if r == row]
        if reference is None:
            ref = max(radii[j] for j in in_row)
        else:
            named = [j for j in in_row if names[j] == reference]
            if not named:
                raise UserError(f"no panel named {reference!r} in row {row!r}; panels: "
                                f"{', '.join(names[j] for j in in_row)}")
            ref = radii[named[0]]
            if ref == 0:
                raise UserError(f"the reference panel {reference!r} in row {row!r} is a single "
                                "point (all its items coincide), so it has no size to compare "
                                "with; choose another reference")
        out.append(ref / radii[i] if radii[i] > 0 else math.inf)
    return out


def tsne_figure(maps: Sequence, names: Sequence[str], *, rows: Sequence[str] | None = None,
                shared_scale: bool = False, reference: str | None = None,
                panel_size: float = 2.6, coverage: float = 0.99, title: str | None = None) -> Figure:
    """A grid of t-SNE density panels: one column per name, one row per dataset (``rows``).

    ``maps``: 2-D t-SNE coordinates (n_i, 2), one per panel; ``names``: the panel's model name
    (columns, in first-seen order); ``rows``: the panel's dataset (rows, in first-seen order;
    default one row). A (row, name) pair without a map is left blank. See the module docstring
    for the zoom, the "xk" labels and ``shared_scale``.
    """
    if len(maps) != len(names) or not maps:
        raise UserError(f"give one name per map; got {len(maps)} map(s) and {len(names)} name(s)")
    maps = [_check_map(Y, n) for Y, n in zip(maps, names)]
    rows = list(rows) if rows is not None else [""] * len(maps)
    if len(rows) != len(maps):
        raise UserError(f"give one row label per map; got {len(rows)} for {len(maps)} maps")
    cols = list(dict.fromkeys(names))
    row_order = list(dict.fromkeys(rows))
    seen = set()
    for r, n in zip(rows, names):
        if (r, n) in seen:
            raise UserError(f"two maps share row {r!r} and name {n!r}; give each panel its own name")
        seen.add((r, n))
    extents = [robust_extent(Y, coverage=coverage) for Y in maps]
    radii = [half for _, half in extents]
    scales = tsne_scales(maps, rows, names, reference=reference, coverage=coverage)
    fig = Figure(figsize=(panel_size * len(cols) + (0.4 if any(row_order) else 0),
                          panel_size * len(row_order) + (0.4 if title else 0)),
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(row_order), len(cols), squeeze=False))
    shared = MARGIN * max(radii)
    for ax in axes.ravel():
        ax.set_axis_off()
    for Y, name, row, (center, r), k in zip(maps, names, rows, extents, scales):
        ax = axes[row_order.index(row), cols.index(name)]
        ax.set_axis_on()
        if r == 0:  # every point at one place: no density, no size, no magnification
            draw_single_point_panel(ax, Y, name=name)
            continue
        half = shared if shared_scale else MARGIN * r
        label = None if shared_scale else scale_text(k)
        draw_tsne_panel(ax, Y, half_width=half, center=center, scale_label=label, name=name)
    for i, row in enumerate(row_order):
        if row:  # on the row's first drawn panel: a blank first column hides its axis
            first = min(cols.index(n) for r, n in zip(rows, names) if r == row)
            axes[i, first].set_ylabel(row, fontsize=11)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# -- spectra and stages --------------------------------------------------------------------------

SPECTRUM_KINDS = ("centered", "zscore", "raw")


def table_spectrum(E, *, kind: str = "centered") -> np.ndarray:
    """Singular values of a table E (n, d), largest first: of E - column means ("centered", the
    PCA spectrum), of the column-standardised table ("zscore", the paper's Table 5), or of E as
    it is ("raw")."""
    from collapse_kit.metrics import singular_values

    if kind not in SPECTRUM_KINDS:
        raise UserError(f"spectrum kind must be one of {', '.join(SPECTRUM_KINDS)}; got {kind!r}")
    return singular_values(E, standardize=kind == "zscore", center=kind == "centered")


def normalized(s, *, normalize: str = "max") -> np.ndarray:
    """Singular values divided by the largest ("max": starts at 1) or by their sum ("sum")."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.size < 1 or not np.isfinite(s).all() or (s < 0).any():
        raise UserError(f"a spectrum must be a 1-D array of finite values >= 0; got shape {s.shape}")
    if normalize not in ("max", "sum"):
        raise UserError(f"normalize must be 'max' or 'sum'; got {normalize!r}")
    total = s.max() if normalize == "max" else s.sum()
    if total <= 0:
        raise UserError("a spectrum of zeros cannot be normalised")
    return s / total


def spectrum_figure(spectra: Mapping[str, np.ndarray], *, normalize: str = "max",
                    kind_label: str = "centred table", reference: str | None = None,
                    figsize=(5.0, 3.6), title: str | None = None) -> Figure:
    """Normalised singular-value spectra (log scale) of several tables, one line each.

    ``spectra`` maps a name to its singular values (largest first, as ``table_spectrum``). A
    flat line is an isotropic table (every direction used); a steep drop is dimensional
    collapse. The line named ``reference`` (e.g. "Gaussian") is drawn dashed grey. A spectrum
    equal to an earlier one (e.g. ADRec's stage 2, whose warm-up freezes the stage-1 table) is
    drawn dotted on top of it and labelled "(= earlier name)", so no line hides another unsaid.
    A spectrum of zeros (the centred spectrum of a table whose rows are all the same point) has
    nothing to draw on a log scale; it is named in the legend as such.
    """
    if not spectra:
        raise UserError("give at least one spectrum")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    drawn: list[tuple[str, np.ndarray]] = []
    for name, s in spectra.items():
        if np.asarray(s).size and not np.any(s):
            ax.plot([], [], linestyle="none", label=f"{name}: all zero (every row the same point)")
            continue
        y = normalized(s, normalize=normalize)
        x = np.arange(1, y.size + 1)
        same = next((n for n, prev in drawn if prev.shape == y.shape
                     and np.allclose(prev, y, rtol=1e-6, atol=0)), None)
        drawn.append((name, y))
        y = np.where(y > 0, y, np.nan)  # log scale: exact zeros (rank deficit) are not drawn
        if name == reference:
            ax.plot(x, y, color="0.5", linestyle="--", linewidth=1.2, label=name)
        elif same is not None:
            ax.plot(x, y, linestyle=":", linewidth=2.0, label=f"{name} (= {same})")
        else:
            ax.plot(x, y, linewidth=1.5, label=name)
    ax.set_yscale("log")
    # Plain numbers (0.3, 0.5, 1) instead of 3x10^-1 on both major and minor ticks.
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("index i (largest first)")
    which = "s_i / s_1" if normalize == "max" else "s_i / sum s"
    ax.set_ylabel(f"{which} ({kind_label})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# plot-stages: (label, function name in collapse_kit.metrics)
STAGE_METRICS = (
    ("effective rank", "effective_rank"),
    ("SV entropy (nats)", "singular_value_entropy"),
    ("covariance entropy (nats)", "covariance_entropy"),
    ("isotropy", "isotropy"),
    ("KL to Gaussian (log-det)", "kl_to_gaussian_logdet"),
    ("top singular value", "top_singular_values"),
)


def stage_values(tables, names=None) -> tuple[dict[str, list[float]], list[str]]:
    """Every STAGE_METRICS value of each table, in order, and one line per value left out:
    NaN (a gap in ``stage_figure``'s panel) where a metric is undefined for a table, with the
    reason in the line (``names`` label the tables)."""
    from collapse_kit import metrics
    from collapse_kit.errors import UndefinedMetric

    names = names or [f"table {i + 1}" for i in range(len(tables))]
    out, undefined = {}, []
    for label, fn_name in STAGE_METRICS:
        fn = getattr(metrics, fn_name)
        out[label] = []
        for name, t in zip(names, tables):
            try:
                value = fn(t, 1)[0] if fn_name == "top_singular_values" else fn(t)
            except UndefinedMetric as exc:
                undefined.append(f"{name}: {label} not drawn: {exc}")
                value = math.nan
            out[label].append(float(value))
    return out, undefined


def stage_figure(values: Mapping[str, Sequence[float]], stages: Sequence[str], *,
                 reference: Mapping[str, float] | None = None, ncols: int = 3,
                 panel_size=(2.6, 2.1), title: str | None = None) -> Figure:
    """One small panel per metric: its value at each training stage, with a dashed line at the
    ``reference`` value (e.g. a same-shape Gaussian table) where given.

    ``values`` maps a metric name to one value per stage (in ``stages`` order). A NaN (a
    metric undefined for that table) or infinite value is not drawn; the panel names those stages.
    """
    if not values:
        raise UserError("give at least one metric")
    for metric, v in values.items():
        if len(v) != len(stages):
            raise UserError(f"metric {metric!r} has {len(v)} value(s) for {len(stages)} stages")
    n = len(values)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows + (0.3 if title else 0)),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    x = np.arange(len(stages))
    legend_done = False
    for ax, (metric, v) in zip(axes, values.items()):
        v = np.asarray(v, dtype=np.float64)
        ax.plot(x, v, marker="o", linewidth=1.5, label="checkpoint")
        missing = [stage for stage, value in zip(stages, v) if not np.isfinite(value)]
        if missing:
            ax.text(0.5, 0.5 if len(missing) == len(stages) else 0.06,
                    f"no finite value: {', '.join(missing)}", transform=ax.transAxes,
                    ha="center", va="center", fontsize=7, color="0.3")
        if reference and metric in reference:
            ax.axhline(reference[metric], color="0.5", linestyle="--", linewidth=1,
                       label="same-shape Gaussian")
            if not legend_done:  # one legend for the figure, in the first panel
                ax.legend(fontsize=7, frameon=False)
                legend_done = True
        ax.set_xticks(x, list(stages), fontsize=8)
        ax.set_xlim(-0.4, len(stages) - 0.6)
        ax.set_title(metric, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# -- saving ----------------------------------------------------------------------------------------

def output_paths(path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """FILE.<fmt> for each format; a FILE that ends in .png/.pdf/.svg loses that suffix first.

    ``path`` names a file, never a folder: a path that ends in "/" or names an existing directory
    is refused (with the file name to give instead), and so is a FILE.<fmt> that exists but is
    not a regular file (a directory called fig.pdf), before anything is written.
    """
    raw = os.fspath(path)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UserError(f"figure formats must be among {', '.join(FORMATS)}; got {', '.join(formats) or 'none'}")
    if raw.endswith(("/", os.sep)) or Path(raw).is_dir():
        raise UserError(f"-o {raw} names a folder; give a file name inside it (without extension), "
                        f"e.g. {Path(raw) / 'figure'}")
    path = Path(raw)
    if path.suffix.lower().lstrip(".") in FORMATS:
        path = path.with_suffix("")
    if not path.name:
        raise UserError(f"-o {path} names a folder; give a file name such as figures/tsne")
    targets = [path.with_name(f"{path.name}.{fmt}") for fmt in dict.fromkeys(formats)]
    for target in targets:
        if target.exists() and not target.is_file():
            kind = "a folder" if target.is_dir() else "not a regular file"
            raise UserError(f"{target} exists and is {kind}, so the figure cannot be written "
                            "there; choose another -o")
    return targets


def check_dpi(dpi) -> int:
    """``dpi`` as an int within DPI_RANGE (UserError otherwise, naming the range)."""
    lo, hi = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not lo <= dpi <= hi:
        raise UserError(f"dpi must be an integer from {lo} to {hi} (default 200; 300 to 600 for "
                        f"print); got {dpi!r}")
    return dpi


def save_figure(fig: Figure, path: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 200) -> list[Path]:
    """Write ``fig`` as FILE.png, FILE.pdf (and .svg on request), atomically.

    Every format is rendered to a temporary file beside its target first; only when all have
    been written are they renamed into place, so an error leaves no half-written figure.
    ``dpi`` must lie in DPI_RANGE and the PNG canvas hold at most MAX_PIXELS. Returns the paths
    written.
    """
    targets = output_paths(path, formats)
    dpi = check_dpi(dpi)
    width, height = (float(v) * dpi for v in fig.get_size_inches())
    if any(t.suffix == ".png" for t in targets) and (width * height > MAX_PIXELS or
                                                     max(width, height) >= 2**16):
        raise UserError(f"at {dpi} dpi the PNG would be {width:.0f} x {height:.0f} pixels, more "
                        f"than can be rendered ({MAX_PIXELS:.2g} pixels, 65535 a side); lower the dpi")
    parent = targets[0].parent
    if not parent.is_dir():
        raise FileNotFoundError(2, "No such folder for the figure (create it first)", str(parent))
    temps: list[str] = []
    try:
        for target in targets:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                # Fixed metadata so the same figure gives the same bytes (no creation date).
                meta = {"Creator": "collapse-kit"}
                if target.suffix == ".pdf":
                    meta["CreationDate"] = None
                elif target.suffix == ".svg":
                    meta["Date"] = None
                fig.savefig(f, format=target.suffix[1:], dpi=dpi, metadata=meta)
        mode = _file_mode()
        for tmp, target in zip(temps, targets):
            os.chmod(tmp, mode)  # mkstemp makes 0600 files; give the usual permissions
            os.replace(tmp, target)
        temps = []
    finally:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
    return targets


def _file_mode() -> int:
    """Permissions of a newly created file under the current umask (0o644 for umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
