"""Windowed generation for clips longer than the network's own sequence: the window plan, the
blend weights, the slicing of every condition per window, and a wrapper that turns "velocity of
a batch of windows" into "velocity of the whole sequence".

MMAudio is trained on one sequence length (8 s for the released variants). A longer clip is run
as overlapping windows of exactly that length over ONE latent sequence of the whole clip; at every
Euler step each window's guided velocity is computed and the windows are blended in the overlaps
by weights that sum to one at every latent frame (MultiDiffusion's weighted average). The latent
stays one continuous sequence, decoded once; nothing is crossfaded after the fact.

Frame arithmetic. Window i starts at latent frame ``s_i`` (time ``s_i / latent_rate``). Its
conditions are the frames shown from that time on, cut from one encoding of the whole video:

* CLIP (8 fps): frames ``round(8 * t_i) ..`` (nearest 8 fps frame, at most 1/16 s early or late);
* Synchformer (16-frame segments at stride 8 of the 25 fps stream): the segments starting at the
  25 fps frame ``round(25 * t_i)``; when that frame is a multiple of 8 they are a slice of the
  whole video's segments, otherwise the window's segments are encoded on their own. Window hops
  are whole Synchformer strides (0.32 s), so only the last window, which ends exactly at the
  clip's end, can be off that grid;
* x_cond (the conditioning mix's latent): latent frames ``s_i .. s_i + W`` of the whole mix.

A clip no longer than one window is one window of the clip's own length: exactly the
generation MMAudio does (weights 1, no blending arithmetic).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .defaults import (CLIP_FPS, DURATION_DEFAULT, SYNC_FPS, SYNC_SEGMENT_STRIDE,
                       SYNC_TOKENS_PER_SEGMENT, sync_frames_needed as _frames_for_segments)
from .errors import ConfigError
from .mmaudio.variants import MODES, SequenceLengths, sequence_lengths
from .sampling import Velocity

# The overlap between neighbouring windows, as a fraction of the window (2 s for 8 s windows):
# long enough that a sound event near a boundary (a footstep, a beep: a few hundred ms) lies wholly
# inside both windows' shared part and is decided by both together, and that the cross-fade of
# velocities is slow against the latent's 32 ms frames; short enough that a long clip costs only
# 4/3 of its length in window evaluations.
TRAINED_DURATION = DURATION_DEFAULT  # seconds: every released MMAudio variant was trained on 8 s
TRAINING_FILE = "training.json"  # beside a network file: {"duration_s": the length it was trained on}
OVERLAP_FRACTION = 0.25
WINDOWS_PER_BATCH = 4  # windows of one Euler step per network call (memory: one batch of them)
WINDOWS_PER_BATCH_MAX = 64  # one network call's batch (× branches × takes) must fit in memory
SYNC_STRIDE_SECONDS = Fraction(SYNC_SEGMENT_STRIDE, SYNC_FPS)  # 0.32 s between segment starts


def trained_duration(folder) -> float:
    """The sequence length (seconds) the network in ``folder`` was trained on: ``duration_s`` of
    its training.json (a model trained on other clips, such as the shipped world set, says so
    there), else MMAudio's 8 s. Windows are this long."""
    path = os.path.join(os.fspath(folder), TRAINING_FILE)
    if not os.path.isfile(path):
        return TRAINED_DURATION
    try:
        with open(path, encoding="utf-8") as f:
            value = float(json.load(f)["duration_s"])
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ConfigError(f"{path} does not say the training length ({e}); it must be "
                          '{"duration_s": seconds}') from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{path}: duration_s must be a positive number of seconds, got {value}")
    return value


def latent_rate(mode: str) -> Fraction:
    """Latent frames per second of a mode, exactly (31.25 at 16k, 44100/1024 at 44k)."""
    m = MODES[mode]
    return Fraction(m.sample_rate, 2 * m.hop)


def _round(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))  # half up: the same on every platform


def sync_frames_needed(lengths: SequenceLengths) -> int:
    """25 fps frames that ``lengths.sync_segments`` segments at stride 8 read."""
    return _frames_for_segments(lengths.sync_segments)


@dataclass(frozen=True)
class Window:
    """One window: the latent frames it covers and where its conditions start."""
    index: int
    latent_start: int  # first latent frame of the whole sequence it covers
    clip_start: int  # first 8 fps CLIP frame of the whole clip it sees
    sync_frame: int  # first 25 fps frame of its first Synchformer segment

    @property
    def on_sync_grid(self) -> bool:
        """Its segments are segments of the whole video's encoding (stride 8 from frame 0)."""
        return self.sync_frame % SYNC_SEGMENT_STRIDE == 0


@dataclass(frozen=True)
class WindowPlan:
    """Which latent frames each window covers, for a clip of ``duration`` seconds."""
    mode: str
    duration: float  # the whole clip
    window_duration: float  # the network is set to this for every window
    overlap: float  # the overlap asked for, in seconds (neighbours share at least this, on grid)
    total: SequenceLengths  # token counts of the whole clip
    window: SequenceLengths  # token counts of one window
    windows: tuple[Window, ...]

    @property
    def latent_len(self) -> int:
        return self.total.latent

    @property
    def window_len(self) -> int:
        return self.window.latent

    @property
    def single(self) -> bool:
        return len(self.windows) == 1

    def latent_slice(self, i: int) -> slice:
        s = self.windows[i].latent_start
        return slice(s, s + self.window_len)

    def seconds(self, i: int) -> tuple[float, float]:
        """(start, end) of window i in seconds of the clip."""
        rate = latent_rate(self.mode)
        sl = self.latent_slice(i)
        return float(sl.start / rate), min(float(sl.stop / rate), self.duration)

    def weights(self, device=None) -> Tensor:
        """(windows, window_len) float32 blend weights; at every latent frame the weights of
        the windows covering it sum to one (raised-cosine ramps where neighbours overlap)."""
        return blend_weights([w.latent_start for w in self.windows], self.window_len,
                             self.latent_len).to(device)

    def record(self) -> dict:
        """What record.json says about the windows used."""
        return {"window_seconds": self.window_duration, "overlap_seconds": self.overlap,
                "latent_frames": self.latent_len, "window_latent_frames": self.window_len,
                "windows": [{"index": w.index, "start_s": round(self.seconds(w.index)[0], 4),
                             "end_s": round(self.seconds(w.index)[1], 4),
                             "latent_start": w.latent_start, "clip_start": w.clip_start,
                             "sync_frame": w.sync_frame} for w in self.windows]}


def plan_windows(mode: str, duration: float, window_duration: float,
                 overlap: Optional[float] = None) -> WindowPlan:
    """The windows for ``duration`` seconds with windows of ``window_duration`` seconds (the
    length the network was trained on) overlapping by at least ``overlap`` seconds (default
    :data:`OVERLAP_FRACTION` of the window). Hops are whole Synchformer strides (0.32 s); the
    last window ends at the clip's end."""
    total = sequence_lengths(mode, duration)
    window = sequence_lengths(mode, window_duration)
    if overlap is None:
        overlap = OVERLAP_FRACTION * float(window_duration)
    overlap = float(overlap)
    if not math.isfinite(overlap) or overlap < 0:
        raise ConfigError(f"window overlap must be 0 or more seconds, got {overlap}")
    if total.latent <= window.latent:  # one window: the clip itself, as MMAudio generates it
        return WindowPlan(mode, total.duration, total.duration, overlap, total, total,
                          (Window(0, 0, 0, 0),))
    hop_seconds = Fraction(repr(float(window_duration))) - Fraction(repr(overlap))
    if hop_seconds < SYNC_STRIDE_SECONDS:
        raise ConfigError(f"window overlap {overlap:g} s leaves less than one Synchformer stride "
                          f"({float(SYNC_STRIDE_SECONDS):g} s) between windows of "
                          f"{window_duration:g} s; use an overlap below "
                          f"{float(window_duration - SYNC_STRIDE_SECONDS):g} s")
    hop_strides = math.floor(hop_seconds / SYNC_STRIDE_SECONDS)
    rate = latent_rate(mode)
    last = total.latent - window.latent
    starts = []
    i = 0
    while True:
        s = _round(i * hop_strides * SYNC_STRIDE_SECONDS * rate)
        if s >= last:
            break
        starts.append(s)
        i += 1
    starts.append(last)

    max_clip = total.clip - window.clip
    max_sync = int(total.duration * SYNC_FPS) - sync_frames_needed(window)
    windows = []
    for k, s in enumerate(starts):
        t = Fraction(s) / rate
        windows.append(Window(k, s, min(max(_round(t * CLIP_FPS), 0), max_clip),
                              min(max(_round(t * SYNC_FPS), 0), max_sync)))
    return WindowPlan(mode, total.duration, float(window_duration), overlap, total, window,
                      tuple(windows))


def blend_weights(starts: Sequence[int], window_len: int, total_len: int) -> Tensor:
    """Normalised blend weights (len(starts), window_len), float32.

    Each window ramps up (sin²) over the frames it shares with the window before it and down
    over those it shares with the window after; then every frame's weights are divided by their
    sum, so they sum to one wherever windows overlap (two or more) and are exactly 1 where a
    window is alone."""
    n = len(starts)
    if n == 0:
        raise ConfigError("a window plan needs at least one window")
    if starts[0] != 0 or starts[-1] + window_len != total_len:
        raise ConfigError(f"windows starting at {list(starts)} of {window_len} frames do not "
                          f"cover 0..{total_len} exactly")
    j = torch.arange(window_len, dtype=torch.float64)
    raw = torch.ones(n, window_len, dtype=torch.float64)
    for i, s in enumerate(starts):
        if i > 0:
            gap = s - starts[i - 1]
            if not 0 < gap <= window_len:
                raise ConfigError(f"window {i} starts at {s}, {gap} frames after window {i - 1} "
                                  f"of {window_len} frames: windows must advance and touch")
            left = starts[i - 1] + window_len - s
            if left > 0:
                ramp = torch.sin(0.5 * math.pi * (j[:left] + 0.5) / left) ** 2
                raw[i, :left] *= ramp
        if i < n - 1:
            right = s + window_len - starts[i + 1]
            if right > 0:
                ramp = torch.sin(0.5 * math.pi * (right - j[:right] - 0.5) / right) ** 2
                raw[i, window_len - right:] *= ramp
    total = torch.zeros(total_len, dtype=torch.float64)
    for i, s in enumerate(starts):
        total[s:s + window_len] += raw[i]
    out = torch.stack([raw[i] / total[s:s + window_len] for i, s in enumerate(starts)])
    return out.float()


# ------------------------------------------------------------------------- condition slicing
def clip_slice(plan: WindowPlan, i: int) -> slice:
    """CLIP frames (8 fps) of the whole clip that window i sees."""
    c = plan.windows[i].clip_start
    return slice(c, c + plan.window.clip)


def sync_token_slice(plan: WindowPlan, i: int) -> Optional[slice]:
    """Window i's tokens in the whole video's Synchformer encoding (segments at stride 8 from
    frame 0), or None when its first segment is off that grid (encode its frames instead:
    :func:`sync_frame_slice`)."""
    w = plan.windows[i]
    if not w.on_sync_grid:
        return None
    first = (w.sync_frame // SYNC_SEGMENT_STRIDE) * SYNC_TOKENS_PER_SEGMENT
    return slice(first, first + plan.window.sync)


def sync_frame_slice(plan: WindowPlan, i: int) -> slice:
    """25 fps frames of the whole clip that window i's Synchformer segments read."""
    f = plan.windows[i].sync_frame
    return slice(f, f + sync_frames_needed(plan.window))


def grid_sync_frames(plan: WindowPlan) -> int:
    """25 fps frames the whole video's on-grid encoding needs: every on-grid window's segments
    (the whole clip's own segment count for a single window, as MMAudio encodes it)."""
    need = [sync_frame_slice(plan, w.index).stop for w in plan.windows if w.on_sync_grid]
    return max(need)


# ------------------------------------------------------------------------- the velocity wrapper
WindowGroupVelocity = Callable[[tuple[int, ...]], Velocity]
"""``make(indices)`` -> the guided velocity of the windows ``indices`` stacked along the batch,
window-major (rows [window indices[0] × B, window indices[1] × B, ...]); built once per group."""

WindowProgress = Callable[[int], None]
"""``on_windows(n)`` after each network call over n windows; raising from it cancels."""


def window_groups(plan: WindowPlan, windows_per_batch: int) -> list[tuple[int, ...]]:
    if int(windows_per_batch) < 1:
        raise ConfigError(f"windows per batch must be at least 1, got {windows_per_batch}")
    k = int(windows_per_batch)
    n = len(plan.windows)
    return [tuple(range(i, min(i + k, n))) for i in range(0, n, k)]


def windowed_velocity(plan: WindowPlan, make: WindowGroupVelocity,
                      windows_per_batch: int = WINDOWS_PER_BATCH,
                      on_windows: Optional[WindowProgress] = None) -> Velocity:
    """The velocity of the whole latent sequence (B, latent_len, C) from the velocities of its
    windows, blended with :meth:`WindowPlan.weights` (accumulated in float32). A single-window
    plan returns the window's own velocity untouched."""
    groups = window_groups(plan, windows_per_batch)
    velocities = [make(g) for g in groups]  # conditions are stacked once, not per step
    if plan.single:
        only = velocities[0]

        def single(x: Tensor, t: Tensor) -> Tensor:
            v = only(x, t)
            if on_windows is not None:
                on_windows(1)
            return v

        return single
    weights = plan.weights()
    slices = [plan.latent_slice(i) for i in range(len(plan.windows))]

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        if x.shape[1] != plan.latent_len:
            raise ConfigError(f"latent has {x.shape[1]} frames, the window plan covers "
                              f"{plan.latent_len}")
        batch = x.shape[0]
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        w_dev = weights.to(x.device)
        for group, v in zip(groups, velocities):
            xs = torch.cat([x[:, slices[i]] for i in group], dim=0)
            parts = v(xs, t).split(batch, dim=0)
            for i, part in zip(group, parts):
                out[:, slices[i]] += w_dev[i][None, :, None] * part.float()
            if on_windows is not None:
                on_windows(len(group))
        return out.to(x.dtype)

    return velocity
