"""`collapse-kit tsne` (Figure 1/10-style t-SNE panels), `plot-spectrum` (normalised singular-value
spectra) and `plot-stages` (collapse metrics across training stages)."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from collapse_kit.commands.options import (add_loading_args, checkpoint_names, dataset_popularity,
                                          describe, load_table, sample_size)
from collapse_kit.errors import UserError

def register(subparsers) -> None:
    t = _figure_parser(
        subparsers, "tsne", run_tsne, "NAME",
        "panel (column) names, one per checkpoint (default: file names)",
        help="t-SNE density panels of item tables (ADRec paper Figures 1 and 10)",
        description="One t-SNE density panel per checkpoint (models across, datasets down), plus a "
                    "same-shape Gaussian panel per dataset; every panel with the same t-SNE "
                    "settings. Each panel is zoomed to its own size and labelled 'xk' (reference "
                    "radius / its radius), or all share one scale with --shared-scale. Writes "
                    "FILE.png and FILE.pdf (and FILE.svg with --svg).")
    t.add_argument("--datasets", nargs="+", metavar="DATASET",
                   help="row names, one per checkpoint (default: the dataset the checkpoint names, "
                        "else one row)")
    t.add_argument("--shared-scale", action="store_true",
                   help="draw every panel at the same scale instead of zooming each to its size")
    t.add_argument("--reference", metavar="NAME",
                   help="panel name whose size is x1 in each row (default: the row's largest panel)")
    t.add_argument("--no-gaussian", dest="gaussian", action="store_false",
                   help="leave out the same-shape Gaussian panel")
    t.add_argument("--raw", action="store_true",
                   help="embed the raw rows (default: z-score each column first, as the authors)")
    t.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    t.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="normal-phase iterations after 250 exaggerated ones (default: 500, or 250 "
                        "for tables of 20,000 items or more)")
    t.add_argument("--method", choices=("auto", "bh", "fft"), default="auto",
                   help="gradient: Barnes-Hut, FFT, or auto (FFT from 10,000 items; default)")
    t.add_argument("--seed", type=int, default=2024, help="t-SNE and Gaussian seed (default 2024)")
    t.add_argument("--title", help="figure title")
    t.add_argument("--sample", type=sample_size, default=100_000, metavar="N",
                   help="map at most N items of each table (default 100000; 'all': every item): "
                        "a larger table is sampled, stratified by popularity when its dataset is "
                        "known (--stratify, or the checkpoint's own bundled dataset), uniformly "
                        "otherwise, seeded by --seed; the panel title says which")
    t.add_argument("--stratify", metavar="NAME|PATH",
                   help="the dataset whose training interactions stratify the sample (default: "
                        "the checkpoint's own dataset when it is a bundled one)")
    t.add_argument("--transform", action="store_true",
                   help="place the items of the second and later checkpoints in the FIRST "
                        "checkpoint's map (openTSNE transform) instead of mapping each on its "
                        "own; the tables must share one space (e.g. ADRec stage 1 and stage 3); "
                        "no Gaussian panel")

    s = _figure_parser(
        subparsers, "plot-spectrum", run_spectrum, "NAME", "line names, one per checkpoint",
        help="normalised singular-value spectra of several checkpoints (log scale)",
        description="One line per checkpoint: its singular values divided by the largest (or by "
                    "their sum), log scale, with a same-shape Gaussian table dashed. Writes "
                    "FILE.png and FILE.pdf (and FILE.svg with --svg).")
    s.add_argument("--kind", choices=("centered", "zscore", "raw"), default="centered",
                   help="spectrum of the centred table (PCA, default), the column-z-scored table "
                        "(the paper's Table 5) or the raw table")
    s.add_argument("--normalize", choices=("max", "sum"), default="max",
                   help="divide by the largest singular value (default) or by their sum")
    s.add_argument("--no-gaussian", dest="gaussian", action="store_false",
                   help="leave out the Gaussian reference line")
    _add_seed_and_title(s)

    g = _figure_parser(
        subparsers, "plot-stages", run_stages, "STAGE",
        "stage names, one per checkpoint (default: the checkpoint's stage, else the file name)",
        checkpoints_help="one checkpoint per stage, in order",
        help="collapse metrics across training stages (one checkpoint per stage)",
        description="One small panel per metric (effective rank, singular-value and covariance "
                    "entropy, isotropy, log-det KL to a Gaussian, top singular value), its value "
                    "at each checkpoint in the order given, with a same-shape Gaussian table's "
                    "value dashed. Writes FILE.png and FILE.pdf (and FILE.svg with --svg).")
    _add_seed_and_title(g)


def _figure_parser(subparsers, name: str, func, names_metavar: str, names_help: str, *,
                   checkpoints_help: str | None = None, **parser_kw) -> argparse.ArgumentParser:
    """A figure command's parser with what they all take: checkpoints, output, --names and the
    loading flags."""
    p = subparsers.add_parser(name, **parser_kw)
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help=checkpoints_help)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output file without extension (e.g. figures/tsne-ml-100k), in an "
                        "existing folder; a folder itself (a trailing '/', an existing "
                        "directory) is refused")
    p.add_argument("--svg", action="store_true", help="also write FILE.svg")
    p.add_argument("--dpi", type=int, default=200, help="PNG resolution, 10 to 1200 (default 200)")
    p.add_argument("--names", nargs="+", metavar=names_metavar, help=names_help)
    add_loading_args(p)
    p.set_defaults(func=func)
    return p


def _add_seed_and_title(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="Gaussian seed (default 0)")
    p.add_argument("--title", help="figure title")


def _formats(args) -> list[str]:
    return ["png", "pdf"] + (["svg"] if args.svg else [])


def _check_output(args) -> None:
    """Fail before any slow work if the figure cannot be written."""
    from collapse_kit.figures import check_dpi, output_paths

    check_dpi(args.dpi)
    targets = output_paths(args.output, _formats(args))
    parent = targets[0].parent
    if not parent.is_dir():
        raise FileNotFoundError(2, "No such folder for -o (create it first)", str(parent))


def _load_all(args) -> list[tuple]:
    out = []
    for path in args.checkpoints:
        table, meta = load_table(path, args)
        print(describe(path, meta, table), file=sys.stderr)
        out.append((table, meta))
    return out


def _save(fig, args) -> int:
    from collapse_kit.figures import save_figure

    for path in save_figure(fig, args.output, formats=_formats(args), dpi=args.dpi):
        print(path)
    return 0


def run_tsne(args) -> int:
    from collapse_kit.figures import tsne_figure
    from collapse_kit.tsne import TSNESettings, panel_maps

    _check_output(args)
    settings = TSNESettings(perplexity=args.perplexity, n_iter=args.iterations, method=args.method,
                            standardize=not args.raw, random_state=args.seed).validate()
    names = checkpoint_names(args)
    loaded = _load_all(args)
    if args.datasets is not None:
        if len(args.datasets) != len(loaded):
            raise UserError(f"--datasets got {len(args.datasets)} name(s) for {len(loaded)} "
                            "checkpoints; give one per checkpoint")
        rows = list(args.datasets)
    else:
        rows = [m.get("dataset") if isinstance(m.get("dataset"), str) else "" for _, m in loaded]
        if len(set(rows)) > 1 and "" in rows:
            raise UserError("some checkpoints name their dataset and some do not; give every "
                            "panel's row with --datasets")
    popularity = [_stratify_popularity(args, m, t.shape[0]) for t, m in loaded]
    maps, names, rows = panel_maps([t for t, _ in loaded], names, rows, settings,
                                   sample=args.sample, popularity=popularity,
                                   gaussian=args.gaussian, transform=args.transform,
                                   seed=args.seed, say=lambda line: print(line, file=sys.stderr))
    fig = tsne_figure(maps, names, rows=rows, shared_scale=args.shared_scale or args.transform,
                      reference=args.reference, title=args.title)
    return _save(fig, args)


def _stratify_popularity(args, meta: dict, n_items: int):
    """Training interactions per item of --stratify (checked against the table) or of the
    checkpoint's own bundled dataset (None when unknown or of another size)."""
    from adrec.data import BUNDLED

    spec = args.stratify or (meta.get("dataset") if meta.get("dataset") in BUNDLED else None)
    if spec is None:
        return None
    counts, data = dataset_popularity(spec, n_items)
    if counts is None and args.stratify:
        raise UserError(f"--stratify {spec}: {data.n_items} items, but the table has "
                        f"{n_items} rows; give the data the table was trained on")
    return counts


def run_spectrum(args) -> int:
    from collapse_kit.figures import spectrum_figure, table_spectrum
    from collapse_kit.metrics import gaussian_table

    _check_output(args)
    names = checkpoint_names(args, distinct="lines")
    loaded = _load_all(args)
    spectra = {name: table_spectrum(t, kind=args.kind) for name, (t, _) in zip(names, loaded)}
    reference = None
    if args.gaussian:
        shapes = list(dict.fromkeys(t.shape for t, _ in loaded))
        for n, d in shapes:
            reference = "Gaussian" if len(shapes) == 1 else f"Gaussian {n}x{d}"
            spectra[reference] = table_spectrum(gaussian_table(n, d, random_state=args.seed), kind=args.kind)
        if len(shapes) > 1:
            reference = None
    label = {"centered": "centred table", "zscore": "z-scored columns", "raw": "raw table"}[args.kind]
    fig = spectrum_figure(spectra, normalize=args.normalize, kind_label=label, reference=reference,
                          title=args.title)
    return _save(fig, args)


def run_stages(args) -> int:
    from collapse_kit.figures import stage_figure, stage_values
    from collapse_kit.metrics import gaussian_table

    _check_output(args)
    loaded = _load_all(args)
    default = [m.get("stage") or Path(p).stem for p, (_, m) in zip(args.checkpoints, loaded)]
    stages = checkpoint_names(args, default, what="stage")
    shapes = {t.shape for t, _ in loaded}
    if len(shapes) > 1:
        raise UserError(f"the checkpoints have different table shapes ({', '.join(f'{n}x{d}' for n, d in shapes)}); "
                        "plot-stages compares the stages of one model on one dataset")
    tables = [t for t, _ in loaded]
    n, d = tables[0].shape
    values, undefined = stage_values(tables, stages)
    gaussian, undefined_g = stage_values([gaussian_table(n, d, random_state=args.seed)],
                                         ["Gaussian"])
    for line in undefined + undefined_g:  # why a value is missing from its panel
        print(line, file=sys.stderr)
    reference = {k: v[0] for k, v in gaussian.items() if math.isfinite(v[0])}
    fig = stage_figure(values, stages, reference=reference, title=args.title)
    return _save(fig, args)
