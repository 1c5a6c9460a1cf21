"""Write ``probes/data/<dataset>-popularity.csv``: interaction counts per item of a bundled dataset.

Usage:  python -m probes.make_popularity [--dataset ml-100k] [--out probes/data/ml-100k-popularity.csv]

A checkpoint holds no interaction counts, so the probe's "popularity only" baseline reads them
from this file. It reads ``adrec/datasets/<dataset>/sequences.tsv.gz`` (header
``user  train  valid  test``; ``train`` is space-separated item ids) with gzip and csv only, so
probes stays independent of adrec. Columns of the output, one row per item id 1..max id:

* ``count``: every interaction of the item (train + valid + test), the item's popularity;
* ``train_count``: interactions in the training sequences only (what a model saw as input).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def count_interactions(sequences: Path) -> tuple[list[int], list[int]]:
    """(count, train_count) per item id 1..max id, as lists indexed by id - 1."""
    total: dict[int, int] = {}
    train: dict[int, int] = {}
    with gzip.open(sequences, "rt", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        for row in reader:
            train_ids = [int(t) for t in row["train"].split()]
            for item in train_ids:
                train[item] = train.get(item, 0) + 1
            for item in train_ids + [int(row["valid"]), int(row["test"])]:
                total[item] = total.get(item, 0) + 1
    n_items = max(total)
    return ([total.get(i, 0) for i in range(1, n_items + 1)],
            [train.get(i, 0) for i in range(1, n_items + 1)])


def write_csv(path: Path, count: list[int], train_count: list[int]) -> None:
    """Write atomically: a temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["item_id", "count", "train_count"])
            for i, (c, t) in enumerate(zip(count, train_count), start=1):
                w.writerow([i, c, t])
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    source = ROOT / "adrec" / "datasets" / args.dataset / "sequences.tsv.gz"
    out = args.out or ROOT / "probes" / "data" / f"{args.dataset}-popularity.csv"
    count, train_count = count_interactions(source)
    write_csv(out, count, train_count)
    print(f"{out}: {len(count)} items, {sum(count)} interactions ({sum(train_count)} in train)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
