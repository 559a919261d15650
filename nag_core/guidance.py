"""Velocity combinations for one Euler step: CFG, NAG (paper Eq. 9), text NAG and the
negative-prompt baseline.

All functions are pure: they take the velocities of the network branches for the same (x, t) and
return the guided velocity. They never call a network.
"""

from __future__ import annotations

from typing import Sequence, Union

from torch import Tensor

from .defaults import ALPHA_DEFAULT, BETA_DEFAULT


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


def text_nag(uncond: Tensor, cond: Tensor, earlier: Union[Tensor, Sequence[Tensor]],
             alpha: float = ALPHA_DEFAULT, beta: float = BETA_DEFAULT) -> Tensor:
    """Text NAG (this project's addition, not in the paper): Eq. 9 with the ControlNet branch
    replaced by the frozen network's flow for the same video and the earlier steps' prompts,

        u = u(∅,∅) + α (u(V,C_k) − u(∅,∅)) + β (u(V,C_k) − u(V,C_<k)).

    ``uncond`` = u(∅,∅), ``cond`` = u(V,C_k), ``earlier`` = u(V,C_<k): one velocity, or several
    (one per earlier prompt) whose mean stands for u(V,C_<k). Like :func:`nag`, beta = 0 returns
    the CFG velocity bit-for-bit.
    """
    if not isinstance(earlier, Tensor):
        earlier = list(earlier)
        if not earlier:
            raise ValueError("text_nag needs at least one earlier-prompt velocity")
        mean = earlier[0]
        for v in earlier[1:]:
            mean = mean + v
        earlier = mean / len(earlier) if len(earlier) > 1 else mean
    return nag(uncond, cond, earlier, alpha, beta)


def negative_prompt_text(earlier_prompts: Sequence[str]) -> str:
    """The negative text of the paper's negative-prompt baseline for step k: the prompts of steps < k.

    The unconditional branch then encodes this text instead of the empty string (still with the
    empty video sequences, as MMAudio's ``get_empty_conditions`` does for any negative prompt).
    """
    return ", ".join(p.strip() for p in earlier_prompts if p and p.strip())
