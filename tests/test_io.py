"""collapse_kit.io: every supported file kind loads, and every bad file fails with one clear line."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from collapse_kit.errors import UserError
from collapse_kit.io import load_embeddings, load_labels

REPO = Path(__file__).resolve().parents[1]
AUTHORS_CKPT = REPO.parent / "shared/reference/checkpoints/official-ml-100k-pretrain.pth"
GENRES = REPO.parent / "shared/data/ml-100k/item_genres.csv"
needs_authors = pytest.mark.skipif(not AUTHORS_CKPT.exists(),
                                   reason=f"authors' checkpoint not found at {AUTHORS_CKPT}")


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

@needs_authors
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


def test_npy_and_npz_files(tmp_path):
    table = rand().numpy()
    np.save(tmp_path / "e.npy", table)
    np.testing.assert_array_equal(load_embeddings(tmp_path / "e.npy").table, table)
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


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_embeddings(tmp_path / "nope.pt")
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
    labels, classes = load_labels(tmp_path / "g.csv", 4)
    assert classes == ["A", "B", "C"]
    np.testing.assert_array_equal(labels, [0, -1, 2, -1])


def test_load_labels_single_column_and_bad_ids(tmp_path):
    (tmp_path / "l.csv").write_text("item_id,genre\n1,rock\n2,jazz\n3,rock\n")
    labels, classes = load_labels(tmp_path / "l.csv", 3)
    assert classes == ["jazz", "rock"]
    np.testing.assert_array_equal(labels, [1, 0, 1])
    with pytest.raises(UserError, match="item_id 3 is outside 1..2"):
        load_labels(tmp_path / "l.csv", 2)


@pytest.mark.skipif(not GENRES.exists(), reason=f"genre file not found at {GENRES}")
def test_ml100k_genres_load():
    labels, classes = load_labels(GENRES, 1008)
    assert len(classes) == 26 and (labels >= 0).sum() == 428  # items with exactly one genre
