"""Load an item-embedding table (n_items, d) from a checkpoint, safely.

Supported inputs, recognised by their content (the file name does not matter):

* this project's checkpoints (``"format": "collapse-kit-checkpoint"``; the format is documented
  once, in ``adrec/checkpoint.py``): ``item_embeddings``; a light checkpoint whose table was
  stripped (``table_stripped``) is refused with a message saying so;
* a PyTorch file holding a state dict (possibly nested) or a single tensor, from any codebase:
  the item table is auto-detected by name (``item_embedding.weight`` in the ADRec authors' code
  and RecBole, ``item_emb.weight``, ...) or chosen with ``key=``;
* safetensors files; ``.npy`` arrays; ``.npz`` archives.

Loading never executes code from the file: PyTorch files are read with ``weights_only=True`` and
numpy files with ``allow_pickle=False``. A file that needs real unpickling is refused unless the
caller passes ``trust_pickle=True`` (CLI: ``--trust-pickle``).

Loading never trusts the file either: only regular files are opened (a FIFO or a device would
block or never end); a .npy header's claimed shape is checked against the bytes that follow it
before anything is allocated; and every way a damaged file can make a reader fail (zlib, zip,
pickle, header-parsing errors, ...) becomes one UserError that names the file and the fix.

``open_embeddings`` is the same for tables of millions of items: a .npy or safetensors table
becomes a row-block source (``collapse_kit.stream``) after reading its header alone.

Padding: the ADRec authors' code and RecBole reserve item id 0 for padding, so row 0 of their
``item_embedding.weight`` is not an item. ``padding="auto"`` drops row 0 when the tensor has that
name (outside this project's checkpoints, which store the table without padding) or when row 0 is
exactly zero (``nn.Embedding(padding_idx=0)``); the metadata says whether and why.
"""
from __future__ import annotations

import logging
import math
import os
import re
import struct
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from collapse_kit.errors import UserError, check_regular_file
from collapse_kit.metrics._validation import check_layout, check_table

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
SAVE_AGAIN = "copy or save it again"
# What a reader raises when the bytes it parses are damaged (a flipped bit in a zip, a cut pickle,
# a header that no longer parses). Each becomes "PATH is truncated or corrupt (...)".
CORRUPT_FILE_ERRORS = (EOFError, RuntimeError, ValueError, KeyError, IndexError, TypeError,
                       AttributeError, AssertionError, OverflowError, NotImplementedError,
                       SyntaxError, OSError, struct.error, zlib.error, zipfile.BadZipFile,
                       tokenize.TokenError)
# A deflate stream expands at most about 1032:1; a zip member claiming more is corrupt.
MAX_DEFLATE_RATIO = 1100


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
    check_regular_file(path, "checkpoint")
    kind = _sniff(path)
    try:
        tensors, meta = _READERS[kind](path, trust_pickle)
    except MemoryError:
        raise UserError(f"{path} ({_bytes(path.stat().st_size)}) needs more memory than is free "
                        "to load; close other programs or use a machine with more memory") from None
    return _table_of(tensors, meta, path, key, padding)


def checkpoint_table(ckpt: dict, path: str | os.PathLike, *, padding: str = "auto") -> LoadedTable:
    """The item table of a collapse-kit checkpoint already loaded (``adrec.checkpoint``'s
    ``load_checkpoint``), with the checks and metadata of ``load_embeddings``: a caller that
    needs a run's metrics and its table reads the file once. ``path`` names it in messages."""
    if padding not in PADDING_CHOICES:
        raise UserError(f"padding must be one of {', '.join(PADDING_CHOICES)}; got {padding!r}")
    path = Path(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != PROJECT_FORMAT:
        raise UserError(f"{path} is not a collapse-kit checkpoint; read it with load_embeddings")
    return _table_of(_flatten(ckpt), _project_meta(ckpt, path), path, None, padding)


def open_embeddings(path: str | os.PathLike, key: str | None = None, *, padding: str = "auto",
                    trust_pickle: bool = False, stream: bool | None = None) -> LoadedTable:
    """``load_embeddings``, or, for a large table, a row-block source instead of the array.

    ``stream=None`` (automatic) returns a source when the table has at least
    ``collapse_kit.stream.STREAM_MIN_ROWS`` rows and exactly ``load_embeddings``' result
    otherwise; True always a source; False always ``load_embeddings``' result. A .npy file or a
    safetensors tensor becomes a ``FileRowsSource`` after reading only its header (and row 0
    when ``padding="auto"`` must look at it), so the table is never read whole; any other
    format is loaded whole (``load_embeddings``) and wrapped in an ``ArraySource``. The checks
    and metadata are those of ``load_embeddings``, except that NaN/Inf and an all-zero table
    are found while streaming (the error names the first bad row). The metadata's ``dtype`` is
    what ``load_embeddings`` would report (float16/bfloat16 safetensors: float32).
    """
    from collapse_kit import stream as st

    if padding not in PADDING_CHOICES:
        raise UserError(f"padding must be one of {', '.join(PADDING_CHOICES)}; got {padding!r}")
    path = Path(path)
    check_regular_file(path, "checkpoint")
    kind = _sniff(path)
    if stream is False or kind not in ("npy", "safetensors"):
        table, meta = load_embeddings(path, key, padding=padding, trust_pickle=trust_pickle)
        if stream or (stream is None and table.shape[0] >= st.STREAM_MIN_ROWS):
            label = f"tensor {meta['key']!r} in {path}"
            return LoadedTable(st.ArraySource(table, name=label), meta)
        return LoadedTable(table, meta)
    layouts, meta = (_npy_layouts if kind == "npy" else _safetensors_layouts)(path, trust_pickle)
    name, reason = _choose_key(layouts, key, meta, path)
    layout = layouts[name]
    label = f"tensor {name!r} in {path}"
    # What load_embeddings makes of the stored dtype: torch turns 2-byte floats into float32.
    loaded = np.dtype(np.float32) if layout.bfloat16 or (
        kind == "safetensors" and layout.dtype.kind == "f" and layout.dtype.itemsize < 4) \
        else layout.dtype
    check_layout(loaded, layout.shape, name=label, min_rows=1)
    if stream is None and layout.shape[0] < st.STREAM_MIN_ROWS:
        return load_embeddings(path, key, padding=padding, trust_pickle=trust_pickle)

    def source(first_row: int, what: str) -> st.FileRowsSource:
        return st.FileRowsSource(path, offset=layout.offset, stored_shape=layout.shape,
                                 dtype=layout.dtype, name=what, first_row=first_row,
                                 fortran=layout.fortran, bfloat16=layout.bfloat16)

    whole = source(0, label)
    dropped, why = _padding_rule(name, padding, meta["format"], layout.shape[0],
                                 lambda: whole.take([0])[0])
    table = source(1, label + " without its padding row") if dropped else whole
    check_layout(loaded, table.shape, name=table.name)
    if stream is None and table.shape[0] < st.STREAM_MIN_ROWS:
        return load_embeddings(path, key, padding=padding, trust_pickle=trust_pickle)
    meta.update(source=str(path), key=name, key_reason=reason, original_shape=list(layout.shape),
                dtype=str(loaded), padding_row_dropped=dropped, padding_reason=why,
                shape=list(table.shape))
    log.info("streaming %s %s from %s (%s)", name, tuple(table.shape), path, reason)
    return LoadedTable(table, meta)


class _StoredArray(NamedTuple):
    """Where and how a file stores an array (``open_embeddings``); ``shape`` for ``_choose_key``."""

    shape: tuple[int, ...]
    dtype: np.dtype       # as stored (bfloat16: uint16 words)
    offset: int           # byte offset of element 0
    fortran: bool = False
    bfloat16: bool = False


def _npy_layouts(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    with open(path, "rb") as f:
        shape, fortran, dtype = _npy_layout(f, str(path))
        offset = f.tell()
    _check_npy_size(shape, dtype, path.stat().st_size - offset, str(path), trust_pickle)
    return {"<array>": _StoredArray(tuple(shape), dtype, offset, fortran)}, {"format": "npy"}


# safetensors dtype names; the float ones are read, the others only named in the error.
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
                      "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4",
                      "U16": "<u2", "U8": "u1", "BOOL": "?"}


def _safetensors_layouts(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    """The tensors of a safetensors file from its header alone: 8 bytes of header length
    (little-endian u64), a JSON object {name: {dtype, shape, data_offsets}}, then the data."""
    import json

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n_header = struct.unpack("<Q", f.read(8))[0]
            if n_header > size - 8:
                raise ValueError(f"its header claims {n_header} bytes of {size - 8}")
            header = json.loads(f.read(n_header))
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            shape, (begin, end) = tuple(int(s) for s in info["shape"]), info["data_offsets"]
            code = info["dtype"]
            if code not in SAFETENSORS_DTYPES:
                raise ValueError(f"tensor {name!r} has dtype {code}, which collapse-kit cannot "
                                 "read; save it as float32")
            dtype = np.dtype(SAFETENSORS_DTYPES[code])
            if end - begin != math.prod(shape) * dtype.itemsize or 8 + n_header + end > size:
                raise ValueError(f"tensor {name!r} does not fit its stated bytes")
            out[name] = _StoredArray(shape, dtype, 8 + n_header + begin, bfloat16=code == "BF16")
    except CORRUPT_FILE_ERRORS as exc:  # JSON and Unicode errors are ValueErrors
        raise UserError(f"{path} is truncated or corrupt ({_first_line(exc)}); {SAVE_AGAIN}") from None
    return out, {"format": "safetensors"}


def _table_of(tensors: dict, meta: dict, path: Path, key: str | None,
              padding: str) -> LoadedTable:
    """Pick, convert and check the table among a file's ``tensors`` (``load_embeddings``)."""
    name, reason = _choose_key(tensors, key, meta, path)
    meta.update(source=str(path), key=name, key_reason=reason)
    table = _to_numpy(tensors[name], f"tensor {name!r} in {path}")
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
        head = f.read(64)
    if not head:
        raise UserError(f"{path} is empty (0 bytes); it was not written completely, so save it again")
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except CORRUPT_FILE_ERRORS:
            raise UserError(f"{path} is truncated or corrupt (an incomplete zip archive); "
                            f"{SAVE_AGAIN}") from None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch"
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise UserError(f"{path} is a zip archive but neither a PyTorch checkpoint (no data.pkl) "
                        f"nor an .npz of .npy arrays; it holds: {shown or 'nothing'}")
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        return "safetensors"
    if head[0] == 0x80:  # a pickle protocol marker: legacy torch.save, or a bare pickle
        return "torch"
    what, fix = _describe_bytes(head)
    raise UserError(f"cannot read {path}: it is {what}, not a PyTorch checkpoint, a safetensors "
                    f"file or a .npy/.npz array; {fix}")


def _describe_bytes(head: bytes) -> tuple[str, str]:
    """(what the first bytes of an unsupported file look like, what to do), for the message."""
    save = "load the table in Python and save it with numpy.save"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed", "decompress it first (e.g. with gunzip)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras, h5py)", save
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut by the 64-byte window
            return f"binary data of an unknown format (first bytes {head[:8].hex(' ')})", save
        text = head[: exc.start].decode("utf-8")
    return f"a text file (it starts {' '.join(text.split())[:40]!r})", save


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
                            f"{SAVE_AGAIN}") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise UserError(f"{path} holds pickled Python objects{what}, which only a full unpickle "
                        f"can load and which may run code, so it was not unpickled; {TRUST_HINT}") from None
    except CORRUPT_FILE_ERRORS as exc:
        raise UserError(f"{path} is truncated or corrupt ({_first_line(exc)}); {SAVE_AGAIN}") from None
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


def _first_line(exc: BaseException) -> str:
    """The gist of a library error for a one-line message: its first sentence, or its type."""
    text = " ".join(str(exc).split())
    first = text.split(". ")[0][:160]
    return first or type(exc).__name__


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

    try:
        if zipfile.is_zipfile(path):  # torch's zip format: the object graph is <archive>/data.pkl
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not members:
                    return True
                return cut(io.BufferedReader(zf.open(members[0])), 1)
        with open(path, "rb") as f:  # legacy torch.save: magic, protocol, sys info, object, keys
            return cut(f, 5)
    except CORRUPT_FILE_ERRORS:  # a damaged archive around the pickle: corrupt either way
        return True


def _read_safetensors(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu")), {"format": "safetensors"}
    except (SafetensorError, *CORRUPT_FILE_ERRORS) as exc:
        raise UserError(f"{path} is truncated or corrupt ({_first_line(exc)}); {SAVE_AGAIN}") from None


def _read_npy(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    with open(path, "rb") as f:
        shape, dtype = _npy_header(f, str(path))
        _check_npy_size(shape, dtype, path.stat().st_size - f.tell(), str(path), trust_pickle)
    try:
        array = np.load(path, allow_pickle=trust_pickle)
    except CORRUPT_FILE_ERRORS as exc:
        raise _numpy_error(exc, path) from None
    return {"<array>": array}, {"format": "npy"}


def _read_npz(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():  # every name ends in .npy (``_sniff``)
                arrays[info.filename[: -len(".npy")]] = _npz_member(zf, info, path, trust_pickle)
    except UserError:
        raise
    except CORRUPT_FILE_ERRORS as exc:  # zlib, CRC, a member cut short, ...
        raise _numpy_error(exc, path) from None
    return arrays, {"format": "npz"}


def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path,
                trust_pickle: bool) -> np.ndarray:
    """One .npy member of an .npz, its header checked against its size before reading it."""
    where = f"member {info.filename!r} of {path}"
    if info.compress_type == zipfile.ZIP_DEFLATED and \
            info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
        raise UserError(f"{where} claims {_bytes(info.file_size)} from {_bytes(info.compress_size)} "
                        f"of compressed data, more than deflate can hold: it is corrupt; {SAVE_AGAIN}")
    with zf.open(info) as f:
        shape, dtype = _npy_header(f, where)
        _check_npy_size(shape, dtype, info.file_size - f.tell(), where, trust_pickle)
    with zf.open(info) as f:
        try:
            return np.lib.format.read_array(f, allow_pickle=trust_pickle)
        except ValueError as exc:  # the pickle refusal, or data that ends early
            raise _numpy_error(exc, path) from None


def _npy_header(f, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the .npy header at ``f``'s position, which is left at the data."""
    shape, _fortran, dtype = _npy_layout(f, where)
    return shape, dtype


def _npy_layout(f, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the .npy header at ``f``'s position (``_npy_header``)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:  # 3.0 only adds UTF-8 field names: a structured array, never an embedding table
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
        if any(s < 0 for s in shape):
            raise ValueError(f"negative shape {shape}")
    except (ValueError, SyntaxError, tokenize.TokenError, TypeError, KeyError, OverflowError) as exc:
        raise UserError(f"{where} has a damaged .npy header ({_first_line(exc)}); it is truncated "
                        f"or corrupt; {SAVE_AGAIN}") from None
    return shape, bool(fortran), dtype


def _check_npy_size(shape, dtype: np.dtype, available: int, where: str, trust_pickle: bool) -> None:
    """Refuse a header whose claimed array needs more bytes than follow it (nothing allocated)."""
    if dtype.hasobject:  # pickled objects: no size to check; refused unless trust_pickle
        if not trust_pickle:
            raise UserError(f"{where} holds a pickled object array that would run code when "
                            f"loaded, so it was not unpickled; {TRUST_HINT}")
        return
    need = math.prod(shape) * dtype.itemsize
    if need > available:
        raise UserError(f"{where} claims a {dtype} array of shape {tuple(shape)} ({_bytes(need)}) "
                        f"but holds only {_bytes(max(available, 0))} of data: it is truncated or "
                        f"corrupt; {SAVE_AGAIN}")


def _bytes(n: int) -> str:
    """A byte count for people: 200 bytes, 4.1 MB, 102.4 TB."""
    if n < 1000:
        return f"{n} bytes"
    exp = min(int(math.log10(n) // 3), 6)
    return f"{n / 1000 ** exp:.1f} {'kMGTPE'[exp - 1]}B"


def _numpy_error(exc: Exception, path: Path) -> UserError:
    if "allow_pickle" in str(exc):
        return UserError(f"{path} holds a pickled object array that would run code when loaded, "
                         f"so it was not unpickled; {TRUST_HINT}")
    return UserError(f"{path} is truncated or corrupt ({_first_line(exc)}); {SAVE_AGAIN}")


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
    if obj.get("table_stripped"):
        raise UserError(f"{path} is a light checkpoint whose item table was stripped for "
                        "transport (scripts/pack_runs.py); analyze the full run's checkpoint, or "
                        "retrain it with collapse-kit train")
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


def _to_numpy(t, label: str) -> np.ndarray:
    """A torch tensor or array as numpy; float16/bfloat16 become float32 (numpy lacks bfloat16).

    Sparse, quantised and meta tensors are refused with what to save instead (``label`` names
    the tensor): they hold no plain table of numbers that could be read as it is.
    """
    if hasattr(t, "detach"):
        if str(t.layout) != "torch.strided":
            raise UserError(f"{label} is a sparse tensor ({str(t.layout).replace('torch.', '')}); "
                            "save its dense table instead (tensor.to_dense())")
        if t.is_quantized:
            raise UserError(f"{label} is a quantised tensor ({str(t.dtype).replace('torch.', '')}); "
                            "save its float values instead (tensor.dequantize())")
        if t.is_meta:
            raise UserError(f"{label} holds no data: it is a 'meta' tensor (only its shape was "
                            "saved, e.g. from a model built on the meta device); save the table "
                            "after its weights are loaded")
        t = t.detach().cpu()
        if t.is_floating_point() and t.element_size() < 4:
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def _drop_padding(table: np.ndarray, name: str, padding: str, fmt: str) -> tuple[np.ndarray, bool, str]:
    dropped, why = _padding_rule(name, padding, fmt, table.shape[0], lambda: table[0])
    return (table[1:] if dropped else table), dropped, why


def _padding_rule(name: str, padding: str, fmt: str, n_rows: int, row0) -> tuple[bool, str]:
    """(drop row 0?, why) for the tensor ``name`` of ``n_rows`` rows; ``row0()`` gives row 0,
    called only when its content decides (a streamed table reads it alone)."""
    if padding == "keep":
        return False, "kept: --padding keep"
    if padding == "drop":
        return True, "dropped row 0: --padding drop"
    if fmt == PROJECT_FORMAT:
        return False, "none: collapse-kit checkpoints store the table without padding"
    if any(name == k or name.endswith("." + k) for k in PADDED_KEYS):
        return True, (f"dropped row 0: '{name}' is the ADRec/RecBole item table, "
                      "whose row 0 is the padding item")
    if n_rows > 2 and not np.asarray(row0()).any():
        return True, "dropped row 0: it is all zeros (an nn.Embedding padding_idx=0 row)"
    return False, "none: row 0 is not zero and the tensor name has no padding convention"
