"""Cheap checks a run makes before anything expensive (loading models takes tens of seconds even
on the smoke weights): the input video opens and has a picture long enough for the request, the
prompts and seeds are usable, the device exists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .errors import ConfigError, MediaError
from .record import SEED_MAX


@dataclass(frozen=True)
class VideoProbe:
    path: Path
    length: Optional[float]  # seconds of picture from the time origin, None if the file won't say


def probe_video(path, start: float, duration: Optional[float]) -> VideoProbe:
    """Open ``path`` (without decoding) and check that it is a file with a video stream and
    that ``start`` leaves at least MMAudio's minimum duration of picture."""
    from .media import MIN_DURATION
    from .media._container import check_file, open_input, stream_length, video_stream
    from .media.frames import check_times
    check_times(start, duration)
    p = check_file(path, "video").resolve()
    container = open_input(p, "video")
    try:
        length = stream_length(container, video_stream(container, p))
    finally:
        container.close()
    if length is not None:
        usable = length - float(start)
        if usable <= 0:
            raise ConfigError(f"start {float(start):g} s is past the end of the video: {p.name} "
                              f"is {length:.3f} s long; use a --start below {length:.3f}")
        if usable < MIN_DURATION:
            raise MediaError(f"{p.name} has only {usable:.3f} s of picture after --start "
                             f"{float(start):g} s; MMAudio needs at least {MIN_DURATION} s. Use an "
                             "earlier --start or a longer video")
    return VideoProbe(p, length)


def check_prompts(prompts: Sequence[str]) -> list[str]:
    prompts = list(prompts)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ConfigError("give at least one non-empty prompt (--prompt \"...\" per step)")
    return prompts


def check_seeds(seed, count: int) -> int:
    """``seed`` if it and the ``count - 1`` seeds after it (step k uses seed + k - 1) are
    64-bit seeds."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be a whole number, got {seed!r}")
    if not 0 <= seed <= SEED_MAX - (count - 1):
        raise ConfigError(f"seed {seed} is out of range: seeds are 0..{SEED_MAX} and this run "
                          f"uses {count} consecutive seeds from it; use a seed from 0 to "
                          f"{SEED_MAX - (count - 1)}")
    return seed
