"""DiffuRec: sequence-level diffusion on the last target item (Li et al., TOIS 2023).

As run in the ADRec authors' code (official-implementation.md section 4.2):

* a random N(0, 1) item table, no pretraining; row 0 (padding) starts at zero and gets no
  gradient through the history lookup, but it stays in the CE softmax as a class that is never a
  label, so, as in the authors' code, it is trained as a negative;
* history path e = LN(Dropout_0.3(E[history])), no positional encoding;
* one timestep t per sequence; only the last target is noised: x_t = q_sample(E[target], t);
* aggregation z = e + lambda * (x_t + t_emb), the same noisy target broadcast onto every history
  position, with lambda ~ N(1e-3, (1e-3)^2) drawn element-wise on every forward pass;
* denoiser: a 4-block bidirectional pre-norm transformer, then Dropout and LayerNorm; the
  x0-prediction is the output at the last position, so the last block computes only that
  position's query, output projection and FFN (``Encoder(last_only=True)``: the same values and
  gradients, and on the CPU the same dropout masks, drawn at the full pass's shape and cut to
  the last positions, so a seed trains as with a full-width last block up to float rounding
  (tests/test_diffurec.py); 0.86x the step time of the full-width block on Baby, 10 batches of
  512, 2 threads, interleaved, quiet machine, load 1.6-2.2; drawing the masks for the last
  positions only was 0.80x but gave a seed different draws; on a GPU ``F.dropout`` draws them);
  and the attention runs by length group (``Encoder(group_attention=True)``, correct mask only):
  a prefix sample holds 5 items on average on Baby but sat at its batch's width (41-48), so the
  (B, h, L, L) scores were most of the step; each group of similar-length rows now attends over
  its own width, with the same values, gradients and CPU dropout masks (tests/test_layers.py):
  0.54x the training step and 0.53x the 32-step inference on Baby, same measurement;
* loss: cross-entropy of x0_hat . E^T over all N+1 rows (the MSE to E[target] is only logged);
* trained on every prefix of the truncated sequence (``train_samples = "prefixes"``, paper
  appendix B: truncate to max_len + 1 items first, then split);
* inference: x_T ~ N(0, I), T reverse DDPM steps on the last target with the history fixed, then
  score = x_0 . E^T.

Inference lambda: the authors redraw lambda at every reverse step too. ``inference_lambda =
"sample"`` (default) does the same, from the ``generator`` passed to ``score_all`` so evaluation
is reproducible; ``"mean"`` uses the constant 1e-3 (deterministic aggregation, for ablations).

Attention mask: with ``"correct"`` (default) padding keys are masked, so a prefix's outputs do not
depend on how much left padding its batch has; the trainer can then trim every bucketed batch to
its longest prefix, which is what makes the 30,619 ML-100K prefix samples per epoch affordable.
``"official"`` copies the authors' query-only mask (padding keys visible); batches then stay at
full width.
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

INFERENCE_LAMBDA = ("sample", "mean")


@dataclass
class DiffuRecArgs:
    hidden: int = 128            # embedding and model width D
    n_blocks: int = 4            # denoiser transformer blocks (the authors' DiffuRec uses 4)
    n_heads: int = 4             # attention heads (head size D / n_heads)
    dropout: float = 0.1         # attention-probability, residual, FFN and output dropout
    emb_dropout: float = 0.3     # dropout on the history embeddings, before their LayerNorm
    steps: int = 32              # diffusion steps T (truncated-linear schedule)
    lambda_mean: float = 1e-3    # mean of the aggregation weight lambda ~ N(mean, std^2)
    lambda_std: float = 1e-3     # std of lambda (drawn element-wise, every forward pass)
    inference_lambda: str = "sample"  # "sample": redraw each reverse step (authors'); "mean": fixed
    init_std: float = 1.0        # std of the random N(0, std) item-table init
    attention_mask: str = "correct"  # "correct" masks padding keys; "official" = authors' bug


class DiffuRec(Recommender):
    name = "diffurec"
    Args = DiffuRecArgs
    train_samples = "prefixes"
    # cpu_bf16 stays False: bfloat16 products made a Beauty epoch 1.44x slower on the AVX512-BF16
    # dev CPU (44.8 s against 31.1 s; its attention by length group gives many product shapes),
    # so auto trains DiffuRec in float32 there (benchmarks/bench_diffurec_epoch.md)

    def __init__(self, args: DiffuRecArgs, n_items: int):
        super().__init__(args, n_items)
        if args.inference_lambda not in INFERENCE_LAMBDA:
            raise ValueError(f"inference_lambda must be one of {INFERENCE_LAMBDA}, "
                             f"got {args.inference_lambda!r}")
        if args.lambda_std < 0:
            raise ValueError(f"lambda_std must be >= 0, got {args.lambda_std}")
        D = args.hidden
        self.item_embedding = padded_item_embedding(n_items, D, args.init_std)
        self.input_dropout = Dropout(args.emb_dropout)
        self.input_norm = nn.LayerNorm(D, eps=LN_EPS)
        self.time_mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.SiLU(), nn.Linear(4 * D, D))
        self.denoiser = Encoder(D, args.n_blocks, args.n_heads, args.dropout, causal=False,
                                pre_norm=True, attention_mask=args.attention_mask,
                                group_attention=True)
        self.output_dropout = Dropout(args.dropout)
        self.output_norm = nn.LayerNorm(D, eps=LN_EPS)
        self.schedule = NoiseSchedule(args.steps)

    def embed_history(self, history: torch.Tensor) -> torch.Tensor:
        """history (B, L) -> e = LN(Dropout(E[history])) (B, L, D)."""
        return self.input_norm(self.input_dropout(self.item_embedding(history)))

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) integer steps -> (B, D); t is rescaled by 1000 / T as in the authors' code."""
        sinus = timestep_embedding(t, self.args.hidden, scale=1000.0 / self.args.steps)
        return self.time_mlp(sinus)

    def _lambda(self, valid: torch.Tensor, generator: torch.Generator | None = None,
                where: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Aggregation weight lambda (B, L, D): N(mean, std^2) element-wise, or the constant mean.

        With the correct mask padding positions are invisible, so lambda is drawn for the real
        tokens only (padding gets the mean): the draws, and hence the sampled scores, do not
        depend on how much left padding a history carries. With the official mask padding is
        visible and every position gets its own draw, as in the authors' code. ``where``:
        ``valid.nonzero(as_tuple=True)``, computed once by a caller that draws lambda for the
        same histories many times (the reverse loop), so that the draws need no host sync.
        """
        a = self.args
        B, L = valid.shape
        if not self.training and a.inference_lambda == "mean":
            return torch.full((B, L, a.hidden), a.lambda_mean, device=valid.device)
        if a.attention_mask == "official":
            z = torch.randn(B, L, a.hidden, device=valid.device, generator=generator)
        else:
            where = valid.nonzero(as_tuple=True) if where is None else where
            z = torch.zeros(B, L, a.hidden, device=valid.device)
            z[where] = torch.randn(len(where[0]), a.hidden, device=valid.device,
                                   generator=generator)
        return a.lambda_mean + a.lambda_std * z

    def denoise(self, e: torch.Tensor, valid: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                generator: torch.Generator | None = None,
                where: tuple[torch.Tensor, torch.Tensor] | None = None,
                layout=None) -> torch.Tensor:
        """x0-prediction of the last target.

        e (B, L, D) history embeddings, valid (B, L), x_t (B, D), t (B,) -> (B, D); ``where``
        as in ``_lambda``, ``layout`` the denoiser's ``Encoder.layout(valid)`` (both precomputed
        by the reverse loop).
        """
        cond = (x_t + self.time_embedding(t))[:, None]          # (B, 1, D), broadcast over L
        z = e + self._lambda(valid, generator, where) * cond    # (B, L, D)
        h = self.denoiser(z, valid, layout, last_only=True)     # (B, D): the last position
        return self.output_norm(self.output_dropout(h))

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        history, target = batch.history, batch.target[:, -1]  # (B, L), (B,)
        E = self.item_embedding.weight
        x0 = E[target]                                          # (B, D)
        t = self.schedule.sample_timesteps((len(target),), device=x0.device)
        x_t = self.schedule.q_sample(x0, t)                     # (B, D)
        x0_hat = self.denoise(self.embed_history(history), history > 0, x_t, t)
        n = batch.n_rows * x0.shape[-1]                         # a micro-batch: the whole batch's
        ce = F.cross_entropy(x0_hat @ E.T, target, reduction="sum") / batch.n_rows  # row 0 a class
        mse = F.mse_loss(x0_hat.detach(), x0.detach(), reduction="sum") / n  # logged only (authors)
        return {"loss": ce, "ce": ce, "mse": mse}

    @torch.no_grad()
    def sample(self, history: torch.Tensor, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """T reverse DDPM steps on the last target, history fixed: (B, L) -> x_0 (B, D)."""
        e, valid = self.embed_history(history), history > 0  # computed once (eval: no dropout)
        where = valid.nonzero(as_tuple=True)                 # once: no host sync per step
        layout = self.denoiser.layout(valid)

        def predict(x, t):  # draws lambda from the generator, then the loop draws the noise
            return self.denoise(e, valid, x, t, generator, where, layout)

        return self.schedule.sample(predict, (history.shape[0], self.args.hidden),
                                    generator=generator, device=history.device,
                                    noise_at_zero=True)

    def represent(self, history: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        return self.sample(history, generator)  # (B, D)
