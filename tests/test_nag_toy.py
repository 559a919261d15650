"""NAG does what the paper claims, on a toy where every velocity is known in closed form.

Two "sound concepts" A and B are Gaussian components in R^2. The video makes A likely even when the
prompt asks for B, and the audio-conditioned control flow, given a sample of A, favours A strongly:

    p(x | ∅, ∅)             = 0.50 A + 0.50 B    (unconditional)
    p(x | V, C_B)           = 0.60 A + 0.40 B    (video + prompt "B": still mostly A)
    p_ctrl(x | V, ∅, x_A)   = 0.95 A + 0.05 B    (control flow with the earlier track A as x_cond)

Samples go through the project's own euler + batched_branches + guidance.cfg / guidance.nag, with a
"network" that evaluates the closed-form velocity of each stacked branch in one call. NAG's extra
term β (u(V,C) − u_ctrl) pushes away from what the control flow (i.e. the earlier track) explains,
so it must put more samples on B than CFG; −β must do the opposite; β = 0 must be CFG, bit for bit.
These pin the signs of Eq. 9 and the branch wiring.

Closed form. For one component k, x1 ~ N(m, s² I), x0 ~ N(0, I) independent, x_t = t x1 + (1−t) x0
and the regression target u = x1 − x0. (u, x_t) are jointly Gaussian with
    E[x_t] = t m,            Var[x_t] = (t² s² + (1−t)²) I =: σ_t² I,
    E[u]   = m,              Cov[u, x_t] = Cov[x1 − x0, t x1 + (1−t) x0] = (t s² − (1−t)) I,
so  E[u | x_t, k] = m + (t s² − (1−t)) / σ_t² · (x_t − t m).
For the mixture Σ π_k N(m_k, s² I), the marginal velocity is Σ r_k(x_t) E[u | x_t, k] with the
responsibilities r_k ∝ π_k N(x_t; t m_k, σ_t² I). test_closed_form_velocity_matches_monte_carlo
checks this against an estimate that uses none of the algebra above.
"""

from __future__ import annotations

import math

import pytest
import torch

from nag_core import guidance, sampling

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])  # concept A, concept B
STD = 0.25  # isotropic std of each component
P_UNCOND = (0.50, 0.50)
P_COND_B = (0.60, 0.40)
P_CTRL_A = (0.95, 0.05)
ALPHA, BETA = 4.5, 1.5
N, STEPS = 2000, 25


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # Thousands of tiny ops on ~10^4-element tensors: intra-op threads only add synchronisation
    # (measured 15x slower with 2 threads on a busy 2-core machine, 0.06 s -> 4 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mixture_velocity(x: torch.Tensor, t: torch.Tensor, weights) -> torch.Tensor:
    """Exact flow-matching velocity of the Gaussian mixture. x (B, 1, 2), t (B,) -> (B, 1, 2)."""
    t = t.view(-1, 1, 1, 1)  # (B, 1, component, coord)
    var = t ** 2 * STD ** 2 + (1 - t) ** 2
    diff = x[:, :, None, :] - t * MEANS  # x_t − t m_k
    log_w = torch.log(torch.tensor(weights))[:, None]  # (component, 1)
    log_p = log_w - 0.5 * (diff ** 2).sum(-1, keepdim=True) / var - MEANS.shape[1] / 2 * torch.log(var)
    resp = torch.softmax(log_p, dim=2)
    per_component = MEANS + (t * STD ** 2 - (1 - t)) / var * diff
    return (resp * per_component).sum(2)


def make_network(branch_weights, calls: list):
    """A fake network over stacked branches sharing the latent x (B rows): output rows
    [i·B, (i+1)·B) carry branch i's condition; ``calls`` records the rows it returned.

    Each branch is evaluated on its own, so a branch's output does not depend on how many
    branches are stacked beside it (the β = 0 check below needs that)."""

    def flow(x, ts):
        out = torch.cat([mixture_velocity(x, ts, w) for w in branch_weights])
        calls.append(out.shape[0])
        return out

    return flow


def sample_cfg(x0):
    calls = []
    velocity = sampling.batched_branches(make_network([P_COND_B, P_UNCOND], calls), 2,
                                         lambda cond, uncond: guidance.cfg(cond, uncond, ALPHA))
    return sampling.euler(velocity, x0, STEPS), calls


def sample_nag(x0, beta):
    calls = []
    velocity = sampling.batched_branches(
        make_network([P_UNCOND, P_COND_B, P_CTRL_A], calls), 3,
        lambda uncond, cond, ctrl: guidance.nag(uncond, cond, ctrl, ALPHA, beta))
    return sampling.euler(velocity, x0, STEPS), calls


def fraction_b(x):
    dist = ((x[:, 0, None, :] - MEANS) ** 2).sum(-1)
    return float((dist.argmin(1) == 1).float().mean())


def noise():
    return torch.randn(N, 1, 2, generator=torch.Generator().manual_seed(0))


def test_closed_form_velocity_matches_monte_carlo():
    # Independent estimate: given x1 and x_t = y, x0 = (y − t x1)/(1 − t) is determined and
    # p(x_t = y | x1) = N(y; t x1, (1−t)² I), so E[u | x_t = y] is a self-normalised importance
    # average of x1 − x0 over samples x1 of the mixture, weighted by that density.
    gen = torch.Generator().manual_seed(1)
    m = 400_000
    weights = (0.3, 0.7)
    comp = (torch.rand(m, generator=gen, dtype=torch.float64) < weights[1]).long()
    x1 = MEANS.double()[comp] + STD * torch.randn(m, 2, generator=gen, dtype=torch.float64)
    for t, y in [(0.3, (0.1, 0.4)), (0.3, (-0.8, -0.3)), (0.7, (0.6, 0.2)), (0.7, (-1.3, 0.1))]:
        y = torch.tensor(y, dtype=torch.float64)
        log_w = -0.5 * ((y - t * x1) ** 2).sum(-1) / (1 - t) ** 2
        w = torch.softmax(log_w, 0)
        u = x1 - (y - t * x1) / (1 - t)
        mc = (w[:, None] * u).sum(0)
        exact = mixture_velocity(y.float().view(1, 1, 2), torch.tensor([t]), weights)[0, 0]
        ess = float(1 / (w ** 2).sum())
        assert ess > 1000, f"too few effective samples ({ess:.0f}) at t={t}, y={y.tolist()}"
        assert torch.allclose(exact.double(), mc, atol=0.02), (t, y, exact, mc)  # measured |diff| <= 0.004


def test_nag_moves_samples_from_the_explained_concept_to_the_new_one():
    x0 = noise()
    x_cfg, calls_cfg = sample_cfg(x0)
    x_nag, calls_nag = sample_nag(x0, BETA)
    x_neg, _ = sample_nag(x0, -BETA)
    f_cfg, f_nag, f_neg = fraction_b(x_cfg), fraction_b(x_nag), fraction_b(x_neg)
    # Measured (seed 0, N 2000, 25 steps; 50 steps gives the same to ±0.005):
    #   fraction on B: CFG 0.125, NAG (β = 1.5) 0.540, NAG (β = −1.5) 0.0035.
    # (With the video even more decisive, p(x|V,C_B) = 0.8 A + 0.2 B, CFG at α = 4.5 against a
    #  0.5/0.5 unconditional already sends B to 0.25 % and NAG only lifts it to 1 %: extrapolating
    #  the prior odds 4:1 to the power 4.5 is more than a β = 1.5 push can undo.)
    assert f_nag > f_cfg + 0.3, (f_cfg, f_nag)
    assert f_neg < f_cfg - 0.08, (f_cfg, f_neg)
    # Every sample ends near one of the two concepts (the guided flow still lands on the data).
    for x in (x_cfg, x_nag, x_neg):
        nearest = ((x[:, 0, None, :] - MEANS) ** 2).sum(-1).min(1).values.sqrt()
        assert float(nearest.quantile(0.99)) < 6 * STD
    # One batched network call per Euler step, with 2 or 3 branches stacked.
    assert calls_cfg == [2 * N] * STEPS
    assert calls_nag == [3 * N] * STEPS


def test_beta_zero_is_cfg_bit_for_bit():
    x0 = noise()
    x_cfg, _ = sample_cfg(x0)
    x_nag0, _ = sample_nag(x0, 0.0)
    assert torch.equal(x_cfg, x_nag0)


def test_closed_form_velocity_at_t0_is_mean_minus_noise():
    # At t = 0, x_t is the noise itself and is independent of the component, so the velocity is
    # Σ π_k m_k − x0: a hand check of the formula's end point.
    x = torch.tensor([[[0.5, -1.0]]])
    v = mixture_velocity(x, torch.zeros(1), (0.25, 0.75))
    expected = 0.25 * MEANS[0] + 0.75 * MEANS[1] - x[0, 0]  # (1.0, 0) − (0.5, −1) = (0.5, 1)
    assert torch.allclose(v[0, 0], expected, atol=1e-6)
    assert math.isclose(float(expected[0]), 0.5) and math.isclose(float(expected[1]), 1.0)
