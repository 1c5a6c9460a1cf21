"""`collapse-kit export`: an item table with its id map, for other tools."""
from __future__ import annotations

import sys

from collapse_kit.commands.probe import add_loading_args, load_table
from collapse_kit.errors import UserError


def register(subparsers) -> None:
    from collapse_kit.export import EXPORT_FORMATS

    p = subparsers.add_parser(
        "export", help="write a checkpoint's item table with its item ids (npy, safetensors, "
                       "parquet, or TensorBoard projector tsv)",
        description="Write the item table of a checkpoint with the id of every row: the raw "
                    "log's original item ids for data built from an interaction log, the "
                    "dataset's ids 1..n for the bundled data, the row index for a foreign "
                    "checkpoint with no dataset. Every output says which (id_kind).")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint, state dict, safetensors, .npy or .npz")
    p.add_argument("-o", "--out", required=True, metavar="OUT",
                   help="output file (npy, safetensors, parquet; the suffix is added if missing) "
                        "or folder (tsv: vectors.tsv and metadata.tsv)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="npy",
                   help="npy (+ OUT.ids.tsv), safetensors (ids in its metadata), parquet (one row "
                        "per item: item_id, metadata, e0..e{d-1}), tsv (TensorBoard / Embedding "
                        "Projector pair); default npy")
    p.add_argument("--dataset", metavar="NAME|PATH",
                   help="the data the table was trained on (bundled name or file): gives the ids "
                        "of a foreign checkpoint and the popularity (and ML-100K's genres) "
                        "columns of tsv / parquet")
    add_loading_args(p)
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from collapse_kit.export import ID_KINDS, export_table

    table, meta = load_table(args.checkpoint, args)
    saved = _saved_dataset(args.checkpoint, meta)
    dataset = _dataset(args.dataset or (saved or {}).get("name"), table.shape[0],
                       required=args.dataset is not None)
    if saved and "item_ids" in saved:
        ids, kind = saved["item_ids"], "original"
    elif dataset is not None:
        ids, kind = dataset_ids(dataset, table.shape[0])
    elif saved is not None:
        ids, kind = list(range(1, table.shape[0] + 1)), "contiguous"
    else:
        ids, kind = list(range(table.shape[0])), "row"
    metadata = item_metadata(dataset, table.shape[0]) if args.format in ("tsv", "parquet") else {}
    paths = export_table(table, ids, args.out, args.format, id_kind=kind, metadata=metadata)
    print(f"export: {args.checkpoint}: tensor {meta['key']} {table.shape[0]}x{table.shape[1]}; "
          f"ids: {kind}: {ID_KINDS[kind]}", file=sys.stderr)
    for path in paths:
        print(path)
    return 0


def _saved_dataset(path: str, meta: dict) -> dict | None:
    """The ``dataset`` record of a collapse-kit checkpoint (None for any other file)."""
    from adrec.checkpoint import load_checkpoint
    from collapse_kit.io import PROJECT_FORMAT

    if meta.get("format") != PROJECT_FORMAT:
        return None
    return load_checkpoint(path).get("dataset") or {}


def _dataset(spec: str | None, n_items: int, *, required: bool):
    """The dataset ``spec`` names, checked against the table (None when it cannot be loaded
    and was not asked for)."""
    from adrec.data import BUNDLED, load_dataset

    if spec is None:
        return None
    if not required and spec not in BUNDLED:
        return None  # a checkpoint trained on a user file: its ids are in the checkpoint
    dataset = load_dataset(spec)
    if dataset.n_items != n_items:
        raise UserError(f"the dataset {spec!r} has {dataset.n_items} items but the table has "
                        f"{n_items} rows; give the data the checkpoint was trained on")
    return dataset


def dataset_ids(dataset, n_items: int) -> tuple[list, str]:
    """The item ids of ``dataset``'s rows and their kind: the raw log's ids when it was
    imported from one, else the contiguous ids 1..n."""
    if dataset.item_ids is not None:
        return list(dataset.item_ids), "original"
    return list(range(1, n_items + 1)), "contiguous"


def item_metadata(dataset, n_items: int) -> dict[str, list]:
    """Per-item columns for tsv / parquet: popularity (interactions in train + valid + test)
    and, for ML-100K, the genres."""
    import numpy as np

    if dataset is None:
        return {}
    seqs = [*dataset.train, dataset.valid, dataset.test]
    counts = np.bincount(np.concatenate(seqs), minlength=n_items + 1)[1:]
    out = {"popularity": [int(c) for c in counts]}
    if dataset.name == "ml-100k":
        from probes.labels import load_item_labels

        labels = load_item_labels("ml-100k-genres", n_items)
        out["genres"] = ["|".join(n for n, on in zip(labels.names, row) if on) for row in labels.Y]
    return out
