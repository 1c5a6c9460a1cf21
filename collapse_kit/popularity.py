"""Popularity analysis of one item table: the ``analyze --dataset`` / ``--popularity`` keys, the
``compare --dataset`` table and the popularity figure.

``popularity_analysis(E, p)`` returns flat keys (docs/metrics.md, "Collapse and popularity"):
``popularity_norm_spearman`` / ``_pearson`` (with ``_ci_low`` / ``_ci_high`` under a bootstrap and
``_gaussian`` for a same-shape Gaussian table), ``popularity_direction_spearman`` with
``popularity_direction_index``, and the blocks ``head``, ``torso``, ``tail``: the usual metric
keys of ``collapse_kit.analyze.compute_metrics`` computed on that group's rows alone, so a user
sees whether the tail is what collapses. The per-item popularity itself comes from the caller
(the command line counts a dataset's training interactions or reads a counts file).
"""
from __future__ import annotations

import numpy as np

from collapse_kit.errors import UndefinedMetric
from collapse_kit.metrics.gaussian import gaussian_table
from collapse_kit.metrics.popularity import (
    DEFAULT_DIRECTIONS, GROUP_NAMES, TERCILES, check_popularity, correlation_interval,
    popularity_direction_correlation, popularity_groups, popularity_norm_correlation, row_norms)
from collapse_kit.metrics._validation import as_table

UNDEFINED = "_undefined"
CORRELATION_KEYS = ("popularity_norm_spearman", "popularity_norm_pearson",
                    "popularity_direction_spearman", "popularity_direction_index")
COMPARE_COLUMNS = (("popularity_norm_spearman", "rho(pop, norm)"),
                   ("popularity_norm_pearson", "r(pop, norm)"),
                   ("popularity_direction_spearman", "max rho(pop, dir)"),
                   ("popularity_direction_index", "dir"),
                   ("stable_rank", "stable rank"),
                   ("participation_ratio", "PR"))


def _correlations(X, p, k) -> dict[str, object]:
    out: dict[str, object] = {}
    try:
        norm = popularity_norm_correlation(X, p)
        out["popularity_norm_spearman"] = norm["spearman"]
        out["popularity_norm_pearson"] = norm["pearson"]
    except UndefinedMetric as exc:
        for key in ("popularity_norm_spearman", "popularity_norm_pearson"):
            out[key], out[key + UNDEFINED] = None, str(exc)
    try:
        direction = popularity_direction_correlation(X, p, k=k)
        out["popularity_direction_spearman"] = direction["spearman"]
        out["popularity_direction_index"] = direction["index"]
        out["popularity_direction_per_direction"] = direction["per_direction"]
    except UndefinedMetric as exc:
        for key in ("popularity_direction_spearman", "popularity_direction_index"):
            out[key], out[key + UNDEFINED] = None, str(exc)
    return out


def popularity_analysis(E, popularity, *, k: int = DEFAULT_DIRECTIONS, split=TERCILES,
                        bootstrap: int = 0, confidence: float = 0.95, null_draws: int = 1,
                        seed: int = 0, groups: bool = True, **metric_settings) -> dict:
    """The popularity keys of E (n_items, d) given each item's popularity (n_items,).

    ``k``: top singular directions searched for the popularity direction. ``split``: head /
    torso / tail item shares (terciles by default; ``popularity_groups``). ``bootstrap`` >= 2:
    percentile intervals of the two norm correlations over that many item resamples.
    ``null_draws`` > 0: the correlations of a seeded same-shape Gaussian table with the same
    popularity (``_gaussian``; about 0, and what the max over k directions gives by chance).
    ``groups``: add the ``head`` / ``torso`` / ``tail`` blocks, each the ``compute_metrics`` keys
    of the group's rows (``metric_settings`` are passed on) plus its size and popularity range.
    """
    from collapse_kit.analyze import compute_metrics

    X = as_table(E)
    p = check_popularity(popularity, X.shape[0])
    out: dict[str, object] = {"popularity_items": int(X.shape[0]),
                              "popularity_total": float(p.sum()),
                              "popularity_directions_k": int(k)}
    out.update(_correlations(X, p, k))
    if bootstrap:
        norms = row_norms(X)
        for method in ("spearman", "pearson"):
            key = f"popularity_norm_{method}"
            if out.get(key) is None:
                continue
            try:
                lo, hi = correlation_interval(norms, p, method=method, n_resamples=bootstrap,
                                              confidence=confidence, random_state=seed)
            except UndefinedMetric:
                lo = hi = None
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = lo, hi
        out["popularity_bootstrap_resamples"] = bootstrap
        out["popularity_bootstrap_confidence"] = confidence
    if null_draws:
        G = gaussian_table(*X.shape, random_state=np.random.SeedSequence([int(seed), 0]))
        null = _correlations(G, p, k)
        for key in ("popularity_norm_spearman", "popularity_norm_pearson",
                    "popularity_direction_spearman"):
            out[f"{key}_gaussian"] = null.get(key)
    if groups:
        labels = popularity_groups(p, split)
        out["popularity_split"] = [float(v) for v in split]
        for g, name in enumerate(GROUP_NAMES):
            rows = np.flatnonzero(labels == g)
            block: dict[str, object] = {"n_items": int(rows.size),
                                        "popularity_min": float(p[rows].min()),
                                        "popularity_max": float(p[rows].max()),
                                        "popularity_mean": float(p[rows].mean())}
            if rows.size >= 2:
                block.update(compute_metrics(X[rows], groups=("paper", "corrected", "beyond"),
                                             seed=seed, **metric_settings))
            else:
                block["metrics_undefined"] = "a group of one item has no collapse metrics"
            out[name] = block
    return out


def rank_statistics(E) -> dict[str, float | None]:
    """``{"stable_rank", "participation_ratio"}`` of E from one ``spectra`` (a participation
    ratio undefined for the table, every row one point, is None): the two columns the
    popularity tables print beside the correlations."""
    from collapse_kit.metrics import participation_ratio, spectra, stable_rank

    sp = spectra(E)
    try:
        pr = participation_ratio(sp)
    except UndefinedMetric:
        pr = None
    return {"stable_rank": stable_rank(sp), "participation_ratio": pr}


GROUP_TABLE_KEYS = (("singular_value_entropy", "SV entropy"), ("effective_rank", "eff. rank"),
                    ("stable_rank", "stable rank"), ("participation_ratio", "PR"),
                    ("mean_cosine_similarity", "mean cos"), ("row_norm_mean", "mean norm"),
                    ("uniformity", "uniformity"))


def _cell(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def format_popularity(result: dict) -> str:
    """The popularity part of ``analyze``'s text output: correlations, then one row per group."""
    lines = ["", "Collapse and popularity"
             f" ({result.get('popularity_source', 'given popularity')})"]

    def line(label, key):
        text = f"  {label:<44}{_cell(result.get(key)):>8}"
        if result.get(key + "_ci_low") is not None:
            text += f"  [{_cell(result[key + '_ci_low'])}, {_cell(result[key + '_ci_high'])}]"
        if key + "_gaussian" in result:
            text += f"  (Gaussian table: {_cell(result[key + '_gaussian'])})"
        if result.get(key + UNDEFINED):
            text += f"  n/a: {result[key + UNDEFINED]}"
        return text

    lines.append(line("Spearman(popularity, row norm)", "popularity_norm_spearman"))
    lines.append(line("Pearson(popularity, row norm)", "popularity_norm_pearson"))
    lines.append(line(f"max |Spearman| over the top {result.get('popularity_directions_k')} "
                      "directions", "popularity_direction_spearman"))
    lines.append(f"  {'... at direction (1 = top singular direction)':<44}"
                 f"{_cell(result.get('popularity_direction_index')):>8}")
    if "head" in result:
        head = f"  {'group':<7}{'items':>7}{'popularity':>16}" + "".join(
            f"{title:>13}" for _, title in GROUP_TABLE_KEYS)
        lines += ["", head]
        for name in GROUP_NAMES:
            b = result[name]
            span = f"{b['popularity_min']:g}-{b['popularity_max']:g}"
            lines.append(f"  {name:<7}{b['n_items']:>7}{span:>16}" + "".join(
                f"{_cell(b.get(k)):>13}" for k, _ in GROUP_TABLE_KEYS))
    return "\n".join(lines)


def format_popularity_comparison(rows, fmt: str = "markdown") -> str:
    """``compare --dataset``: one row per checkpoint, the popularity columns (markdown or csv;
    LaTeX falls back to markdown-like rows)."""
    header = ["table", *(title for _, title in COMPARE_COLUMNS)]
    body = [[name, *(_cell(r.get(k)) for k, _ in COMPARE_COLUMNS)] for name, r in rows]
    if fmt == "csv":
        return "\n".join(",".join(r) for r in [header, *body])
    if fmt == "latex":
        out = [" & ".join(header) + r" \\ \hline"]
        out += [" & ".join(r) + r" \\" for r in body]
        return "\n".join(out)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out)


def plot_popularity(panels, *, log_popularity: bool = True):
    """Popularity vs row norm and vs the projection on the popularity direction, one column per
    table: ``panels`` = [(name, E, popularity), ...]. Returns a matplotlib Figure (no pyplot)."""
    from matplotlib.figure import Figure

    from collapse_kit.metrics.popularity import top_directions

    fig = Figure(figsize=(3.3 * len(panels), 5.6))
    axes = fig.subplots(2, len(panels), squeeze=False)
    for j, (name, E, popularity) in enumerate(panels):
        X = as_table(E)
        p = check_popularity(popularity, X.shape[0])
        res = _correlations(X, p, DEFAULT_DIRECTIONS)
        x = np.log10(1 + p) if log_popularity else p
        norms = np.linalg.norm(X, axis=1)
        ax = axes[0][j]
        ax.scatter(x, norms, s=3, alpha=0.4, lw=0)
        ax.set_title(f"{name}\nSpearman {_cell(res.get('popularity_norm_spearman'), 2)}",
                     fontsize=9)
        ax.set_ylabel("row norm", fontsize=8)
        ax = axes[1][j]
        index = res.get("popularity_direction_index")
        if index is not None:
            proj, _ = top_directions(X, index)
            ax.scatter(x, proj[:, index - 1], s=3, alpha=0.4, lw=0, color="C1")
            ax.set_title(f"direction {index}: Spearman "
                         f"{_cell(res.get('popularity_direction_spearman'), 2)}", fontsize=9)
        ax.set_ylabel("projection on that direction", fontsize=8)
        ax.set_xlabel("log10(1 + popularity)" if log_popularity else "popularity", fontsize=8)
        for a in axes[:, j]:
            a.tick_params(labelsize=7)
    fig.tight_layout()
    return fig
