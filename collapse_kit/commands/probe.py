"""`collapse-kit probe` (genre linear probe of one checkpoint, with baselines) and
`probe-compare` (the ADRec paper's Table 6 over several checkpoints)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from collapse_kit.commands.options import (CHECKPOINT_HELP, add_checkpoints_parser,
                                          add_format_args, add_loading_args, checkpoint_names,
                                          describe, int_at_least, load_table)
from collapse_kit.errors import UserError

DEFAULT_LABELS = "ml-100k-genres"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help="linear probe of item labels (ML-100K genres) on a checkpoint's item table",
        description="Train BatchNorm1d + Linear on the frozen item-embedding table to predict item "
                    "labels (the ADRec paper's Table 6 probe), over several held-out item splits, "
                    "beside three baselines: a same-shape Gaussian table, item popularity alone, "
                    "and the all-zero predictor.")
    p.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
    _add_probe_args(p)
    add_format_args(p, ("table", "json", "markdown"), "table", json_flag=True)
    p.set_defaults(func=run_probe)

    c = add_checkpoints_parser(
        subparsers, "probe-compare", what="column",
        help="Table 6 of the ADRec paper: the probe over several checkpoints",
        description="The linear probe of every checkpoint, as one table (metrics down, models "
                    "across, mean +- sd in percent), with the baselines as extra columns.")
    _add_probe_args(c)
    add_format_args(c, ("markdown", "table", "json"), "markdown")
    c.set_defaults(func=run_compare)


def _add_probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default=DEFAULT_LABELS, metavar="ml-100k-genres|CSV",
                   help="item labels: the bundled 'ml-100k-genres' (default) or a CSV with header "
                        "item_id,<label>,... and 0/1 label columns, one row per item (ids 1..n)")
    p.add_argument("--popularity", metavar="ml-100k|CSV|none", default=None,
                   help="item interaction counts for the popularity baseline (CSV item_id,count); "
                        "default: the bundled ml-100k counts with the ml-100k genres, else none")
    p.add_argument("--allow-unlabelled", action="store_true",
                   help="probe only the items the label file lists (default: every item needs a row)")
    p.add_argument("--seeds", type=int_at_least(1), default=5, metavar="N",
                   help="held-out item splits (seeds 0..N-1; default 5)")
    p.add_argument("--epochs", type=int_at_least(1), default=20, help="training epochs (default 20, the paper's)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01, the paper's)")
    p.add_argument("--batch-size", type=int_at_least(2, "full"), default=64, metavar="N|full",
                   help="mini-batch size (default 64; 'full' for full batch)")
    p.add_argument("--gaussian-seed", type=int, default=0, metavar="S",
                   help="seed of the Gaussian baseline table (default 0)")
    add_loading_args(p)


def _settings(args):
    from probes.linear import ProbeSettings

    return ProbeSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         seeds=args.seeds).validate()


def _check_dataset(meta: dict, labels_spec: str, path: str) -> None:
    """Refuse a bundled label set for a checkpoint that says it was trained on another dataset."""
    from probes.labels import LABEL_DATASETS

    expected = LABEL_DATASETS.get(labels_spec)
    found = meta.get("dataset")
    if expected and isinstance(found, str) and found and found != expected:
        raise UserError(f"{path} was trained on {found!r}, but --labels {labels_spec} labels "
                        f"{expected} items; give {found}'s own label file with --labels CSV")


def _popularity(args, n_items: int):
    from probes.labels import load_popularity

    spec = args.popularity
    if spec is None:
        spec = "ml-100k" if args.labels == DEFAULT_LABELS else "none"
    if spec.lower() == "none":
        return None
    return load_popularity(spec, n_items)


def _checkpoint_keys(path: str, meta: dict) -> dict:
    out = {"checkpoint": path, "tensor": meta["key"], "shape": meta["shape"],
           "padding_row_dropped": meta["padding_row_dropped"]}
    for key in ("model", "stage", "dataset"):
        if meta.get(key) is not None:
            out[key] = meta[key]
    return out


def _labels_keys(labels) -> dict:
    occurring = labels.Y[labels.labelled].any(axis=0)
    return {"labels": labels.source, "n_labels": len(labels.names),
            "n_labelled_items": int(labels.labelled.sum()),
            "labels_occurring": [n for n, o in zip(labels.names, occurring) if o]}


def probe_table(columns, fmt: str, notes) -> str:
    """Table 6 (models across) as ``--format`` markdown or table (aligned plain text)."""
    from collapse_kit.tables import Table
    from probes.report import result_rows

    header, rows = result_rows(columns)
    table = Table(columns=header, rows=rows, notes=list(notes), align="l" + "r" * len(columns))
    return table.render("text" if fmt == "table" else fmt)


def run_probe(args) -> int:
    from probes.labels import load_item_labels
    from probes.linear import probe_with_baselines
    from probes.report import result_dict

    settings = _settings(args)
    table, meta = load_table(args.checkpoint, args)
    _check_dataset(meta, args.labels, args.checkpoint)
    labels = load_item_labels(args.labels, table.shape[0], allow_unlabelled=args.allow_unlabelled)
    popularity = _popularity(args, table.shape[0])
    results = probe_with_baselines(table, labels.Y, settings=settings, labelled=labels.labelled,
                                   popularity=popularity, gaussian_seed=args.gaussian_seed)
    model = results.pop("model")
    if args.format != "json":
        print(describe(args.checkpoint, meta, table, "probe"), file=sys.stderr)
    head = {**_checkpoint_keys(args.checkpoint, meta), **result_dict(model)}
    return _print_results(args, labels, settings, [(Path(args.checkpoint).stem, model)], results,
                          head=head)


def run_compare(args) -> int:
    from probes.labels import load_item_labels
    from probes.linear import all_zero_baseline, gaussian_features, linear_probe, popularity_features
    from probes.report import result_dict

    names = checkpoint_names(args, distinct="columns")
    settings = _settings(args)
    columns, rows, shapes, labels = [], [], [], None
    for name, path in zip(names, args.checkpoints):
        table, meta = load_table(path, args)
        _check_dataset(meta, args.labels, path)
        if labels is not None and table.shape[0] != labels.Y.shape[0]:
            raise UserError(f"{path} has {table.shape[0]} items but {args.checkpoints[0]} has "
                            f"{labels.Y.shape[0]}; Table 6 compares tables of one dataset")
        if labels is None:
            labels = load_item_labels(args.labels, table.shape[0], allow_unlabelled=args.allow_unlabelled)
        print(describe(path, meta, table, name), file=sys.stderr)
        result = linear_probe(table, labels.Y, settings=settings, labelled=labels.labelled)
        columns.append((name, result))
        rows.append({"name": name, **_checkpoint_keys(path, meta), **result_dict(result)})
        if table.shape not in shapes:
            shapes.append(table.shape)
    baselines = {}
    for n, d in shapes:
        key = "gaussian" if len(shapes) == 1 else f"gaussian_{n}x{d}"
        baselines[key] = linear_probe(gaussian_features(n, d, random_state=args.gaussian_seed),
                                      labels.Y, settings=settings, labelled=labels.labelled)
    popularity = _popularity(args, labels.Y.shape[0])
    if popularity is not None:
        baselines["popularity"] = linear_probe(popularity_features(popularity), labels.Y,
                                               settings=settings, labelled=labels.labelled)
    baselines["all_zero"] = all_zero_baseline(labels.Y, settings=settings, labelled=labels.labelled)
    return _print_results(args, labels, settings, columns, baselines, rows=rows)


def _print_results(args, labels, settings, columns, baselines, *, head: dict | None = None,
                   rows: list | None = None) -> int:
    """The JSON (``head``'s keys first, ``rows`` after the settings) or Table 6 of ``columns``
    with the ``baselines`` as extra columns, to stdout."""
    from probes.report import BASELINE_NAMES, result_dict, settings_dict, table_notes

    keys = _labels_keys(labels)
    if args.format == "json":
        out = {**(head or {}), **keys, "settings": settings_dict(settings),
               **({} if rows is None else {"rows": rows}),
               "baselines": {k: result_dict(r) for k, r in baselines.items()}}
        print(json.dumps(out, indent=2))
        return 0
    columns = columns + [(BASELINE_NAMES.get(k, k.replace("gaussian_", "Gaussian ")), r)
                         for k, r in baselines.items()]
    notes = table_notes(settings, labels.source, keys["n_labelled_items"], keys["n_labels"],
                        len(keys["labels_occurring"]), [k for k in baselines if k in BASELINE_NAMES])
    print(probe_table(columns, args.format, notes))
    return 0
