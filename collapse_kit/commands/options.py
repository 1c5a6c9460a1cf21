"""Option blocks shared by several sub-commands, and the readers of what they give: how to read
an item table (--key, --padding, --trust-pickle), --format / --json, --names, integer types, and
the popularity options of `analyze` and `compare` (--dataset, --popularity, --popularity-split,
--directions) with the per-item popularity they name."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from collapse_kit.errors import UserError


def add_loading_args(p: argparse.ArgumentParser) -> None:
    """--key, --padding, --trust-pickle: how to read the item table from a checkpoint."""
    p.add_argument("--key", metavar="K", help="tensor to use (default: auto-detect the item table)")
    p.add_argument("--padding", choices=("auto", "drop", "keep"), default="auto",
                   help="drop row 0 as padding: auto (default; see docs/metrics.md), drop, keep")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a full unpickle of files that need one; it can run code from the "
                        "file, so use it only for files you trust")


def load_table(path: str, args):
    """(table, meta) of one checkpoint, with the loading flags of ``add_loading_args``."""
    from collapse_kit.io import load_embeddings

    return load_embeddings(path, args.key, padding=args.padding, trust_pickle=args.trust_pickle)


def describe(path: str, meta: dict, table, name: str | None = None) -> str:
    """The stderr line saying which tensor of ``path`` was read, and whether row 0 was dropped."""
    pad = "padding row dropped" if meta["padding_row_dropped"] else "no padding row dropped"
    line = f"{path}: tensor {meta['key']} {table.shape[0]}x{table.shape[1]}, {pad}"
    return line if name is None else f"{name}: {line}"


def add_format_args(p: argparse.ArgumentParser, choices, default: str, *,
                    json_flag: bool = False) -> None:
    """--format (and with ``json_flag`` its shorthand --json)."""
    p.add_argument("--format", choices=choices, default=default,
                   help=f"output format (default: {default})")
    if json_flag:
        p.add_argument("--json", dest="format", action="store_const", const="json",
                       help="shorthand for --format json")


CHECKPOINT_HELP = "checkpoint, state dict, safetensors, .npy or .npz"  # what a table command reads


def add_checkpoints_parser(subparsers, name: str, *, what: str, **texts) -> argparse.ArgumentParser:
    """The sub-command ``name`` over several checkpoints: CKPT ... and --names (one ``what`` name
    per checkpoint; read back by ``checkpoint_names``). ``texts``: add_parser's help and
    description."""
    p = subparsers.add_parser(name, **texts)
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--names", nargs="+", metavar="NAME", help=f"{what} names, one per checkpoint")
    return p


def checkpoint_names(args, default: list[str] | None = None, *, what: str = "checkpoint",
                     distinct: str | None = None) -> list[str]:
    """--names, else ``default`` (the checkpoints' file names): one per checkpoint, and with
    ``distinct`` (what would share a name, e.g. "columns") no two alike."""
    names = list(args.names or default or [Path(p).stem for p in args.checkpoints])
    if len(names) != len(args.checkpoints):
        raise UserError(f"--names got {len(names)} name(s) for {len(args.checkpoints)} {what}s; "
                        f"give one name per {what}")
    if distinct and len(set(names)) != len(names):
        raise UserError(f"--names must be distinct; two {distinct} would share a name")
    return names


def int_at_least(minimum: int, word: str | None = None):
    """An argparse type: an integer >= ``minimum``, or ``word`` (None) when given."""
    expected = f"an integer >= {minimum}" + (f" or {word!r}" if word else "")

    def parse(text: str) -> int | None:
        if word and text.lower() == word:
            return None
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {value}")
        return value

    return parse


sample_size = int_at_least(2, "all")  # a sample of at least 2 items, or 'all' (None)


# -- popularity (analyze, compare; tsne's --stratify) -------------------------------------------

def add_popularity_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("collapse and popularity (docs/metrics.md)")
    g.add_argument("--dataset", metavar="NAME|PATH",
                   help="the data the table was trained on (bundled name or file): each item's "
                        "popularity is its number of interactions in the training sequences; "
                        "adds the popularity correlations and the head / torso / tail blocks")
    g.add_argument("--popularity", metavar="CSV",
                   help="per-item popularity from a counts file (header item_id,count; ids "
                        "1..n_items, one row per item) instead of --dataset")
    g.add_argument("--popularity-split", type=_split, default=None, metavar="A,B",
                   help="head / torso / tail: the most popular share A of the items, the next "
                        "up to B, the rest (default terciles: 0.333,0.667)")
    g.add_argument("--directions", type=int, default=10, metavar="K",
                   help="top singular directions searched for the popularity direction (10)")


def _split(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two item shares A,B with 0 < A < B < 1, "
                                         f"e.g. 0.2,0.5; got {text!r}") from None
    if not 0 < a < b < 1:
        raise argparse.ArgumentTypeError(f"expected 0 < A < B < 1; got {text!r}")
    return a, b


def wants_popularity(args) -> bool:
    if args.dataset and args.popularity:
        raise UserError("give --dataset or --popularity, not both (both say how popular each "
                        "item is)")
    if (args.popularity_split is not None) and not (args.dataset or args.popularity):
        raise UserError("--popularity-split needs --dataset or --popularity (the popularity to "
                        "split the items by)")
    if args.directions < 1:
        raise UserError(f"--directions must be >= 1; got {args.directions}")
    return bool(args.dataset or args.popularity)


def popularity_for(args, n_items: int, *, cache: dict | None = None) -> tuple[np.ndarray, str]:
    """(popularity (n_items,), a description of its source) for a table of ``n_items`` rows."""
    if args.popularity:
        from probes.labels import load_popularity

        return load_popularity(args.popularity, n_items), f"counts file {args.popularity}"
    counts, dataset = dataset_popularity(args.dataset, n_items, cache=cache)
    if counts is None:
        raise UserError(f"the dataset {args.dataset!r} has {dataset.n_items} items but the table "
                        f"has {n_items} rows; give the data the table was trained on")
    return counts, f"training interactions of {dataset.name} ({dataset.n_users} users)"


def dataset_popularity(spec: str, n_items: int, *, cache: dict | None = None):
    """(each item's training interactions, the dataset) for a table of ``n_items`` rows; the
    counts are None when the dataset has another number of items (the caller says why).
    ``cache`` keeps loaded datasets by name across calls (``compare`` over several tables)."""
    from adrec.data import load_dataset, training_counts

    cache = {} if cache is None else cache
    if spec not in cache:
        cache[spec] = load_dataset(spec)
    dataset = cache[spec]
    return (training_counts(dataset) if dataset.n_items == n_items else None), dataset


def popularity_settings(args) -> dict:
    from collapse_kit.metrics.popularity import TERCILES

    return {"k": args.directions, "split": args.popularity_split or TERCILES}
