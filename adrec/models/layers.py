"""The transformer block shared by every model (official-implementation.md section 2.2).

4 heads, Q/K/V/output Linear(D, D) with bias and Xavier-normal weights, attention-probability
dropout 0.1, FFN D -> 4D -> D with tanh-GELU, LayerNorm eps 1e-12, post-norm by default
(``LN(x + Dropout(f(x)))``) or pre-norm (``x + Dropout(f(LN(x)))``, DiffuRec).

Attention masks (``attention_mask``):

* ``"correct"`` (default): padding *keys* are masked, so outputs at real positions do not depend
  on how much left padding there is nor on the padding row's embedding.
* ``"official"``: the authors' mask, broadcast over the *query* axis: rows of padding queries are
  set to -1e9 (uniform attention) and padding keys stay visible to real tokens. Only for parity
  with the released checkpoints and numbers.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_MASKS = ("correct", "official")
LN_EPS = 1e-12


def random_words(n: int) -> torch.Tensor:
    """``n`` uniformly random 64-bit words on the CPU (int64), fast and seeded by torch.

    One draw from torch's default generator seeds a numpy SFC64 stream that fills them, so the
    words follow ``torch.manual_seed`` and the generator state the trainer saves for
    ``--resume``. PyTorch's CPU ``random_()`` (a Mersenne twister) took 8.4 ns a word on the
    2-core development machine, SFC64 3.5 ns. (Filling halves from a second thread was slower
    still: PyTorch's OpenMP workers keep spinning on the other core between operations.)
    """
    seed = int(torch.randint(0, 2**62, (1,)))
    return torch.from_numpy(np.random.SFC64(seed).random_raw(n).view(np.int64))


class Dropout(nn.Module):
    """Inverted dropout whose CPU mask comes from 16-bit lanes of ``random_words``.

    PyTorch's CPU ``bernoulli_`` was 38% of a SASRec epoch on ML-100K, and its ``random_()``
    still 11% after that. Here each 64-bit word of ``random_words`` gives four 16-bit lanes and
    one comparison writes the keep mask straight into a float tensor, scaled to
    {0, 1 / (1 - p)}; forward and backward are then one multiply each (``masked_fill`` or a
    multiply by a bool mask ran 5-6x slower than a float multiply on this CPU). A lane, read as
    int16, is dropped when it is below ``threshold - 32768``: exactly ``threshold`` of the 65,536
    values, so the drop probability is quantised to ``round(p * 65536) / 65536`` (0.1000061 for
    p = 0.1) and kept values are scaled by the exact ``1 / (1 - p_quantised)``. On GPU it is
    ``F.dropout``.
    """

    def __init__(self, p: float, *, feeds_product: bool = False):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 65536)  # drop a lane when its 16-bit value is below this
        self.scale = 65536.0 / (65536 - self.threshold)  # exact 1 / (1 - p_quantised)
        # feeds_product: the output goes only into a matrix product, which under the CPU's
        # bfloat16 products (config.bf16_products) rounds it to bfloat16 anyway (the FFN's
        # hidden layer); see apply_lanes
        self.feeds_product = feeds_product

    def forward(self, x: torch.Tensor, full: "tuple[tuple[int, ...], Callable] | None" = None
                ) -> torch.Tensor:
        """``full = (shape, take)``: ``x`` is the part ``take`` selects of a tensor of ``shape``
        (DiffuRec's last block, which computes one position of a full-width pass). The mask is
        then drawn for ``shape`` and cut with ``take``, so on the CPU ``x`` gets exactly the
        lanes the full-width pass would give those elements and the random stream is the one a
        full-width pass leaves."""
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        shape, take = (x.shape, None) if full is None else full
        lanes = self.lanes(shape)
        return self.apply_lanes(x, lanes if take is None else take(lanes))

    @staticmethod
    def lanes(shape) -> torch.Tensor:
        """The int16 lanes of one CPU mask of ``shape`` (one draw from torch's generator)."""
        n = math.prod(shape)
        return random_words((n + 3) // 4).view(torch.int16)[:n].view(tuple(shape))

    def apply_lanes(self, x: torch.Tensor, lanes: torch.Tensor) -> torch.Tensor:
        """``x`` with the elements whose lane is below the threshold dropped (CPU, training)."""
        if lanes.shape != x.shape:
            raise ValueError(f"dropout: take() gave {tuple(lanes.shape)} for an input of "
                             f"{tuple(x.shape)}")
        if self.feeds_product and x.dtype in (torch.bfloat16, torch.float16):
            # a {0, 1} mask in x's dtype (exact), then the scale as a Python scalar, which the
            # CPU kernels apply in float32 before rounding once to x's dtype: the values (and,
            # backward, the gradients) the product would get from the float32 path below after
            # its own rounding (up to a double-rounding tie), at about half the time of that
            # path's mixed-dtype multiply and casts
            mask = torch.ge(lanes, self.threshold - 32768,
                            out=torch.empty(x.shape, dtype=x.dtype))
            return (x * mask) * self.scale
        # float32 at least: in a bfloat16 mask the scale 1 / (1 - p) would round (1.1111 ->
        # 1.1094 for p = 0.1), so under the CPU's bfloat16 products (config.bf16_products) a
        # bfloat16 input comes out float32, as the residual stream around it is
        dtype = torch.promote_types(x.dtype, torch.float32)
        mask = torch.ge(lanes, self.threshold - 32768, out=torch.empty(x.shape, dtype=dtype))
        # autograd keeps only the mask (the multiplier that needs no gradient)
        return x * mask.mul_(self.scale)


def attention_bias(valid: torch.Tensor, *, causal: bool, mode: str) -> torch.Tensor:
    """Additive attention bias of shape (B, 1, L, L) from ``valid`` (B, L) bool (True = item).

    ``correct``: query i may attend key j iff j is valid (and j <= i when causal); a query with
    no visible key (a padding query) attends to itself so the softmax is defined.
    ``official``: causal mask only; every key of a padding query row is -1e9.
    """
    if mode not in ATTENTION_MASKS:
        raise ValueError(f"attention_mask must be one of {ATTENTION_MASKS}, got {mode!r}")
    B, L = valid.shape
    idx = torch.arange(L, device=valid.device)
    allowed = torch.ones(L, L, dtype=torch.bool, device=valid.device)
    if causal:
        allowed = idx[None, :] <= idx[:, None]  # (L, L): key j <= query i
    neg_inf = torch.finfo(torch.float32).min
    if mode == "correct":
        ok = allowed[None] & valid[:, None, :]  # (B, L, L)
        ok = ok | torch.eye(L, dtype=torch.bool, device=valid.device)[None]
        bias = torch.zeros(B, L, L, device=valid.device).masked_fill(~ok, neg_inf)
    else:
        bias = torch.zeros(B, L, L, device=valid.device)
        bias = bias.masked_fill(~valid[:, :, None], -1e9)  # padding query rows
        bias = bias.masked_fill(~allowed[None], neg_inf)
    return bias[:, None]  # (B, 1, L, L)


class KVCache:
    """One block's attention keys and values over W positions, for a sequence whose first W-1
    positions are fixed while the last one is recomputed many times (ADRec's reverse diffusion
    of the last token: the history never changes, so with causal attention its keys, values and
    outputs are the same at every step).

    k, v: (B, h, W, D/h). Positions 0..W-2 are written once (``Block.prefill``); position W-1 is
    overwritten in place by every ``Block.forward_cached`` (no re-allocation, no concatenation).
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v


class MultiHeadAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"hidden size {d} must be divisible by n_heads {n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.prob_dropout = Dropout(dropout)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        for lin in (self.q, self.k, self.v, self.out):
            nn.init.xavier_normal_(lin.weight)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, packing: "Packing | None" = None,
                *, last_only: bool = False) -> torch.Tensor:
        """x: (B, L, D), or (M, D) real tokens only when ``packing`` is given -> the same shape.

        ``last_only``: queries at each row's last position only (keys and values everywhere),
        returning (B, D): that position's output, as the full call computes it, for a model that
        reads nothing else (DiffuRec's last block).
        """
        if packing is not None and packing.grouped:
            return self._grouped(x, bias, packing, last_only)
        if packing is None:
            B, L, D = x.shape
            k, v = self.k(x), self.v(x)
            q = self.q(x[:, -1:]) if last_only else self.q(x)
        else:
            (B, L), D = packing.shape, x.shape[-1]
            k, v = (packing.unpack(lin(x)) for lin in (self.k, self.v))
            q = (self.q(packing.last(x))[:, None] if last_only
                 else packing.unpack(self.q(x)))
        h = self.n_heads
        Lq = 1 if last_only else L
        if last_only:
            bias = bias[:, :, -1:]  # (B, 1, 1, L): the last query's row

        def split(t):  # (B, L, D) -> (B, h, L, D/h)
            return t.view(B, -1, h, D // h).transpose(1, 2)

        full = ((B, h, L, L), lambda m: m[:, :, -1:]) if last_only else None
        y = self._attend(split(q), split(k), split(v), bias,
                         lambda p: self.prob_dropout(p, full))  # (B, h, Lq, D/h)
        y = y.transpose(1, 2).reshape(B, Lq, D)  # (B, Lq, D)
        if last_only:
            return self.out(y[:, 0])  # (B, D)
        return self.out(y if packing is None else packing.pack(y))

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, h, L, D/h)."""
        B, L, D = x.shape
        return x.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)

    def prefill(self, x: torch.Tensor, width: int) -> KVCache:
        """A cache of ``width`` positions whose first ``width - 1`` hold the keys and values of
        x (B, width - 1, D), the attention's input at the fixed positions."""
        B, _, D = x.shape
        h = self.n_heads
        cache = KVCache(x.new_empty(B, h, width, D // h), x.new_empty(B, h, width, D // h))
        cache.k[:, :, :-1] = self.split_heads(self.k(x))               # (B, h, W-1, D/h)
        cache.v[:, :, :-1] = self.split_heads(self.v(x))
        return cache

    def forward_cached(self, x: torch.Tensor, cache: KVCache, bias: torch.Tensor
                       ) -> torch.Tensor:
        """Attention output at the last position only: x (B, 1, D) that position's input,
        ``cache`` the earlier positions' keys and values (its last slot is overwritten with x's),
        bias (B, 1, 1, W) the last query's row. Returns (B, 1, D); no probability dropout
        (inference)."""
        B, _, D = x.shape
        q = self.split_heads(self.q(x))                                # (B, h, 1, D/h)
        cache.k[:, :, -1:] = self.split_heads(self.k(x))
        cache.v[:, :, -1:] = self.split_heads(self.v(x))
        att = (q @ cache.k.transpose(-2, -1)) * (D // self.n_heads) ** -0.5 + bias  # (B, h, 1, W)
        y = att.softmax(-1) @ cache.v                                  # (B, h, 1, D/h)
        return self.out(y.transpose(1, 2).reshape(B, 1, D))            # (B, 1, D)

    def _cpu_dropout(self, x: torch.Tensor) -> bool:
        """Whether the probability dropout runs here, with the fast CPU mask."""
        return self.training and self.dropout > 0 and x.device.type == "cpu"

    def _attend(self, q, k, v, bias, drop) -> torch.Tensor:
        """Attention of (b, h, n, D/h) heads under the additive ``bias``. With the CPU dropout,
        an explicit softmax whose probabilities go through ``drop`` (the fast mask); else SDPA
        with its own dropout."""
        if self._cpu_dropout(q):
            att = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias
            return drop(att.softmax(-1)) @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                              dropout_p=self.dropout if self.training else 0.0)

    def _grouped(self, x: torch.Tensor, bias: torch.Tensor, packing: "Packing",
                 last_only: bool) -> torch.Tensor:
        """Attention by length group (``Packing.groups``), on packed tokens x (M, D) -> (M, D),
        or (B, D) at each row's last position with ``last_only``. Each group's rows attend
        over the group's width (its longest row) instead of the batch's, gathered straight from
        the packed tokens: with left padding and the correct mask the outputs at real positions
        are the full-width pass's (padding keys are masked, padding queries are never read).
        The probability dropout's lanes are drawn once at the full pass's (B, h, L, L) and cut
        to each group's block, so on the CPU every real (query, key) pair gets the mask the
        full-width pass gives it, and the random stream is the one it leaves."""
        (B, L), D, h = packing.shape, x.shape[-1], self.n_heads
        zero = x.new_zeros(1, D)  # packed row M: a padding position
        k, v = torch.cat([self.k(x), zero]), torch.cat([self.v(x), zero])
        q = self.q(packing.last(x)) if last_only else torch.cat([self.q(x), zero])
        lanes = self.prob_dropout.lanes((B, h, L, L)) if self._cpu_dropout(x) else None
        outs = []
        for rows, w, gather, real in packing.group_layout():
            b, wq = len(rows), 1 if last_only else w

            def heads(t, n):  # (b * n, D) -> (b, h, n, D/h)
                return t.view(b, n, h, D // h).transpose(1, 2)

            kg, vg = heads(k.index_select(0, gather), w), heads(v.index_select(0, gather), w)
            qg = heads(q.index_select(0, rows if last_only else gather), wq)
            bg = bias[:, :, -wq:, -w:].index_select(0, rows)  # (b, 1, wq, w)
            lg = None if lanes is None else lanes[:, :, -wq:, -w:].index_select(0, rows)
            yg = self._attend(qg, kg, vg, bg, lambda p, lg=lg: self.prob_dropout.apply_lanes(p, lg))
            yg = yg.transpose(1, 2).reshape(b * wq, D)
            outs.append(yg if last_only else yg.index_select(0, real))
        inverse = packing.group_inverse(rows=last_only)
        return self.out(torch.cat(outs).index_select(0, inverse))


class FeedForward(nn.Module):
    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        nn.init.xavier_normal_(self.w1.weight)
        nn.init.xavier_normal_(self.w2.weight)
        self.drop = Dropout(dropout, feeds_product=True)  # the hidden layer's, before w2

    def forward(self, x: torch.Tensor, full: "tuple[tuple[int, ...], Callable] | None" = None
                ) -> torch.Tensor:
        """``full``: as in ``Dropout.forward``, for the (..., D) input (the hidden layer's mask
        is then drawn for (..., 4D))."""
        h = F.gelu(self.w1(x), approximate="tanh")
        if full is not None:
            full = ((*full[0][:-1], h.shape[-1]), full[1])
        return self.w2(self.drop(h, full))


class Block(nn.Module):
    """One transformer block: attention then FFN, each a residual sublayer (post- or pre-norm)."""

    def __init__(self, d: int, n_heads: int = 4, dropout: float = 0.1, pre_norm: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(d, n_heads, dropout)
        self.ffn = FeedForward(d, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=LN_EPS), nn.LayerNorm(d, eps=LN_EPS)
        self.drop = Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, bias: torch.Tensor, packing: "Packing | None" = None
                ) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), bias, packing))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, bias, packing)))
        return self.norm2(x + self.drop(self.ffn(x)))

    def forward_last(self, x: torch.Tensor, bias: torch.Tensor, packing: "Packing | None" = None
                     ) -> torch.Tensor:
        """The block's output at each row's last position only, (B, D): the same values as
        ``forward(...)[:, -1]``, but the query, output projection and FFN run on B tokens
        instead of all of them (keys and values still see every token).

        Dropout draws every mask at the full pass's shape and keeps the last positions' lanes,
        so on the CPU a seed trains exactly as with ``forward`` (up to float rounding): the
        optimizer sees the same masks, the random stream after the block is the same."""
        take = (lambda t: t[:, -1]) if packing is None else packing.last
        x_last = take(x)  # (B, D)
        full = (tuple(x.shape), take)
        if self.pre_norm:
            a = self.attn(self.norm1(x), bias, packing, last_only=True)
            x_last = x_last + self.drop(a, full)
            return x_last + self.drop(self.ffn(self.norm2(x_last), full), full)
        a = self.attn(x, bias, packing, last_only=True)
        x_last = self.norm1(x_last + self.drop(a, full))
        return self.norm2(x_last + self.drop(self.ffn(x_last, full), full))

    def prefill(self, x: torch.Tensor, width: int) -> KVCache:
        """The ``KVCache`` of x (B, width - 1, D), this block's input at the fixed positions."""
        return self.attn.prefill(self.norm1(x) if self.pre_norm else x, width)

    def forward_cached(self, x: torch.Tensor, cache: KVCache, bias: torch.Tensor
                       ) -> torch.Tensor:
        """The block at the last position only, in inference (eval) mode: x (B, 1, D) -> (B, 1, D),
        the value of ``forward(...)[:, -1:]`` on the whole sequence when ``cache`` holds the
        earlier positions' keys and values (``prefill``) and the attention is causal (the
        earlier positions cannot see the last one). bias (B, 1, 1, W): the last query's row."""
        if self.pre_norm:
            x = x + self.attn.forward_cached(self.norm1(x), cache, bias)
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attn.forward_cached(x, cache, bias))
        return self.norm2(x + self.ffn(x))


class Packing:
    """Index of the real (non-padding) tokens of a (B, L) batch.

    Everything in a block except the attention itself is per token, so with the correct mask
    (padding keys invisible, padding outputs never used) those ops can run on the M real tokens
    only: ML-100K batches are about a quarter padding even after length bucketing. The losses
    also take their target positions with ``Packing(keep).pack(h)``: the same values and
    gradients as ``h[keep]``, but the backward is an ``index_add`` instead of boolean indexing's
    accumulating ``index_put``, about 2 ms less per 64-row micro-batch of the logits' forward
    and backward on the 2-core development machine (2-3% of an epoch).
    """

    def __init__(self, valid: torch.Tensor, *, grouped: bool = False):
        self.shape = tuple(valid.shape)
        self.index = valid.reshape(-1).nonzero().squeeze(1)  # (M,)
        self._counts, self._last = None, None
        self.grouped = grouped  # attention runs by length group (``groups``)
        self._groups, self._layout, self._inverse = None, None, {}

    @property
    def counts(self) -> torch.Tensor:
        """(B,) the number of real tokens in each row."""
        if self._counts is None:
            counts = torch.zeros(self.shape[0], dtype=torch.long, device=self.index.device)
            self._counts = counts.index_add_(0, self.index // self.shape[1],
                                             torch.ones_like(self.index))
        return self._counts

    @property
    def groups(self) -> list[tuple[torch.Tensor, int]]:
        """The rows cut into length groups, [(row indices, width)], widths increasing: the
        partition of the rows sorted by length that minimises the attention work, the sum over
        groups of rows x width^2, plus ``GROUP_OVERHEAD`` per group (the fixed cost of a
        group's dozen operators). Every row is in one group; a group's width is its longest
        row. Rows must be left-padded (their items at the last positions)."""
        if self._groups is None:
            self._groups = length_groups(self.counts)
        return self._groups

    def group_layout(self) -> list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]:
        """Per group (rows, width, gather, real): ``gather`` (rows x width,) the packed index
        of each of the group's rows' last ``width`` positions (M, one past the last token, at
        padding), ``real`` the flat positions of ``gather`` that are tokens."""
        if self._layout is None:
            B, L = self.shape
            M = len(self.index)
            where = torch.full((B * L,), M, dtype=torch.long, device=self.index.device)
            where[self.index] = torch.arange(M, device=self.index.device)
            where = where.view(B, L)
            self._layout = []
            for rows, w in self.groups:
                gather = where.index_select(0, rows)[:, L - w:].reshape(-1)
                real = (gather < M).nonzero().squeeze(1)
                self._layout.append((rows, w, gather, real))
        return self._layout

    def group_inverse(self, *, rows: bool) -> torch.Tensor:
        """The index that puts the groups' concatenated outputs back in order: rows (one per
        row, ``rows=True``) or packed tokens."""
        key = "rows" if rows else "tokens"
        if key not in self._inverse:
            layout = self.group_layout()
            order = torch.cat([r if rows else g[real] for r, _, g, real in layout])
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(len(order), device=order.device)
            self._inverse[key] = inverse
        return self._inverse[key]

    def last(self, x: torch.Tensor) -> torch.Tensor:
        """(M, ...) packed -> (B, ...): each row's last real token, which is the row's last
        position for left-padded rows (``Encoder.forward(last_only=True)`` checks that)."""
        if self._last is None:  # row b's tokens end at packed position (tokens in rows <= b) - 1
            self._last = self.counts.cumsum(0) - 1
        return x.index_select(0, self._last)

    def pack(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, ...) -> (M, ...)
        return x.reshape(-1, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:  # (M, ...) -> (B, L, ...), zeros at padding
        out = x.new_zeros(self.shape[0] * self.shape[1], *x.shape[1:])
        return out.index_copy(0, self.index, x).view(*self.shape, *x.shape[1:])


# A group's fixed cost in the units of ``length_groups`` (rows x width^2): about what the
# dozen operators of one more group cost at DiffuRec's width on the 2-core development CPU.
GROUP_OVERHEAD = 8192


def length_groups(lengths: torch.Tensor, overhead: int | None = None
                  ) -> list[tuple[torch.Tensor, int]]:
    """Partition rows by length: ``lengths`` (B,) -> [(row indices, width)], the contiguous
    cut of the length-sorted rows minimising sum(rows x width^2) + overhead per group (dynamic
    programming over the distinct lengths); ``overhead`` defaults to ``GROUP_OVERHEAD``."""
    overhead = GROUP_OVERHEAD if overhead is None else overhead
    device, lengths = lengths.device, lengths.to("cpu", torch.long)
    values, counts = torch.unique(lengths, return_counts=True)  # sorted ascending
    values, cum = values.tolist(), [0] + counts.cumsum(0).tolist()
    m = len(values)
    best, cut = [0.0] + [math.inf] * m, [0] * (m + 1)
    for j in range(1, m + 1):  # groups end at distinct value j-1 (its width)
        for i in range(j):
            cost = best[i] + (cum[j] - cum[i]) * values[j - 1] ** 2 + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    bounds, j = [], m
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    order = torch.argsort(lengths, stable=True)
    groups = []
    for i, j in reversed(bounds):
        rows = order[cum[i]:cum[j]].to(device)
        groups.append((rows, max(int(values[j - 1]), 1)))
    return groups


class Encoder(nn.Module):
    """A stack of blocks. ``forward(x (B, L, D), valid (B, L) bool) -> (B, L, D)``."""

    def __init__(self, d: int, n_blocks: int = 2, n_heads: int = 4, dropout: float = 0.1, *,
                 causal: bool = True, pre_norm: bool = False, attention_mask: str = "correct",
                 group_attention: bool = False):
        super().__init__()
        # group_attention (correct mask only): attention by length group (``Packing.groups``),
        # for batches of mostly short left-padded rows (DiffuRec's prefix samples)
        self.group_attention = group_attention
        if attention_mask not in ATTENTION_MASKS:
            raise ValueError(f"attention_mask must be one of {ATTENTION_MASKS}, "
                             f"got {attention_mask!r}")
        self.blocks = nn.ModuleList(Block(d, n_heads, dropout, pre_norm) for _ in range(n_blocks))
        self.causal, self.attention_mask = causal, attention_mask

    def layout(self, valid: torch.Tensor) -> tuple[torch.Tensor, "Packing | None"]:
        """The attention bias and the real-token index of ``valid`` (B, L): what ``forward``
        derives from it (two host syncs). A caller that runs the same histories many times (a
        reverse-diffusion loop) computes it once and passes it to ``forward``."""
        bias = attention_bias(valid, causal=self.causal, mode=self.attention_mask)
        if self.attention_mask == "correct" and not bool(valid.all()):
            return bias, Packing(valid, grouped=self.group_attention)
        return bias, None

    def forward(self, x: torch.Tensor, valid: torch.Tensor,
                layout: tuple[torch.Tensor, "Packing | None"] | None = None, *,
                last_only: bool = False) -> torch.Tensor:
        """x (B, L, D), valid (B, L) -> (B, L, D). With the correct mask, outputs at padding
        positions are zeros (they are never used) and only real tokens are computed.
        ``layout``: ``self.layout(valid)``, precomputed.

        ``last_only=True`` returns the output at the last position only, (B, D), for a model
        that reads nothing else (DiffuRec): the last block then computes that one query, its
        output projection and FFN (``Block.forward_last``), about a fifth of a 4-block stack's
        matrix work. Every row's last position must be a real item (left-padded histories).
        """
        if last_only and valid.device.type == "cpu" and not bool(valid[:, -1].all()):
            raise ValueError("last_only needs every row's last position to be an item "
                             "(left-padded histories)")
        bias, packing = self.layout(valid) if layout is None else layout
        blocks = list(self.blocks)
        tail = blocks.pop() if last_only and blocks else None
        if packing is not None:
            x = packing.pack(x)  # (M, D)
            for block in blocks:
                x = block(x, bias, packing)
            if last_only:
                return packing.last(x) if tail is None else tail.forward_last(x, bias, packing)
            return packing.unpack(x)
        for block in blocks:
            x = block(x, bias)
        if last_only:
            return x[:, -1] if tail is None else tail.forward_last(x, bias)
        return x

    def prefill(self, x: torch.Tensor, bias: torch.Tensor) -> list[KVCache]:
        """One ``KVCache`` per block for a sequence of W positions whose first W-1 are fixed:
        x (B, W-1, D) the stack's input there, bias (B, 1, W, W) the whole sequence's
        ``attention_bias``. Causal stacks only: there the fixed positions never see the last."""
        if not self.causal:
            raise ValueError("Encoder.prefill needs causal attention: without it the fixed "
                             "positions see the last one, which changes at every call")
        width = x.shape[1] + 1
        caches = []
        for i, block in enumerate(self.blocks):
            caches.append(block.prefill(x, width))
            if width > 1 and i < len(self.blocks) - 1:  # the last block's prefix outputs are
                x = block(x, bias[:, :, :-1, :-1])      # never used: only its keys/values
        return caches

    def forward_cached(self, x: torch.Tensor, caches: list[KVCache], bias: torch.Tensor
                       ) -> torch.Tensor:
        """The stack at the last position only, given ``prefill``'s caches: x (B, 1, D) ->
        (B, 1, D); bias (B, 1, 1, W), the last query's row of the whole sequence's bias."""
        for block, cache in zip(self.blocks, caches):
            x = block.forward_cached(x, cache, bias)
        return x


def timestep_embedding(t: torch.Tensor, dim: int, *, scale: float = 1.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, cos first (section 2.4).

    t: any shape (...,); returns (..., dim) with [cos(t' f_k), sin(t' f_k)], t' = scale * t,
    f_k = exp(-ln(10000) k / (dim/2)), k = 0..dim/2-1.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device,
                                                         dtype=torch.float32) / half)
    args = (t.float() * scale)[..., None] * freqs  # (..., half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb
