"""Write an item table with its id map, for other tools: ``.npy`` (+ ids), safetensors, Parquet,
or the TensorBoard / Embedding Projector pair ``vectors.tsv`` + ``metadata.tsv``; or, the same
way, the sequence representations of a split's users (``what="users"``).

Every format carries the id of each row and says what kind of id it is (``id_kind``): the raw
log's original item ids, the dataset's contiguous ids (row + 1), or the row index when nothing
better is known. All files of one export are written to temporaries first and renamed into place
together (``collapse_kit.tables.write_together``), so a failure leaves nothing half-written.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from collapse_kit.errors import UserError
from collapse_kit.tables import write_together

EXPORT_FORMATS = ("npy", "safetensors", "parquet", "tsv")
ID_KINDS = {
    "original": "the raw interaction log's item ids",
    "contiguous": "the dataset's item ids 1..n (row + 1; bundled data has no other ids)",
    "row": "row indices 0..n-1 (the file holds no id map)",
    "user-original": "the raw interaction log's user ids",
    "user-index": "the dataset's user indices 0..n_users-1 (bundled data has no other user ids)",
}
WHAT = {  # what a table's rows are: (id column, tensor name)
    "items": ("item_id", "item_embeddings"),
    "users": ("user_id", "user_representations"),
}


def export_paths(out: str | Path, fmt: str) -> list[Path]:
    """The files an export to ``out`` writes, in order (``out`` is a folder for ``tsv``)."""
    out = Path(out)
    if fmt == "npy":
        base = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")
        return [base, base.with_name(base.stem + ".ids.tsv")]
    if fmt == "safetensors":
        return [out if out.suffix == ".safetensors" else out.with_name(out.name + ".safetensors")]
    if fmt == "parquet":
        return [out if out.suffix == ".parquet" else out.with_name(out.name + ".parquet")]
    if fmt == "tsv":
        return [out / "vectors.tsv", out / "metadata.tsv"]
    raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")


def export_table(table, ids, out: str | Path, fmt: str, *, id_kind: str,
                 metadata: dict[str, list] | None = None, what: str = "items") -> list[Path]:
    """Write ``table`` (n, d) and its row ids ``ids`` (n ints or strings) as ``fmt``.

    ``metadata``: extra per-row columns (e.g. popularity, genres) for the ``tsv`` and
    ``parquet`` formats. ``what``: ``items`` (an item table) or ``users`` (user
    representations): names the id column and the safetensors tensor. Returns the written paths.
    """
    table = np.ascontiguousarray(table, dtype=np.float32)
    if table.ndim != 2:
        raise UserError(f"an item table is 2-D (items x dimensions); got shape {table.shape}")
    if len(ids) != table.shape[0]:
        raise UserError(f"{len(ids)} ids for a table of {table.shape[0]} rows; the id map does not "
                        "belong to this table")
    if id_kind not in ID_KINDS:
        raise ValueError(f"id_kind must be one of {', '.join(ID_KINDS)}; got {id_kind!r}")
    if what not in WHAT:
        raise ValueError(f"what must be one of {', '.join(WHAT)}; got {what!r}")
    metadata = dict(metadata or {})
    for name, column in metadata.items():
        if len(column) != table.shape[0]:
            raise UserError(f"metadata column {name!r} has {len(column)} values for "
                            f"{table.shape[0]} rows")
    paths = export_paths(out, fmt)
    contents = _CONTENTS[fmt](table, [_plain(i) for i in ids], id_kind, metadata, *WHAT[what])
    folder = paths[0].parent
    must_exist = folder.parent if fmt == "tsv" else folder
    if not must_exist.is_dir():
        raise UserError(f"cannot write {paths[0]}: the folder {must_exist} does not exist; "
                        "create it first")
    if fmt == "tsv" and folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; --format tsv writes a folder (vectors.tsv and "
                        "metadata.tsv)")
    created = not folder.exists()
    folder.mkdir(exist_ok=True)
    try:
        write_together(dict(zip(paths, contents)))
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return paths


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    return value if isinstance(value, (int, str)) else str(value)


def _npy(table, ids, id_kind, metadata, id_column, tensor) -> list[bytes]:
    buf = io.BytesIO()
    np.save(buf, table, allow_pickle=False)
    lines = [f"# id_kind: {id_kind}: {ID_KINDS[id_kind]}", f"row\t{id_column}"]
    lines += [f"{r}\t{_tsv_cell(i)}" for r, i in enumerate(ids)]
    return [buf.getvalue(), ("\n".join(lines) + "\n").encode()]


def _safetensors(table, ids, id_kind, metadata, id_column, tensor) -> list[bytes]:
    import torch
    from safetensors.torch import save

    meta = {f"{id_column}s": json.dumps(ids), "id_kind": id_kind, "format": "collapse-kit export"}
    return [save({tensor: torch.from_numpy(table)}, metadata=meta)]


def _parquet(table, ids, id_kind, metadata, id_column, tensor) -> list[bytes]:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UserError("--format parquet needs the pyarrow package; install it with "
                        "pip install 'collapse-kit[parquet]' (or pip install pyarrow)") from None
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.concat([pd.DataFrame({id_column: ids, **metadata}),
                       pd.DataFrame(table, columns=[f"e{j}" for j in range(table.shape[1])])],
                      axis=1)
    t = pa.Table.from_pandas(frame, preserve_index=False)
    t = t.replace_schema_metadata({**(t.schema.metadata or {}), b"id_kind": id_kind.encode()})
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return [buf.getvalue()]


def _tsv(table, ids, id_kind, metadata, id_column, tensor) -> list[bytes]:
    vectors = "\n".join("\t".join(f"{v:.7g}" for v in row) for row in table) + "\n"
    header = [id_column, *metadata]
    rows = ["\t".join(header)]
    rows += ["\t".join(_tsv_cell(v) for v in [i, *(col[r] for col in metadata.values())])
             for r, i in enumerate(ids)]
    return [vectors.encode(), ("\n".join(rows) + "\n").encode()]


def _tsv_cell(value) -> str:
    text = str(value)
    return text.replace("\t", " ").replace("\n", " ")


_CONTENTS = {"npy": _npy, "safetensors": _safetensors, "parquet": _parquet, "tsv": _tsv}
