"""`collapse-kit analyze` (every collapse metric of one checkpoint) and `compare` (Table 5 layout)."""
from __future__ import annotations

import argparse
import sys

from collapse_kit.commands.options import (CHECKPOINT_HELP, add_checkpoints_parser,
                                          add_format_args, add_loading_args, add_popularity_args,
                                          checkpoint_names, describe, load_table, popularity_for,
                                          popularity_settings, sample_size, wants_popularity)
from collapse_kit.errors import UserError

DEFAULT_SAMPLE = 10_000


def register(subparsers) -> None:
    from collapse_kit.analyze import COMPARE_FORMATS, FORMATS  # light: numpy only

    p = subparsers.add_parser(
        "analyze", help="measure embedding collapse of one checkpoint's item table",
        description="Run every embedding-collapse metric (the ADRec paper's Table 5 ones, corrected "
                    "versions, and more) on a checkpoint's item-embedding table. Every key: "
                    "docs/metrics.md.")
    p.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
    add_loading_args(p)
    add_format_args(p, FORMATS, "table", json_flag=True)
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="item resamples for confidence intervals (default 0: off; e.g. 200)")
    p.add_argument("--confidence", type=float, default=0.95, metavar="C", help="CI level (default 0.95)")
    p.add_argument("--null-draws", type=int, default=1, metavar="N",
                   help="same-shape Gaussian tables to average for the null (default 1; 0: off)")
    p.add_argument("--labels", metavar="CSV",
                   help="item labels (header item_id,...; one class column or 0/1 columns, "
                        "e.g. ml-100k/item_genres.csv, or a bundled set: ml-100k-genres) for "
                        "the silhouette_labels metric")
    p.add_argument("--stream", action="store_true",
                   help="read the table by blocks of rows in bounded memory (automatic for a "
                        ".npy/.safetensors table of 1,000,000+ rows; docs/metrics.md)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where a streamed table's QR reductions run: cuda (torch on the GPU), "
                        "cpu (numpy), or auto (default: cuda when torch sees a GPU and the "
                        "table is streamed, else cpu)")
    _add_metric_args(p)
    add_popularity_args(p)
    p.set_defaults(func=run_analyze)

    c = add_checkpoints_parser(
        subparsers, "compare", what="row",
        help="Table 5 of the ADRec paper for several checkpoints",
        description="One row per checkpoint in the layout of the ADRec paper's Table 5, plus a row "
                    "for a seeded Gaussian table of the same shape.")
    add_format_args(c, COMPARE_FORMATS, "markdown")
    c.add_argument("--corrected", action="store_true",
                   help="add the log-det KL and the effective rank after the paper's columns")
    add_loading_args(c)
    _add_metric_args(c)
    add_popularity_args(c)
    c.add_argument("--popularity-figure", metavar="FILE",
                   help="with --dataset or --popularity: also draw popularity vs row norm and vs "
                        "the popularity direction, one column per checkpoint (FILE.png + FILE.pdf)")
    c.set_defaults(func=run_compare)


def _add_metric_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the Gaussian null, bootstrap and samples (default 0)")
    p.add_argument("--silhouette-sample", type=sample_size, default=DEFAULT_SAMPLE, metavar="N",
                   help=f"score the silhouette on at most N items, seeded (default {DEFAULT_SAMPLE}; "
                        "'all' for every item)")
    p.add_argument("--uniformity-sample", type=sample_size, default=DEFAULT_SAMPLE, metavar="N",
                   help=f"uniformity over the pairs of at most N items (default {DEFAULT_SAMPLE}; 'all')")
    p.add_argument("--clusters", type=int, default=16, metavar="K", help="KMeans clusters for the silhouette (16)")
    p.add_argument("--kmeans-n-init", type=int, default=1, metavar="N",
                   help="KMeans restarts (default 1, which reproduces the paper's numbers)")
    p.add_argument("--kmeans-seed", type=int, default=42, metavar="S", help="KMeans seed (default 42, the paper's)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="BLAS/OpenMP threads (default 1: fastest on a busy 2-core machine; "
                        "values agree up to rounding)")


def _metric_settings(args) -> dict:
    return {"n_clusters": args.clusters, "kmeans_seed": args.kmeans_seed,
            "kmeans_n_init": args.kmeans_n_init, "silhouette_sample": args.silhouette_sample,
            "uniformity_sample": args.uniformity_sample, "seed": args.seed, "threads": args.threads}


def _checkpoint_keys(path: str, meta: dict) -> dict:
    """The keys that say what was analysed, first in the JSON output."""
    out = {"checkpoint": path, "checkpoint_format": meta["format"], "tensor": meta["key"],
           "tensor_reason": meta["key_reason"], "shape": meta["shape"],
           "original_shape": meta["original_shape"],
           "padding_row_dropped": meta["padding_row_dropped"],
           "padding_reason": meta["padding_reason"]}
    for key in ("model", "stage", "dataset", "epoch"):
        if meta.get(key) is not None:
            out[key] = meta[key]
    return out


def run_analyze(args) -> int:
    from collapse_kit.analyze import analyze, format_analysis
    from collapse_kit.io import open_embeddings
    from probes.labels import load_class_labels
    from collapse_kit.stream import STREAM_MIN_ROWS, is_source

    pop = wants_popularity(args)
    # --stream, or a .npy/.safetensors table of STREAM_MIN_ROWS+ rows: a row-block source, read
    # by blocks in the streamed path (docs/metrics.md, "Tables of millions of items").
    table, meta = open_embeddings(args.checkpoint, args.key, padding=args.padding,
                                  trust_pickle=args.trust_pickle, stream=args.stream or None)
    if pop and is_source(table):
        raise UserError(f"--dataset/--popularity need the table in memory, but it is streamed "
                        f"({'--stream' if args.stream else f'{STREAM_MIN_ROWS:,}+ rows'}); "
                        "drop --stream, or analyze the popularity of a smaller table")
    popularity = popularity_for(args, table.shape[0]) if pop else None
    labels = None
    if args.labels:
        labels, _classes = load_class_labels(args.labels, table.shape[0])
    result = _checkpoint_keys(args.checkpoint, meta)
    device = _device(args.device, streamed=is_source(table))
    result.update(analyze(table, labels=labels, null_draws=args.null_draws,
                          bootstrap=args.bootstrap, confidence=args.confidence,
                          stream=True if is_source(table) else None, device=device,
                          **_metric_settings(args)))
    if popularity is not None:
        from collapse_kit.popularity import format_popularity, popularity_analysis

        result["popularity_source"] = popularity[1]
        result.update(popularity_analysis(table, popularity[0], bootstrap=args.bootstrap,
                                          confidence=args.confidence, null_draws=args.null_draws,
                                          **popularity_settings(args), **_metric_settings(args)))
    print(format_analysis(result, args.format))
    if popularity is not None and args.format in ("table", "markdown"):
        print(format_popularity(result))
    return 0


def _device(choice: str, *, streamed: bool) -> str | None:
    """The torch device of the streamed path's reductions (None: numpy on the CPU)."""
    if choice == "cpu" or (choice == "auto" and not streamed):
        return None
    import torch

    if torch.cuda.is_available():
        if choice == "cuda" and not streamed:
            raise UserError("--device cuda runs the streamed path: add --stream (or give a "
                            ".npy/.safetensors table of 1,000,000+ rows)")
        return "cuda"
    if choice == "cuda":
        raise UserError("--device cuda: torch sees no CUDA GPU here; use --device cpu")
    return None


def run_compare(args) -> int:
    from collapse_kit.analyze import compare_metrics, format_comparison, undefined_reasons
    from collapse_kit.metrics import gaussian_table

    names = checkpoint_names(args)
    settings = _metric_settings(args)
    pop = wants_popularity(args)
    if args.popularity_figure and not pop:
        raise UserError("--popularity-figure needs --dataset or --popularity")
    if args.popularity_figure:
        from collapse_kit.figures import output_paths

        output_paths(args.popularity_figure)  # a bad path fails before any work
    rows, shapes, pop_rows, panels, datasets = [], [], [], [], {}
    for name, path in zip(names, args.checkpoints):
        table, meta = load_table(path, args)
        if pop:
            from collapse_kit.popularity import popularity_analysis, rank_statistics

            counts, _source = popularity_for(args, table.shape[0], cache=datasets)
            res = popularity_analysis(table, counts, groups=False, null_draws=0,
                                      **popularity_settings(args))
            res.update(rank_statistics(table))
            pop_rows.append((name, res))
            panels.append((name, table, counts))
        print(describe(path, meta, table, name), file=sys.stderr)
        rows.append((name, compare_metrics(table, corrected=args.corrected, **settings)))
        if table.shape not in shapes:
            shapes.append(table.shape)
    for n, d in shapes:
        name = "Gaussian" if len(shapes) == 1 else f"Gaussian {n}x{d}"
        reference = gaussian_table(n, d, random_state=args.seed)
        rows.append((name, compare_metrics(reference, corrected=args.corrected, **settings)))
    for name, metrics in rows:  # "n/a" cells: say why on stderr, so stdout stays a clean table
        for key, why in undefined_reasons(metrics).items():
            print(f"{name}: {key} is n/a: {why}", file=sys.stderr)
    print(format_comparison(rows, args.format, corrected=args.corrected))
    if pop:
        from collapse_kit.popularity import format_popularity_comparison, plot_popularity

        print(f"\nCollapse and popularity ({_source}):")
        print(format_popularity_comparison(pop_rows, args.format))
        if args.popularity_figure:
            from collapse_kit.figures import save_figure

            for written in save_figure(plot_popularity(panels), args.popularity_figure):
                print(f"wrote {written}", file=sys.stderr)
    return 0
