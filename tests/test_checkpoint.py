"""The checkpoint format: round trip, weights_only loading, atomic writes, bad files."""
import pickle

import pytest
import torch

from adrec.checkpoint import (atomic_save, load_checkpoint, make_checkpoint,
                              model_from_checkpoint)
from adrec.config import TrainConfig
from adrec.models import build_model
from tests.conftest import make_dataset


def _ckpt(tmp_path):
    ds = make_dataset()
    torch.manual_seed(0)
    m = build_model("sasrec", ds.n_items, {"max_len": 8})
    path = atomic_save(make_checkpoint(m, dataset=ds.describe(), config=TrainConfig(),
                                       stage="sasrec", epoch=3), tmp_path / "m.pt")
    return m, path


def test_round_trip_reproduces_scores(tmp_path):
    m, path = _ckpt(tmp_path)
    raw = torch.load(path, weights_only=True)  # plain tensors and primitives only
    assert raw["format"] == "collapse-kit-checkpoint" and raw["epoch"] == 3
    assert raw["item_embeddings"].shape == (30, 128)
    torch.testing.assert_close(raw["item_embeddings"], m.item_embedding.weight[1:])
    m2 = model_from_checkpoint(load_checkpoint(path))
    h = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]])
    torch.testing.assert_close(m.eval().score_all(h), m2.eval().score_all(h))


def test_atomic_save_leaves_nothing_on_failure(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(Exception):
        atomic_save({"x": Boom()}, tmp_path / "a.pt")
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoints(tmp_path):
    _, path = _ckpt(tmp_path)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(trunc)
    evil = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(ValueError, match="could run code|not a readable"):
        load_checkpoint(evil)
    foreign = tmp_path / "foreign.pt"
    torch.save({"w": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a collapse-kit checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_shape_is_reported(tmp_path):
    _, path = _ckpt(tmp_path)
    ck = load_checkpoint(path)
    ck["dataset"]["n_items"] = 31
    with pytest.raises(ValueError, match="shape"):
        model_from_checkpoint(ck)


def test_stripped_checkpoint_keeps_table_and_refuses_evaluation(tmp_path):
    from adrec.checkpoint import strip_weights

    _, path = _ckpt(tmp_path)
    light = strip_weights(load_checkpoint(path))
    p2 = atomic_save(light, tmp_path / "light.pt")
    ck = load_checkpoint(p2)
    assert ck["state_dict"] == {} and ck["item_embeddings"].shape == (30, 128)
    with pytest.raises(ValueError, match="no model weights"):
        model_from_checkpoint(ck)


def test_trained_on_follows_the_model_device(tmp_path):
    """Regression: a checkpoint made outside the trainer (ADRec's best.pt) said 'CPU' for GPU
    runs because the device defaulted to cpu instead of the model's."""
    from adrec.checkpoint import make_checkpoint

    m = build_model("sasrec", 5, {"hidden": 8, "n_heads": 2, "max_len": 4})
    ck = make_checkpoint(m, dataset={"name": "x", "n_items": 5, "n_users": 1}, config={},
                         stage="best", epoch=1)
    assert ck["trained_on"].startswith("CPU")
    ck = make_checkpoint(m, dataset={"name": "x", "n_items": 5, "n_users": 1}, config={},
                         stage="best", epoch=1, trained_on="NVIDIA H200")
    assert ck["trained_on"] == "NVIDIA H200"


def test_the_format_table_lists_exactly_what_is_written(tmp_path):
    """adrec/checkpoint.py's docstring is the one description of the format: its table names
    every key make_checkpoint writes plus the optional stripped flags, and nothing else."""
    import re

    import adrec.checkpoint as ck
    from adrec.checkpoint import strip_weights

    documented = re.findall(r"^([a-z_]+)\s{2,}\S", ck.__doc__, flags=re.M)
    written = load_checkpoint(_ckpt(tmp_path)[1])
    assert set(documented) == set(written) | set(ck.OPTIONAL)
    assert set(ck.REQUIRED) <= set(written) and ck.TABLE_KEY in ck.REQUIRED
    assert strip_weights(written)["weights_stripped"] is True  # an optional key really written


def test_collapse_kit_io_reads_the_same_format_constants():
    """collapse_kit.io may not import adrec, so it keeps copies; they must equal adrec's."""
    import adrec.checkpoint as ck
    import collapse_kit.io as io

    assert (io.PROJECT_FORMAT, io.PROJECT_FORMAT_VERSION, io.PROJECT_TABLE_KEY) == \
        (ck.FORMAT, ck.FORMAT_VERSION, ck.TABLE_KEY)


def test_readers_that_sniff_the_file_kind_read_it_once(tmp_path, monkeypatch):
    """load_stage1_embedding looks at the file's kind, then validates it with
    checked_checkpoint instead of loading it a second time (it used to read it twice)."""
    from adrec.checkpoint import checked_checkpoint
    from adrec.pipeline import load_stage1_embedding

    m, path = _ckpt(tmp_path)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    table = load_stage1_embedding(path, n_items=30, hidden=128)
    assert len(calls) == 1
    torch.testing.assert_close(table, m.item_embedding.weight.detach())
    # the same checks, and messages, as load_checkpoint on what safe_load returned
    with pytest.raises(ValueError, match="is not a collapse-kit checkpoint"):
        checked_checkpoint({"item_embedding.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match=r"is missing fields \['format_version', 'model'"):
        checked_checkpoint({"format": "collapse-kit-checkpoint"}, path)
