"""DreamRec (adrec/models/dreamrec.py): architecture, MSE loss, classifier-free guidance."""
from __future__ import annotations

import pytest
import torch

from adrec.config import TrainConfig, parse_overrides
from adrec.data import BatchIterator, left_pad, training_pairs
from adrec.models import build_model
from adrec.models.dreamrec import DreamRec, DreamRecArgs

SMALL = {"hidden": 32, "steps": 4}


def small(n_items: int = 30, **kw) -> DreamRec:
    torch.manual_seed(0)
    return DreamRec(DreamRecArgs(**{**SMALL, **kw}), n_items)


def batch(dataset, batch_size: int = 64):
    hists, tgts = training_pairs(dataset, 50)
    it = BatchIterator(hists, tgts, max_len=50, batch_size=batch_size,
                       generator=torch.Generator().manual_seed(0))
    return next(iter(it))


def histories(dataset, users=range(6)) -> torch.Tensor:
    seqs = [dataset.train[u] for u in users]
    return left_pad(seqs, 50, max(len(s) for s in seqs))


def sample(model, history, seed: int = 0, **kw) -> torch.Tensor:
    model.eval()
    return model.sample(history, torch.Generator().manual_seed(seed), **kw)


def test_parameter_count_matches_the_authors():
    # section 4.3: 1,052,416 parameters on ML-100K (1008 items); the null condition is a
    # constant zero, not a parameter
    model = build_model("dreamrec", 1008)
    assert sum(p.numel() for p in model.parameters()) == 1_052_416


def test_defaults_reproduce_the_authors_setting():
    args = DreamRecArgs()
    assert args.cond_dropout == 0.0 and args.guidance_scale == 1.0
    model = build_model("dreamrec", 10)
    assert model.encoder.causal and len(model.encoder.blocks) == 2
    assert model.train_samples == "sequence"


def test_loss_is_mse_on_the_last_target_and_moves_the_table(tiny):
    model = small()
    b = batch(tiny)
    losses = model.loss(b)
    assert set(losses) == {"loss", "mse"}
    losses["loss"].backward()
    grad = model.item_embedding.weight.grad
    targets = b.target[:, -1].unique()
    assert grad[targets].abs().sum(-1).min() > 0  # target not detached: MSE reaches E[target]
    assert torch.equal(grad[0], torch.zeros(32))  # nothing reaches the padding row


def test_guidance_scale_1_is_the_conditional_model(tiny):
    model = small()
    h = histories(tiny)
    guided = sample(model, h, guidance_scale=1.0)
    # the same reverse process written out with the conditional x0-prediction alone
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        c = model.guidance(h)
        x = torch.randn(len(h), 32, generator=g)
        for i in reversed(range(4)):
            t = torch.full((len(h),), i)
            x = model.schedule.step(model.denoise(x, t, c), x, t, generator=g)
    assert torch.equal(guided, x)
    # and the guided formula is continuous there: s -> 1 gives the conditional model
    near = sample(model, h, guidance_scale=1.0 + 1e-6)
    assert torch.allclose(near, guided, atol=1e-4)


def test_guidance_scale_0_ignores_the_history(tiny):
    model = small()
    a = sample(model, histories(tiny, range(0, 6)), guidance_scale=0.0)
    b = sample(model, histories(tiny, range(6, 12)), guidance_scale=0.0)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(sample(model, histories(tiny), guidance_scale=2.0),
                              sample(model, histories(tiny), guidance_scale=1.0))


def test_condition_dropout_drops_the_expected_fraction():
    model = small(cond_dropout=0.3)
    c = torch.randn(4000, 32)
    torch.manual_seed(0)
    dropped, kept = model.drop_condition(c)
    assert abs(float((~kept).float().mean()) - 0.3) < 0.03
    assert torch.equal(dropped[~kept], torch.zeros_like(dropped[~kept]))
    assert torch.equal(dropped[kept], c[kept])
    assert bool(small().drop_condition(c)[1].all())  # default: nothing dropped


def test_full_condition_dropout_cuts_the_history_out_of_the_loss(tiny):
    model = small(cond_dropout=1.0)
    model.loss(batch(tiny))["loss"].backward()
    for p in model.encoder.parameters():
        assert p.grad is None or not p.grad.any()
    assert model.denoiser[0].weight.grad.abs().sum() > 0


def test_bad_condition_dropout_is_rejected():
    with pytest.raises(ValueError, match="cond_dropout"):
        small(cond_dropout=1.5)


def test_set_overrides_reach_the_guidance_fields():
    train, model = parse_overrides(["guidance_scale=2", "cond_dropout=0.1"], TrainConfig,
                                   DreamRecArgs)
    assert model == {"guidance_scale": 2.0, "cond_dropout": 0.1} and not train
    assert build_model("dreamrec", 10, model).args.guidance_scale == 2.0


def test_smoke_training_lowers_the_loss(tiny):
    model = small(cond_dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    b = batch(tiny)
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        first = float(model.loss(b)["loss"])
    model.train()
    for _ in range(20):
        opt.zero_grad()
        model.loss(b)["loss"].backward()
        opt.step()
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        last = float(model.loss(b)["loss"])
    assert last < 0.8 * first
