"""ADRec: auto-regressive diffusion with token-level noise (paper section 3).

Model (paper 3.2-3.3; official-implementation.md sections 2.1-2.9):

* e = LN(Dropout_0.3(E[history])), no positional encoding (order comes from the causal mask);
* c = CAM(e): the causal attention module, 2 causal post-norm blocks;
* every target token gets its own timestep t ~ U{0..T-1}, padding keeps t = 0 and stays clean;
  x_t = q_sample(E[target], t) (eq. 11);
* t_emb = MLP(sinusoid(1000 t / T)) with a SiLU MLP (eq. 8);
* z = c + lambda (x_t + t_emb) (eq. 9); x0_hat = ADM(z) (eq. 10): 2 causal blocks predicting x0 at
  every position;
* loss = CE(x0_hat E^T, target) over all items at every non-padding position + the masked MSE
  between x0_hat and E[target] (eq. 13).

Inference (paper 3.5, eq. 14): only the last token is noised, t = [0, ..., 0, i] for
i = T-1 .. 0, the history stays clean at every step, and the score is the last position's x0
prediction against every embedding row. Because attention is causal and the history never
changes, the CAM and every history position of the ADM are computed once per user; each reverse
step recomputes the last position only (``score_all(..., cache=True)``, the default).

Where the released code departs from the paper, the default follows the paper and an option
reproduces the code (all recorded in the checkpoint through ``ADRecArgs``):

* ``loss_merge="sum"``: L = CE + MSE (eq. 13). The released code's PCGrad wrapper averages the two
  gradients, i.e. (CE + MSE) / 2: ``loss_merge="mean"`` (section 2.8).
* ``leak_weight_decay=False``: the warm-up freezes E for real. ``True`` reproduces the released
  code, where Adam's weight decay still shrinks the "frozen" E (section 3.2).
* ``attention_mask="correct"`` masks padding keys; ``"official"`` is the authors' query-only mask.

Deliberately kept from the released code: the MSE target E[target] is not detached, so once E is
unfrozen the MSE also trains the embedding (section 2.8); the MSE is a per-sequence mean over
valid positions and dimensions, averaged over sequences; row 0 (padding) stays in the softmax as
a class that is never a label.

The three-stage training (paper 3.4) is ``adrec.pipeline.train_adrec``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adrec.data import Batch
from adrec.diffusion import NoiseSchedule
from adrec.models.base import Recommender, check_common_args
from adrec.models.layers import ATTENTION_MASKS, LN_EPS, Dropout, Encoder, Packing, \
    attention_bias, timestep_embedding

DENOISERS = ("attention", "mlp")
LOSS_MERGES = ("sum", "mean")


@dataclass
class ADRecArgs:
    hidden: int = 128            # embedding and model width D
    n_blocks: int = 2            # transformer blocks in the CAM and in the ADM (each)
    n_heads: int = 4             # attention heads (head size D / n_heads)
    dropout: float = 0.1         # attention-probability, residual and FFN dropout
    emb_dropout: float = 0.3     # dropout on history embeddings, applied before the input LN
    max_len: int = 50            # history window
    steps: int = 32              # diffusion steps T (truncated-linear schedule)
    lam: float = 1e-3            # lambda of the aggregation z = c + lambda (x_t + t_emb), eq. 9
    use_mse: bool = True         # add the denoising MSE of eq. 13; False = CE only (ablation)
    use_cam: bool = True         # causal attention module; False: c = the input embeddings e
    denoiser: str = "attention"  # ADM: "attention" (2 causal blocks) | "mlp" (ablation, per token)
    loss_merge: str = "sum"      # "sum": CE + MSE (paper); "mean": (CE + MSE) / 2 (released code)
    pcgrad: bool = False         # project conflicting CE / MSE gradients (PCGrad) before merging
    pretrain: bool = True        # pipeline stage 1: pre-train E with the stage-1 model (CE)
    warmup: bool = True          # pipeline stage 2: warm-up with E frozen (warmup_epochs epochs)
    leak_weight_decay: bool = False  # parity: weight decay still shrinks the frozen E in stage 2
    emb_init_std: float = 1.0    # N(0, std) init of E when not pre-trained (nn.Embedding default)
    stage1_init_std: float = 0.1  # stage-1 model's N(0, std) init (authors' SASRec init)
    attention_mask: str = "correct"  # "correct" masks padding keys; "official" = authors' bug


def check_args(args: ADRecArgs) -> None:
    """Validate ``args`` first and loudly (bad value, valid range)."""
    check_common_args(args)
    if args.denoiser not in DENOISERS:
        raise ValueError(f"denoiser={args.denoiser!r}: choose one of {', '.join(DENOISERS)}")
    if args.loss_merge not in LOSS_MERGES:
        raise ValueError(f"loss_merge={args.loss_merge!r}: choose one of {', '.join(LOSS_MERGES)}")
    if args.attention_mask not in ATTENTION_MASKS:
        raise ValueError(f"attention_mask={args.attention_mask!r}: choose one of "
                         f"{', '.join(ATTENTION_MASKS)}")
    if args.lam < 0:
        raise ValueError(f"lam must be >= 0, got {args.lam}")
    if args.pcgrad and not args.use_mse:
        raise ValueError("pcgrad=true needs two losses; it cannot be combined with use_mse=false")


class MLPDenoiser(nn.Module):
    """The per-token MLP denoiser of the ablation (section 2.6): Linear, SiLU, Linear, LayerNorm."""

    def __init__(self, d: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d),
                                 nn.LayerNorm(d))

    def forward(self, z: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class ADRec(Recommender):
    name = "adrec"
    Args = ADRecArgs
    cpu_bf16 = True  # auto: bfloat16 products on a bfloat16 CPU (bench_matmul_precision.md)

    def __init__(self, args: ADRecArgs, n_items: int):
        check_args(args)
        super().__init__(args, n_items)
        D = args.hidden
        self.item_embedding = nn.Embedding(n_items + 1, D)
        nn.init.normal_(self.item_embedding.weight, std=args.emb_init_std)
        self.input_dropout = Dropout(args.emb_dropout)
        self.input_norm = nn.LayerNorm(D, eps=LN_EPS)
        enc = dict(d=D, n_blocks=args.n_blocks, n_heads=args.n_heads, dropout=args.dropout,
                   causal=True, attention_mask=args.attention_mask)
        self.cam = Encoder(**enc) if args.use_cam else None
        self.time_mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.SiLU(), nn.Linear(4 * D, D))
        self.adm = Encoder(**enc) if args.denoiser == "attention" else MLPDenoiser(D)
        self.schedule = NoiseSchedule(args.steps)

    # ---------------------------------------------------------------------------------------
    # building blocks

    def condition(self, history: torch.Tensor) -> torch.Tensor:
        """c = CAM(LN(Dropout(E[history]))) (eq. 7); (B, L) -> (B, L, D)."""
        e = self.input_norm(self.input_dropout(self.item_embedding(history)))  # (B, L, D)
        return e if self.cam is None else self.cam(e, history > 0)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """t_emb = MLP(sinusoid(1000 t / T)) (eq. 8); t (...,) int -> (..., D).

        The MLP runs once on the T possible timesteps and the result is gathered by ``t``: the
        same numbers (and gradients) as running it on every token, at a T / (B L) of the cost.
        The gather is an ``index_select``: its backward is an ``index_add`` (0.3 ms for a
        64 x 50 micro-batch on the 2-core development machine) where ``table[t]``'s is an
        accumulating ``index_put`` (2.7 ms; 2% of an ADRec epoch on ML-100K).
        """
        steps = torch.arange(self.args.steps, device=t.device)
        sinusoid = timestep_embedding(steps, self.args.hidden, scale=1000.0 / self.args.steps)
        table = self.time_mlp(sinusoid.to(self.time_mlp[0].weight.dtype))  # (T, D)
        return table.index_select(0, t.reshape(-1)).view(*t.shape, table.shape[-1])

    def aggregate(self, c: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z = c + lambda (x_t + t_emb) (eq. 9)."""
        return c + self.args.lam * (xt + self.time_embedding(t))

    # ---------------------------------------------------------------------------------------
    # training

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced denoising at every position: returns (x0_hat, x0, keep)."""
        history, target = batch.history, batch.target
        keep = target > 0                                   # (B, L) non-padding targets
        c = self.condition(history)                         # (B, L, D)
        x0 = self.item_embedding(target)                    # (B, L, D), not detached
        t = self.schedule.sample_timesteps(target.shape, device=target.device) * keep  # (B, L)
        xt = self.schedule.q_sample(x0, t, mask=keep)       # padding stays clean x0
        x0_hat = self.adm(self.aggregate(c, xt, t), history > 0)  # (B, L, D)
        return x0_hat, x0, keep

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        x0_hat, x0, keep = self.forward_train(batch)
        # (M, N+1), row 0 never a label
        logits = F.linear(Packing(keep).pack(x0_hat), self.item_embedding.weight)
        ce = F.cross_entropy(logits, batch.target[keep], reduction="sum") / batch.n_tokens
        out = {"ce": ce}
        if not self.args.use_mse:
            out["loss"] = ce
            return out
        w = keep.float()
        w = w / w.sum(1, keepdim=True).clamp_min(1.0)               # (B, L) per-sequence weights
        sq = (x0_hat - x0).pow(2).mean(-1)                          # (B, L) mean over D
        mse = (sq * w).sum() / batch.n_rows                        # mean over sequences
        out["mse"] = mse
        out["loss"] = ce + mse if self.args.loss_merge == "sum" else (ce + mse) / 2
        return out

    def backward(self, losses: dict[str, torch.Tensor]) -> None:
        """Called by the trainer instead of ``losses["loss"].backward()``.

        Plain back-propagation of ``losses["loss"]`` unless ``pcgrad``; with
        ``leak_weight_decay`` a frozen E gets a zero ``.grad`` so Adam's weight decay still moves
        it, as in the released code (section 3.2).
        """
        if self.args.pcgrad:
            self._pcgrad_backward([losses["ce"], losses["mse"]])
        else:
            losses["loss"].backward()
        if self.args.leak_weight_decay:
            for p in self.embedding_parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)

    def _pcgrad_backward(self, task_losses: list[torch.Tensor]) -> None:
        """PCGrad (Yu et al. 2020) over the flattened gradient of the whole model (section 4.4).

        1. one gradient g_i per loss; 2. for each g_i, visit the other tasks in random order and
        remove the component along g_j whenever g_i . g_j < 0; 3. merge the projected gradients
        with ``loss_merge`` (sum, or mean over tasks) on entries every task reaches; entries only
        one task reaches keep that task's gradient (the released wrapper's rule).
        """
        params = [p for p in self.parameters() if p.requires_grad]
        flat, reached = [], []
        for i, loss in enumerate(task_losses):
            grads = torch.autograd.grad(loss, params, retain_graph=i < len(task_losses) - 1,
                                        allow_unused=True)
            flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, params)]))
            reached.append(torch.cat([torch.full((p.numel(),), g is not None, device=p.device)
                                      for g, p in zip(grads, params)]))
        projected = []
        for i, g in enumerate(flat):
            g = g.clone()
            for j in torch.randperm(len(flat)).tolist():  # global RNG: seeded, resumable
                if j == i:
                    continue
                dot = g @ flat[j]
                if dot < 0:
                    g -= dot / flat[j].pow(2).sum().clamp_min(1e-20) * flat[j]
            projected.append(g)
        stacked, hit = torch.stack(projected), torch.stack(reached)
        merged = stacked.sum(0)
        if self.args.loss_merge == "mean":
            shared = hit.all(0)
            merged = torch.where(shared, merged / len(projected), merged)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = merged[offset:offset + n].view_as(p).clone()
            offset += n

    # ---------------------------------------------------------------------------------------
    # inference

    @torch.no_grad()
    def score_all(self, history: torch.Tensor, generator: torch.Generator | None = None, *,
                  cache: bool = True) -> torch.Tensor:
        """Scores (B, N+1) of the last position's denoised x0 against every embedding row.

        Reverse diffusion on the last token only (eq. 14): t = [0, ..., 0, i], i = T-1 .. 0,
        with the clean shifted history E[history[:, 1:]] at the other positions. ``cache``
        computes the CAM and the history positions of the ADM once (the default);
        ``cache=False`` re-runs the whole ADM at every step (reference path, same numbers).
        """
        return self.represent(history, generator, cache=cache) @ self.item_embedding.weight.T

    @torch.no_grad()
    def represent(self, history: torch.Tensor, generator: torch.Generator | None = None, *,
                  cache: bool = True) -> torch.Tensor:
        """The last position's denoised x0, (B, L) -> (B, D): ``sample_last``."""
        return self.sample_last(history, generator, cache=cache)

    def sample_last(self, history: torch.Tensor, generator: torch.Generator | None = None, *,
                    cache: bool = True) -> torch.Tensor:
        """The DDPM sample x_0 of the next item's embedding, (B, L) -> (B, D)."""
        valid = history > 0
        c = self.condition(history)                     # (B, W, D), computed once
        known = self.item_embedding(history[:, 1:])     # (B, W-1, D), clean and fixed
        predict = (self._cached_predictor(c, known, valid) if cache
                   else self._full_predictor(c, known, valid))
        return self.schedule.sample(predict, (history.shape[0], self.args.hidden),
                                    generator=generator, device=history.device, dtype=c.dtype)

    def _full_predictor(self, c, known, valid):
        """Uncached: the whole (B, W) sequence through the ADM at every step."""
        B, W, _ = c.shape

        def predict(x, t):
            xt = torch.cat([known, x[:, None]], dim=1)                 # (B, W, D)
            tt = torch.zeros(B, W, dtype=torch.long, device=c.device)
            tt[:, -1] = t
            return self.adm(self.aggregate(c, xt, tt), valid)[:, -1]   # (B, D)

        return predict

    def _cached_predictor(self, c, known, valid):
        """Cached: the history positions 0..W-2 go through the ADM once (``Encoder.prefill``
        keeps each block's keys and values); the predictor computes the last position only."""
        B, W, D = c.shape
        c_last = c[:, -1]                                              # (B, D)
        if isinstance(self.adm, MLPDenoiser):                          # per token: no history
            return lambda x, t: self.adm(self.aggregate(c_last, x, t))
        bias = attention_bias(valid, causal=True, mode=self.adm.attention_mask)  # (B, 1, W, W)
        t0 = torch.zeros(B, W - 1, dtype=torch.long, device=c.device)
        caches = self.adm.prefill(self.aggregate(c[:, :-1], known, t0), bias)
        last_bias = bias[:, :, -1:, :]                                 # (B, 1, 1, W)

        def predict(x, t):
            y = self.aggregate(c_last, x, t)[:, None]                  # (B, 1, D)
            return self.adm.forward_cached(y, caches, last_bias)[:, 0]  # (B, D)

        return predict
