"""DreamRec: guided diffusion that generates the next item's embedding (Yang et al., NeurIPS 2023).

As run in the ADRec authors' code (official-implementation.md section 4.3):

* a random N(0, 1) item table, no pretraining; row 0 (padding) is zero and stays zero (no loss
  reaches it: the lookup has padding_idx 0 and the MSE target is never padding);
* guidance c = CAM(LN(Dropout_0.3(E[history]))): a 2-block causal post-norm transformer;
* one timestep t per sequence; x_t = q_sample(E[target], t);
* denoiser: a position-wise MLP on [x_t, t_emb, c] (3D -> 4D -> D -> 4D -> D, SiLU, dropout),
  then Dropout and LayerNorm; no mixing across positions;
* loss: MSE between the x0-prediction and E[target] at the last position only (the target is not
  detached, so the MSE also moves the item table); no cross-entropy;
* inference: x_T ~ N(0, I), T reverse DDPM steps, score = x_0 . E^T (inner product).

Only the last position matters. The authors noise every target position and run the MLP on all
of them, but the MLP is position-wise and the loss and the score read only the last position, so
computing the last position alone gives the same loss, gradients and sampling distribution at
1/L of the cost (the random numbers drawn differ, so runs are not bitwise equal to the authors').

Classifier-free guidance (the original DreamRec paper; broken and unused in the authors' code):

* training: with probability ``cond_dropout`` per sequence, the guidance c is replaced by the
  null condition, a zero vector (as the ADRec code's own guidance path does);
* inference: x0_hat = uncond + s * (cond - uncond) with s = ``guidance_scale``. s = 1 is the plain
  conditional model (no second pass); s = 0 ignores the history. The original paper writes
  (1 + w) cond - w uncond, i.e. w = s - 1.

The defaults (cond_dropout 0, guidance_scale 1) reproduce the authors' setting.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adrec.data import Batch
from adrec.diffusion import NoiseSchedule
from adrec.models.base import Recommender, padded_item_embedding
from adrec.models.layers import LN_EPS, Dropout, Encoder, timestep_embedding


@dataclass
class DreamRecArgs:
    hidden: int = 128            # embedding and model width D
    n_blocks: int = 2            # guidance-encoder (CAM) transformer blocks
    n_heads: int = 4             # attention heads (head size D / n_heads)
    dropout: float = 0.1         # attention/residual/FFN dropout and the MLP denoiser's dropout
    emb_dropout: float = 0.3     # dropout on the history embeddings, before their LayerNorm
    steps: int = 32              # diffusion steps T (truncated-linear schedule)
    init_std: float = 1.0        # std of the random N(0, std) item-table init
    attention_mask: str = "correct"  # "correct" masks padding keys; "official" = authors' bug
    cond_dropout: float = 0.0    # P(guidance replaced by the null condition) per training sequence
    guidance_scale: float = 1.0  # CFG scale s at inference: uncond + s (cond - uncond); 1 = off


class DreamRec(Recommender):
    name = "dreamrec"
    Args = DreamRecArgs
    # cpu_bf16 stays False: a Beauty epoch took about 2.85 s with bfloat16 products against
    # about 2.6 s at float32 on the AVX512-BF16 dev CPU, so auto trains DreamRec in float32 there

    def __init__(self, args: DreamRecArgs, n_items: int):
        super().__init__(args, n_items)
        if not 0.0 <= args.cond_dropout <= 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1], got {args.cond_dropout}")
        D = args.hidden
        self.item_embedding = padded_item_embedding(n_items, D, args.init_std)
        self.input_dropout = Dropout(args.emb_dropout)
        self.input_norm = nn.LayerNorm(D, eps=LN_EPS)
        self.encoder = Encoder(D, args.n_blocks, args.n_heads, args.dropout, causal=True,
                               attention_mask=args.attention_mask)
        self.time_mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.SiLU(), nn.Linear(4 * D, D))
        self.denoiser = nn.Sequential(
            nn.Linear(3 * D, 4 * D), nn.SiLU(), Dropout(args.dropout, feeds_product=True),
            nn.Linear(4 * D, D),
            nn.Linear(D, 4 * D), nn.SiLU(), Dropout(args.dropout, feeds_product=True),
            nn.Linear(4 * D, D),
            Dropout(args.dropout), nn.LayerNorm(D, eps=LN_EPS))
        self.schedule = NoiseSchedule(args.steps)

    def guidance(self, history: torch.Tensor) -> torch.Tensor:
        """history (B, L) -> c at the last position (B, D), from the causal encoder."""
        e = self.input_norm(self.input_dropout(self.item_embedding(history)))  # (B, L, D)
        return self.encoder(e, history > 0)[:, -1]

    def drop_condition(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time condition dropout: (c, kept) with dropped rows set to the null condition.

        kept (B,) bool. Draws from the global RNG (seeded and saved by the trainer).
        """
        if self.args.cond_dropout == 0.0:
            return c, torch.ones(len(c), dtype=torch.bool, device=c.device)
        kept = torch.rand(len(c), device=c.device) >= self.args.cond_dropout
        return c * kept[:, None].to(c.dtype), kept

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x0-prediction: x_t (B, D), t (B,), c (B, D) -> (B, D)."""
        sinus = timestep_embedding(t, self.args.hidden, scale=1000.0 / self.args.steps)
        return self.denoiser(torch.cat([x_t, self.time_mlp(sinus), c], dim=-1))  # (B, 3D) in

    def guided_denoise(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor,
                       scale: float) -> torch.Tensor:
        """uncond + scale * (cond - uncond); scale 1 is the conditional prediction alone."""
        if scale == 1.0:
            return self.denoise(x_t, t, c)
        B = len(x_t)
        both = self.denoise(torch.cat([x_t, x_t]), torch.cat([t, t]),
                            torch.cat([c, torch.zeros_like(c)]))  # (2B, D): cond, then uncond
        cond, uncond = both[:B], both[B:]
        return uncond + scale * (cond - uncond)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        target = batch.target[:, -1]                             # (B,)
        x0 = self.item_embedding(target)                         # (B, D); not detached
        c, _ = self.drop_condition(self.guidance(batch.history))
        t = self.schedule.sample_timesteps((len(target),), device=x0.device)
        x_t = self.schedule.q_sample(x0, t)
        n = batch.n_rows * x0.shape[-1]  # mean over the (whole) batch's rows and dimensions
        mse = F.mse_loss(self.denoise(x_t, t, c), x0, reduction="sum") / n
        return {"loss": mse, "mse": mse}

    @torch.no_grad()
    def sample(self, history: torch.Tensor, generator: torch.Generator | None = None,
               guidance_scale: float | None = None) -> torch.Tensor:
        """T reverse DDPM steps guided by the history: (B, L) -> x_0 (B, D)."""
        scale = self.args.guidance_scale if guidance_scale is None else guidance_scale
        c = self.guidance(history)  # computed once
        return self.schedule.sample(lambda x, t: self.guided_denoise(x, t, c, scale),
                                    (history.shape[0], self.args.hidden), generator=generator,
                                    device=history.device, noise_at_zero=True)

    def represent(self, history: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        return self.sample(history, generator)  # (B, D)
