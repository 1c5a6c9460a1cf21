"""DiffuRec (adrec/models/diffurec.py): samples, architecture, lambda, loss and inference."""
from __future__ import annotations

import pytest
import torch

from adrec.data import Batch, BatchIterator, left_pad, load_dataset, training_pairs
from adrec.models import build_model
from adrec.models.diffurec import DiffuRec, DiffuRecArgs
from adrec.models import layers
from adrec.models.layers import Encoder

SMALL = {"hidden": 32, "steps": 4, "n_blocks": 2}


def small(n_items: int = 30, **kw) -> DiffuRec:
    torch.manual_seed(0)
    return DiffuRec(DiffuRecArgs(**{**SMALL, **kw}), n_items)


def prefix_batch(dataset, batch_size: int = 64) -> Batch:
    hists, tgts = training_pairs(dataset, 50, prefixes=True)
    it = BatchIterator(hists, tgts, max_len=50, batch_size=batch_size,
                       generator=torch.Generator().manual_seed(0))
    return next(iter(it))


# official-implementation.md section 1.3: split_onebyone after truncation to the last 51 items
@pytest.mark.parametrize("name, samples", [("ml-100k", 30619), ("baby", 57389),
                                           ("beauty", 61379), ("sports", 116802),
                                           ("toys", 60524)])
def test_prefix_split_sample_counts_match_the_authors(name, samples):
    assert DiffuRec.train_samples == "prefixes"
    hists, tgts = training_pairs(load_dataset(name), 50, prefixes=True)
    assert len(hists) == len(tgts) == samples


def test_prefix_samples_truncate_first_then_split(tiny):
    s = tiny.train[0]
    hists, tgts = training_pairs(tiny, 4, prefixes=True)  # max_len 4: keep the last 5 items
    kept = s[-5:]
    assert len(hists) >= len(kept) - 1
    for end in range(2, len(kept) + 1):
        h, t = hists[end - 2], tgts[end - 2]
        assert list(h) == list(kept[:end - 1])
        assert t[-1] == kept[end - 1] and not t[:-1].any()  # the last item is the only target


def test_parameter_count_matches_the_authors():
    # section 4.2: 1,054,464 parameters on ML-100K (1008 items)
    model = build_model("diffurec", 1008)
    assert sum(p.numel() for p in model.parameters()) == 1_054_464


def test_architecture_is_bidirectional_pre_norm_four_blocks():
    model = build_model("diffurec", 10)
    assert len(model.denoiser.blocks) == 4
    assert model.denoiser.causal is False
    assert all(b.pre_norm for b in model.denoiser.blocks)


def test_embedding_is_random_normal_with_zero_padding_row():
    model = build_model("diffurec", 2000)
    E = model.item_embedding.weight.detach()
    assert torch.equal(E[0], torch.zeros_like(E[0]))
    assert abs(float(E[1:].std()) - 1.0) < 0.02


def test_lambda_is_redrawn_each_forward_around_1e_3():
    model = small()
    model.train()
    valid = torch.ones(64, 20, dtype=torch.bool)
    a, b = model._lambda(valid), model._lambda(valid)
    assert not torch.equal(a, b)
    assert abs(float(a.mean()) - 1e-3) < 5e-5
    assert abs(float(a.std()) - 1e-3) < 5e-5


def test_inference_lambda_mean_is_constant_and_sample_uses_the_generator():
    model = small(inference_lambda="mean").eval()
    valid = torch.ones(4, 6, dtype=torch.bool)
    assert torch.equal(model._lambda(valid), torch.full((4, 6, 32), 1e-3))
    model = small().eval()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model._lambda(valid, g1), model._lambda(valid, g2))


def test_unknown_inference_lambda_is_refused():
    with pytest.raises(ValueError, match="inference_lambda"):
        small(inference_lambda="zero")


def test_loss_is_cross_entropy_on_the_last_target_only(tiny):
    model = small()
    batch = prefix_batch(tiny)
    garbage = batch.target.clone()
    garbage[:, :-1] = torch.randint(1, 31, garbage[:, :-1].shape)
    torch.manual_seed(5)
    a = model.loss(batch)
    torch.manual_seed(5)
    b = model.loss(Batch(batch.history, garbage, batch.offset))
    assert set(a) == {"loss", "ce", "mse"}
    assert torch.equal(a["loss"], a["ce"])
    assert torch.equal(a["loss"], b["loss"])
    assert not a["mse"].requires_grad  # the MSE is only logged


def test_noisy_target_reaches_every_history_position():
    model = small(lambda_mean=1.0, lambda_std=0.0).eval()
    history = torch.tensor([[3, 4, 5, 6]])
    e, valid = model.embed_history(history), history > 0
    t = torch.tensor([2])
    h0 = model.denoiser(e + model._lambda(valid) * 0.0, valid)
    cond = (torch.ones(1, 32) + model.time_embedding(t))[:, None]
    h1 = model.denoiser(e + model._lambda(valid) * cond, valid)
    assert (h1 - h0)[0].abs().sum(-1).min() > 0  # every position's input moved


def test_padding_lookup_gives_row_0_no_gradient_only_the_softmax_does(tiny):
    # as in the authors' code: padding_idx=0 blocks the history path, while row 0 stays in the
    # CE softmax as a class that is never a label (so it is trained as a negative)
    model = small()
    model.embed_history(torch.tensor([[0, 0, 3, 4]])).sum().backward()
    assert torch.equal(model.item_embedding.weight.grad[0], torch.zeros(32))
    model.zero_grad()
    model.loss(prefix_batch(tiny))["loss"].backward()
    assert model.item_embedding.weight.grad[0].abs().sum() > 0


def test_smoke_training_lowers_the_loss(tiny):
    model = small(n_blocks=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = prefix_batch(tiny, batch_size=64)
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        first = float(model.loss(batch)["loss"])
    model.train()
    for _ in range(15):
        opt.zero_grad()
        model.loss(batch)["loss"].backward()
        opt.step()
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        last = float(model.loss(batch)["loss"])
    assert last < 0.7 * first


def test_sampling_redraws_lambda_unless_mean():
    history = left_pad([torch.tensor([1, 2, 3]).numpy()], 50, 3)
    model = small()
    scores = {mode: DiffuRec(DiffuRecArgs(**SMALL, inference_lambda=mode), 30) for mode in
              ("sample", "mean")}
    for m in scores.values():
        m.load_state_dict(model.state_dict())
        m.eval()
    out = {k: m.score_all(history, torch.Generator().manual_seed(0)) for k, m in scores.items()}
    assert out["sample"].shape == out["mean"].shape == (1, 31)
    assert not torch.equal(out["sample"], out["mean"])


def test_official_mask_keeps_full_width():
    assert small(attention_mask="official").needs_full_width
    assert not small().needs_full_width


def reference_sample(model: DiffuRec, history: torch.Tensor, generator: torch.Generator):
    """The reverse loop written plainly: every step derives lambda's index and the denoiser's
    mask and packing from ``valid`` again (what ``sample`` did before it precomputed them)."""
    e, valid = model.embed_history(history), history > 0
    x = torch.randn(history.shape[0], model.args.hidden, generator=generator)
    for i in reversed(range(model.args.steps)):
        t = torch.full((history.shape[0],), i, dtype=torch.long)
        x = model.schedule.step(model.denoise(e, valid, x, t, generator), x, t,
                                generator=generator)
    return x


@pytest.mark.parametrize("mask", ["correct", "official"])
def test_reverse_loop_derives_the_layout_once_and_samples_the_same(mask, monkeypatch):
    """The loop computes lambda's index and the denoiser's layout once per call (on a GPU each
    derivation is a host sync); the samples are bit-identical to the per-step derivation."""
    import adrec.models.layers as layers

    model = small(attention_mask=mask, steps=6).eval()
    history = left_pad([torch.arange(1, k + 1).numpy() for k in (3, 7, 1, 5)], 8)
    with torch.no_grad():
        want = reference_sample(model, history, torch.Generator().manual_seed(3))
        calls = []
        real = layers.Encoder.layout
        monkeypatch.setattr(layers.Encoder, "layout",
                            lambda self, valid: calls.append(1) or real(self, valid))
        got = model.sample(history, torch.Generator().manual_seed(3))
    assert torch.equal(got, want)
    assert len(calls) == 1  # not once per step (6)


def test_last_only_and_grouped_attention_train_a_seed_exactly_as_the_plain_denoiser(
        tiny, monkeypatch):
    """Ten Adam steps with dropout on: DiffuRec as built (one-position last block, attention by
    length group) and a plain denoiser (full width, every row at the batch's width, read at the
    last position) reach the same parameters from the same seed: both speed-ups draw their
    dropout masks at the full pass's shapes. Regression: the last block drew masks for the last
    tokens only, so that speed-up trained a seed differently."""
    batch = prefix_batch(tiny, batch_size=64)
    monkeypatch.setattr(layers, "GROUP_OVERHEAD", 8)  # several groups at this tiny size
    assert len(layers.length_groups((batch.history > 0).sum(1))) > 2
    real = Encoder.forward

    def train(full_width: bool) -> list[torch.Tensor]:
        if full_width:
            monkeypatch.setattr(Encoder, "forward", lambda self, x, valid, layout=None, *,
                                last_only=False: real(self, x, valid, layout)[:, -1]
                                if last_only else real(self, x, valid, layout))
        else:
            monkeypatch.setattr(Encoder, "forward", real)
        model = small().train()
        assert model.denoiser.group_attention
        model.denoiser.group_attention = not full_width
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        torch.manual_seed(5)
        for _ in range(10):
            opt.zero_grad()
            model.loss(batch)["loss"].backward()
            opt.step()
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    fast, full = train(False), train(True)
    # the key biases' true gradient is zero (softmax ignores a per-query constant): Adam turns
    # their float-rounding gradients (~1e-8) into lr-sized steps either way, so they are skipped
    names = [n for n in fast if not n.endswith("attn.k.bias")]
    assert len(names) > 30
    for n in names:
        torch.testing.assert_close(fast[n], full[n], atol=2e-5, rtol=1e-4, msg=n)
