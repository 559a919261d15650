"""Euler flow-matching integration on MMAudio's time grid, over any velocity callable.

Convention (MMAudio): t = 0 is noise, t = 1 is data; x_t = t·x1 + (1 − t)·x0 and the network
predicts x1 − x0. The grid is ``linspace(0, 1, steps + 1)`` in float32 and its last point is
never evaluated.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .errors import ConfigError

Velocity = Callable[[Tensor, Tensor], Tensor]
"""``velocity(x, t)``: x (B, N, C), t a 0-dim float32 tensor; returns dx/dt of x's shape."""

Flow = Callable[[Tensor, Tensor], Tensor]
"""``flow(x, t)``: one batched network call over n stacked branches that share the latent:
x (B, N, C) once, t (B,) in x's dtype; returns (n·B, N, C), branch j in rows [j·B, (j+1)·B)
(what ``MMAudioNetwork.predict_flow`` does with conditions of batch n·B)."""

StepCallback = Callable[[int, int, Tensor], None]
"""``callback(step_done, total_steps, x)`` after each Euler step (1-based step_done)."""


def time_grid(steps: int, device: torch.device | str | None = None) -> Tensor:
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}: set the number of Euler steps "
                          "to 1 or more (MMAudio's default is 25)")
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float32, device=device)


def euler(velocity: Velocity, x0: Tensor, steps: int,
          callback: Optional[StepCallback] = None) -> Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 0 (x0, noise) to t = 1 with ``steps`` Euler steps."""
    ts = time_grid(steps, x0.device)
    x = x0
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        x = x + (t_next - t) * velocity(x, t)
        if callback is not None:
            callback(i + 1, steps, x)
    return x


def batched_branches(flow: Flow, n_branches: int,
                     combine: Callable[..., Tensor]) -> Velocity:
    """Turn a network call over ``n_branches`` stacked condition sets into a guided velocity.

    The network is called ONCE per step with the latent as it is (every branch sees the same
    x_t, so the network computes what depends only on x_t and t once per row, not once per
    branch) and conditions stacked in branch order; the n·B output rows are split back and
    handed to ``combine(v_branch0, v_branch1, ...)``, e.g. a closure over
    :func:`nag_core.guidance.cfg` or :func:`nag_core.guidance.nag`.
    """

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        batch = x.shape[0]
        # MMAudio hands t to the network as t * ones(B) in the latent's dtype.
        ts = t.to(x.dtype) * torch.ones(batch, device=x.device, dtype=x.dtype)
        out = flow(x, ts)
        if out.shape[0] != n_branches * batch:
            raise ValueError(f"the flow returned {out.shape[0]} rows for {n_branches} branches "
                             f"of batch {batch}")
        return combine(*out.split(batch, dim=0))

    return velocity
