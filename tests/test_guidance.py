"""CFG as MMAudio computes it, NAG (paper Eq. 9) and the negative-prompt baseline, on hand values."""

from __future__ import annotations

import pytest
import torch

from golden import Golden, assert_close, golden_params
from nag_core import guidance

COND = torch.tensor([1.0, 2.0])    # u(V, C)
UNCOND = torch.tensor([0.5, -1.0])  # u(∅, ∅)
CTRL = torch.tensor([2.0, 0.0])    # u_ctrl(V, ∅, x_cond)


def test_cfg_hand_values():
    # 4.5·cond + (1 − 4.5)·uncond = 4.5·[1, 2] − 3.5·[0.5, −1] = [4.5 − 1.75, 9 + 3.5] = [2.75, 12.5]
    # = paper Eq. 3 with w1 = 4.5: uncond + 4.5·(cond − uncond) = [0.5 + 2.25, −1 + 13.5].
    assert torch.equal(guidance.cfg(COND, UNCOND, 4.5), torch.tensor([2.75, 12.5]))


def test_cfg_below_one_is_the_conditional_velocity_alone():
    # MMAudio: cfg_strength < 1 skips the unconditional branch (no interpolation towards it).
    for strength in (0.0, 0.5, 0.999):
        assert guidance.cfg(COND, UNCOND, strength) is COND
    # At exactly 1 the formula gives 1·cond + 0·uncond = cond.
    assert torch.equal(guidance.cfg(COND, UNCOND, 1.0), COND)


def test_cfg_uses_mmaudio_arithmetic_exactly():
    # Bit-for-bit the expression of MMAudio's ode_wrapper, not an algebraically equal rewrite
    # (uncond + w·(cond − uncond) rounds differently in float32).
    gen = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 3, 5, generator=gen), torch.randn(2, 3, 5, generator=gen)
    assert torch.equal(guidance.cfg(cond, uncond, 4.5), 4.5 * cond + (1 - 4.5) * uncond)


def test_nag_hand_values():
    # Eq. 9: u(∅,∅) + α(u(V,C) − u(∅,∅)) + β(u(V,C) − u_ctrl)
    #   = [2.75, 12.5] (CFG above) + 1.5·([1, 2] − [2, 0]) = [2.75 − 1.5, 12.5 + 3] = [1.25, 15.5]
    out = guidance.nag(UNCOND, COND, CTRL, alpha=4.5, beta=1.5)
    assert torch.equal(out, torch.tensor([1.25, 15.5]))
    # Paper defaults are α = 4.5, β = 1.5.
    assert torch.equal(guidance.nag(UNCOND, COND, CTRL), out)


def test_nag_matches_eq9_on_random_tensors():
    gen = torch.Generator().manual_seed(1)
    uncond, cond, ctrl = (torch.randn(2, 7, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    for alpha, beta in [(4.5, 1.5), (2.0, -0.7), (1.0, 3.0)]:
        eq9 = uncond + alpha * (cond - uncond) + beta * (cond - ctrl)
        assert torch.allclose(guidance.nag(uncond, cond, ctrl, alpha, beta), eq9, atol=1e-12)
    # Below α = 1 the CFG part is the conditional velocity (as MMAudio), the β term is unchanged.
    assert torch.allclose(guidance.nag(uncond, cond, ctrl, 0.5, 1.5), cond + 1.5 * (cond - ctrl))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.5, 7.0])
def test_nag_beta_zero_is_cfg_bit_for_bit(alpha):
    gen = torch.Generator().manual_seed(2)
    uncond, cond = torch.randn(2, 9, 20, generator=gen), torch.randn(2, 9, 20, generator=gen)
    ctrl = torch.full_like(cond, float("nan"))  # the control branch must not leak in at all
    assert torch.equal(guidance.nag(uncond, cond, ctrl, alpha, 0.0), guidance.cfg(cond, uncond, alpha))


def test_negative_prompt_text_is_the_earlier_prompts():
    assert guidance.negative_prompt_text([]) == ""
    assert guidance.negative_prompt_text(["dog barking"]) == "dog barking"
    assert guidance.negative_prompt_text([" dog barking ", "", "  ", "rain on a roof"]) == \
        "dog barking, rain on a roof"


@pytest.mark.parametrize("path", golden_params("network_"))
def test_cfg_matches_mmaudio_ode_wrapper(path):
    g = Golden(path)
    # ode_wrapper ran at t = in.ode_t for the whole batch; out.flow / out.flow_empty_cond ran at
    # in.t, which agrees with ode_t for batch element 0 only.
    assert float(g["in.t"][0]) == float(g["in.ode_t"][0])
    cond, uncond = g["out.flow"][:1], g["out.flow_empty_cond"][:1]
    assert_close(guidance.cfg(cond, uncond, 4.5), g["out.ode_wrapper_cfg"][:1], 1e-5, "cfg 4.5")
    assert_close(guidance.cfg(cond, uncond, 0.5), g["out.ode_wrapper_cfg_below_1"][:1], 1e-5,
                 "cfg 0.5")
