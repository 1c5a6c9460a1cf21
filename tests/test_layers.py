"""The shared transformer block: causality, padding invariance, the official mask, dropout."""
import math

import pytest
import torch

from adrec.models import build_model, layers
from adrec.models.layers import Dropout, Encoder, Packing, attention_bias, random_words


def _model(mask="correct", name="sasrec"):
    torch.manual_seed(0)
    return build_model(name, 30, {"attention_mask": mask, "max_len": 8}).eval()


@pytest.mark.parametrize("name", ["sasrec", "stage1"])
def test_causality_later_items_do_not_change_earlier_outputs(name):
    m = _model(name=name)
    h = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    h2 = h.clone()
    h2[0, -1] = 20
    a, b = m.encode(h), m.encode(h2)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_padding_invariance_with_correct_mask():
    m = _model("correct", "stage1")
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(m.score_all(short), m.score_all(padded), atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the padding row's content does not matter either
        m.item_embedding.weight[0].normal_()
    torch.testing.assert_close(m.score_all(short)[:, 1:], m.score_all(padded)[:, 1:],
                               atol=1e-5, rtol=1e-5)


def test_official_mask_depends_on_padding_count():
    m = _model("official", "stage1")
    wide = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    narrow = torch.tensor([[0, 3, 4, 5]])
    assert m.needs_full_width
    assert not torch.allclose(m.encode(wide)[:, -1], m.encode(narrow, offset=4)[:, -1])


def test_official_mask_bias_layout():
    valid = torch.tensor([[False, True, True]])
    b = attention_bias(valid, causal=True, mode="official")[0, 0]
    assert b[0].tolist()[0] == -1e9           # padding query row
    assert b[1, 0] == 0 and b[1, 1] == 0      # real query sees the padding key
    assert b[1, 2] < -1e30                    # causal
    c = attention_bias(valid, causal=True, mode="correct")[0, 0]
    assert c[1, 0] < -1e30 and c[0, 0] == 0   # padding key hidden; padding query sees itself


def test_official_padding_keys_visible_changes_output():
    m = _model("official", "stage1")
    h = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    base = m.encode(h)[:, -1].clone()
    with torch.no_grad():
        m.item_embedding.weight[0].add_(1.0)
    assert not torch.allclose(base, m.encode(h)[:, -1])


def test_dropout_rate_scale_and_determinism():
    d = Dropout(0.1).train()
    x = torch.ones(200_000)
    torch.manual_seed(1)
    y = d(x)
    frac = (y == 0).float().mean().item()
    assert abs(frac - 0.1) < 0.003
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # inverted scaling keeps the mean
    torch.manual_seed(1)
    assert torch.equal(y, d(x))


def test_dropout_is_the_identity_in_eval_mode():
    d = Dropout(0.1).train()
    x = torch.ones(200_000)
    assert torch.equal(d.eval()(x), x)


def test_dropout_refuses_a_rate_of_one():
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)


def test_random_words_are_uniform_bits_and_follow_the_torch_seed():
    torch.manual_seed(3)
    w = random_words(200_000)
    assert w.dtype == torch.int64 and w.shape == (200_000,)
    bits = ((w[:, None] >> torch.arange(64)) & 1).float().mean(0)  # each of the 64 bits
    assert (bits - 0.5).abs().max().item() < 0.005  # 5.6 sd of a fair bit's mean
    lanes = w.view(torch.int16).long() + 32768  # the dropout's 16-bit lanes, 0..65535
    counts = torch.bincount(lanes >> 12, minlength=16).float()  # 16 equal bins
    chi2 = (((counts - counts.mean()) ** 2) / counts.mean()).sum().item()
    assert chi2 < 40  # chi-square, 15 dof: p < 0.001
    assert not torch.equal(w, random_words(200_000))  # the torch generator moved on
    torch.manual_seed(3)
    assert torch.equal(w, random_words(200_000))


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_drop_fraction_is_the_quantised_p(p):
    d = Dropout(p).train()
    torch.manual_seed(0)
    y = d(torch.ones(1_000_000))
    q = round(p * 65536) / 65536
    frac = (y == 0).float().mean().item()
    assert abs(frac - q) < 5 * (q * (1 - q) / 1e6) ** 0.5
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - q)))


def test_dropout_backward_uses_the_forward_mask_and_odd_sizes_work():
    d = Dropout(0.25).train()
    x = torch.randn(7, 13, requires_grad=True)  # 91 elements: not a multiple of 4 lanes
    y = d(x)
    scale = 65536 / (65536 - round(0.25 * 65536))
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * scale)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() * scale)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dropout_feeding_a_product_gives_what_the_product_would_see(dtype):
    """Regression for the FFN hidden layer's faster low-precision dropout: with
    ``feeds_product`` a bfloat16/float16 input comes out in its own dtype with exactly the
    values (and gradients) of the float32 path rounded to that dtype, i.e. what the next
    bfloat16 matrix product multiplies, and the same lanes are dropped."""
    torch.manual_seed(0)
    x = (torch.randn(300, 129) * 3).to(dtype)  # odd size: lanes not a multiple of 4
    g = (torch.randn(300, 129) * 3).to(dtype)
    outs = {}
    for feeds in (False, True):
        xi = x.clone().requires_grad_()
        torch.manual_seed(5)
        y = Dropout(0.1, feeds_product=feeds).train()(xi)
        y.backward(g.to(y.dtype))
        outs[feeds] = (y, xi.grad)
    (y32, g32), (y_low, g_low) = outs[False], outs[True]
    assert y32.dtype == torch.float32 and y_low.dtype == dtype
    assert torch.equal(y_low, y32.to(dtype)) and torch.equal(g_low, g32.to(dtype))
    assert ((y_low == 0) == (y32 == 0)).all() and (y_low == 0).any()
    x32 = torch.randn(50, 7)  # a float32 input is untouched by the flag
    torch.manual_seed(5)
    a = Dropout(0.1, feeds_product=True).train()(x32)
    torch.manual_seed(5)
    assert torch.equal(a, Dropout(0.1).train()(x32))


@pytest.mark.parametrize("model,extra", [("adrec", set()), ("sasrec", set()),
                                         ("dreamrec", {"denoiser.2", "denoiser.6"})])
def test_only_dropouts_that_feed_a_product_keep_the_low_precision(model, extra):
    """The FFN hidden layers (and DreamRec's two MLP hidden layers) feed a product; the
    residual, input and attention-probability dropouts do not."""
    from adrec.models import build_model

    m = build_model(model, 20, {"hidden": 16, "n_heads": 2})
    feeding = {name for name, mod in m.named_modules()
               if isinstance(mod, Dropout) and mod.feeds_product}
    ffn = {name for name in feeding if name.endswith("ffn.drop")}
    assert ffn and feeding - ffn == extra


def test_encoder_rejects_unknown_mask():
    with pytest.raises(ValueError, match="attention_mask"):
        Encoder(8, attention_mask="sometimes")


@pytest.mark.parametrize("pre_norm,causal", [(False, True), (True, False)])
def test_packed_tokens_match_padded_computation(pre_norm, causal):
    """The correct-mask fast path (real tokens only) equals the plain padded computation."""
    torch.manual_seed(0)
    enc = Encoder(16, 2, 2, 0.1, causal=causal, pre_norm=pre_norm).eval()
    x = torch.randn(3, 6, 16)
    valid = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    packed = enc(x, valid)
    bias = attention_bias(valid, causal=causal, mode="correct")
    y = x
    for block in enc.blocks:
        y = block(y, bias)
    torch.testing.assert_close(packed[valid], y[valid], atol=1e-5, rtol=1e-5)
    assert (packed[~valid] == 0).all()


def test_packing_pack_equals_boolean_indexing_in_values_and_gradients():
    torch.manual_seed(0)
    keep = torch.rand(5, 7) > 0.4
    x1 = torch.randn(5, 7, 3, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    w = torch.randn(int(keep.sum()), 3)
    a, b = x1[keep], Packing(keep).pack(x2)
    assert torch.equal(a, b)
    (a * w).sum().backward()
    (b * w).sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    t = torch.randint(1, 9, (5, 7))
    assert torch.equal(Packing(keep).pack(t), t[keep])  # integer tables too


@pytest.mark.parametrize("explicit_softmax", [False, True])
@pytest.mark.parametrize("mask", ["correct", "official"])
@pytest.mark.parametrize("pre_norm,causal", [(False, True), (True, False)])
def test_last_only_equals_the_full_stack_at_the_last_position(mask, pre_norm, causal,
                                                              explicit_softmax, monkeypatch):
    """last_only (DiffuRec's last block computes one query) gives the full stack's last-position
    output, values and gradients, packed (correct mask) and padded (official), with dropout off
    (the SDPA path) or on with its masks replaced by identity (the training path's explicit
    softmax); the same-seed masks are checked below."""
    torch.manual_seed(0)
    if explicit_softmax:
        monkeypatch.setattr(Dropout, "forward", lambda self, x, full=None: x)
    enc = Encoder(16, 3, 2, 0.1 if explicit_softmax else 0.0, causal=causal, pre_norm=pre_norm,
                  attention_mask=mask).train()
    x1 = torch.randn(4, 6, 16, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    valid = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 1]],
                         dtype=torch.bool)
    full = enc(x1, valid)[:, -1]
    grads_full = torch.autograd.grad((full * torch.arange(16.0)).sum(),
                                     [x1, *enc.parameters()], allow_unused=True)
    last = enc(x2, valid, last_only=True)
    assert last.shape == (4, 16)
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)
    grads_last = torch.autograd.grad((last * torch.arange(16.0)).sum(),
                                     [x2, *enc.parameters()], allow_unused=True)
    for a, b in zip(grads_last, grads_full):  # sums of terms up to ~10: float32 rounding
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def _assert_same_seed_passes(enc, x, seed, weights, *passes):
    """Run each pass (a function of a fresh leaf copy of x) from ``seed``: they must give the
    same outputs, the same gradients (x and enc's parameters) and leave torch's random stream
    in the same state. Returns the first pass's output."""
    outs, grads, states = [], [], []
    for forward in passes:
        torch.manual_seed(seed)
        xi = x.clone().requires_grad_(True)
        y = forward(xi)
        grads.append(torch.autograd.grad((y * weights).sum(), [xi, *enc.parameters()]))
        outs.append(y)
        states.append(torch.get_rng_state())
    for y, g, state in zip(outs[1:], grads[1:], states[1:]):
        torch.testing.assert_close(y, outs[0], atol=1e-5, rtol=1e-5)
        for a, b in zip(g, grads[0]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
        assert torch.equal(state, states[0])
    return outs[0]


@pytest.mark.parametrize("mask", ["correct", "official"])
@pytest.mark.parametrize("pre_norm", [True, False])
def test_last_only_draws_the_full_pass_dropout_masks(mask, pre_norm):
    """With dropout on and the same seed, last_only gives the full pass's last-position output
    and gradients (the last block draws each mask at the full shape and keeps the last
    positions' lanes) and leaves torch's random stream where the full pass leaves it. Regression:
    it drew masks for the last tokens only, so a seed trained differently from the full pass."""
    torch.manual_seed(3)
    enc = Encoder(16, 2, 2, 0.3, causal=False, pre_norm=pre_norm, attention_mask=mask).train()
    x = torch.randn(4, 6, 16)
    valid = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 1]],
                         dtype=torch.bool)
    full = _assert_same_seed_passes(enc, x, 11, torch.arange(16.0),
                                    lambda xi: enc(xi, valid)[:, -1],
                                    lambda xi: enc(xi, valid, last_only=True))
    torch.manual_seed(12)  # a different seed gives different masks, so the check above can fail
    y = enc(x, valid, last_only=True)
    assert not torch.allclose(y, full)


def test_last_only_draws_dropout_masks_at_the_full_shape(monkeypatch):
    """The last block's dropouts take (B, D), (B, 4D) and (B, h, 1, L) inputs but draw their
    masks at the full pass's shapes: every real token, and the (B, h, L, L) probabilities."""
    calls = []
    real = Dropout.forward
    monkeypatch.setattr(Dropout, "forward", lambda self, x, full=None: calls.append(
        (tuple(x.shape), None if full is None else tuple(full[0]))) or real(self, x, full))
    enc = Encoder(8, 2, 2, 0.1, causal=False, pre_norm=True).train()
    valid = torch.tensor([[0, 1, 1, 1, 1], [1] * 5], dtype=torch.bool)
    enc(torch.randn(2, 5, 8), valid, last_only=True)
    first, last = calls[:len(calls) // 2], calls[len(calls) // 2:]
    assert ((9, 32), None) in first and ((2, 2, 5, 5), None) in first  # block 1: every token
    assert set(last) == {((2, 2, 1, 5), (2, 2, 5, 5)), ((2, 8), (9, 8)), ((2, 32), (9, 32))}


def test_dropout_rejects_a_take_of_the_wrong_shape():
    with pytest.raises(ValueError, match="take"):
        Dropout(0.5).train()(torch.ones(2, 3), ((2, 4), lambda m: m))


def test_last_only_rejects_a_padded_last_position():
    enc = Encoder(8, 1, 2, 0.0, causal=False).eval()
    valid = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match="last position"):
        enc(torch.randn(1, 3, 8), valid, last_only=True)


def test_packing_last_picks_each_rows_last_token():
    valid = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    x = torch.arange(9.0).view(3, 3, 1)
    p = Packing(valid)
    assert p.last(p.pack(x)).flatten().tolist() == [2.0, 5.0, 8.0]


@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("pre_norm,causal", [(False, True), (True, False)])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_grouped_attention_equals_the_full_width_pass(last_only, pre_norm, causal, dropout,
                                                      monkeypatch):
    """Attention by length group gives the full-width pass's outputs at real positions and its
    gradients, with dropout on (same seed: the same masks) or off (the SDPA path), and leaves
    torch's random stream where the full-width pass leaves it."""
    monkeypatch.setattr(layers, "GROUP_OVERHEAD", 8)  # several groups at this tiny size
    torch.manual_seed(0)
    enc = Encoder(16, 2, 2, dropout, causal=causal, pre_norm=pre_norm).train()
    lengths = torch.tensor([1, 9, 2, 2, 5, 1, 9, 3, 7, 1, 1, 2])
    valid = torch.arange(9)[None, :] >= 9 - lengths[:, None]  # left-padded, (12, 9)
    x = torch.randn(12, 9, 16)
    def run(grouped):
        def forward(xi):
            enc.group_attention = grouped
            y = enc(xi, valid, last_only=last_only)
            return y if last_only else y[valid]
        return forward

    _assert_same_seed_passes(enc, x, 4, torch.linspace(-1, 1, 16), run(False), run(True))
    enc.group_attention = True
    layout = enc.layout(valid)
    assert layout[1].grouped and len(layout[1].groups) > 1  # the grouped path really ran


def test_length_groups_partition_the_rows_at_least_cost():
    """Every row in exactly one group, widths the groups' longest rows, increasing; the cost
    (rows x width^2 + overhead per group) is the minimum over all cuts of the sorted rows
    (brute force), and the overhead trades groups for padding."""
    import itertools
    from adrec.models.layers import length_groups
    lengths = torch.tensor([3, 1, 8, 2, 8, 1, 5, 3, 1, 2])
    for overhead in (0, 10, 40, 10_000):
        groups = length_groups(lengths, overhead)
        rows = torch.cat([r for r, _ in groups])
        assert sorted(rows.tolist()) == list(range(len(lengths)))
        widths = [w for _, w in groups]
        assert widths == sorted(set(widths))
        assert all(int(lengths[r].max()) == w for r, w in groups)
        cost = sum(len(r) * w * w + overhead for r, w in groups)
        values = sorted(set(lengths.tolist()))
        counts = {v: int((lengths == v).sum()) for v in values}
        best = math.inf
        for k in range(len(values)):  # choose k cut points between distinct values
            for cuts in itertools.combinations(range(1, len(values)), k):
                bounds = [0, *cuts, len(values)]
                best = min(best, sum(sum(counts[v] for v in values[a:b]) * values[b - 1] ** 2
                                     + overhead for a, b in zip(bounds, bounds[1:])))
        assert cost == best
    assert len(length_groups(lengths, 0)) == 5  # one group per distinct length
    assert len(length_groups(lengths, 10_000)) == 1  # one group: the full width


# ------------------------------------------------------------------------------------------
# the key/value cache: the last position alone, the earlier ones computed once


def _left_padded(B=4, W=7, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, W, D, generator=g)
    lengths = torch.tensor([W, 3, 1, 5])[:B]
    valid = torch.arange(W)[None] >= W - lengths[:, None]  # (B, W), the last position real
    return x, valid


@pytest.mark.parametrize("mask", ["correct", "official"])
@pytest.mark.parametrize("pre_norm", [False, True])
def test_block_forward_cached_equals_forward_at_the_last_position(mask, pre_norm):
    torch.manual_seed(0)
    block = layers.Block(16, 4, 0.1, pre_norm).eval()
    x, valid = _left_padded()
    bias = attention_bias(valid, causal=True, mode=mask)  # (B, 1, W, W)
    with torch.no_grad():
        want = block(x, bias)[:, -1:]                      # (B, 1, D)
        cache = block.prefill(x[:, :-1], x.shape[1])
        got = block.forward_cached(x[:, -1:], cache, bias[:, :, -1:])
        # the cache serves many last positions: the slot is overwritten, the prefix kept
        x2 = x.clone()
        x2[:, -1] = torch.randn(x.shape[0], x.shape[2], generator=torch.Generator().manual_seed(1))
        want2 = block(x2, bias)[:, -1:]
        got2 = block.forward_cached(x2[:, -1:], cache, bias[:, :, -1:])
    assert got.shape == (x.shape[0], 1, 16)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(got2, want2, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mask", ["correct", "official"])
@pytest.mark.parametrize("width", [1, 7])
def test_encoder_prefill_and_forward_cached_equal_forward_at_the_last_position(mask, width):
    torch.manual_seed(0)
    enc = Encoder(16, 3, 4, 0.1, causal=True, attention_mask=mask).eval()
    x, valid = _left_padded(W=width)
    valid[:, -1] = True
    bias = attention_bias(valid, causal=True, mode=mask)
    with torch.no_grad():
        want = enc(x, valid)[:, -1]
        caches = enc.prefill(x[:, :-1], bias)
        got = enc.forward_cached(x[:, -1:], caches, bias[:, :, -1:])[:, 0]
    assert len(caches) == 3
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_encoder_prefill_needs_causal_attention():
    enc = Encoder(16, 1, 4, 0.1, causal=False)
    x, valid = _left_padded()
    with pytest.raises(ValueError, match="causal"):
        enc.prefill(x[:, :-1], attention_bias(valid, causal=False, mode="correct"))
