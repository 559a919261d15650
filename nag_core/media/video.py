"""Decoding a video file into the CLIP and Synchformer frame streams, by presentation time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import av
import torch

from ..defaults import DECODE_TIMEOUT_S
from ..errors import ConfigError, MediaError
from ._container import (announced_video_length, check_file, open_input, stream_length,
                         time_origin, video_stream)
from .frames import (StreamCollector, VideoClip, check_long_enough, check_times, emit_warning,
                     exact_seconds, shortfall_warning)

_SEEK_BACKOFF_S = (0.0, 1.0, 5.0, 30.0)  # then from the beginning
# Containers round their announced length (a frame or two, audio longer than the picture):
# frames that stop within this much of it are not called damaged.
_TRUNCATION_SLACK_S = 0.25


def rotation_ccw(frame, stream) -> int:
    """Counter-clockwise degrees that make the frame upright: the display matrix (PyAV's
    VideoFrame.rotation is already counter-clockwise), else the legacy 'rotate' tag (clockwise)."""
    deg = getattr(frame, "rotation", None)
    if not deg:
        tag = stream.metadata.get("rotate") if stream.metadata else None
        try:
            deg = -int(float(tag)) if tag is not None else 0
        except ValueError:
            deg = 0
    return int(round(deg / 90.0)) % 4 * 90


def _frame_tensor(frame, rotation: int) -> torch.Tensor:
    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)  # (3, H, W)
    if rotation:
        rgb = torch.rot90(rgb, rotation // 90, dims=(1, 2))  # k=1: counter-clockwise on screen
    return rgb.contiguous()


def _frames_from(container, stream, deadline: float):
    """Decoded frames with exact times (seconds). Missing pts are filled from the previous frame."""
    rate = stream.average_rate or stream.guessed_rate
    step = 1 / Fraction(rate) if rate else Fraction(1, 25)
    last = None
    for packet in container.demux(stream):
        if time.monotonic() > deadline:
            raise MediaError(f"decoding stopped making progress after {DECODE_TIMEOUT_S:.0f} s; "
                             f"the file is probably damaged. Re-export it.")
        for frame in packet.decode():
            if frame.pts is not None:
                t = Fraction(frame.pts) * (frame.time_base or stream.time_base)
            else:
                t = (last + step) if last is not None else Fraction(0)
            last = t
            yield t, frame


def decode_video(path, start: float = 0.0, duration: float | None = 8.0, *,
                 official_float_times: bool = False) -> VideoClip:
    """Decode the CLIP (8 fps, 384x384) and Synchformer (25 fps, 224x224) streams of a video file.

    Frames are picked by presentation time relative to ``start`` (seconds), over ``duration``
    seconds (None: to the end), rotated upright from the display matrix. Seeks to the keyframe
    before ``start`` (never decodes from 0 for a late start). The result's duration is the
    effective one after truncation; clip/sync lengths are int(8*d) and int(25*d).
    """
    check_times(start, duration)
    p = check_file(path, "video")
    t_start = exact_seconds(start)
    container = open_input(p, "video")
    try:
        stream = video_stream(container, p)
        stream.thread_type = "AUTO"
        origin = time_origin(container)
        length = stream_length(container, stream)
        announced = announced_video_length(container, stream)
        rate = stream.average_rate or stream.guessed_rate
    finally:
        container.close()
    if length is not None and float(t_start) >= length:
        raise ConfigError(f"start {float(start):g} s is past the end of the video: {p.name} is "
                          f"{length:.3f} s long. Use a start below {length:.3f} s.")
    target = origin + t_start
    col = StreamCollector(duration, official_float_times)
    run = _decode_into(p, target, col)
    if col.frames_seen == 0:
        if run.decoded == 0:
            raise MediaError(f"no frame could be decoded from {p}: the video stream is empty or "
                             f"damaged. Re-export the video.")
        end = float(run.last_t - origin) if run.last_t is not None else length
        raise ConfigError(f"start {float(start):g} s is past the end of the video: {p.name} is "
                          f"{end:.3f} s long. Use a start below that.")
    clip, sync, eff = col.finish()
    check_long_enough(eff, float(start), f"{p.name}")
    w, h = col.size
    requested = None if duration is None else float(duration)
    end = float(run.last_t - origin) if run.last_t is not None else None
    warning = shortfall_warning(p.name, eff, requested, float(start), end, run.reached_end,
                                _damage(run, end, announced, rate))
    emit_warning(warning)
    return VideoClip(clip, sync, eff, float(start), float(rate) if rate else 0.0, (w, h),
                     run.rotation, str(p), requested, run.decoded, warning)


def _damage(run: "_Decoded", end: float | None, length: float | None, rate) -> str | None:
    """What was wrong with the file, judged after decoding: a decoder error, or frames that stop
    well before the length the container announces (a file whose copy did not finish)."""
    if run.error is not None:
        at = f" at {end:.3f} s" if end is not None else ""
        return f"the video stream could not be decoded past its frame{at} (FFmpeg: {run.error})"
    if run.reached_end and end is not None and length is not None:
        frame = 1.0 / float(rate) if rate else 0.04
        if end + 2 * frame + _TRUNCATION_SLACK_S < length:
            return (f"its frames stop at {end:.3f} s although the file says it is {length:.3f} s "
                    "long: it is cut short or damaged")
    return None


@dataclass
class _Decoded:
    decoded: int = 0  # frames decoded, over all attempts
    rotation: int = 0
    last_t: Fraction | None = None  # presentation time of the last frame decoded
    error: str | None = None  # an FFmpeg error after some frames (a damaged tail)
    reached_end: bool = False  # demuxing ran to the end of the file (not stopped at the duration)


def _decode_into(path, target: Fraction, col: StreamCollector):
    """Seek to the keyframe at or before the target (backing off when a seek lands after it or
    yields no frame at all, as in an MPEG-TS with a single keyframe, and finally reading from the
    beginning) and feed frames to the collector.
    Returns (frames decoded, rotation, last frame time seen)."""
    deadline = time.monotonic() + DECODE_TIMEOUT_S
    decoded = 0
    rotation = None
    last_t = None
    error = None
    reached_end = False
    backoffs = [target - Fraction(b) for b in _SEEK_BACKOFF_S if target - b > 0] + [None]
    for seek_to in backoffs:
        container = open_input(path, "video")  # fresh state per attempt: no rewind needed
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"
        landed_late = False
        decoded_before = decoded
        stopped = False  # by the collector, at the end of the requested duration
        try:
            if seek_to is not None:
                try:
                    container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
                except av.FFmpegError:
                    continue  # not seekable there: back off, in the end read from the start
            first = True
            for t, frame in _frames_from(container, stream, deadline):
                decoded += 1
                last_t = t
                if first and seek_to is not None and t > target:
                    landed_late = True  # frames before the target would be lost
                    break
                first = False

                def upright(frame=frame):
                    nonlocal rotation  # read once, from the first frame a stream keeps
                    if rotation is None:
                        rotation = rotation_ccw(frame, stream)
                    return _frame_tensor(frame, rotation)

                if not col.offer(t - target, upright):
                    stopped = True
                    break
        except av.FFmpegError as e:
            if decoded == 0:
                raise MediaError(f"the video stream of {path} cannot be decoded (FFmpeg: "
                                 f"{e.strerror or e}); the file is damaged or truncated. "
                                 f"Re-export it.") from None
            # a damaged tail: keep what was decoded, as a player would; truncation handles
            # the length and the clip's warning says why it is short
            error = str(e.strerror or e)
            stopped = True
        finally:
            container.close()
        seek_found_nothing = seek_to is not None and decoded == decoded_before
        if not (landed_late or seek_found_nothing):
            reached_end = not stopped
            break
    return _Decoded(decoded, rotation or 0, last_t, error, reached_end)
