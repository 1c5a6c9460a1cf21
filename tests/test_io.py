"""collapse_kit.io: every supported file kind loads, and every bad file fails with one clear line."""
from __future__ import annotations

import io
import os
import pickle
import random
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from collapse_kit.errors import UserError
from collapse_kit.io import load_embeddings
from probes.labels import load_class_labels

REPO = Path(__file__).resolve().parents[1]
from tests.conftest import GENRES, OFFICIAL_CKPT as AUTHORS_CKPT  # noqa: E402


def project_checkpoint(table: torch.Tensor, **overrides) -> dict:
    """A checkpoint dict in this project's format (what the trainer writes)."""
    ckpt = {"format": "collapse-kit-checkpoint", "format_version": 1, "package_version": "0.1.0",
            "model": "sasrec", "model_args": {"hidden": table.shape[1]}, "config": {"lr": 1e-3},
            "dataset": {"name": "ml-100k", "n_items": table.shape[0], "n_users": 938},
            "stage": "stage1", "parent": None, "metrics": {"val_ndcg@10": 0.05}, "epoch": 7,
            "item_embeddings": table,
            "state_dict": {"item_embedding.weight": torch.cat([torch.zeros(1, table.shape[1]), table]),
                           "position_embedding.weight": torch.randn(50, table.shape[1])}}
    ckpt.update(overrides)
    return ckpt


def rand(n=30, d=8, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


class Boom:
    """Unpickling this creates a marker file: proof that loading would have run code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# -- this project's checkpoints -----------------------------------------------------------------

def test_project_checkpoint_uses_item_embeddings_and_reports_its_metadata(tmp_path):
    table = rand(30, 8)
    torch.save(project_checkpoint(table), tmp_path / "run.pt")
    E, meta = load_embeddings(tmp_path / "run.pt")
    np.testing.assert_array_equal(E, table.numpy())
    assert meta["key"] == "item_embeddings"
    assert meta["padding_row_dropped"] is False
    assert (meta["model"], meta["stage"], meta["dataset"], meta["epoch"]) == ("sasrec", "stage1", "ml-100k", 7)
    assert meta["format"] == "collapse-kit-checkpoint"


def test_project_checkpoint_is_loadable_with_weights_only(tmp_path):
    torch.save(project_checkpoint(rand()), tmp_path / "run.pt")
    assert torch.load(tmp_path / "run.pt", weights_only=True)["format_version"] == 1


def test_project_checkpoint_key_can_pick_a_state_dict_tensor(tmp_path):
    torch.save(project_checkpoint(rand(30, 8)), tmp_path / "run.pt")
    E, meta = load_embeddings(tmp_path / "run.pt", key="position_embedding.weight")
    assert meta["key"] == "state_dict.position_embedding.weight" and E.shape == (50, 8)


def test_light_checkpoint_with_stripped_table_is_named_as_such(tmp_path):
    """Regression: a light checkpoint (scripts/pack_runs.py, table replaced by an empty (0, d)
    tensor and ``table_stripped``) failed with a misleading "has 0 row(s)"."""
    ck = project_checkpoint(torch.empty(0, 8), table_stripped=True)
    torch.save(ck, tmp_path / "light.pt")
    with pytest.raises(UserError, match="item table was stripped") as e:
        load_embeddings(tmp_path / "light.pt")
    assert "0 row" not in str(e.value) and "\n" not in str(e.value)


def test_project_checkpoint_from_a_newer_format_is_refused(tmp_path):
    torch.save(project_checkpoint(rand(), format_version=2), tmp_path / "run.pt")
    with pytest.raises(UserError, match="format_version 2.*upgrade collapse-kit"):
        load_embeddings(tmp_path / "run.pt")


def test_project_checkpoint_without_its_table_is_refused(tmp_path):
    ckpt = project_checkpoint(rand())
    del ckpt["item_embeddings"]
    torch.save(ckpt, tmp_path / "run.pt")
    with pytest.raises(UserError, match="without 'item_embeddings'"):
        load_embeddings(tmp_path / "run.pt")


# -- the authors' checkpoint and other codebases ------------------------------------------------

def test_authors_checkpoint_loads_as_is_and_drops_padding_row():
    E, meta = load_embeddings(AUTHORS_CKPT)
    raw = torch.load(AUTHORS_CKPT, weights_only=True, map_location="cpu")["item_embedding.weight"]
    assert E.shape == (1008, 128) and E.dtype == np.float32
    np.testing.assert_array_equal(E, raw[1:].numpy())
    assert meta["key"] == "item_embedding.weight"  # never position_embedding.weight (50, 128)
    assert meta["padding_row_dropped"] is True and meta["original_shape"] == [1009, 128]
    assert "padding" in meta["padding_reason"]


def test_recbole_style_nested_state_dict_is_detected(tmp_path):
    table = torch.cat([torch.zeros(1, 8), rand(20, 8)])
    torch.save({"config": {"model": "SASRec"}, "epoch": 3,
                "state_dict": {"item_embedding.weight": table,
                               "position_embedding.weight": rand(50, 8)}}, tmp_path / "rb.pth")
    E, meta = load_embeddings(tmp_path / "rb.pth")
    assert meta["key"] == "state_dict.item_embedding.weight"
    assert meta["padding_row_dropped"] and E.shape == (20, 8)


def test_nonzero_row0_of_item_embedding_weight_is_still_padding(tmp_path):
    # In the authors' ADRec the padding vector E[0] is trained (non-zero); it is still not an item.
    table = rand(21, 8)
    torch.save({"item_embedding.weight": table, "w": rand(8, 8)}, tmp_path / "a.pt")
    E, meta = load_embeddings(tmp_path / "a.pt")
    np.testing.assert_array_equal(E, table[1:].numpy())


def test_zero_row0_is_dropped_under_any_name_and_kept_otherwise(tmp_path):
    padded = torch.cat([torch.zeros(1, 8), rand(20, 8)])
    torch.save({"item_emb.weight": padded}, tmp_path / "a.pt")
    assert load_embeddings(tmp_path / "a.pt").table.shape == (20, 8)
    torch.save({"emb": rand(20, 8)}, tmp_path / "b.pt")
    E, meta = load_embeddings(tmp_path / "b.pt")
    assert E.shape == (20, 8) and not meta["padding_row_dropped"]


def test_padding_option_overrides_auto(tmp_path):
    torch.save({"item_embedding.weight": rand(21, 8)}, tmp_path / "a.pt")
    assert load_embeddings(tmp_path / "a.pt", padding="keep").table.shape == (21, 8)
    torch.save({"emb": rand(21, 8)}, tmp_path / "b.pt")
    assert load_embeddings(tmp_path / "b.pt", padding="drop").table.shape == (20, 8)
    with pytest.raises(UserError, match="padding must be one of"):
        load_embeddings(tmp_path / "b.pt", padding="yes")


def test_key_selects_any_2d_tensor_by_name_or_unique_suffix(tmp_path):
    torch.save({"model": {"encoder.items.weight": rand(20, 8), "other": rand(5, 8)}}, tmp_path / "a.pt")
    E, meta = load_embeddings(tmp_path / "a.pt", key="items.weight")
    assert meta["key"] == "model.encoder.items.weight" and E.shape == (20, 8)


def test_missing_key_lists_the_available_tensors(tmp_path):
    torch.save({"a.weight": rand(20, 8), "b.weight": rand(5, 8)}, tmp_path / "a.pt")
    with pytest.raises(UserError, match=r"no tensor named 'nope'.*a\.weight \(20, 8\)"):
        load_embeddings(tmp_path / "a.pt", key="nope")


def test_undetectable_table_asks_for_key(tmp_path):
    torch.save({"a.weight": rand(20, 8), "b.weight": rand(5, 8)}, tmp_path / "a.pt")
    with pytest.raises(UserError, match="pass --key"):
        load_embeddings(tmp_path / "a.pt")


def test_float16_and_bfloat16_tables_load_as_float32(tmp_path):
    for dtype in (torch.float16, torch.bfloat16):
        torch.save({"emb": rand().to(dtype)}, tmp_path / "h.pt")
        E, meta = load_embeddings(tmp_path / "h.pt")
        assert E.dtype == np.float32


def test_legacy_torch_format_and_bare_tensor_load(tmp_path):
    torch.save({"emb": rand()}, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    assert load_embeddings(tmp_path / "l.pt").table.shape == (30, 8)
    torch.save(rand(), tmp_path / "t.pt")
    assert load_embeddings(tmp_path / "t.pt").meta["format"] == "torch-tensor"


# -- other file kinds -----------------------------------------------------------------------------

def test_safetensors_file(tmp_path):
    save_file({"item_embedding.weight": rand(21, 8), "position_embedding.weight": rand(50, 8)},
              tmp_path / "m.safetensors")
    E, meta = load_embeddings(tmp_path / "m.safetensors")
    assert meta["format"] == "safetensors" and meta["padding_row_dropped"] and E.shape == (20, 8)


def test_npy_file(tmp_path):
    table = rand().numpy()
    np.save(tmp_path / "e.npy", table)
    np.testing.assert_array_equal(load_embeddings(tmp_path / "e.npy").table, table)


def test_npz_file_with_several_arrays_needs_a_key(tmp_path):
    table = rand().numpy()
    np.savez(tmp_path / "e.npz", items=table, users=rand(5, 8).numpy())
    with pytest.raises(UserError, match="pass --key"):
        load_embeddings(tmp_path / "e.npz")
    assert load_embeddings(tmp_path / "e.npz", key="items").table.shape == (30, 8)


def test_format_is_read_from_content_not_extension(tmp_path):
    np.save(tmp_path / "e.npy", rand().numpy())
    os.rename(tmp_path / "e.npy", tmp_path / "e.bin")
    assert load_embeddings(tmp_path / "e.bin").meta["format"] == "npy"


# -- bad inputs: one clear error each ------------------------------------------------------------

@pytest.mark.parametrize("tensor, error, match", [
    (torch.randn(40), UserError, "must be 2-D.*1-D"),
    (torch.randn(4, 5, 6), UserError, "must be 2-D.*3-D"),
    (torch.arange(40).reshape(20, 2), TypeError, "floating-point.*int64"),
    (torch.randn(1, 8), UserError, "1 row"),
    (torch.zeros(0, 8), UserError, r"0 row\(s\); at least 1 item is needed"),  # was "1 items are"
])
def test_bad_tables_are_refused(tmp_path, tensor, error, match):
    torch.save({"emb": tensor}, tmp_path / "bad.pt")
    with pytest.raises(error, match=match):
        load_embeddings(tmp_path / "bad.pt")


def test_nan_and_inf_are_refused_with_the_row(tmp_path):
    t = rand(10, 4)
    t[3, 1] = float("nan")
    t[5, 0] = float("inf")
    torch.save({"emb": t}, tmp_path / "nan.pt")
    with pytest.raises(UserError, match=r"'emb'.*1 NaN and 1 Inf.*row 3"):
        load_embeddings(tmp_path / "nan.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_embeddings(tmp_path / "nope.pt")


def test_directory_instead_of_a_file(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        load_embeddings(tmp_path)


@pytest.mark.parametrize("writer", ["zip", "legacy", "safetensors", "npy", "npz"])
def test_truncated_files_are_reported_as_truncated(tmp_path, writer):
    path = tmp_path / "x"
    if writer == "zip":
        torch.save({"emb": rand(200, 8)}, path)
    elif writer == "legacy":
        torch.save({"emb": rand(200, 8)}, path, _use_new_zipfile_serialization=False)
    elif writer == "safetensors":
        save_file({"emb": rand(200, 8)}, path)
    elif writer == "npy":
        with open(path, "wb") as f:
            np.save(f, rand(200, 8).numpy())
    else:
        with open(path, "wb") as f:
            np.savez(f, emb=rand(200, 8).numpy())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_embeddings(path)


def test_empty_file(tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        load_embeddings(tmp_path / "e.pt")


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_that_would_run_code_is_refused_and_never_run(tmp_path, legacy):
    marker = tmp_path / "RAN"
    torch.save({"emb": rand(), "hook": Boom(str(marker))}, tmp_path / "evil.pt",
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UserError, match="pickled Python objects.*--trust-pickle"):
        load_embeddings(tmp_path / "evil.pt")
    assert not marker.exists()
    load_embeddings(tmp_path / "evil.pt", trust_pickle=True)  # the opt-in really unpickles
    assert marker.exists()


def test_bare_pickle_and_object_npy_are_refused(tmp_path):
    marker = tmp_path / "RAN"
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump({"emb": Boom(str(marker))}, f, protocol=2)
    with pytest.raises(UserError, match="--trust-pickle"):
        load_embeddings(tmp_path / "p.pkl")
    np.save(tmp_path / "o.npy", np.array([Boom(str(marker))], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="pickled object array.*--trust-pickle"):
        load_embeddings(tmp_path / "o.npy")
    assert not marker.exists()


class Config:  # a harmless custom object, as in RecBole checkpoints
    lr = 0.001


def test_trust_pickle_loads_a_checkpoint_with_custom_objects(tmp_path):
    torch.save({"config": Config(), "state_dict": {"item_embedding.weight": rand(21, 8)}},
               tmp_path / "rb.pth")
    with pytest.raises(UserError, match="--trust-pickle"):
        load_embeddings(tmp_path / "rb.pth")
    E, meta = load_embeddings(tmp_path / "rb.pth", trust_pickle=True)
    assert E.shape == (20, 8)


def test_file_without_a_table(tmp_path):
    torch.save([1, 2, 3], tmp_path / "l.pt")
    with pytest.raises(UserError, match="holds a list"):
        load_embeddings(tmp_path / "l.pt")
    torch.save({"a": 1}, tmp_path / "d.pt")
    with pytest.raises(UserError, match="no tensors"):
        load_embeddings(tmp_path / "d.pt")


# -- labels --------------------------------------------------------------------------------------

def test_load_labels_multi_hot_keeps_single_label_items(tmp_path):
    (tmp_path / "g.csv").write_text("item_id,A,B,C\n1,1,0,0\n2,0,1,1\n3,0,0,1\n")
    labels, classes = load_class_labels(tmp_path / "g.csv", 4)
    assert classes == ["A", "B", "C"]
    np.testing.assert_array_equal(labels, [0, -1, 2, -1])


def test_load_labels_single_column(tmp_path):
    (tmp_path / "l.csv").write_text("item_id,genre\n1,rock\n2,jazz\n3,rock\n")
    labels, classes = load_class_labels(tmp_path / "l.csv", 3)
    assert classes == ["jazz", "rock"]
    np.testing.assert_array_equal(labels, [1, 0, 1])


def test_load_labels_refuses_ids_beyond_the_table(tmp_path):
    (tmp_path / "l.csv").write_text("item_id,genre\n1,rock\n2,jazz\n3,rock\n")
    with pytest.raises(UserError, match="item_id 3 is outside 1..2"):
        load_class_labels(tmp_path / "l.csv", 2)


def test_ml100k_genres_load():
    labels, classes = load_class_labels(GENRES, 1008)
    assert len(classes) == 26 and (labels >= 0).sum() == 428  # items with exactly one genre


# -- damaged and hostile files (regressions: issue 16, item 7 and the lower-severity list) --------

def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def huge_npy_header(shape=(10**11, 128)) -> bytes:
    """A .npy header claiming ``shape`` float64, padded to 128 bytes as numpy writes it."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (128 - 10 - len(header) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


def test_regression_corrupt_compressed_npz(tmp_path):
    # zlib.error escaped as a traceback.
    np.savez_compressed(tmp_path / "c.npz", emb=rand(50, 4).numpy())
    data = bytearray((tmp_path / "c.npz").read_bytes())
    start = data.find(b"emb.npy") + len("emb.npy") + 40  # inside the deflate stream
    data[start:start + 30] = bytes(b ^ 0x55 for b in data[start:start + 30])
    (tmp_path / "c.npz").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"c\.npz is truncated or corrupt"):
        load_embeddings(tmp_path / "c.npz")


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_regression_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path, container):
    # A 200-byte .npy whose header claims (1e11, 128) raised MemoryError (numpy tried 102 TB).
    blob = huge_npy_header() + bytes(72)
    assert len(blob) == 200
    path = tmp_path / "h"
    if container == "npy":
        path.write_bytes(blob)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("emb.npy", blob)
    with pytest.raises(UserError, match=r"claims a float64 array of shape \(100000000000, 128\) "
                                        r"\(102\.4 TB\) but holds only 72 bytes"):
        load_embeddings(path)


def test_regression_compressed_npz_member_claiming_too_much_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "z.npz", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("emb.npy", npy_bytes(rand(40, 4).numpy()))
    data = bytearray((tmp_path / "z.npz").read_bytes())
    # the uncompressed size in the local header (offset 22) and the central directory (24)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig) + offset
        data[at:at + 4] = (10**9).to_bytes(4, "little")
    (tmp_path / "z.npz").write_bytes(bytes(data))
    with pytest.raises(UserError, match="more than deflate can hold"):
        load_embeddings(tmp_path / "z.npz")


@pytest.mark.parametrize("members", [{"emb.npy": b"hello world"},
                                     {"a.npy": b"hello", "b.npy": None}])
def test_regression_npz_member_that_is_not_an_array(tmp_path, members):
    # Non-array members came back as bytes: AttributeError ('bytes' has no attribute 'shape'),
    # or a dtype |S11 table "of item ids".
    with zipfile.ZipFile(tmp_path / "m.npz", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data if data is not None else npy_bytes(rand(10, 3).numpy()))
    with pytest.raises(UserError, match=r"member '\w+\.npy' of .*m\.npz has a damaged \.npy header"):
        load_embeddings(tmp_path / "m.npz")


@pytest.mark.parametrize("damage", [(10, b"((((((((((") , (20, b"'''''''''''''''''''\"")])
def test_regression_damaged_npy_header_inside_npz(tmp_path, damage):
    # tokenize.TokenError escaped; a ValueError gave a raw numpy message.
    at, junk = damage
    blob = bytearray(npy_bytes(rand(50, 4).numpy()))
    blob[at:at + len(junk)] = junk
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as zf:
        zf.writestr("emb.npy", bytes(blob))
    with pytest.raises(UserError, match=r"member 'emb\.npy' of .*d\.npz has a damaged \.npy header"):
        load_embeddings(tmp_path / "d.npz")


def test_regression_object_array_inside_npz_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "RAN"
    np.savez(tmp_path / "o.npz", emb=np.array([Boom(str(marker))], dtype=object))
    with pytest.raises(UserError, match="pickled object array.*--trust-pickle"):
        load_embeddings(tmp_path / "o.npz")
    assert not marker.exists()


def _unblock_later(fifo: Path) -> None:
    """Open and close the FIFO's writing end every second, so that a reader blocked on it (the
    bug) gets an end of file and the test fails instead of hanging the run."""
    def writer():
        for _ in range(60):
            time.sleep(1)
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: nobody is reading it (the fixed behaviour)
                pass

    threading.Thread(target=writer, daemon=True).start()


def test_regression_fifo_and_devices_are_refused_without_reading(tmp_path):
    # A FIFO given as a checkpoint (or label file) blocked for ever.
    fifo = tmp_path / "ckpt.pt"
    os.mkfifo(fifo)
    _unblock_later(fifo)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"ckpt\.pt is a FIFO \(named pipe\), not a regular file"):
        load_embeddings(fifo)
    with pytest.raises(UserError, match="FIFO.*label CSV"):
        load_class_labels(fifo, 10)
    assert time.monotonic() - started < 4
    if Path("/dev/null").exists():
        with pytest.raises(UserError, match="character device"):
            load_embeddings("/dev/null")


def test_regression_text_file_says_what_it_is(tmp_path):
    # A text file given as a checkpoint elsewhere gave "error: 101" (ord("e")).
    (tmp_path / "t.pt").write_text("embedding table\n1 2 3\n")
    with pytest.raises(UserError, match=r"t\.pt: it is a text file \(it starts 'embedding "
                                        r"table 1 2 3'\), not a PyTorch checkpoint.*numpy\.save"):
        load_embeddings(tmp_path / "t.pt")
    (tmp_path / "b.bin").write_bytes(bytes(range(200, 256)) * 2)
    with pytest.raises(UserError, match="binary data of an unknown format"):
        load_embeddings(tmp_path / "b.bin")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(UserError, match="zip archive but neither a PyTorch checkpoint.*readme.txt"):
        load_embeddings(tmp_path / "other.zip")


@pytest.mark.parametrize("make, match", [
    (lambda t: t.to_sparse(), r"is a sparse tensor \(sparse_coo\); save .*to_dense\(\)"),
    (lambda t: t.to_sparse_csr(), r"is a sparse tensor \(sparse_csr\)"),
    (lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8),
     r"is a quantised tensor \(qint8\); save .*dequantize\(\)"),
    (lambda t: torch.empty(t.shape, device="meta"), r"holds no data: it is a 'meta' tensor"),
])
def test_regression_sparse_quantised_and_meta_tensors_say_what_to_do(tmp_path, make, match):
    # Raw library messages ("can't convert Sparse layout tensor to numpy...") before.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantize_per_tensor
        torch.save({"emb": make(rand(20, 4))}, tmp_path / "s.pt")
    with pytest.raises(UserError, match=r"tensor 'emb' in .*s\.pt " + match):
        load_embeddings(tmp_path / "s.pt")


def test_regression_project_checkpoint_with_config_none_loads(tmp_path):
    torch.save(project_checkpoint(rand(), config=None, dataset=None), tmp_path / "run.pt")
    E, meta = load_embeddings(tmp_path / "run.pt")
    assert E.shape == (30, 8) and meta["dataset"] is None


@pytest.mark.parametrize("writer", ["zip", "legacy", "safetensors", "npy", "npz", "npz-deflate"])
def test_regression_any_damage_is_one_user_error(tmp_path, writer):
    # Fix the class, not the case: seeded random damage (overwritten bytes, zeroed runs, cuts) to
    # every supported format may only ever end in a UserError (or, for a table that survives
    # with a wrong dtype, the documented TypeError): never zlib.error, struct.error,
    # UnicodeDecodeError, AssertionError, NotImplementedError, ...
    path = tmp_path / "x"
    table = rand(40, 6)
    if writer == "zip":
        torch.save({"emb": table, "cfg": {"a": 1}}, path)
    elif writer == "legacy":
        torch.save({"emb": table}, path, _use_new_zipfile_serialization=False)
    elif writer == "safetensors":
        save_file({"emb": table}, path)
    elif writer == "npy":
        path.write_bytes(npy_bytes(table.numpy()))
    else:
        with open(path, "wb") as f:
            (np.savez_compressed if writer == "npz-deflate" else np.savez)(f, emb=table.numpy())
    good = path.read_bytes()
    rng = random.Random(writer)
    for _ in range(60):
        data = bytearray(good)
        how = rng.choice(["overwrite", "zero", "cut"])
        if how == "overwrite":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == "zero":
            at = rng.randrange(len(data))
            data[at:at + 64] = bytes(len(data[at:at + 64]))
        else:
            data = data[: rng.randrange(1, len(data))]
        path.write_bytes(bytes(data))
        try:
            load_embeddings(path)
        except (UserError, TypeError):
            pass


@pytest.mark.parametrize("text,needle", [
    ("item_id,a,b\n1,no,1\n2,0,1\n", "must hold 0 or 1"),       # 'no' was counted as a 1
    ("item_id,a,b\n1,1,0\n1,0,1\n", "repeats line 2"),           # conflicting duplicates
    ("item_id,a,b\n1,1\n", "fields but the header has 3"),
])
def test_regression_label_csv_values_and_duplicates_are_checked(tmp_path, text, needle):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=needle):
        load_class_labels(path, 3)


def test_regression_label_csv_with_an_excel_bom_reads_like_without(tmp_path):
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text("item_id,a,b\n1,1,0\n2,0,1\n3,1,1\n")
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    (la, ca), (lb, cb) = load_class_labels(plain, 3), load_class_labels(bom, 3)
    assert ca == cb == ["a", "b"] and la.tolist() == lb.tolist() == [0, 1, -1]


def test_the_shipped_authors_checkpoint_is_the_authors_file():
    """The fixture is the released file (sha256 of github.com/Nemo-1024/ADRec's
    src/saved/pretrain/ml-100k/pretrain.pth as ../shared holds it), and the copy in ../shared
    where a checkout has one."""
    import hashlib

    from tests.conftest import SHARED_OFFICIAL_CKPT

    digest = hashlib.sha256(AUTHORS_CKPT.read_bytes()).hexdigest()
    assert digest == "d6d5beef3ecea1d0f117bd6f5f6a41ce7f57067b372fac390f036e82a4876785"
    if SHARED_OFFICIAL_CKPT.exists():
        assert SHARED_OFFICIAL_CKPT.read_bytes() == AUTHORS_CKPT.read_bytes()
