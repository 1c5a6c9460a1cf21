"""The model contract (adrec/models/base.py), checked for every registered model.

Parametrised over ``available_models()``, so a model joins this suite as soon as it is
registered (adrec/models/__init__.py). Every model is built small (width 32, 4 diffusion steps where it has them) and run on the
tiny synthetic dataset of conftest.py.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from adrec.checkpoint import load_checkpoint, model_from_checkpoint
from adrec.config import TrainConfig
from adrec.data import BatchIterator, left_pad, training_pairs
from adrec.models import available_models, build_model, model_class
from adrec.train import train_stage
from conftest import make_dataset

MODELS = available_models()
SMALL = {"hidden": 32, "steps": 4, "n_blocks": 1}  # where the model's Args declares the field
N_ITEMS = 30


def small_args(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(model_class(name).Args)}
    return {k: v for k, v in SMALL.items() if k in fields}


def make_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, N_ITEMS, small_args(name))


def first_batch(model, dataset, batch_size: int = 16):
    hists, tgts = training_pairs(dataset, 50, prefixes=(model.train_samples == "prefixes"))
    it = BatchIterator(hists, tgts, max_len=50, batch_size=batch_size,
                       generator=torch.Generator().manual_seed(0),
                       trim=not model.needs_full_width)
    return next(iter(it))


def histories(dataset, n: int = 8, extra: int = 0) -> torch.Tensor:
    """The first ``n`` users' train sequences, trimmed to the longest, plus ``extra`` padding."""
    seqs = [dataset.train[u] for u in range(n)]
    return left_pad(seqs, 50, max(len(s) for s in seqs) + extra)


def scores(model, history, seed: int = 7) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.score_all(history, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_the_baselines():
    assert {"sasrec", "diffurec", "dreamrec"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_class_attributes(name):
    cls = model_class(name)
    assert cls.name == name
    assert dataclasses.is_dataclass(cls.Args)
    assert cls.train_samples in ("sequence", "prefixes")


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_finite_scalar_with_gradient(name, tiny):
    model = make_model(name)
    model.train()
    losses = model.loss(first_batch(model, tiny))
    assert "loss" in losses
    for key, value in losses.items():
        assert value.ndim == 0, key
        assert math.isfinite(value.item()), key
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    table = model.embedding_parameters()[0]
    assert table.grad is not None and table.grad.abs().sum() > 0  # the loss reaches the items


@pytest.mark.parametrize("name", MODELS)
def test_score_all_shape_includes_padding_row(name, tiny):
    model = make_model(name)
    s = scores(model, histories(tiny))
    assert s.shape == (8, N_ITEMS + 1)
    assert torch.isfinite(s).all()


@pytest.mark.parametrize("name", MODELS)
def test_score_all_is_deterministic_for_a_generator_seed(name, tiny):
    model = make_model(name)
    h = histories(tiny)
    torch.manual_seed(123)  # the global RNG must not matter at inference
    a = scores(model, h, seed=3)
    torch.manual_seed(456)
    b = scores(model, h, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_item_embeddings_are_the_table_without_padding(name):
    model = make_model(name)
    E = model.item_embeddings()
    table = model.embedding_parameters()[0]
    assert E.shape == (N_ITEMS, 32)
    assert torch.equal(E, table[1:].detach())
    assert any(table is p for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_extra_left_padding_changes_nothing_with_the_correct_mask(name, tiny):
    model = make_model(name)
    if getattr(model.args, "attention_mask", None) != "correct":
        pytest.skip("model does not claim padding invariance")
    assert not model.needs_full_width
    narrow = histories(tiny)
    wide = histories(tiny, extra=5)
    assert wide.shape[1] == narrow.shape[1] + 5 <= 50
    assert torch.allclose(scores(model, narrow), scores(model, wide), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_official_mask_needs_full_width(name):
    if "attention_mask" not in {f.name for f in dataclasses.fields(model_class(name).Args)}:
        pytest.skip("model has no attention-mask option")
    model = build_model(name, N_ITEMS, {**small_args(name), "attention_mask": "official"})
    assert model.needs_full_width


@pytest.mark.parametrize("name", MODELS)
def test_one_epoch_writes_a_checkpoint_that_reproduces_scores(name, tmp_path):
    data = make_dataset(n_users=16, n_items=N_ITEMS, max_len=8)
    model = make_model(name)
    cfg = TrainConfig(epochs=1, batch_size=64, eval_every=1, device="cpu", seed=0)
    result = train_stage(model, data, cfg, tmp_path, stage=name, progress=False)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["model"] == name and ckpt["epoch"] == 1
    for protocol in ("strict", "official"):
        assert set(ckpt["metrics"][protocol]) == {"valid", "test"}
    assert torch.equal(ckpt["item_embeddings"], model.item_embeddings().cpu())
    again = model_from_checkpoint(ckpt)
    h = histories(data)
    assert torch.equal(scores(model, h), scores(again, h))


def _data_parallel_shares(batch, world: int = 3):
    """The rows each of ``world`` DDP ranks trains on; DDP's gradient mean x the rank weight
    (``world``) is the plain sum of the shares' gradients, what ``grads`` below adds up."""
    from adrec.distributed import DistInfo, shard

    shares = [shard(batch, DistInfo(r, world, r)) for r in range(world)]
    assert {w for _, w in shares} == {float(world)}
    return [part for part, _ in shares]


@pytest.mark.parametrize("sharing", ["micro-batches", "sorted-cells", "ddp-shares"])
@pytest.mark.parametrize("name", MODELS)
def test_micro_batches_add_up_to_the_whole_batch_gradient(name, sharing, tiny, monkeypatch):
    """Gradient accumulation (TrainConfig.micro_batch) and data-parallel shares are exact: the
    losses of the parts are shares of the whole batch's mean (per-token and per-sequence terms
    alike), so their gradients sum to the whole batch's."""
    # deterministic forward: no dropout, and every random draw of the losses replaced by zeros
    monkeypatch.setattr(torch, "randint", lambda lo, hi, shape, **kw: torch.zeros(
        shape, dtype=torch.long, device=kw.get("device")))
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.zeros_like(x))
    monkeypatch.setattr(torch, "randn", lambda *shape, **kw: torch.zeros(
        *shape, device=kw.get("device")))
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.ones(
        *shape, device=kw.get("device")))
    model = make_model(name)
    model.eval()
    batch = first_batch(model, tiny, batch_size=13)

    def grads(parts):
        model.zero_grad(set_to_none=True)
        total = {}
        for part in parts:
            losses = model.loss(part)
            losses["loss"].backward()
            total = {k: total.get(k, 0.0) + float(v.detach()) for k, v in losses.items()}
        return total, {n: p.grad.clone() for n, p in model.named_parameters()
                       if p.grad is not None}

    whole_losses, whole = grads([batch])
    if sharing == "micro-batches":
        parts = batch.split(4)
        assert [p.history.shape[0] for p in parts] == [4, 4, 4, 1]
    elif sharing == "sorted-cells":  # the trainer's CPU auto passes: sorted, trimmed rows
        parts = batch.split_cells(60, trim=not model.needs_full_width)
        assert len(parts) > 1 and sum(len(p.history) for p in parts) == 13
        if not model.needs_full_width:
            assert len({p.history.shape[1] for p in parts}) > 1
    else:
        parts = _data_parallel_shares(batch)
        assert [p.history.shape[0] for p in parts] == [5, 4, 4]
    micro_losses, micro = grads(parts)
    assert micro_losses == pytest.approx(whole_losses, rel=1e-5)
    assert whole.keys() == micro.keys() and whole
    for n in whole:
        torch.testing.assert_close(micro[n], whole[n], rtol=1e-4, atol=1e-6, msg=n)


def test_split_keeps_the_whole_batch_totals(tiny):
    batch = first_batch(make_model("sasrec"), tiny, batch_size=13)
    assert batch.split(0) == [batch] and batch.split(13) == [batch]
    parts = batch.split(5)
    assert torch.equal(torch.cat([p.history for p in parts]), batch.history)
    assert {(p.n_rows, p.n_tokens) for p in parts} == {(13, int((batch.target > 0).sum()))}


def test_micro_batch_rows_auto_explicit_and_pcgrad():
    from adrec.train import micro_batch_rows

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    model = make_model("sasrec")
    assert micro_batch_rows(model, TrainConfig(), cpu) == 64       # width max_len = 50
    assert micro_batch_rows(model, TrainConfig(), cpu, width=8) == 400  # short sequences
    assert micro_batch_rows(model, TrainConfig(), cuda, width=50) == 0
    assert micro_batch_rows(model, TrainConfig(micro_batch=8), cuda) == 8
    if "adrec" in MODELS:
        pc = build_model("adrec", N_ITEMS, {**small_args("adrec"), "pcgrad": True})
        assert micro_batch_rows(pc, TrainConfig(micro_batch=8), cpu) == 0


# ------------------------------------------------------------------------------------------
# the registry and the model files' place at the bottom of the import graph


def test_registry_lists_every_model():
    assert available_models() == ["sasrec", "stage1", "adrec", "diffurec", "dreamrec"]
    for name in available_models():
        assert model_class(name).name == name
    with pytest.raises(ValueError, match="unknown model 'nope'.*sasrec"):
        model_class("nope")


def test_a_model_that_fails_to_import_is_an_error_not_a_missing_model(monkeypatch):
    """Regression: the registry caught ModuleNotFoundError and dropped the model from
    ``available_models()``, so a broken model also vanished from this suite unnoticed."""
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "adrec.models.dreamrec", None)  # its import now fails
    monkeypatch.delitem(sys.modules, "adrec.models")                 # re-run the registry
    with pytest.raises(ImportError, match="adrec.models.dreamrec"):
        importlib.import_module("adrec.models")


def test_model_files_import_no_trainer_checkpoint_or_pipeline():
    """A model file is the ground floor: it imports layers, the schedule and data types, never
    what trains, saves or sequences it (those import the models)."""
    import ast
    from pathlib import Path

    import adrec.models

    forbidden = ("adrec.train", "adrec.checkpoint", "adrec.pipeline", "adrec.evaluate",
                 "collapse_kit", "probes")
    for path in sorted(Path(adrec.models.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"


@pytest.mark.parametrize("name", MODELS)
def test_scores_are_the_representation_against_the_item_table(name, tiny):
    """score_all = represent @ table.T: the user vectors `export --what users` writes are the
    ones that rank the items."""
    model = make_model(name)
    model.eval()
    h = histories(tiny)
    with torch.no_grad():
        rep = model.represent(h, generator=torch.Generator().manual_seed(7))
    assert rep.shape == (8, 32)
    table = model.embedding_parameters()[0].detach()
    assert torch.allclose(scores(model, h, seed=7), rep @ table.T, atol=1e-6, rtol=1e-6)
