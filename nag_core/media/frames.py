"""Picking the CLIP (8 fps) and Synchformer (25 fps) frame streams by presentation time.

The rule is MMAudio's (docs/MMAUDIO.md, Video frames): for each target rate, a decoded frame at relative time ``t``
is emitted while ``t >= next target time``, the target then advancing by 1/fps; frames repeat when
the source is slower than the target, and frames past the duration are skipped. Then the
truncation of §3.4. The official code compares float times against a float sum of 1/fps steps;
that sum drifts above k/fps by an ulp, so on exact ties (every frame of a 25 fps video against
the 25 fps grid) it picks the *next* frame, i.e. 40 ms late. Here times are exact fractions
(frame pts * time base, targets k/fps), so a frame shown exactly at a target time is the one
picked. ``official_float_times=True`` reproduces the official float behaviour for parity runs.

Frames are resized as they arrive, in small batches, so a long or large video never sits in
memory at full resolution.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError, MediaError, MediaWarning
from .resize import CLIP_SIZE, SYNC_SIZE, clip_resize, sync_resize

from ..defaults import CLIP_FPS, MIN_DURATION, SYNC_FPS  # noqa: F401  (re-exported)
_BATCH = 16  # raw frames resized together


@dataclass
class VideoClip:
    """The two frame streams MMAudio needs, and where they came from.

    clip_frames: (Tc, 3, 384, 384) uint8, 8 fps; sync_frames: (Ts, 3, 224, 224) uint8, 25 fps.
    Tc == int(8 * duration) and Ts == int(25 * duration). Convert with clip_to_float /
    sync_to_float right before the encoders.
    """
    clip_frames: Tensor
    sync_frames: Tensor
    duration: float  # effective seconds after truncation: the length to generate
    start: float  # seconds into the source where frame time 0 of the streams lies
    fps: float  # source frame rate (average; informative for VFR)
    size: tuple[int, int]  # source (width, height), upright (after rotation)
    rotation: int  # degrees counter-clockwise applied to make frames upright (0, 90, 180, 270)
    path: str | None  # source file, None for in-memory frames
    requested_duration: float | None = None  # what the caller asked for (None: to the end)
    frames_decoded: int = 0  # source frames decoded (shows that seeking worked)
    warning: str | None = None  # what was used and why, when not what was asked (MediaWarning)

    @property
    def truncated(self) -> bool:
        """True when the source was shorter than the requested duration."""
        return self.requested_duration is not None and self.duration < self.requested_duration


def exact_seconds(value) -> Fraction:
    """A user-given time as an exact fraction: 0.1 means 1/10 (not the binary float above it),
    so a frame shown at exactly the requested start is not skipped."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(repr(float(value)))


def check_times(start, duration) -> None:
    """Validate user start/duration (seconds) before any decoding."""
    try:
        s = float(start)
    except (TypeError, ValueError):
        raise ConfigError(f"start must be a number of seconds, got {start!r}") from None
    if not s >= 0.0 or s != s or s == float("inf"):
        raise ConfigError(f"start must be 0 or more seconds, got {start!r}")
    if duration is None:
        return
    try:
        d = float(duration)
    except (TypeError, ValueError):
        raise ConfigError(f"duration must be a number of seconds, got {duration!r}") from None
    if not d == d or d == float("inf"):
        raise ConfigError(f"duration must be a finite number of seconds, got {duration!r}")
    if d < MIN_DURATION:
        raise ConfigError(f"duration {d:g} s is shorter than the {MIN_DURATION} s minimum MMAudio "
                          f"can work with (one 16-frame Synchformer segment); use at least "
                          f"{MIN_DURATION} s.")


class _RatePicker:
    """How many times each frame is emitted for one target rate."""

    def __init__(self, fps: int, official_float_times: bool):
        self.fps = fps
        self.k = 0  # index of the next target time
        self.official = official_float_times
        self.next_float = 0.0

    def count(self, rel: Fraction) -> int:
        n = 0
        if self.official:
            t = float(rel)
            while t >= self.next_float:
                self.next_float += 1.0 / self.fps
                n += 1
        else:
            while rel * self.fps >= self.k:  # rel >= k / fps, exactly
                self.k += 1
                n += 1
        return n


class StreamCollector:
    """Feeds frames by relative time; returns the resized, truncated streams at the end."""

    def __init__(self, duration, official_float_times: bool = False):
        self.limit = None if duration is None else exact_seconds(duration)
        self.requested = None if duration is None else float(duration)
        self.clip = _RatePicker(CLIP_FPS, official_float_times)
        self.sync = _RatePicker(SYNC_FPS, official_float_times)
        self.pending: list[tuple[Tensor, int, int]] = []
        self.clip_out: list[Tensor] = []
        self.sync_out: list[Tensor] = []
        self.size: tuple[int, int] | None = None  # (w, h) of the first frame kept
        self.frames_seen = 0  # frames at or after the start

    def past_end(self, rel: Fraction) -> bool:
        return self.limit is not None and rel > self.limit

    def counts(self, rel: Fraction) -> tuple[int, int]:
        """Emissions of a frame at relative time rel >= 0 (call in presentation order)."""
        self.frames_seen += 1
        return self.clip.count(rel), self.sync.count(rel)

    def offer(self, rel: Fraction, make_frame: Callable[[], Tensor]) -> bool:
        """Feed the frame shown at ``rel`` seconds after the start (call in presentation order).
        ``make_frame`` gives its upright (3, H, W) uint8 tensor and is only called when a stream
        uses the frame, so skipped frames are never converted. Returns False once ``rel`` is
        past the requested duration: the caller stops feeding."""
        if rel < 0:
            return True
        if self.past_end(rel):
            return False
        c, s = self.counts(rel)
        if c or s:
            self.push(make_frame(), c, s)
        return True

    def push(self, frame: Tensor, n_clip: int, n_sync: int) -> None:
        """frame: (3, H, W) uint8, already upright."""
        if self.size is None:
            self.size = (int(frame.shape[-1]), int(frame.shape[-2]))
        if self.pending and self.pending[0][0].shape != frame.shape:
            self.flush()  # a mid-stream size change: batches must share a size
        self.pending.append((frame, n_clip, n_sync))
        if len(self.pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        frames = torch.stack([f for f, _, _ in self.pending])
        reps_c = torch.tensor([c for _, c, _ in self.pending])
        reps_s = torch.tensor([s for _, _, s in self.pending])
        keep_c, keep_s = reps_c > 0, reps_s > 0
        if keep_c.any():
            self.clip_out.append(clip_resize(frames[keep_c]).repeat_interleave(reps_c[keep_c], 0))
        if keep_s.any():
            self.sync_out.append(sync_resize(frames[keep_s]).repeat_interleave(reps_s[keep_s], 0))
        self.pending = []

    def finish(self) -> tuple[Tensor, Tensor, float]:
        """Truncation (docs/MMAUDIO.md, float arithmetic as the official code and the model's
        sequence lengths use): duration = min(requested, n_clip/8, n_sync/25), then cut."""
        self.flush()
        clip = torch.cat(self.clip_out) if self.clip_out else torch.empty(0, 3, CLIP_SIZE, CLIP_SIZE, dtype=torch.uint8)
        sync = torch.cat(self.sync_out) if self.sync_out else torch.empty(0, 3, SYNC_SIZE, SYNC_SIZE, dtype=torch.uint8)
        duration = self.requested
        clip_len = clip.shape[0] / CLIP_FPS
        sync_len = sync.shape[0] / SYNC_FPS
        if duration is None or clip_len < duration:
            duration = clip_len
        if sync_len < duration:
            duration = sync_len
        return clip[:int(CLIP_FPS * duration)], sync[:int(SYNC_FPS * duration)], duration


def shortfall_warning(what: str, used: float, requested: float | None, start: float,
                      end: float | None, source_ended: bool,
                      damage: str | None = None) -> str | None:
    """The message for a clip that is not what was asked (None when it is): ``used`` seconds of
    the ``requested`` ones from ``start``; ``end`` the time of the last frame seen (seconds
    from the start of the source); ``source_ended`` whether the frames ran out before the
    requested end; ``damage`` what went wrong in the file, if anything."""
    short = requested is not None and used < requested
    if not short and damage is None:
        return None
    asked = f"of the {requested:g} s asked " if requested is not None else ""
    message = f"{what}: used {used:.3f} s {asked}from {start:g} s"
    if damage is not None:
        return f"{message}: {damage}. Re-export the video to use all of it."
    if not source_ended:
        # the frames reach the requested end, but the 8 and 25 fps streams are cut to whole
        # frames of both rates (MMAudio's truncation)
        return (f"{message}: the {CLIP_FPS} and {SYNC_FPS} fps frame streams picked up to the "
                f"requested end hold {used:.3f} s; the audio will be that long.")
    tail = f" (its last frame is at {end:.3f} s)" if end is not None else ""
    return (f"{message}: the source ends there{tail}; the audio will be {used:.3f} s long. "
            "Give a longer source or a shorter duration to silence this.")


# Shown every time (not once per call site, Python's default): a long-running host such as
# ComfyUI decodes many videos from the same line. Appended, so a user's own filter still wins.
warnings.filterwarnings("always", category=MediaWarning, append=True)


def emit_warning(message: str | None) -> None:
    if message is not None:
        warnings.warn(message, MediaWarning, stacklevel=3)


def check_long_enough(duration: float, start: float, what: str) -> None:
    if duration < MIN_DURATION:
        raise MediaError(f"{what} gives only {duration:.3f} s of frames from {start:g} s on, shorter "
                         f"than the {MIN_DURATION} s minimum MMAudio can work with. Use an earlier "
                         f"start or a longer video (at least {MIN_DURATION} s after the start).")


def images_to_uint8(images: Tensor) -> Tensor:
    """ComfyUI IMAGE frames [..., H, W, C] float 0..1 (or uint8) -> [..., 3, H, W] uint8.
    Rounding (not truncation) gives back the exact bytes of frames decoded as u8/255."""
    if images.dtype == torch.uint8:
        u8 = images
    else:
        u8 = (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    c = u8.shape[-1]
    if c == 1:
        u8 = u8.expand(*u8.shape[:-1], 3)
    elif c >= 3:
        u8 = u8[..., :3]  # RGBA: the alpha channel carries no picture content
    else:
        raise ConfigError(f"IMAGE frames must have 1, 3 or 4 channels, got {c}")
    return u8.movedim(-1, -3).contiguous()


def frames_from_images(images: Tensor, fps, start: float = 0.0, duration: float | None = 8.0,
                       *, official_float_times: bool = False) -> VideoClip:
    """The two streams from an IMAGE batch [F, H, W, C] (float 0..1) shown at ``fps``: frame i
    has time i/fps. Same picking and truncation as decode_video."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"images must be an IMAGE batch [frames, height, width, channels], got {shape}")
    if images.shape[0] == 0:
        raise MediaError("the IMAGE batch has no frames")
    try:
        rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1_000_000)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"fps must be a positive number, got {fps!r}") from None
    if not rate > 0:
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    check_times(start, duration)
    n = images.shape[0]
    length = n / rate
    t0 = exact_seconds(start)
    if t0 >= length:
        raise ConfigError(f"start {float(start):g} s is past the end of the frames: {n} frames at "
                          f"{float(rate):g} fps last {float(length):.3f} s. Use a start below that.")
    col = StreamCollector(duration, official_float_times)
    ran_out = True
    for i in range(int(t0 * rate), n):  # frames before floor(start*fps) are all before start
        if not col.offer(Fraction(i) / rate - t0, lambda: images_to_uint8(images[i].cpu())):
            ran_out = False
            break
    clip, sync, eff = col.finish()
    check_long_enough(eff, float(start), "the IMAGE batch")
    h, w = images.shape[1], images.shape[2]
    requested = None if duration is None else float(duration)
    warning = shortfall_warning(f"the IMAGE batch ({n} frames at {float(rate):g} fps)", eff,
                                requested, float(start), float((n - 1) / rate), ran_out)
    emit_warning(warning)
    return VideoClip(clip, sync, eff, float(start), float(rate), (int(w), int(h)), 0, None,
                     requested, col.frames_seen, warning)


def frames_from_video_object(video, start: float = 0.0, duration: float | None = 8.0,
                             *, official_float_times: bool = False) -> VideoClip:
    """The two streams from a ComfyUI VIDEO object (duck-typed, no ComfyUI import).

    A file-backed video (``get_stream_source()`` returning a path) is decoded from the file by
    presentation timestamps (exact for VFR, no full decode into memory); otherwise
    ``get_components()`` gives images [F, H, W, 3] and frame_rate, handled as frames_from_images.
    """
    import os
    source = None
    if hasattr(video, "get_stream_source"):
        try:
            source = video.get_stream_source()
        except Exception:  # a host object that cannot name its source: fall back to its frames
            source = None
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        from .video import decode_video
        return decode_video(source, start, duration, official_float_times=official_float_times)
    if not hasattr(video, "get_components"):
        raise ConfigError(f"expected a VIDEO object with get_components(), got {type(video).__name__}")
    comp = video.get_components()
    images = getattr(comp, "images", None)
    rate = getattr(comp, "frame_rate", None)
    if images is None or rate is None:
        raise MediaError("the VIDEO object gave no images or no frame rate")
    return frames_from_images(images, rate, start, duration, official_float_times=official_float_times)
