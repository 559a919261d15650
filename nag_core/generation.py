"""Plain MMAudio generation in latent space: starting noise and Euler sampling with CFG.

The guided velocity is computed with ONE batched network call per step: the conditions are
stacked in the branch order [uncond, cond] (``Conditions.cat([empty, cond])``) and the latent is
repeated accordingly (``nag_core.sampling.batched_branches``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .guidance import cfg
from .mmaudio.network import Conditions, MMAudioNetwork
from .sampling import StepCallback, Velocity, batched_branches, euler


def noise(batch: int, network: MMAudioNetwork, generator: torch.Generator,
          dtype: Optional[torch.dtype] = None) -> Tensor:
    """x0 = randn(B, latent_seq_len, latent_dim) from ``generator`` on the generator's device
    (as MMAudio draws it: the same seed gives different noise on CPU and CUDA)."""
    return torch.randn(batch, network.latent_seq_len, network.config.latent_dim,
                       generator=generator, device=generator.device,
                       dtype=dtype or network.dtype)


def cfg_velocity(network: MMAudioNetwork, conditions: Conditions, empty_conditions: Conditions,
                 cfg_strength: float) -> Velocity:
    """MMAudio's ``ode_wrapper`` as a velocity(x, t): ``cfg * F(cond) + (1 - cfg) * F(uncond)``
    for cfg >= 1 (one batched call, branches [uncond, cond]); the conditional flow alone below 1."""
    if cfg_strength < 1.0:
        return batched_branches(lambda x, t: network.predict_flow(x, t, conditions), 1,
                                lambda cond: cond)
    stacked = Conditions.cat([empty_conditions, conditions])  # built once, reused every step
    return batched_branches(lambda x, t: network.predict_flow(x, t, stacked), 2,
                            lambda uncond, cond: cfg(cond, uncond, cfg_strength))


def sample_cfg(network: MMAudioNetwork, conditions: Conditions, empty_conditions: Conditions,
               x0: Tensor, steps: int, cfg_strength: float,
               callback: Optional[StepCallback] = None) -> Tensor:
    """Euler-integrate from noise x0 (t = 0) to the normalized latent x1 (t = 1) with CFG.
    ``conditions`` and ``empty_conditions`` must have x0's batch size. Returns x1 (normalized;
    apply ``network.unnormalize`` before the VAE)."""
    velocity = cfg_velocity(network, conditions, empty_conditions, cfg_strength)
    return euler(velocity, x0, steps, callback)
