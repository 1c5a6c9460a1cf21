"""`collapse-kit export`: an item table with its id map, for other tools."""
from __future__ import annotations

import sys

from collapse_kit.commands.options import CHECKPOINT_HELP, add_loading_args, load_table
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
    p.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
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
    p.add_argument("--what", choices=("items", "users"), default="items",
                   help="items: the item table (default); users: the sequence representation "
                        "of every user of --split, the vector the model ranks items with "
                        "(the SASRec-style last hidden state, a diffusion model's sampled x0; "
                        "needs a model: a collapse-kit checkpoint or, with --model, the "
                        "authors' state dict)")
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="--what users: whose representations: the test users (history = train "
                        "+ valid, default) or the valid ones (history = train)")
    p.add_argument("--seed", type=int, default=0,
                   help="--what users: seed of a diffusion model's sampling noise, as in "
                        "`collapse-kit evaluate --seed` (the vectors behind its ranks)")
    p.add_argument("--model", default=None,
                   help="--what users: the model to load a foreign state dict into (e.g. "
                        "stage1 for the authors' pretrain.pth)")
    add_loading_args(p)
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from collapse_kit.export import export_table

    if args.what == "users":
        return _export_users(args)
    for flag, value in (("--model", args.model), ("--seed", args.seed or None)):
        if value is not None:
            raise UserError(f"{flag} applies to --what users only; drop it to export the item "
                            "table")
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
    return _print_written(paths, f"{args.checkpoint}: tensor {meta['key']} "
                                 f"{table.shape[0]}x{table.shape[1]}", kind)


def _export_users(args) -> int:
    """``--what users``: the representations of ``--split``'s users, with their ids."""
    import torch

    from adrec.data import eval_histories
    from adrec.evaluate import user_representations
    from adrec.pipeline import load_ranking_model
    from collapse_kit.export import export_table

    if args.key is not None or args.padding != "auto" or args.trust_pickle:
        raise UserError("--key, --padding and --trust-pickle choose an item table; --what users "
                        "computes the representations with the checkpoint's model, drop them")
    model, dataset, max_len = load_ranking_model(args.checkpoint, model=args.model,
                                                 dataset=args.dataset)
    from adrec.models.base import Recommender

    if type(model).represent is Recommender.represent:
        raise UserError(f"the {model.name!r} model has no sequence representation to export")
    reps = user_representations(model, dataset, args.split, max_len=max_len,
                                device=torch.device("cpu"), seed=args.seed)
    if dataset.user_ids is not None:
        ids, kind = list(dataset.user_ids), "user-original"
    else:
        ids, kind = list(range(dataset.n_users)), "user-index"
    metadata = {}
    if args.format in ("tsv", "parquet"):
        hists, targets = eval_histories(dataset, args.split, max_len)
        item_ids, _ = dataset_ids(dataset, dataset.n_items)
        metadata = {"history_length": [len(h) for h in hists],
                    f"{args.split}_item": [item_ids[t - 1] for t in targets]}
    paths = export_table(reps, ids, args.out, args.format, id_kind=kind, metadata=metadata,
                         what="users")
    return _print_written(paths, f"{args.checkpoint}: {model.name} representations of the "
                                 f"{dataset.n_users} {args.split} users ({reps.shape[0]}x"
                                 f"{reps.shape[1]}, noise seed {args.seed})", kind)


def _print_written(paths, what: str, kind: str) -> int:
    """What was exported and the kind of its ids to stderr, the written files to stdout."""
    from collapse_kit.export import ID_KINDS

    print(f"export: {what}; ids: {kind}: {ID_KINDS[kind]}", file=sys.stderr)
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
