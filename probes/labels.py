"""Item labels and item popularity for the linear probes, read from CSV files and validated.

Label files: a CSV with a header ``item_id,<label 1>,<label 2>,...`` and one row per item, each
label column 0/1 (multi-hot; an item may have several labels or none). Item id ``i`` labels row
``i - 1`` of the embedding table: ids start at 1 because id 0 is the padding item, which
``collapse_kit.io.load_embeddings`` drops. Bundled label sets (``BUNDLED_LABELS``):

* ``ml-100k-genres``: the ADRec authors' ``ml-100k/item_class.pkl`` as CSV, 1008 items x 26 genres
  (9 genres have no positive item); the labels of the paper's Table 6.

Popularity files: a CSV ``item_id,count[,...]`` of interaction counts (``python -m
probes.make_popularity`` writes the bundled ``ml-100k`` one from the bundled dataset).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from collapse_kit.errors import UserError, check_regular_file

DATA = Path(__file__).resolve().parent / "data"
BUNDLED_LABELS = {"ml-100k-genres": DATA / "ml-100k-genres.csv"}
BUNDLED_POPULARITY = {"ml-100k": DATA / "ml-100k-popularity.csv"}
# Which dataset a bundled label set belongs to (checked against a checkpoint's dataset name).
LABEL_DATASETS = {"ml-100k-genres": "ml-100k"}


class ItemLabels(NamedTuple):
    """Labels aligned with the rows of an embedding table (n_items, d)."""

    Y: np.ndarray         # (n_items, n_labels) uint8 0/1; rows of unlabelled items are all 0
    labelled: np.ndarray  # (n_items,) bool: the item has a row in the label file
    names: list[str]      # the label columns, in file order
    source: str           # bundled name or file path


def resolve(spec: str | os.PathLike, bundled: dict[str, Path], what: str) -> tuple[Path, str]:
    """(path, display name) of a bundled name or an existing regular file.

    Anything but a regular file (or a link to one) is refused before it is opened: a FIFO would
    block the reader for ever and a device such as /dev/zero never ends.
    """
    text = os.fspath(spec)
    if text in bundled:
        return bundled[text], text
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(2, f"No such {what} file (bundled: {', '.join(bundled)})", text)
    check_regular_file(path, f"{what} CSV")
    return path, str(path)


def _read_rows(path: Path, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows of a comma- or tab-separated file with item ids."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
            text = f.read()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save the {what} CSV as UTF-8") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise UserError(f"{path} is empty; a {what} file needs a header 'item_id,...' and one row per item")
    delimiter = "\t" if "\t" in lines[0] and "," not in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    if header[0] != "item_id" or len(header) < 2:
        raise UserError(f"{path}: the header must be 'item_id,<column>,...'; got {','.join(header)[:80]!r}")
    body = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not v.strip() for v in row):
            continue  # blank line
        if len(row) != len(header):
            raise UserError(f"{path} line {line_no} has {len(row)} fields but the header has "
                            f"{len(header)}; every row needs an item id and one value per column")
        body.append((line_no, row))
    if not body:
        raise UserError(f"{path} has a header but no item rows")
    return header, body


def _item_ids(path: Path, body, n_items: int, what: str) -> np.ndarray:
    """The 1-based item id of each row, checked against the table's items 1..n_items (``what``:
    the kind of file, for the messages)."""
    ids = np.empty(len(body), dtype=np.int64)
    first_line: dict[int, int] = {}
    for k, (line_no, row) in enumerate(body):
        try:
            item = int(row[0])
        except ValueError:
            raise UserError(f"{path} line {line_no}: item_id {row[0]!r} is not an integer") from None
        if item < 1:
            raise UserError(f"{path} line {line_no}: item_id {item} is not a real item (ids start at 1; "
                            "0 is the padding item)")
        if item > n_items:
            raise UserError(f"{path} line {line_no}: item_id {item} is outside 1..{n_items}, the "
                            f"items of the embedding table; is this {what} file for this "
                            "checkpoint's dataset?")
        if item in first_line:
            raise UserError(f"{path} line {line_no}: item_id {item} repeats line {first_line[item]}; "
                            "give each item one row")
        first_line[item] = line_no
        ids[k] = item
    return ids


def load_item_labels(spec: str | os.PathLike, n_items: int, *,
                     allow_unlabelled: bool = False) -> ItemLabels:
    """Read a multi-hot label file for a table of ``n_items`` rows (item ids 1..n_items).

    ``spec`` is a bundled name (``BUNDLED_LABELS``) or a path. Every table item must have a row
    unless ``allow_unlabelled`` (then the probe uses labelled items only). Raises
    FileNotFoundError or UserError (one line: what is wrong, where, and the fix).
    """
    path, source = resolve(spec, BUNDLED_LABELS, "label")
    header, body = _read_rows(path, "label")
    ids = _item_ids(path, body, n_items, "label")
    names = header[1:]
    Y = np.zeros((n_items, len(names)), dtype=np.uint8)
    for item, (line_no, row) in zip(ids, body):
        for j, v in enumerate(row[1:]):
            v = v.strip()
            if v not in ("0", "1"):
                raise UserError(f"{path} line {line_no}: column {names[j]!r} holds {v!r}; label "
                                "columns must be 0 or 1 (one column per label)")
            Y[item - 1, j] = v == "1"
    labelled = np.zeros(n_items, dtype=bool)
    labelled[ids - 1] = True
    if not allow_unlabelled and not labelled.all():
        missing = np.flatnonzero(~labelled) + 1
        raise UserError(
            f"{source} labels {labelled.sum()} of the table's {n_items} items (first unlabelled: "
            f"item {missing[0]}); if the table kept a padding row, load it with --padding drop, "
            "or pass --allow-unlabelled to probe only the labelled items")
    if not Y.any():
        raise UserError(f"{source}: no item has a 1 in any label column; nothing to probe")
    return ItemLabels(Y, labelled, names, source)


def load_class_labels(spec: str | os.PathLike, n_items: int) -> tuple[np.ndarray, list[str]]:
    """One class per item, for the silhouette against labels (``analyze --labels``).

    The file is a label file as above (or a bundled name) with either one more column holding
    each item's class (any text; an empty cell = no class), or several 0/1 columns (multi-hot,
    like ``ml-100k-genres``); then only items with exactly one 1 get that class, since a
    silhouette needs one class per item. Items without a row get none. Returns (labels, class
    names): labels (n_items,) int64 indexing the names, -1 = no class; class names are the
    columns (multi-hot) or the sorted distinct values (one column).
    """
    path, _source = resolve(spec, BUNDLED_LABELS, "label")
    header, body = _read_rows(path, "label")
    ids = _item_ids(path, body, n_items, "label")
    labels = np.full(n_items, -1, dtype=np.int64)
    if len(header) > 2:  # multi-hot 0/1 columns
        classes = header[1:]
        for item, (line_no, row) in zip(ids, body):
            values = [v.strip() for v in row[1:]]
            bad = next((v for v in values if v not in ("0", "1")), None)
            if bad is not None:
                raise UserError(f"{path} line {line_no}: {bad!r} in a 0/1 label column; "
                                "multi-hot label columns must hold 0 or 1")
            on = [j for j, v in enumerate(values) if v == "1"]
            if len(on) == 1:
                labels[item - 1] = on[0]
        return labels, classes
    classes = sorted({row[1].strip() for _, row in body if row[1].strip()})
    index = {c: i for i, c in enumerate(classes)}
    for item, (_, row) in zip(ids, body):
        if row[1].strip():
            labels[item - 1] = index[row[1].strip()]
    return labels, classes


def load_popularity(spec: str | os.PathLike, n_items: int, *, column: str = "count") -> np.ndarray:
    """Interaction count per item, (n_items,) float64, from a bundled name or a CSV file.

    Every item 1..n_items needs a row; counts must be non-negative numbers.
    """
    path, source = resolve(spec, BUNDLED_POPULARITY, "popularity")
    header, body = _read_rows(path, "popularity")
    if column not in header[1:]:
        raise UserError(f"{path} has no {column!r} column (columns: {', '.join(header[1:])})")
    j = header.index(column)
    ids = _item_ids(path, body, n_items, "popularity")
    counts = np.full(n_items, np.nan)
    for item, (line_no, row) in zip(ids, body):
        try:
            counts[item - 1] = float(row[j])
        except ValueError:
            raise UserError(f"{path} line {line_no}: {column} {row[j]!r} is not a number") from None
        if not counts[item - 1] >= 0:
            raise UserError(f"{path} line {line_no}: {column} {row[j]!r} must be a count >= 0")
    if np.isnan(counts).any():
        first = int(np.flatnonzero(np.isnan(counts))[0]) + 1
        raise UserError(f"{source} has no count for item {first} of the table's {n_items} items; "
                        "give every item a row")
    return counts
