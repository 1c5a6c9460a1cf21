"""NoiseSchedule: closed-form schedule values, per-token forward noising, the posterior step."""
from __future__ import annotations

import math

import pytest
import torch

from adrec.diffusion import NoiseSchedule


def closed_form_abar(t: int, T: int = 32) -> float:
    """abar_t = prod_{s<=t} (1 - beta_s), beta_s = linspace(scale 1e-4 + .01, scale .02 + .01)."""
    scale = 1000.0 / T
    b0, b1 = scale * 1e-4 + 0.01, scale * 0.02 + 0.01
    return math.prod(1.0 - (b0 + (b1 - b0) * s / (T - 1)) for s in range(t + 1))


@pytest.mark.parametrize("t", [0, 7, 15, 31])
def test_alphas_cumprod_closed_form(t):
    sched = NoiseSchedule(32)
    assert sched.float64["alphas_cumprod"][t] == pytest.approx(closed_form_abar(t), rel=1e-12)
    assert float(sched.alphas_cumprod[t]) == pytest.approx(closed_form_abar(t), rel=1e-6)


def test_alphas_cumprod_documented_values():
    # official-implementation.md section 2.5
    abar = NoiseSchedule(32).float64["alphas_cumprod"]
    assert abar[0] == pytest.approx(0.986875, abs=1e-9)
    assert abar[7] == pytest.approx(0.4935, abs=1e-4)
    assert abar[15] == pytest.approx(0.0520, abs=1e-4)
    assert abar[31] == pytest.approx(9.9e-7, rel=0.02)


def test_betas_truncated_linear():
    betas = NoiseSchedule(32).float64["betas"]
    assert betas[0] == pytest.approx(0.013125)
    assert betas[-1] == pytest.approx(0.635)
    assert betas[1] - betas[0] == pytest.approx(0.0200605, abs=1e-7)


def test_constants_are_float32_tensors():
    sched = NoiseSchedule(32)
    for name in sched.float64:
        assert getattr(sched, name).dtype == torch.float32


def test_q_sample_per_token_timesteps_and_mask():
    sched = NoiseSchedule(32)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, 4, generator=g)
    noise = torch.randn(3, 5, 4, generator=g)
    t = torch.tensor([[0, 7, 15, 31, 3], [1, 1, 1, 1, 1], [31, 0, 2, 9, 4]])
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, :2] = False
    xt = sched.q_sample(x0, t, noise, mask=mask)
    for b in range(3):
        for pos in range(5):
            a = closed_form_abar(int(t[b, pos]))
            want = math.sqrt(a) * x0[b, pos] + math.sqrt(1 - a) * noise[b, pos]
            if not mask[b, pos]:
                want = x0[b, pos]
            torch.testing.assert_close(xt[b, pos], want.float(), atol=1e-6, rtol=1e-5)


def test_posterior_mean_coefficients():
    sched = NoiseSchedule(32)
    f = sched.float64
    # t = 0: the posterior mean is the x0 prediction itself (coef1 = 1, coef2 = 0)
    assert f["posterior_mean_coef1"][0] == pytest.approx(1.0)
    assert f["posterior_mean_coef2"][0] == pytest.approx(0.0)
    t = 10
    a, a_prev, beta = closed_form_abar(t), closed_form_abar(t - 1), f["betas"][t]
    assert f["posterior_mean_coef1"][t] == pytest.approx(beta * math.sqrt(a_prev) / (1 - a))
    assert f["posterior_mean_coef2"][t] == pytest.approx((1 - a_prev) * math.sqrt(1 - beta)
                                                         / (1 - a))
    assert f["posterior_variance"][t] == pytest.approx(beta * (1 - a_prev) / (1 - a))


def test_step_adds_noise_only_where_t_positive():
    sched = NoiseSchedule(32)
    x0, xt, z = torch.ones(2, 3), torch.zeros(2, 3), torch.full((2, 3), 2.0)
    t = torch.tensor([0, 5])
    out = sched.step(x0, xt, t, z)
    torch.testing.assert_close(out[0], torch.ones(3))  # t = 0: exactly the x0 prediction
    want = float(sched.posterior_mean_coef1[5]) + math.sqrt(sched.float64["betas"][5]) * 2.0
    torch.testing.assert_close(out[1], torch.full((3,), want))


def test_invalid_timesteps_and_steps_raise():
    sched = NoiseSchedule(8)
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        sched.q_sample(torch.zeros(1, 2), torch.tensor([8]))
    with pytest.raises(TypeError):
        sched.q_sample(torch.zeros(1, 2), torch.tensor([1.0]))
    with pytest.raises(ValueError):
        NoiseSchedule(0)


def test_constants_move_with_the_model_and_stay_out_of_checkpoints():
    """The schedule's constants are non-persistent buffers: ``model.to(device)`` moves them (no
    copy per call), and a model's state_dict (its checkpoint) does not contain them."""
    from adrec.models import build_model

    for name in ("adrec", "diffurec", "dreamrec"):
        model = build_model(name, 20, {"hidden": 16})
        assert not [k for k in model.state_dict() if "schedule" in k or "alphas" in k]
        model.to("meta")
        assert model.schedule.sqrt_alphas_cumprod.device.type == "meta"


def test_forward_and_reverse_steps_need_no_host_read_of_the_timesteps():
    """On a non-CPU device nothing reads t back to the host (``int(t.min())`` would sync a GPU):
    the meta device, which has no data, runs q_sample and step without an error."""
    sched = NoiseSchedule(8).to("meta")
    x0 = torch.zeros(2, 5, 4, device="meta")
    t = torch.zeros(2, 5, dtype=torch.long, device="meta")
    assert sched.q_sample(x0, t, noise=torch.zeros_like(x0)).shape == (2, 5, 4)
    t1 = torch.zeros(2, dtype=torch.long, device="meta")
    x = torch.zeros(2, 4, device="meta")
    assert sched.step(x, x, t1, noise=torch.zeros_like(x)).device.type == "meta"


def _predictor(generator=None):
    """A stand-in x0 predictor depending on x_t and t; with ``generator`` it also draws from it
    (as DiffuRec's lambda does) before the loop draws the step noise."""
    def predict(x, t):
        out = 0.5 * x + 0.01 * t[:, None].float()
        if generator is not None:
            out = out + 1e-3 * torch.randn(x.shape, generator=generator)
        return out
    return predict


@pytest.mark.parametrize("noise_at_zero", [False, True])
@pytest.mark.parametrize("draws", [False, True])
def test_sample_equals_a_hand_written_reverse_loop(noise_at_zero, draws):
    """``sample`` is algorithm 2 of Ho et al. (2020): x_T ~ N(0, I), then for t = T-1 .. 0
    x_{t-1} = step(predict(x_t, t), x_t, t, z), z ~ N(0, I) (t = 0: z drawn only with
    ``noise_at_zero``, and multiplied by 0 either way). Bit-identical, generator left in the
    same state."""
    sched = NoiseSchedule(8)
    g_ref, g = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, generator=g_ref)
    predict = _predictor(g_ref if draws else None)
    for i in reversed(range(8)):
        t = torch.full((3,), i, dtype=torch.long)
        x0_hat = predict(x, t)
        if i > 0 or noise_at_zero:
            x = sched.step(x0_hat, x, t, generator=g_ref)
        else:
            x = sched.step(x0_hat, x, t, torch.zeros(3, 5))
    got = sched.sample(_predictor(g if draws else None), (3, 5), generator=g,
                       noise_at_zero=noise_at_zero)
    assert torch.equal(got, x)
    assert torch.equal(g.get_state(), g_ref.get_state())


def test_sample_needs_no_host_read_of_the_timesteps():
    """The whole reverse loop runs on the meta device, which has no data: no step reads a
    timestep (or anything else) back to the host, which on a GPU would be a sync per step."""
    sched = NoiseSchedule(8).to("meta")
    seen = []

    def predict(x, t):
        seen.append(t.device.type)
        return x

    x = sched.sample(predict, (2, 4), device="meta")
    assert x.device.type == "meta" and x.shape == (2, 4)
    assert seen == ["meta"] * 8
