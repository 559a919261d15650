"""One step of a Foley chain over a window plan (nag_core.windows): the conditions of every window
cut from the whole clip's features, stacked window-major for batches of windows, and the Euler run
of the whole latent sequence with the windows' velocities blended at every step.

Row layout: a batch of windows ``group`` with B takes has ``len(group) * B`` rows, window-major
(rows [group[0] take 0..B-1, group[1] take 0..B-1, ...]), the layout
:func:`nag_core.windows.windowed_velocity` cuts the latent into.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .errors import ConfigError
from .mmaudio.network import Conditions
from .model import MMAudioModel, VideoFeatures
from .sampling import Velocity, euler
from .windows import (WINDOWS_PER_BATCH, WindowPlan, clip_slice, plan_windows,
                      sync_token_slice, windowed_velocity)

UnitProgress = Callable[[int, int], None]
"""``progress(done, total)`` over windows × Euler steps; raising from it cancels."""


def plan_for(model: MMAudioModel, duration: float, overlap: Optional[float] = None,
             window: Optional[float] = None) -> WindowPlan:
    """The windows ``model`` generates ``duration`` seconds in: windows of ``window`` seconds
    (default: the length its network was trained on) overlapping by ``overlap``."""
    return plan_windows(model.mode, duration, window or model.trained_duration, overlap)


def window_sync(features: VideoFeatures, plan: WindowPlan, i: int) -> Tensor:
    """Window i's Synchformer tokens (1, window sync tokens, D): a slice of the whole video's
    segments, or for a last window off their 8-frame grid the tokens encoded for it."""
    sl = sync_token_slice(plan, i)
    if sl is not None:
        return features.sync_f[:, sl]
    w = plan.windows[i]
    if features.tail_sync_f is None or features.tail_sync_frame != w.sync_frame:
        raise ConfigError(f"these video features were encoded for other windows (window {i} "
                          f"starts at 25 fps frame {w.sync_frame}); encode the video again with "
                          "the model that generates (its windows are its training length)")
    return features.tail_sync_f


def window_features(model: MMAudioModel, features: VideoFeatures,
                    plan: WindowPlan) -> VideoFeatures:
    """The features of every window stacked along the batch: clip (n, window clip frames, D),
    sync (n, window sync tokens, D), duration = the window's. Text-to-audio features (no video)
    become the network's empty video sequences at the window length."""
    net = model.network
    n = len(plan.windows)
    if features.clip_f is None:
        return VideoFeatures(net.get_empty_clip_sequence(n), net.get_empty_sync_sequence(n),
                             plan.window_duration)
    if features.clip_f.shape[1] < plan.total.clip or features.sync_f.shape[1] < plan.total.sync:
        raise ConfigError(f"the video features cover {features.clip_f.shape[1] / 8:g} s, the "
                          f"generation {plan.duration:g} s: encode the whole clip")
    clip = torch.cat([features.clip_f[:, clip_slice(plan, i)] for i in range(n)])
    sync = torch.cat([window_sync(features, plan, i) for i in range(n)])
    return VideoFeatures(clip, sync, plan.window_duration)


def _rows(x: Tensor, group: Sequence[int], takes: int) -> Tensor:
    """Rows of one tensor for a batch of windows: a tensor of 1 row (the same for every window)
    is repeated; one of n rows (one per window) is indexed by ``group``. Then each window's row
    is repeated for the takes (window-major)."""
    if x.shape[0] == 1:
        return x.expand(len(group) * takes, *x.shape[1:])
    picked = x[list(group)]
    return picked.repeat_interleave(takes, dim=0) if takes > 1 else picked


def group_conditions(c: Conditions, group: Sequence[int], takes: int) -> Conditions:
    """Conditions whose fields have 1 row (shared) or one row per window -> the rows of
    ``group`` × ``takes``, window-major."""
    return Conditions(**{f.name: _rows(getattr(c, f.name), group, takes) for f in fields(c)})


def group_latents(x: Tensor, plan: WindowPlan, group: Sequence[int], takes: int) -> Tensor:
    """A whole-sequence latent (1 or takes, latent_len, C), e.g. x_cond, cut into the windows of
    ``group``, window-major × takes."""
    if x.shape[1] != plan.latent_len:
        raise ConfigError(f"latent has {x.shape[1]} frames, the window plan covers "
                          f"{plan.latent_len}")
    parts = []
    for i in group:
        part = x[:, plan.latent_slice(i)]
        parts.append(part.expand(takes, *part.shape[1:]) if part.shape[0] == 1 else part)
    return torch.cat(parts)


def sample_windows(plan: WindowPlan, make: Callable[[tuple[int, ...]], Velocity], x0: Tensor,
                   steps: int, windows_per_batch: int = WINDOWS_PER_BATCH,
                   progress: Optional[UnitProgress] = None) -> Tensor:
    """Euler from the whole-sequence noise x0 (B, latent_len, C) to x1 with the blended velocity
    of the windows; ``make(group)`` gives the guided velocity of a batch of windows (see the row
    layout above). Progress counts windows × Euler steps and is called between windows."""
    total = len(plan.windows) * steps
    done = [0]

    def on_windows(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    with torch.no_grad():
        velocity = windowed_velocity(plan, make, windows_per_batch, on_windows)
        return euler(velocity, x0, steps)


def step_for_windows(step, plan: WindowPlan, group: Sequence[int], takes: int):
    """A step's conditions (nag_core.step.StepConditions: rows shared or one per window, x_cond
    of the whole sequence) -> those of the windows ``group`` × ``takes``, window-major."""
    def rows(c):
        return None if c is None else group_conditions(c, group, takes)
    return replace(step, conditions=rows(step.conditions), empty=rows(step.empty),
                   control=rows(step.control),
                   x_cond=None if step.x_cond is None else group_latents(step.x_cond, plan,
                                                                          group, takes),
                   earlier=tuple(rows(e) for e in step.earlier))
