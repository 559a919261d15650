"""Decoding a video file into the CLIP and Synchformer frame streams, by presentation time."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import torch

from ..defaults import DECODE_TIMEOUT_S
from ..errors import ConfigError, MediaError
from ._container import check_file, open_input, stream_length, time_origin, video_stream
from .frames import StreamCollector, VideoClip, check_long_enough, check_times, exact_seconds

_SEEK_BACKOFF_S = (0.0, 1.0, 5.0, 30.0)  # then from the beginning


def _rotation_ccw(frame, stream) -> int:
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
        rate = stream.average_rate or stream.guessed_rate
    finally:
        container.close()
    if length is not None and float(t_start) >= length:
        raise ConfigError(f"start {float(start):g} s is past the end of the video: {p.name} is "
                          f"{length:.3f} s long. Use a start below {length:.3f} s.")
    target = origin + t_start
    col = StreamCollector(duration, official_float_times)
    decoded, rotation, last_t = _decode_into(p, target, col)
    if col.frames_seen == 0:
        if decoded == 0:
            raise MediaError(f"no frame could be decoded from {p}: the video stream is empty or "
                             f"damaged. Re-export the video.")
        end = float(last_t - origin) if last_t is not None else length
        raise ConfigError(f"start {float(start):g} s is past the end of the video: {p.name} is "
                          f"{end:.3f} s long. Use a start below that.")
    clip, sync, eff = col.finish()
    check_long_enough(eff, float(start), f"{p.name}")
    w, h = col.size
    return VideoClip(clip, sync, eff, float(start), float(rate) if rate else 0.0, (w, h), rotation,
                     str(p), None if duration is None else float(duration), decoded)


def _decode_into(path, target: Fraction, col: StreamCollector):
    """Seek to the keyframe at or before the target (backing off when a seek lands after it, and
    finally reading from the beginning) and feed frames to the collector.
    Returns (frames decoded, rotation, last frame time seen)."""
    deadline = time.monotonic() + DECODE_TIMEOUT_S
    decoded = 0
    rotation = None
    last_t = None
    backoffs = [target - Fraction(b) for b in _SEEK_BACKOFF_S if target - b > 0] + [None]
    for seek_to in backoffs:
        container = open_input(path, "video")  # fresh state per attempt: no rewind needed
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"
        landed_late = False
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
                        rotation = _rotation_ccw(frame, stream)
                    return _frame_tensor(frame, rotation)

                if not col.offer(t - target, upright):
                    break
        except av.FFmpegError as e:
            if decoded == 0:
                raise MediaError(f"the video stream of {path} cannot be decoded (FFmpeg: "
                                 f"{e.strerror or e}); the file is damaged or truncated. "
                                 f"Re-export it.") from None
            # a damaged tail: keep what was decoded, as a player would; truncation handles length
        finally:
            container.close()
        if not landed_late:
            break
    return decoded, rotation or 0, last_t
