"""The one trainer: determinism, logging, early stopping, freezing and resume equivalence."""
import json

import pytest
import torch

import adrec.train as train_mod
from adrec.checkpoint import load_checkpoint, safe_load
from adrec.config import TrainConfig
from adrec.models import build_model
from adrec.train import train_stage
from tests.conftest import make_dataset

CFG = dict(epochs=6, batch_size=16, eval_every=2, patience=2, max_len=10, seed=7,
           device="cpu")


def _run(tmp_path, name="run", resume=False, callbacks=(), **kw):
    ds = make_dataset()
    torch.manual_seed(7)
    model = build_model("sasrec", ds.n_items, {"max_len": 10, "hidden": 16, "n_heads": 2})
    cfg = TrainConfig(**{**CFG, **kw})
    return train_stage(model, ds, cfg, tmp_path / name, stage="sasrec", resume=resume,
                       progress=False, callbacks=callbacks), model


def test_the_same_seed_gives_the_same_run(tmp_path):
    a, ma = _run(tmp_path, "a")
    b, mb = _run(tmp_path, "b")
    assert a.metrics["strict"] == b.metrics["strict"]
    for (k, v), w in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(v, w), k


def test_epoch_log_has_one_record_per_epoch_and_validation_every_eval_every(tmp_path):
    _run(tmp_path, "a")
    rows = [json.loads(x) for x in (tmp_path / "a" / "sasrec.log.jsonl").read_text().split("\n")
            if x]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    assert all("loss" in r and "seconds" in r for r in rows)
    assert [r["epoch"] for r in rows if "valid" in r] == [e for e in (2, 4, 6) if e <= len(rows)]


def test_a_finished_stage_leaves_its_checkpoint_and_no_resume_file(tmp_path):
    a, _ = _run(tmp_path, "a")
    ck = load_checkpoint(a.checkpoint)
    assert ck["stage"] == "sasrec" and set(ck["metrics"]) >= {"strict", "official"}
    assert not (tmp_path / "a" / "sasrec.resume.pt").exists()


def test_loss_decreases(tmp_path):
    r, _ = _run(tmp_path, epochs=6, patience=10)
    assert r.history[-1]["loss"] < r.history[0]["loss"]


class _Kill:
    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_evaluate(self, *, model, stage, epoch):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kill_epoch, resume_seconds, saved_epoch",
                         [(2, None, None), (4, None, None), (4, 0.0, 3), (4, 3600.0, 1)])
def test_resume_after_kill_equals_uninterrupted(tmp_path, kill_epoch, resume_seconds,
                                                saved_epoch):
    """Killed in an epoch's evaluation (before its resume write), the run resumes from the last
    written state, re-runs the epochs after it and ends the same. The first epoch always writes
    the state, later ones only after resume_seconds (None: the default)."""
    kw = {} if resume_seconds is None else {"resume_seconds": resume_seconds}
    full, m_full = _run(tmp_path, "full", patience=10)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "killed", callbacks=[_Kill(kill_epoch)], patience=10, **kw)
    assert (tmp_path / "killed" / "sasrec.resume.pt").exists()
    assert not (tmp_path / "killed" / "sasrec.pt").exists()
    if saved_epoch is not None:
        assert safe_load(tmp_path / "killed" / "sasrec.resume.pt")["state"]["epoch"] == saved_epoch
    resumed, m_res = _run(tmp_path, "killed", resume=True, patience=10, **kw)
    assert resumed.metrics["strict"] == full.metrics["strict"]
    for v, w in zip(m_full.state_dict().values(), m_res.state_dict().values()):
        assert torch.equal(v, w)
    epochs = [r["epoch"] for r in resumed.history]
    assert epochs == sorted(set(epochs))  # no duplicated log lines after resume
    assert epochs == list(range(1, resumed.epochs + 1))


def test_negative_resume_seconds_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="resume_seconds"):
        _run(tmp_path, resume_seconds=-1.0)


def test_resume_mid_epoch(tmp_path, monkeypatch):
    """A kill inside an epoch (between batches) resumes from the last finished epoch."""
    full, _ = _run(tmp_path, "full", patience=10)
    calls = {"n": 0}
    real = train_mod.BatchIterator.__iter__

    def dying_iter(self):
        for i, b in enumerate(real(self)):
            calls["n"] += 1
            if calls["n"] == 9:
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(train_mod.BatchIterator, "__iter__", dying_iter)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "k", patience=10)
    monkeypatch.setattr(train_mod.BatchIterator, "__iter__", real)
    resumed, _ = _run(tmp_path, "k", resume=True, patience=10)
    assert resumed.metrics["strict"] == full.metrics["strict"]


def test_existing_run_needs_resume(tmp_path):
    _run(tmp_path, "x", epochs=2)
    with pytest.raises(FileExistsError, match="resume"):
        _run(tmp_path, "x", epochs=2)
    again, _ = _run(tmp_path, "x", epochs=2, resume=True)  # finished stage is reused
    assert again.epochs == 2


def test_early_stopping_and_selection(tmp_path):
    r, _ = _run(tmp_path, epochs=40, eval_every=1, patience=2, lr=0.3)
    evals = [h for h in r.history if "valid" in h]
    best = max(evals, key=lambda h: h["valid"]["NDCG@20"])
    assert r.metrics["best_epoch"] == best["epoch"]
    if r.epochs < 40:  # stopped early: the last `patience` evaluations did not improve
        assert all(h["valid"]["NDCG@20"] <= best["valid"]["NDCG@20"] for h in evals[-2:])
        assert r.epochs - r.metrics["best_epoch"] == 2


def test_real_freeze_keeps_embedding(tmp_path):
    ds = make_dataset()
    torch.manual_seed(0)
    m = build_model("stage1", ds.n_items, {"max_len": 10, "hidden": 16, "n_heads": 2})
    before = m.item_embedding.weight.detach().clone()
    enc = m.encoder.blocks[0].ffn.w1.weight.detach().clone()
    train_stage(m, ds, TrainConfig(**CFG), tmp_path, stage="s2", freeze_embedding=True,
                select=False, progress=False)
    assert torch.equal(m.item_embedding.weight, before)
    assert not torch.equal(m.encoder.blocks[0].ffn.w1.weight, enc)
    assert m.item_embedding.weight.requires_grad  # unfrozen again for the next stage


def test_matmul_precision_applies_to_training_only_and_is_restored(tmp_path, monkeypatch):
    """matmul_precision=medium holds during the training passes; every evaluation (selection
    and the final valid/test passes) runs at "highest"; the caller's setting comes back."""
    from adrec.models.sasrec import SASRec

    seen = {"loss": set(), "score": set()}
    loss, score = SASRec.loss, SASRec.score_all

    def spy_loss(self, batch):
        seen["loss"].add(torch.get_float32_matmul_precision())
        return loss(self, batch)

    def spy_score(self, *a, **k):
        seen["score"].add(torch.get_float32_matmul_precision())
        return score(self, *a, **k)

    monkeypatch.setattr(SASRec, "loss", spy_loss)
    monkeypatch.setattr(SASRec, "score_all", spy_score)
    before = torch.get_float32_matmul_precision()
    r, _ = _run(tmp_path, epochs=2, eval_every=1, matmul_precision="medium")
    assert seen == {"loss": {"medium"}, "score": {"highest"}}
    assert torch.get_float32_matmul_precision() == before
    assert load_checkpoint(r.checkpoint)["config"]["matmul_precision"] == "medium"


def test_medium_on_cpu_multiplies_in_bfloat16_in_training_passes_only(tmp_path, monkeypatch):
    """On a CPU "medium" really computes the training forward's matrix products in bfloat16
    (torch 2.13's float32 products ignore set_float32_matmul_precision there: regression for
    runs at "medium" that were bit-identical to "highest"); parameters stay float32 and every
    evaluation multiplies in float32."""
    from adrec.models.sasrec import SASRec

    seen = {"loss": set(), "score": set()}
    lin = torch.nn.Linear(4, 4)
    loss, score = SASRec.loss, SASRec.score_all

    def spy_loss(self, batch):
        seen["loss"].add(lin(torch.ones(1, 4)).dtype)
        out = loss(self, batch)
        assert out["loss"].dtype == torch.float32  # the item cross-entropy stays float32
        return out

    def spy_score(self, *a, **k):
        seen["score"].add(lin(torch.ones(1, 4)).dtype)
        return score(self, *a, **k)

    monkeypatch.setattr(SASRec, "loss", spy_loss)
    monkeypatch.setattr(SASRec, "score_all", spy_score)
    r, model = _run(tmp_path / "medium", epochs=2, eval_every=1, matmul_precision="medium")
    assert seen == {"loss": {torch.bfloat16}, "score": {torch.float32}}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    seen = {"loss": set(), "score": set()}
    _, ref = _run(tmp_path / "highest", epochs=2, eval_every=1, matmul_precision="highest")
    assert seen == {"loss": {torch.float32}, "score": {torch.float32}}
    w, w_ref = model.encoder.blocks[0].ffn.w1.weight, ref.encoder.blocks[0].ffn.w1.weight
    assert not torch.equal(w, w_ref)  # the products really changed precision...
    assert torch.allclose(w, w_ref, atol=1e-2)  # ...by rounding, not by training differently


def test_bf16_products_is_a_no_op_off_the_cpu_and_below_medium():
    from adrec.config import bf16_products

    lin = torch.nn.Linear(4, 4)
    for precision, device in [("highest", "cpu"), ("high", "cpu"), ("medium", "cuda"),
                              ("high", "cuda")]:
        with bf16_products(precision, device):
            assert lin(torch.ones(1, 4)).dtype == torch.float32
    with bf16_products("medium", "cpu"):
        assert lin(torch.ones(1, 4)).dtype == torch.bfloat16
    assert lin(torch.ones(1, 4)).dtype == torch.float32  # and nothing leaks out of the block


def test_cpu_bf16_pads_linear_rows_without_changing_them():
    """Inside bf16_products("medium", "cpu") a 2-D Linear input is padded to a multiple of
    BF16_ROW_MULTIPLE rows and cut back: the outputs (and the input's gradient) are those of
    the unpadded bfloat16 product, bit for bit."""
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    from adrec.config import BF16_ROW_MULTIPLE, bf16_products

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 48)
    seen = []

    class Shapes(TorchFunctionMode):  # records the row counts F.linear really gets
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.linear:
                seen.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    for rows in (1, 63, 64, 65, 200):
        x = torch.randn(rows, 16, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = lin(x)
        (gx_want,) = torch.autograd.grad(want.float().sum(), x)
        seen.clear()
        with Shapes(), bf16_products("medium", "cpu"):
            got = lin(x)
        (gx,) = torch.autograd.grad(got.float().sum(), x)
        assert got.shape == (rows, 48) and got.dtype == torch.bfloat16
        assert torch.equal(got, want) and torch.equal(gx, gx_want)
        padded = -(-rows // BF16_ROW_MULTIPLE) * BF16_ROW_MULTIPLE
        assert (padded, 16) in seen  # the product ran at the padded row count
    x3 = torch.randn(2, 5, 16)  # batched (3-D) inputs are left alone
    with bf16_products("medium", "cpu"):
        assert lin(x3).shape == (2, 5, 48)


def test_matmul_precision_rejects_unknown_values():
    from adrec.config import validate

    with pytest.raises(ValueError, match="matmul_precision"):
        validate(TrainConfig(matmul_precision="low"))


def test_auto_matmul_precision_resolves_per_device_and_cpu_flags():
    from functools import partial

    from adrec.config import resolve_matmul_precision

    resolve = partial(resolve_matmul_precision, cpu_bf16=True)
    amx = frozenset({"sse2", "avx2", "amx_tile", "amx_bf16"})
    bf16 = frozenset({"avx2", "avx512f", "avx512_bf16"})
    avx2 = frozenset({"sse2", "avx2", "fma"})  # e.g. AMD Zen 2: no bfloat16 units
    assert resolve("auto", "cpu", amx) == resolve("auto", "cpu", bf16) == "medium"
    assert resolve("auto", "cpu", avx2) == resolve("auto", "cpu", frozenset()) == "highest"
    assert resolve("auto", "cuda", avx2) == "high"  # TF32, as the authors' code sets
    assert resolve("auto", "mps") == "highest"
    for explicit in ("highest", "high", "medium"):  # an explicit value is never changed
        assert resolve(explicit, "cpu", amx) == resolve(explicit, "cuda") == explicit


def test_auto_matmul_precision_keeps_float32_on_the_cpu_for_a_model_without_cpu_bf16():
    """Regression: "auto" gave bfloat16 products to every model on a bfloat16 CPU, which made
    DiffuRec's Beauty epoch 1.44x slower and DreamRec's slower too; now only models that declare
    cpu_bf16 get them there (a GPU still gets TF32, an explicit value still wins)."""
    from adrec.config import resolve_matmul_precision as resolve
    from adrec.models import MODELS

    bf16 = frozenset({"avx512_bf16"})
    assert resolve("auto", "cpu", bf16, cpu_bf16=False) == "highest"
    assert resolve("auto", "cuda", bf16, cpu_bf16=False) == "high"
    assert resolve("medium", "cpu", bf16, cpu_bf16=False) == "medium"
    assert {name for name, cls in MODELS.items() if cls.cpu_bf16} == {"sasrec", "stage1", "adrec"}


def test_diffurec_at_auto_trains_and_records_float32_on_a_bfloat16_cpu(tmp_path, monkeypatch):
    import adrec.config
    from adrec.models.diffurec import DiffuRec

    monkeypatch.setattr(adrec.config, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    seen, loss = set(), DiffuRec.loss
    lin = torch.nn.Linear(4, 4)
    monkeypatch.setattr(DiffuRec, "loss", lambda self, b: seen.add(
        (torch.get_float32_matmul_precision(), lin(torch.ones(1, 4)).dtype)) or loss(self, b))
    ds = make_dataset()
    torch.manual_seed(0)
    model = build_model("diffurec", ds.n_items, {"hidden": 16, "n_heads": 2, "n_blocks": 2,
                                                 "steps": 8})
    r = train_stage(model, ds, TrainConfig(**{**CFG, "epochs": 1, "eval_every": 1}),
                    tmp_path, stage="diffurec", progress=False)
    assert seen == {("highest", torch.float32)}
    assert load_checkpoint(r.checkpoint)["config"]["matmul_precision"] == "highest"


@pytest.mark.parametrize("flags,expected", [({"avx2", "amx_bf16"}, "medium"),
                                            ({"avx2"}, "highest")])
def test_auto_matmul_precision_trains_and_records_what_it_resolved_to(tmp_path, monkeypatch,
                                                                      flags, expected):
    import adrec.config
    from adrec.models.sasrec import SASRec

    monkeypatch.setattr(adrec.config, "cpu_flags", lambda: frozenset(flags))
    seen, loss = set(), SASRec.loss
    monkeypatch.setattr(SASRec, "loss", lambda self, b: seen.add(
        torch.get_float32_matmul_precision()) or loss(self, b))
    r, _ = _run(tmp_path, epochs=2, eval_every=1, matmul_precision="auto")
    assert seen == {expected}
    assert load_checkpoint(r.checkpoint)["config"]["matmul_precision"] == expected
    again, _ = _run(tmp_path, resume=True, epochs=2, eval_every=1, matmul_precision="auto")
    assert again.metrics == r.metrics  # resuming with "auto" on the same machine matches


def test_the_default_precision_is_auto():
    assert TrainConfig().matmul_precision == "auto"


def test_a_planned_auto_precision_matches_any_saved_precision_an_explicit_one_must_match():
    from adrec.train import settings_diff

    saved = {"config": {"matmul_precision": "highest", "lr": 0.001}}
    assert settings_diff(saved, {"config": {"matmul_precision": "auto", "lr": 0.001}}) == []
    assert settings_diff(saved, {"config": {"matmul_precision": "medium", "lr": 0.001}}) == [
        "matmul_precision: 'highest' -> 'medium'"]
    assert settings_diff(saved, {"config": {"matmul_precision": "auto", "lr": 0.01}}) == [
        "lr: 0.001 -> 0.01"]


def test_resuming_at_the_default_compares_the_precision_it_resolves_to(tmp_path, monkeypatch):
    """The trainer resolves "auto" before its settings check: a stage finished at "highest" is
    not silently reused by a default run that would train in bfloat16 here."""
    import adrec.config
    from adrec.train import SettingsMismatch

    monkeypatch.setattr(adrec.config, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    first, _ = _run(tmp_path, epochs=2, eval_every=1, matmul_precision="highest")
    with pytest.raises(SettingsMismatch, match="matmul_precision: 'highest' -> 'medium'"):
        _run(tmp_path, resume=True, epochs=2, eval_every=1)
    again, _ = _run(tmp_path, resume=True, epochs=2, eval_every=1, matmul_precision="highest")
    assert again.metrics == first.metrics


RESUME_STATE_KEYS = {"epoch", "best_state", "running", "selected", "best_epoch", "bad",
                     "stopped", "train_seconds", "eval_seconds"}  # on disk since the first version


def test_stage_state_round_trips_through_the_resume_file(tmp_path):
    """The resume file holds StageState.to_dict(): the plain dict with the keys it has always
    had (a run interrupted under older code resumes), and from_dict reads it back unchanged."""
    from adrec.train import StageState

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "k", callbacks=[_Kill(4)], patience=10, resume_seconds=0.0)
    saved = safe_load(tmp_path / "k" / "sasrec.resume.pt")["state"]
    assert set(saved) == RESUME_STATE_KEYS
    state = StageState.from_dict(saved)
    assert (state.epoch, state.best_epoch, state.bad) == (3, 2, 0)
    assert state.to_dict().keys() == saved.keys()
    for key, value in state.to_dict().items():
        if key == "best_state":
            assert all(torch.equal(value[k], saved[key][k]) for k in saved[key])
        else:
            assert value == saved[key], key


def test_resume_file_with_an_unknown_state_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "k", callbacks=[_Kill(4)], patience=10)
    path = tmp_path / "k" / "sasrec.resume.pt"
    saved = safe_load(path)
    saved["state"]["colour"] = "red"
    torch.save(saved, path)
    with pytest.raises(ValueError, match="not a resume file of this trainer.*colour"):
        _run(tmp_path, "k", resume=True, patience=10)


@pytest.mark.parametrize("name", ["sasrec", "adrec"])  # adrec: the model's own backward
def test_train_epoch_called_directly_equals_the_stage_epoch(tmp_path, name):
    """train_epoch on the trainer's batches, seed and optimizer gives the first epoch of
    train_stage bit for bit: the same weights and the same logged losses."""
    from adrec.data import BatchIterator, training_pairs
    from adrec.train import seed_everything, train_epoch

    ds = make_dataset()
    args = {"max_len": 10, "hidden": 16, "n_heads": 2}
    cfg = TrainConfig(**{**CFG, "epochs": 1, "micro_batch": 8})  # 16-row batches, 2 passes
    torch.manual_seed(7)
    staged = build_model(name, ds.n_items, args)
    r = train_stage(staged, ds, cfg, tmp_path, stage=name, select=False, progress=False)

    torch.manual_seed(7)
    model = build_model(name, ds.n_items, args)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    hists, tgts = training_pairs(ds, cfg.max_len, prefixes=model.train_samples == "prefixes")
    batches = BatchIterator(hists, tgts, max_len=cfg.max_len, batch_size=cfg.batch_size,
                            generator=torch.Generator().manual_seed(cfg.seed),
                            trim=not model.needs_full_width)
    seed_everything(cfg.seed)  # the trainer seeds after building its batches
    epoch = train_epoch(model, batches, opt, cfg)
    assert epoch.losses and epoch.seconds > 0
    assert epoch.losses == {k: r.history[0][k] for k in epoch.losses}
    for (k, v), w in zip(staged.state_dict().items(), model.state_dict().values()):
        assert torch.equal(v, w), k


def test_train_stage_leaves_the_allocator_policy_to_its_caller(tmp_path, monkeypatch):
    """retain_freed_memory is process-wide and irreversible: the library never calls it."""
    def refuse():
        raise AssertionError("train_stage called retain_freed_memory")

    monkeypatch.setattr(train_mod, "retain_freed_memory", refuse)
    r, _ = _run(tmp_path, epochs=1)
    assert r.epochs == 1
