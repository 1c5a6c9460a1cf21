"""The DDPM noise schedule shared by the diffusion models; no nn layers.

Truncated-linear schedule (official-implementation.md section 2.5), with ``scale = 1000 / T``:
beta_start = scale * 1e-4 + 0.01, beta_end = scale * 0.02 + 0.01 (scale * 1e-3 + 0.01 if that
exceeds 1), betas = linspace(beta_start, beta_end, T). Index t = 0 is already one noising step.

Constants are computed once in float64 and stored as float32 tensors, registered as
non-persistent buffers: a model that holds a schedule moves it with ``model.to(device)``, and its
checkpoints do not contain them. No call syncs an accelerator with the host.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn


class NoiseSchedule(nn.Module):
    """Forward process q(x_t | x_0) and the DDPM posterior step, named as in the paper.

    * ``q_sample(x0, t, noise)``: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (paper eq. 11),
      with one timestep per token (t of shape (B, L)) or per sequence (t of shape (B,)).
    * ``posterior_mean(x0, x_t, t)``: mu = c1_t x0 + c2_t x_t, c1_t = beta_t sqrt(abar_{t-1}) /
      (1 - abar_t), c2_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t), abar_{-1} = 1.
    * ``step(x0_pred, x_t, t, noise)``: one reverse step x_{t-1} = mu + 1[t > 0] sigma_t z with the
      "fixed large" variance sigma_t^2 = beta_t (section 2.9).
    * ``sample(predict, shape)``: the whole reverse loop x_T ~ N(0, I), then T steps.
    """

    def __init__(self, steps: int = 32, kind: str = "trunc_lin"):
        if kind != "trunc_lin":
            raise ValueError(f"noise schedule {kind!r} is not implemented; use 'trunc_lin'")
        if steps < 1:
            raise ValueError(f"diffusion steps must be >= 1, got {steps}")
        super().__init__()
        self.steps = steps
        scale = 1000.0 / steps
        beta_start, beta_end = scale * 1e-4 + 0.01, scale * 0.02 + 0.01
        if beta_end > 1:
            beta_end = scale * 0.001 + 0.01
        betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])
        consts = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": np.sqrt(abar),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
            "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
            "posterior_variance": betas * (1.0 - abar_prev) / (1.0 - abar),
            "sampling_std": np.sqrt(betas),
        }
        self.float64 = consts
        for name, value in consts.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)

    @staticmethod
    def _gather(const: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """const[t] reshaped to broadcast against a tensor of ``ndim`` dims: (B,) or (B, L) -> + 1s.

        The constants live where the schedule was moved (with its model); a copy is made only
        for timesteps on another device (a schedule used on its own)."""
        if const.device != t.device:
            const = const.to(t.device)
        return const[t].reshape(*t.shape, *([1] * (ndim - t.ndim)))

    def _check_t(self, t: torch.Tensor) -> None:
        """Integer timesteps; their range is checked on the CPU only, where it costs no sync (on
        an accelerator an index outside [0, T-1] fails in the gather itself)."""
        if t.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"timesteps must be integers, got {t.dtype}")
        if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.steps):
            raise ValueError(f"timesteps must lie in [0, {self.steps - 1}]")

    def sample_timesteps(self, shape, *, device=None, generator=None) -> torch.Tensor:
        """Uniform integer timesteps in [0, T-1] of ``shape``."""
        return torch.randint(0, self.steps, shape, device=device, generator=generator)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Noise ``x0`` (B, L, D) or (B, D) to level ``t``; positions where ``mask`` is 0 stay x0."""
        self._check_t(t)
        if noise is None:
            noise = torch.randn_like(x0)
        xt = (self._gather(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
              + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)
        if mask is not None:
            xt = torch.where(mask.reshape(*mask.shape, *([1] * (x0.ndim - mask.ndim))).bool(),
                             xt, x0)
        return xt

    def posterior_mean(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """mu(x_t, x0) = c1_t x0 + c2_t x_t, the mean of q(x_{t-1} | x_t, x0) (Ho et al. 2020,
        eq. 7); x0 and xt (B, D) or (B, L, D), t (B,) or (B, L)."""
        self._check_t(t)
        return self._posterior_mean(x0, xt, t)

    def _posterior_mean(self, x0, xt, t):
        return (self._gather(self.posterior_mean_coef1, t, xt.ndim) * x0
                + self._gather(self.posterior_mean_coef2, t, xt.ndim) * xt)

    def step(self, x0_pred: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """One reverse step x_t -> x_{t-1} from the model's x0 prediction (shapes as
        ``posterior_mean``); ``noise`` z, or drawn from ``generator`` when None."""
        self._check_t(t)
        if noise is None:
            noise = torch.randn(xt.shape, device=xt.device, dtype=xt.dtype, generator=generator)
        return self._step(x0_pred, xt, t, noise)

    def _step(self, x0_pred, xt, t, noise):
        # 1. the posterior mean mu(x_t, x0_hat) (Ho et al. 2020, eq. 7)
        mean = self._posterior_mean(x0_pred, xt, t)
        # 2. sigma_t = sqrt(beta_t), the "fixed large" variance (Ho et al. 2020, section 3.2),
        #    and no noise at the last step t = 0
        nonzero = (t > 0).to(xt.dtype)
        std = self._gather(self.sampling_std, t, xt.ndim) * nonzero.reshape(
            *t.shape, *([1] * (xt.ndim - t.ndim)))
        # 3. x_{t-1} = mu + sigma_t z (Ho et al. 2020, algorithm 2, line 4)
        return mean + std * noise

    def sample(self, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               shape: tuple[int, int], *, generator: torch.Generator | None = None,
               device=None, dtype: torch.dtype | None = None,
               noise_at_zero: bool = False) -> torch.Tensor:
        """Ancestral DDPM sampling (Ho et al. 2020, algorithm 2) of a (B, D) tensor; ADRec,
        DiffuRec and DreamRec differ only in ``predict``.

        ``predict(x_t (B, D), t (B,) long) -> x0_hat (B, D)`` is the model's x0 prediction; it
        may draw from ``generator`` too (DiffuRec's lambda), before each step's noise.
        ``noise_at_zero``: also draw the step noise at t = 0, where it is multiplied by 0 (the
        released DiffuRec and DreamRec code does), so that a generator shared by several
        batches (the evaluation's) goes on with the same stream as that code's loop.

        The timesteps come from ``range(T)``, so the loop validates nothing per step and reads
        nothing back from the device.
        """
        B = shape[0]
        x = torch.randn(shape, device=device, dtype=dtype, generator=generator)  # x_T ~ N(0, I)
        for i in reversed(range(self.steps)):
            t = torch.full((B,), i, dtype=torch.long, device=x.device)
            x0_hat = predict(x, t)                                       # (B, D)
            if i > 0 or noise_at_zero:
                noise = torch.randn(shape, device=x.device, dtype=x.dtype, generator=generator)
            else:
                noise = torch.zeros(shape, device=x.device, dtype=x.dtype)
            x = self._step(x0_hat, x, t, noise)                          # x_{i-1}
        return x
