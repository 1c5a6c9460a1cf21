"""Load an item-embedding table (n_items, d) from a checkpoint, safely.

Supported inputs, recognised by their content (the file name does not matter):

* this project's checkpoints (``"format": "collapse-kit-checkpoint"``): ``item_embeddings``;
* a PyTorch file holding a state dict (possibly nested) or a single tensor, from any codebase:
  the item table is auto-detected by name (``item_embedding.weight`` in the ADRec authors' code
  and RecBole, ``item_emb.weight``, ...) or chosen with ``key=``;
* safetensors files; ``.npy`` arrays; ``.npz`` archives.

Loading never executes code from the file: PyTorch files are read with ``weights_only=True`` and
numpy files with ``allow_pickle=False``. A file that needs real unpickling is refused unless the
caller passes ``trust_pickle=True`` (CLI: ``--trust-pickle``).

Padding: the ADRec authors' code and RecBole reserve item id 0 for padding, so row 0 of their
``item_embedding.weight`` is not an item. ``padding="auto"`` drops row 0 when the tensor has that
name (outside this project's checkpoints, which store the table without padding) or when row 0 is
exactly zero (``nn.Embedding(padding_idx=0)``); the metadata says whether and why.
"""
from __future__ import annotations

import csv
import logging
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from collapse_kit.errors import UserError
from collapse_kit.metrics._validation import check_table

log = logging.getLogger(__name__)

PROJECT_FORMAT = "collapse-kit-checkpoint"
PROJECT_FORMAT_VERSION = 1
PROJECT_TABLE_KEY = "item_embeddings"
# Item-table names in common codebases, best first; matched against the end of a tensor's name.
KNOWN_ITEM_KEYS = ("item_embeddings", "item_embedding.weight", "item_emb.weight",
                   "item_embeddings.weight", "item_embedding", "embedding_item.weight")
# Codebases whose `item_embedding.weight` has a padding row 0 even when it is not zero.
PADDED_KEYS = ("item_embedding.weight",)
PADDING_CHOICES = ("auto", "drop", "keep")
TRUST_HINT = "pass --trust-pickle (trust_pickle=True in Python) only if you trust where the file came from"


class LoadedTable(NamedTuple):
    """What ``load_embeddings`` returns: the table (n_items, d) and a metadata dict."""

    table: np.ndarray
    meta: dict[str, Any]


def load_embeddings(path: str | os.PathLike, key: str | None = None, *, padding: str = "auto",
                    trust_pickle: bool = False) -> LoadedTable:
    """Read the item-embedding table of a checkpoint as a float array (n_items, d).

    ``key`` names the tensor (exact name, or a unique suffix of a nested name such as
    ``state_dict.item_embedding.weight``); None auto-detects it. ``padding`` is "auto" (see the
    module docstring), "drop" (always drop row 0) or "keep". The metadata holds ``source``,
    ``format``, ``key``, ``key_reason``, ``original_shape``, ``shape``, ``padding_row_dropped``,
    ``padding_reason``, ``dtype`` and, for this project's checkpoints, ``model``, ``stage``,
    ``dataset``, ``epoch``, ``package_version``.

    Raises OSError for a missing file and UserError (one line, with the fix) for anything else.
    """
    if padding not in PADDING_CHOICES:
        raise UserError(f"padding must be one of {', '.join(PADDING_CHOICES)}; got {padding!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    if path.is_dir():
        raise UserError(f"{path} is a directory; give the checkpoint file inside it")
    kind = _sniff(path)
    tensors, meta = _READERS[kind](path, trust_pickle)
    name, reason = _choose_key(tensors, key, meta, path)
    meta.update(source=str(path), key=name, key_reason=reason)
    table = _to_numpy(tensors[name])
    meta["original_shape"] = list(table.shape)
    meta["dtype"] = str(table.dtype)
    label = f"tensor {name!r} in {path}"
    check_table(table, name=label, min_rows=1)  # dtype and shape before looking at row 0
    table, dropped, why = _drop_padding(table, name, padding, meta["format"])
    meta.update(padding_row_dropped=dropped, padding_reason=why)
    check_table(table, name=label + (" without its padding row" if dropped else ""))
    meta["shape"] = list(table.shape)
    log.info("loaded %s %s from %s (%s)", name, tuple(table.shape), path, reason)
    return LoadedTable(table, meta)


# -- format detection and readers ---------------------------------------------------------------

def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise UserError(f"{path} is empty (0 bytes); it was not written completely, so save it again")
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            raise UserError(f"{path} is truncated or corrupt (an incomplete zip archive); "
                            "copy or save it again") from None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        return "safetensors"
    if head[0] == 0x80:  # a pickle protocol marker: legacy torch.save, or a bare pickle
        return "torch"
    raise UserError(f"cannot tell the format of {path}: expected a PyTorch checkpoint, a "
                    "safetensors file, or a .npy/.npz array")


def _read_torch(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    import pickle

    import torch

    try:
        # map_location: the authors' files hold CUDA storages; weights_only: never run code.
        with warnings.catch_warnings():  # torch warns about pickle protocols it reads fine
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if _pickle_is_truncated(path):
            raise UserError(f"{path} is truncated or corrupt (its pickle stream ends early); "
                            "copy or save it again") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise UserError(f"{path} holds pickled Python objects{what}, which only a full unpickle "
                        f"can load and which may run code, so it was not unpickled; {TRUST_HINT}") from None
    except (EOFError, RuntimeError) as exc:
        first = str(exc).split(".")[0] or type(exc).__name__
        raise UserError(f"{path} is truncated or corrupt ({first}); copy or save it again") from None
    if trust_pickle:
        log.warning("%s was unpickled with trust_pickle=True", path)
    if isinstance(obj, torch.Tensor):
        return {"<tensor>": obj}, {"format": "torch-tensor"}
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict or a tensor; "
                        "save the model's state_dict() or the embedding tensor itself")
    if obj.get("format") == PROJECT_FORMAT:
        return _flatten(obj), _project_meta(obj, path)
    return _flatten(obj), {"format": "torch-state-dict"}


def _pickle_is_truncated(path: Path) -> bool:
    """True if the file's pickle stream ends early. Reads opcodes only (pickletools); runs nothing."""
    import io
    import pickletools

    def cut(stream, n_pickles: int) -> bool:
        try:
            for _ in range(n_pickles):
                for _op in pickletools.genops(stream):
                    pass
                if not stream.peek(1):  # no further pickle follows
                    break
        except Exception:  # genops raises ValueError when the stream stops before STOP
            return True
        return False

    if zipfile.is_zipfile(path):  # torch's zip format: the object graph is <archive>/data.pkl
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not members:
                return True
            return cut(io.BufferedReader(zf.open(members[0])), 1)
    with open(path, "rb") as f:  # legacy torch.save: magic, protocol, sys info, object, keys
        return cut(f, 5)


def _read_safetensors(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu")), {"format": "safetensors"}
    except SafetensorError as exc:
        raise UserError(f"{path} is truncated or corrupt ({exc}); copy or save it again") from None


def _read_npy(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    return {"<array>": _np_load(path, trust_pickle)}, {"format": "npy"}


def _read_npz(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=trust_pickle) as archive:
        arrays = {name: _np_member(archive, name, path) for name in archive.files}
    return arrays, {"format": "npz"}


def _np_load(path: Path, trust_pickle: bool) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=trust_pickle)
    except ValueError as exc:
        raise _numpy_error(exc, path) from None


def _np_member(archive, name: str, path: Path) -> np.ndarray:
    try:
        return archive[name]
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _numpy_error(exc, path) from None


def _numpy_error(exc: Exception, path: Path) -> UserError:
    if "allow_pickle" in str(exc):
        return UserError(f"{path} holds a pickled object array that would run code when loaded, "
                         f"so it was not unpickled; {TRUST_HINT}")
    return UserError(f"{path} is truncated or corrupt ({' '.join(str(exc).split())}); "
                     "copy or save it again")


_READERS = {"torch": _read_torch, "safetensors": _read_safetensors, "npy": _read_npy,
            "npz": _read_npz}


# -- choosing the tensor ------------------------------------------------------------------------

def _flatten(obj: dict, prefix: str = "") -> dict[str, Any]:
    """Tensors and arrays of a nested dict, keyed by dotted path ("state_dict.item_emb.weight")."""
    out = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        elif hasattr(v, "shape") and hasattr(v, "dtype"):
            out[name] = v
    return out


def _project_meta(obj: dict, path: Path) -> dict:
    version = obj.get("format_version")
    if not isinstance(version, int) or version > PROJECT_FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format_version {version!r}; this collapse-kit reads "
                        f"version <= {PROJECT_FORMAT_VERSION}, so upgrade collapse-kit")
    dataset = obj.get("dataset") or {}
    return {"format": PROJECT_FORMAT, "format_version": version, "model": obj.get("model"),
            "stage": obj.get("stage"), "dataset": dataset.get("name") if isinstance(dataset, dict)
            else dataset, "epoch": obj.get("epoch"), "package_version": obj.get("package_version")}


def _choose_key(tensors: dict, key: str | None, meta: dict, path: Path) -> tuple[str, str]:
    if not tensors:
        raise UserError(f"{path} holds no tensors; give a checkpoint with an item-embedding table")
    if key is not None:
        if key in tensors:
            return key, "chosen with --key"
        ends = [n for n in tensors if n.endswith("." + key)]
        if len(ends) == 1:
            return ends[0], f"chosen with --key {key!r}"
        raise UserError(f"no tensor named {key!r} in {path}{'; several end with it' if ends else ''}; "
                        f"its tensors: {_describe(tensors)}")
    if meta["format"] == PROJECT_FORMAT:
        if PROJECT_TABLE_KEY not in tensors:
            raise UserError(f"{path} is a collapse-kit checkpoint without '{PROJECT_TABLE_KEY}'; "
                            "it is damaged, so save it again or pass --key")
        return PROJECT_TABLE_KEY, "collapse-kit checkpoint item table"
    if len(tensors) == 1:
        name = next(iter(tensors))
        return name, "the only tensor in the file"
    for known in KNOWN_ITEM_KEYS:
        hits = [n for n in tensors if n == known or n.endswith("." + known)]
        if len(hits) == 1:
            return hits[0], f"auto-detected (known item-table name {known!r})"
        if len(hits) > 1:
            raise UserError(f"{path} has several item tables ({', '.join(hits)}); pick one with --key")
    hits = [n for n in tensors if re.search(r"item", n, re.I) and re.search(r"emb", n, re.I)
            and len(getattr(tensors[n], "shape", ())) == 2]
    if len(hits) == 1:
        return hits[0], "auto-detected (the only 2-D tensor named like an item embedding)"
    raise UserError(f"cannot tell which tensor of {path} is the item table; pass --key NAME, "
                    f"one of: {_describe(tensors)}")


def _describe(tensors: dict, limit: int = 12) -> str:
    items = [f"{n} {tuple(t.shape)}" for n, t in tensors.items() if len(t.shape) == 2] or \
            [f"{n} {tuple(t.shape)}" for n, t in tensors.items()]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _to_numpy(t) -> np.ndarray:
    """A torch tensor or array as numpy; float16/bfloat16 become float32 (numpy lacks bfloat16)."""
    if hasattr(t, "detach"):
        t = t.detach().cpu()
        if t.is_floating_point() and t.element_size() < 4:
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def _drop_padding(table: np.ndarray, name: str, padding: str, fmt: str) -> tuple[np.ndarray, bool, str]:
    if padding == "keep":
        return table, False, "kept: --padding keep"
    if padding == "drop":
        return table[1:], True, "dropped row 0: --padding drop"
    if fmt == PROJECT_FORMAT:
        return table, False, "none: collapse-kit checkpoints store the table without padding"
    if any(name == k or name.endswith("." + k) for k in PADDED_KEYS):
        return table[1:], True, (f"dropped row 0: '{name}' is the ADRec/RecBole item table, "
                                 "whose row 0 is the padding item")
    if table.shape[0] > 2 and not table[0].any():
        return table[1:], True, "dropped row 0: it is all zeros (an nn.Embedding padding_idx=0 row)"
    return table, False, "none: row 0 is not zero and the tensor name has no padding convention"


# -- labels --------------------------------------------------------------------------------------

def load_labels(path: str | os.PathLike, n_items: int) -> tuple[np.ndarray, list[str]]:
    """Item labels from a CSV with a header whose first column is ``item_id`` (1..n_items).

    Item id i labels row i - 1 of the table (ids start at 1; 0 is padding). Either one more
    column holding each item's class, or several 0/1 columns (multi-hot, like ML-100K's
    ``item_genres.csv``); then only items with exactly one 1 get that class, since a silhouette
    needs one class per item. Returns (labels, class names): labels (n_items,) int, -1 = none.
    """
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or len(rows[0]) < 2 or rows[0][0].strip() != "item_id":
        raise UserError(f"{path} must be a CSV with a header 'item_id,<label column(s)>' and one row "
                        "per item")
    header, body = rows[0], rows[1:]
    labels = np.full(n_items, -1, dtype=np.int64)
    multi_hot = len(header) > 2
    classes: list[str] = header[1:] if multi_hot else sorted({r[1] for r in body if len(r) > 1})
    index = {c: i for i, c in enumerate(classes)}
    for line_no, row in enumerate(body, start=2):
        try:
            item = int(row[0])
        except (ValueError, IndexError):
            raise UserError(f"{path} line {line_no}: item_id {row[:1]} is not an integer") from None
        if not 1 <= item <= n_items:
            raise UserError(f"{path} line {line_no}: item_id {item} is outside 1..{n_items} "
                            "(the table's items); is this the right label file?")
        if multi_hot:
            on = [j for j, v in enumerate(row[1:]) if v.strip() not in ("", "0")]
            if len(on) == 1:
                labels[item - 1] = on[0]
        elif len(row) > 1 and row[1] != "":
            labels[item - 1] = index[row[1]]
    return labels, classes
