"""ADRec: token-level noise, last-token inference, the KV cache, the three stages, the switches."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adrec.checkpoint import file_sha256, load_checkpoint
from adrec.config import TrainConfig
from adrec.data import Batch, SequenceDataset, left_pad
from adrec.models import build_model
from adrec.models.adrec import ADRec, ADRecArgs
from adrec.pipeline import train_adrec

SMALL = dict(hidden=16, steps=8)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster and immune to a busy shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_dataset(n_users: int = 40, n_items: int = 30, seed: int = 0) -> SequenceDataset:
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for _ in range(n_users):
        s = rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(5, 14)), replace=False)
        train.append(s[:-2].astype(np.int64))
        valid.append(int(s[-2]))
        test.append(int(s[-1]))
    return SequenceDataset("tiny", n_items, train, np.array(valid), np.array(test),
                           fingerprint="tiny")


def tiny_batch(ds: SequenceDataset, width: int = 10) -> Batch:
    return Batch(left_pad([s[:-1] for s in ds.train], width),
                 left_pad([s[1:] for s in ds.train], width))


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, eval_every=1, max_len=10, device="cpu", seed=0)
    return TrainConfig(**{**base, **kw})


def trained(args: ADRecArgs, ds: SequenceDataset, steps: int = 5) -> ADRec:
    torch.manual_seed(0)
    model = ADRec(args, ds.n_items)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        losses = model.loss(tiny_batch(ds))
        opt.zero_grad()
        model.backward(losses)
        opt.step()
    return model.eval()


# ------------------------------------------------------------------------------------------
# token-level noise in training


def test_per_token_noise_and_clean_padding(monkeypatch):
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = ADRec(ADRecArgs(**SMALL), ds.n_items)
    seen = {}
    q_sample = model.schedule.q_sample

    def spy(x0, t, noise=None, mask=None):
        seen.update(x0=x0, t=t, mask=mask)
        seen["xt"] = q_sample(x0, t, noise, mask)
        return seen["xt"]

    monkeypatch.setattr(model.schedule, "q_sample", spy)
    batch = tiny_batch(ds)
    model.loss(batch)
    t, pad = seen["t"], batch.target == 0
    assert t.shape == batch.target.shape                    # one timestep per token: (B, L)
    assert (t[pad] == 0).all()
    torch.testing.assert_close(seen["xt"][pad], seen["x0"][pad], rtol=0, atol=0)
    assert not torch.allclose(seen["xt"][~pad], seen["x0"][~pad])
    rows_with_distinct_t = sum(len(set(t[b][~pad[b]].tolist())) > 1 for b in range(len(t)))
    assert rows_with_distinct_t > len(t) // 2               # noise levels differ within sequences


def test_loss_merges_ce_and_mse_by_sum_or_mean():
    ds = tiny_dataset()
    batch = tiny_batch(ds)
    for merge, factor in (("sum", 1.0), ("mean", 0.5)):
        torch.manual_seed(0)
        out = ADRec(ADRecArgs(**SMALL, loss_merge=merge), ds.n_items).loss(batch)
        torch.testing.assert_close(out["loss"], factor * (out["ce"] + out["mse"]))


def test_without_mse_the_loss_is_the_cross_entropy():
    ds = tiny_dataset()
    torch.manual_seed(0)
    out = ADRec(ADRecArgs(**SMALL, use_mse=False), ds.n_items).loss(tiny_batch(ds))
    assert "mse" not in out and out["loss"] is out["ce"]


def test_mse_is_masked_per_sequence_mean():
    ds = tiny_dataset()
    batch = tiny_batch(ds)
    torch.manual_seed(0)
    model = ADRec(ADRecArgs(**SMALL), ds.n_items)
    torch.manual_seed(1)
    x0_hat, x0, keep = model.forward_train(batch)
    torch.manual_seed(1)
    mse = model.loss(batch)["mse"]
    per_seq = [((x0_hat[b] - x0[b]) ** 2).mean(-1)[keep[b]].mean() for b in range(len(keep))]
    torch.testing.assert_close(mse, torch.stack(per_seq).mean())


def test_time_embedding_table_equals_per_token_mlp():
    """The T-row table gathered by t gives the per-token MLP's values and parameter gradients."""
    from adrec.models.layers import timestep_embedding

    torch.manual_seed(0)
    model = ADRec(ADRecArgs(**SMALL), 30)
    t = torch.randint(0, SMALL["steps"], (6, 9))
    w = torch.randn(6, 9, SMALL["hidden"])
    got = model.time_embedding(t)
    (got * w).sum().backward()
    grads = [p.grad.clone() for p in model.time_mlp.parameters()]
    model.zero_grad()
    want = model.time_mlp(timestep_embedding(t, SMALL["hidden"], scale=1000.0 / SMALL["steps"]))
    (want * w).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for g, p in zip(grads, model.time_mlp.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# inference


def test_inference_noises_only_the_last_position(monkeypatch):
    ds = tiny_dataset()
    model = trained(ADRecArgs(**SMALL), ds)
    history = left_pad(ds.train, 10)
    calls = []
    aggregate = model.aggregate

    def spy(c, xt, t):
        calls.append((xt.clone(), t.clone()))
        return aggregate(c, xt, t)

    monkeypatch.setattr(model, "aggregate", spy)
    model.score_all(history, torch.Generator().manual_seed(0), cache=False)
    clean = model.item_embedding(history[:, 1:])
    assert [int(t[0, -1]) for _, t in calls] == list(range(7, -1, -1))  # T reverse steps
    for xt, t in calls:
        assert (t[:, :-1] == 0).all()                                   # t = [0, ..., 0, i]
        torch.testing.assert_close(xt[:, :-1], clean, rtol=0, atol=0)   # history stays clean


@pytest.mark.parametrize("mask", ["correct", "official"])
@pytest.mark.parametrize("denoiser", ["attention", "mlp"])
def test_cached_equals_uncached(mask, denoiser):
    ds = tiny_dataset()
    model = trained(ADRecArgs(hidden=32, steps=32, attention_mask=mask, denoiser=denoiser), ds)
    history = left_pad([np.append(s, v) for s, v in zip(ds.train, ds.valid)], 10)
    fast = model.score_all(history, torch.Generator().manual_seed(3))
    slow = model.score_all(history, torch.Generator().manual_seed(3), cache=False)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)


def test_cached_equals_uncached_full_scale_float64():
    # the paper's sizes (D = 128, T = 32, L = 50) in float64: the cache is exact algebra
    ds = tiny_dataset(n_users=24, n_items=200)
    long = [np.random.default_rng(u).choice(np.arange(1, 201), 60, replace=False)
            for u in range(24)]
    # float64 by default so the attention bias is float64 too (torch 2.13's CPU SDPA gives
    # wrong results for float64 inputs with a float32 mask)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = ADRec(ADRecArgs(), ds.n_items).eval()
        history = left_pad(long[:12] + [s[:20] for s in long[12:]], 50)
        fast = model.score_all(history, torch.Generator().manual_seed(3))
        slow = model.score_all(history, torch.Generator().manual_seed(3), cache=False)
    finally:
        torch.set_default_dtype(default)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-9)
    # float32 at this scale (scores up to about 40): within 1e-5 of the largest score
    model = model.float()
    fast = model.score_all(history, torch.Generator().manual_seed(3))
    slow = model.score_all(history, torch.Generator().manual_seed(3), cache=False)
    assert float((fast - slow).abs().max()) <= 1e-5 * float(slow.abs().max())


def test_cached_single_item_history():
    ds = tiny_dataset()
    model = trained(ADRecArgs(**SMALL), ds)
    history = torch.tensor([[0, 0, 5], [0, 0, 7]])[:, -1:]  # width 1: nothing to cache
    fast = model.score_all(history, torch.Generator().manual_seed(0))
    slow = model.score_all(history, torch.Generator().manual_seed(0), cache=False)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)


def test_scores_reproducible_with_generator():
    ds = tiny_dataset()
    model = trained(ADRecArgs(**SMALL), ds)
    history = left_pad(ds.train, 10)
    a = model.score_all(history, torch.Generator().manual_seed(5))
    b = model.score_all(history, torch.Generator().manual_seed(5))
    c = model.score_all(history, torch.Generator().manual_seed(6))
    assert a.shape == (len(ds.train), ds.n_items + 1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


# ------------------------------------------------------------------------------------------
# PCGrad


def test_pcgrad_removes_conflicts():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = ADRec(ADRecArgs(**SMALL, pcgrad=True), ds.n_items)
    losses = model.loss(tiny_batch(ds))
    params = [p for p in model.parameters() if p.requires_grad]
    g = [torch.cat([x.reshape(-1) for x in torch.autograd.grad(losses[k], params,
                                                               retain_graph=True)])
         for k in ("ce", "mse")]
    model.backward(losses)
    merged = torch.cat([p.grad.reshape(-1) for p in params])
    if g[0] @ g[1] < 0:  # the projected sum never opposes either task (two-task PCGrad)
        assert merged @ g[0] >= -1e-6 and merged @ g[1] >= -1e-6
    else:
        torch.testing.assert_close(merged, g[0] + g[1])


# ------------------------------------------------------------------------------------------
# the three stages


def test_three_stage_smoke_run_and_parents(tmp_path):
    ds = tiny_dataset()
    result = train_adrec(ds, tiny_cfg(), tmp_path, model_args=SMALL, progress=False)
    ck = {s: load_checkpoint(tmp_path / f"{s}.pt") for s in ("stage1", "stage2", "stage3", "best")}
    assert ck["stage1"]["model"] == "stage1" and ck["stage1"]["parent"] is None
    for stage, parent in (("stage2", "stage1"), ("stage3", "stage2"), ("best", "stage3")):
        assert ck[stage]["model"] == "adrec" and ck[stage]["stage"] == stage
        rec = ck[stage]["parent"]
        assert rec["stage"] == parent and rec["path"] == str(tmp_path / f"{parent}.pt")
        assert rec["sha256"] == file_sha256(tmp_path / f"{parent}.pt")
    assert ck["stage2"]["epoch"] == 2 and ck["stage3"]["epoch"] == 2
    assert ck["best"]["model_args"]["pretrain"] is True
    assert set(ck["best"]["metrics"]["stages"]) == {"stage1", "stage2", "stage3"}
    assert result.checkpoint == tmp_path / "best.pt"
    assert set(result.summary()["test"]) >= {"HR@20", "NDCG@20"}
    # stage 2 starts from the stage-1 table
    torch.testing.assert_close(ck["stage1"]["item_embeddings"], ck["stage2"]["item_embeddings"])


def test_best_checkpoint_records_the_precision_auto_resolved_to(tmp_path, monkeypatch):
    """best.pt carries the stages' config: "auto" as it resolved (regression: best.pt said
    "auto" while stage1/2/3.pt said "medium")."""
    import adrec.config

    monkeypatch.setattr(adrec.config, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    train_adrec(tiny_dataset(), tiny_cfg(matmul_precision="auto"), tmp_path, model_args=SMALL,
                progress=False)
    for stage in ("stage1", "stage2", "stage3", "best"):
        assert load_checkpoint(tmp_path / f"{stage}.pt")["config"]["matmul_precision"] == "medium"


def test_warmup_freezes_embedding_for_real(tmp_path):
    ds = tiny_dataset()
    train_adrec(ds, tiny_cfg(epochs=3, weight_decay=1e-2), tmp_path, model_args=SMALL,
                 progress=False)
    s1, s2, s3 = (load_checkpoint(tmp_path / f"stage{i}.pt")["item_embeddings"] for i in (1, 2, 3))
    torch.testing.assert_close(s2, s1, rtol=0, atol=0)   # no gradient and no weight decay
    assert not torch.equal(s3, s2)                        # stage 3 trains it


def test_leak_weight_decay_parity_moves_frozen_embedding(tmp_path):
    ds = tiny_dataset()
    train_adrec(ds, tiny_cfg(epochs=2), tmp_path, progress=False,
                 model_args={**SMALL, "leak_weight_decay": True})
    s1, s2 = (load_checkpoint(tmp_path / f"stage{i}.pt")["item_embeddings"] for i in (1, 2))
    step = (s2 - s1).abs()
    # Adam normalises the weight-decay-only gradient: about lr per coordinate per step
    n_steps = 2 * -(-len(ds.train) // 16)
    assert 0.5e-3 * n_steps < step.mean() < 1.5e-3 * n_steps


def test_resume_reuses_finished_stages(tmp_path):
    ds = tiny_dataset()
    first = train_adrec(ds, tiny_cfg(), tmp_path, model_args=SMALL, progress=False)
    with pytest.raises(FileExistsError):
        train_adrec(ds, tiny_cfg(), tmp_path, model_args=SMALL, progress=False)
    sha = {s: file_sha256(tmp_path / f"{s}.pt") for s in ("stage1", "stage2", "stage3")}
    again = train_adrec(ds, tiny_cfg(), tmp_path, model_args=SMALL, progress=False, resume=True)
    assert again.metrics["strict"] == first.metrics["strict"]
    assert sha == {s: file_sha256(tmp_path / f"{s}.pt") for s in sha}


def test_resume_interrupted_stage3_matches_uninterrupted(tmp_path):
    ds = tiny_dataset()
    full = train_adrec(ds, tiny_cfg(epochs=3), tmp_path / "a", model_args=SMALL, progress=False)

    class Stop(Exception):
        pass

    class StopInStage3:
        def on_evaluate(self, *, model, stage, epoch):
            if stage == "stage3" and epoch == 2:
                raise Stop

    # callbacks run after the epoch's validation but before its resume state is written:
    # the run resumes from epoch 1 of stage 3
    with pytest.raises(Stop):
        train_adrec(ds, tiny_cfg(epochs=3), tmp_path / "b", model_args=SMALL, progress=False,
                     callbacks=[StopInStage3()])
    assert (tmp_path / "b" / "stage3.resume.pt").exists()
    resumed = train_adrec(ds, tiny_cfg(epochs=3), tmp_path / "b", model_args=SMALL,
                           progress=False, resume=True)
    assert resumed.metrics["strict"] == full.metrics["strict"]


def official_state_dict(table: torch.Tensor) -> dict:
    """A minimal state dict with the authors' key names (section 3.3)."""
    return {"item_embedding.weight": table,
            "trm_encoder.transformer_blocks.0.attention.w_layer.weight": torch.zeros(4, 4)}


def test_stage1_from_official_state_dict(tmp_path):
    ds = tiny_dataset()
    table = torch.randn(ds.n_items + 1, 16)
    path = tmp_path / "pretrain.pth"
    torch.save(official_state_dict(table), path)
    train_adrec(ds, tiny_cfg(), tmp_path / "run", model_args=SMALL, progress=False,
                 stage1=path)
    assert not (tmp_path / "run" / "stage1.pt").exists()
    s2 = load_checkpoint(tmp_path / "run" / "stage2.pt")
    assert s2["parent"] == {"path": str(path), "stage": "stage1", "sha256": file_sha256(path)}
    torch.testing.assert_close(s2["item_embeddings"], table[1:])


def test_stage1_checkpoint_wrong_shape_is_an_error(tmp_path):
    ds = tiny_dataset()
    path = tmp_path / "pretrain.pth"
    torch.save(official_state_dict(torch.randn(ds.n_items + 5, 16)), path)
    with pytest.raises(ValueError, match="shape"):
        train_adrec(ds, tiny_cfg(), tmp_path / "run", model_args=SMALL, progress=False,
                     stage1=path)


# ------------------------------------------------------------------------------------------
# ablation switches


SWITCHES = [
    {"use_mse": False}, {"use_cam": False}, {"denoiser": "mlp"}, {"lam": 0.1},
    {"pcgrad": True}, {"loss_merge": "mean"}, {"attention_mask": "official"},
    {"leak_weight_decay": True},
]


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: "-".join(map(str, s.items())))
def test_every_model_switch_trains_one_step(switch):
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("adrec", ds.n_items, {**SMALL, **switch})
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = model.loss(tiny_batch(ds))
    model.backward(losses)
    opt.step()
    assert torch.isfinite(losses["loss"])
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert model.score_all(left_pad(ds.train, 10)).shape == (len(ds.train), ds.n_items + 1)


@pytest.mark.parametrize("switch,stages", [
    ({"warmup": False}, {"stage1", "stage3"}),
    ({"pretrain": False, "warmup": False}, {"stage3"}),
    ({"pretrain": False, "warmup": False, "use_mse": False}, {"stage3"}),
])
def test_pipeline_switches_from_cli(tmp_path, switch, stages, capsys):
    from collapse_kit.cli import main

    ds = tiny_dataset()
    path = tmp_path / "tiny.tsv"
    rows = [f"{u}\t{' '.join(map(str, s))}\t{v}\t{t}"
            for u, (s, v, t) in enumerate(zip(ds.train, ds.valid, ds.test))]
    path.write_text("user\ttrain\tvalid\ttest\n" + "\n".join(rows) + "\n")
    sets = [f"{k}={str(v).lower()}" for k, v in {**SMALL, **switch}.items()]
    argv = ["train", "--model", "adrec", "--dataset", str(path), "--epochs", "1", "--out",
            str(tmp_path / "run"), "--no-progress", "--json", "--set", "batch_size=16",
            "--set", "max_len=10", "--set", "device=cpu"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["checkpoint"].endswith("best.pt")
    written = {p.stem for p in (tmp_path / "run").glob("stage*.pt")}
    assert written == stages
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    for k, v in switch.items():
        assert best["model_args"][k] == v


def test_retain_freed_memory_on_linux():
    import sys

    from adrec.train import retain_freed_memory

    assert retain_freed_memory() is sys.platform.startswith("linux")


def test_invalid_switch_values_raise():
    with pytest.raises(ValueError, match="denoiser"):
        ADRec(ADRecArgs(denoiser="unet"), 10)
    with pytest.raises(ValueError, match="loss_merge"):
        ADRec(ADRecArgs(loss_merge="max"), 10)
    with pytest.raises(ValueError, match="pcgrad"):
        ADRec(ADRecArgs(pcgrad=True, use_mse=False), 10)
