"""Generation in latent space: starting noise and Euler sampling with CFG, NAG, text NAG and
the negative-prompt baseline.

The guided velocity is computed with ONE batched network call per step: the conditions are
stacked in the branch order [uncond, cond] (``Conditions.cat([empty, cond])``), [uncond, cond,
ctrl] for NAG, or [uncond, cond, earlier...] for text NAG, and the latent is repeated
accordingly (``nag_core.sampling.batched_branches``).

Batch-first: x0 has B rows (B takes of one step), conditions of batch 1 are expanded to B, and
every sampler returns B latents. Take i's noise is what :func:`noise_for_seeds` draws from its
own seed, so the takes of a batched call are the single runs of those seeds.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .controlnet import NAGControlNet
from .errors import ConfigError
from .guidance import ALPHA_DEFAULT, BETA_DEFAULT, cfg, nag, text_nag
from .mmaudio.network import Conditions, MMAudioNetwork
from .sampling import StepCallback, Velocity, batched_branches, euler


def noise(batch: int, network: MMAudioNetwork, generator: torch.Generator,
          dtype: Optional[torch.dtype] = None, length: Optional[int] = None) -> Tensor:
    """x0 = randn(B, length, latent_dim) from ``generator`` on the generator's device (as MMAudio
    draws it: the same seed gives different noise on CPU and CUDA). ``length`` defaults to the
    network's latent_seq_len (a windowed generation draws the whole clip's sequence)."""
    return torch.randn(batch, length or network.latent_seq_len, network.config.latent_dim,
                       generator=generator, device=generator.device,
                       dtype=dtype or network.dtype)


def noise_for_seeds(seeds: Sequence[int], network: MMAudioNetwork, device=None,
                    dtype: Optional[torch.dtype] = None, length: Optional[int] = None) -> Tensor:
    """x0 of B = len(seeds) takes: row i is :func:`noise` (batch 1) from a generator seeded with
    seeds[i] on ``device`` (default: the network's), so take i starts where a single run with
    seeds[i] starts, bit for bit."""
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("no seeds given: one take needs one seed")
    dev = torch.device(device) if device is not None else network.device
    rows = [noise(1, network, torch.Generator(device=dev).manual_seed(int(s)), dtype, length)
            for s in seeds]
    return torch.cat(rows, dim=0)


def _batch_conditions(name: str, c: Conditions, batch: int) -> Conditions:
    if c.batch_size == batch:
        return c
    if c.batch_size == 1:
        return c.expand(batch)
    raise ConfigError(f"{name} have batch {c.batch_size}, the noise x0 has batch {batch}: give "
                      f"conditions of batch 1 or {batch}")


def cfg_velocity(network: MMAudioNetwork, conditions: Conditions, empty_conditions: Conditions,
                 cfg_strength: float, batch: Optional[int] = None) -> Velocity:
    """MMAudio's ``ode_wrapper`` as a velocity(x, t): ``cfg * F(cond) + (1 - cfg) * F(uncond)``
    for cfg >= 1 (one batched call, branches [uncond, cond]); the conditional flow alone below 1.
    With ``batch``, conditions of batch 1 are expanded to it."""
    if batch is not None:
        conditions = _batch_conditions("conditions", conditions, batch)
        empty_conditions = _batch_conditions("empty conditions", empty_conditions, batch)
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
    ``conditions`` and ``empty_conditions`` have batch 1 (expanded) or x0's. Returns x1 (normalized;
    apply ``network.unnormalize`` before the VAE). Runs without autograd, like
    :func:`sample_nag`: a base whose parameters require grad (a freshly built or randomized
    network) would otherwise keep the graph of every step alive."""
    with torch.no_grad():
        velocity = cfg_velocity(network, conditions, empty_conditions, cfg_strength, x0.shape[0])
        return euler(velocity, x0, steps, callback)


# ----------------------------------------------------------------- NAG (step k >= 2) and baselines

def nag_velocity(network: MMAudioNetwork, controlnet: NAGControlNet, conditions: Conditions,
                 empty_conditions: Conditions, control_conditions: Conditions, x_cond: Tensor,
                 batch: int, alpha: float = ALPHA_DEFAULT, beta: float = BETA_DEFAULT) -> Velocity:
    """The NAG velocity (paper Eq. 9) as velocity(x, t), ONE network call per step over the
    branches [uncond (∅,∅), cond (V,C_k), ctrl (V,∅)+ControlNet(x_cond)]; the ControlNet hook
    applies to the ctrl rows [2B, 3B) only. Conditions of batch 1 are expanded to ``batch``."""
    stacked = Conditions.cat([_batch_conditions("empty conditions", empty_conditions, batch),
                              _batch_conditions("conditions", conditions, batch),
                              _batch_conditions("control conditions", control_conditions, batch)])
    if x_cond.dim() != 3 or x_cond.shape[0] not in (1, batch):
        raise ConfigError(f"x_cond has shape {tuple(x_cond.shape)}; expected (1 or {batch}, N, C)")
    hook = controlnet.hook(x_cond, slice(2 * batch, 3 * batch))
    return batched_branches(lambda x, t: network.predict_flow(x, t, stacked, control=hook), 3,
                            lambda uncond, cond, ctrl: nag(uncond, cond, ctrl, alpha, beta))


def sample_nag(network: MMAudioNetwork, controlnet: NAGControlNet, conditions: Conditions,
               empty_conditions: Conditions, control_conditions: Conditions,
               x_cond: Optional[Tensor], x0: Tensor, steps: int, alpha: float = ALPHA_DEFAULT,
               beta: float = BETA_DEFAULT, callback: Optional[StepCallback] = None) -> Tensor:
    """Step k >= 2 of step-by-step generation: Euler from noise x0 to the normalized latent x1
    with Negative Audio Guidance

        u = u(∅,∅) + α (u(V,C_k) − u(∅,∅)) + β (u(V,C_k) − u_ctrl(V,∅,x_cond)).

    ``conditions`` = preprocessed (V, C_k), ``empty_conditions`` = the network's empty
    conditions, ``control_conditions`` = preprocessed (V, empty-string text), ``x_cond`` = the
    clean normalized latent of the mix of the earlier tracks (1 or B rows).

    ``beta == 0`` (the paper's independent-generation baseline) and ``x_cond is None`` (step 1, no
    earlier track) are plain CFG with ``alpha``: delegated to :func:`sample_cfg`, so the result is
    the CFG result bit-for-bit (the 2-branch batch; a 3-branch batch would round differently).
    Runs without autograd: a trainable ControlNet would otherwise chain a graph through all steps.
    """
    if beta == 0 or x_cond is None:
        return sample_cfg(network, conditions, empty_conditions, x0, steps, alpha, callback)
    with torch.no_grad():
        velocity = nag_velocity(network, controlnet, conditions, empty_conditions,
                                control_conditions, x_cond, x0.shape[0], alpha, beta)
        return euler(velocity, x0, steps, callback)


def sample_negative_prompt(network: MMAudioNetwork, conditions: Conditions,
                           negative_conditions: Conditions, x0: Tensor, steps: int,
                           cfg_strength: float = ALPHA_DEFAULT,
                           callback: Optional[StepCallback] = None) -> Tensor:
    """The paper's negative-prompt baseline for step k: CFG whose unconditional branch has the
    empty video and, as text, the CLIP encoding of the earlier prompts. It is :func:`sample_cfg`
    with other empty conditions; build them with

        text = ", ".join(earlier prompts)            # nag_core.guidance.negative_prompt_text
        negative_conditions = network.get_empty_conditions(
            B, negative_text_features=clip_text_features(text))   # (1 or B, 77, text_dim)
    """
    return sample_cfg(network, conditions, negative_conditions, x0, steps, cfg_strength, callback)


def text_nag_velocity(network: MMAudioNetwork, conditions: Conditions,
                      empty_conditions: Conditions, earlier_conditions: Sequence[Conditions],
                      batch: int, alpha: float = ALPHA_DEFAULT,
                      beta: float = BETA_DEFAULT) -> Velocity:
    """The text-NAG velocity (:func:`nag_core.guidance.text_nag`) as velocity(x, t), ONE network
    call per step over the branches [uncond (∅,∅), cond (V,C_k), (V,C_<k) for each entry of
    ``earlier_conditions``]; several earlier branches are averaged."""
    earlier = list(earlier_conditions)
    if not earlier:
        raise ConfigError("text_nag needs the conditions of at least one earlier prompt")
    stacked = Conditions.cat([_batch_conditions("empty conditions", empty_conditions, batch),
                              _batch_conditions("conditions", conditions, batch)]
                             + [_batch_conditions("earlier conditions", c, batch)
                                for c in earlier])
    return batched_branches(lambda x, t: network.predict_flow(x, t, stacked), 2 + len(earlier),
                            lambda uncond, cond, *prior: text_nag(uncond, cond, prior, alpha,
                                                                  beta))


def sample_text_nag(network: MMAudioNetwork, conditions: Conditions,
                    empty_conditions: Conditions, earlier_conditions: Sequence[Conditions],
                    x0: Tensor, steps: int, alpha: float = ALPHA_DEFAULT,
                    beta: float = BETA_DEFAULT,
                    callback: Optional[StepCallback] = None) -> Tensor:
    """Step k >= 2 with text NAG, training-free (no ControlNet):

        u = u(∅,∅) + α (u(V,C_k) − u(∅,∅)) + β (u(V,C_k) − u(V,C_<k)).

    ``conditions`` = preprocessed (V, C_k); ``earlier_conditions`` = preprocessed (V, C_<k): one
    entry whose text is the earlier prompts joined, or one entry per earlier prompt (averaged).
    ``beta == 0`` or no earlier conditions is plain CFG, delegated to :func:`sample_cfg` so the
    result is the CFG result bit-for-bit (as :func:`sample_nag` does).
    """
    if beta == 0 or not earlier_conditions:
        return sample_cfg(network, conditions, empty_conditions, x0, steps, alpha, callback)
    with torch.no_grad():
        velocity = text_nag_velocity(network, conditions, empty_conditions, earlier_conditions,
                                     x0.shape[0], alpha, beta)
        return euler(velocity, x0, steps, callback)
