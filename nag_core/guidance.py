"""Velocity combinations for one Euler step: CFG, NAG (paper Eq. 9) and the negative-prompt baseline.

All functions are pure: they take the velocities of the network branches for the same (x, t) and
return the guided velocity. They never call a network.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

ALPHA_DEFAULT = 4.5  # w1 / cfg_strength: MMAudio's default and the paper's value
BETA_DEFAULT = 1.5  # the paper's negative-audio guidance scale


def cfg(cond: Tensor, uncond: Tensor, strength: float) -> Tensor:
    """Classifier-free guidance exactly as MMAudio computes it (paper Eq. 3 with w1 = strength).

    ``strength * cond + (1 - strength) * uncond`` for strength >= 1; below 1, MMAudio uses the
    conditional velocity alone (no extrapolation towards the unconditional one).
    """
    if strength < 1.0:
        return cond
    return strength * cond + (1.0 - strength) * uncond


def nag(uncond: Tensor, cond: Tensor, ctrl: Tensor, alpha: float = ALPHA_DEFAULT,
        beta: float = BETA_DEFAULT) -> Tensor:
    """Negative Audio Guidance, paper Eq. 9.

        u = u(∅,∅) + α (u(V,C) − u(∅,∅)) + β (u(V,C) − u_ctrl(V,∅,x_cond))

    ``uncond`` = u(∅,∅), ``cond`` = u(V,C_k), ``ctrl`` = u_ctrl(V,∅,x_cond). The first two terms are
    computed by :func:`cfg` (same arithmetic as MMAudio), so beta = 0 returns the CFG velocity
    bit-for-bit: the paper's "independent generation" baseline.
    """
    guided = cfg(cond, uncond, alpha)
    if beta == 0:
        return guided
    return guided + beta * (cond - ctrl)


def negative_prompt_text(earlier_prompts: Sequence[str]) -> str:
    """The negative text of the paper's negative-prompt baseline for step k: the prompts of steps < k.

    The unconditional branch then encodes this text instead of the empty string (still with the
    empty video sequences, as MMAudio's ``get_empty_conditions`` does for any negative prompt).
    """
    return ", ".join(p.strip() for p in earlier_prompts if p and p.strip())
