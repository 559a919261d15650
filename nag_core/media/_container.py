"""Opening media files with PyAV and finding their streams, with errors a user can act on."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av

from ..errors import MediaError


def check_file(path, what: str = "video") -> Path:
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise MediaError(f"{what} file not found: {p}. Check the path (relative paths are taken "
                         f"from {Path.cwd()}).")
    if not p.is_file():
        raise MediaError(f"{p} is not a file (a folder?). Give the path of a {what} file.")
    if p.stat().st_size == 0:
        raise MediaError(f"{p} is empty (0 bytes): the file was not fully written or copied. "
                         f"Re-export or re-copy the {what}.")
    return p


def open_input(path: Path, what: str = "video"):
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        raise MediaError(f"{path} cannot be read as a {what} file (FFmpeg: {e.strerror or e}). It is "
                         f"not a media file FFmpeg understands, or it is damaged or truncated "
                         f"(for example an MP4 whose copy did not finish). Re-export it.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MediaError(f"{path} cannot be opened: {e}") from None


def _is_cover_art(stream) -> bool:
    disp = getattr(stream, "disposition", None)
    flag = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    try:
        return bool(disp is not None and flag is not None and (disp & flag))
    except TypeError:
        return False


def video_stream(container, path: Path):
    """The first real video stream (album art in audio files does not count)."""
    streams = [s for s in container.streams.video if not _is_cover_art(s)]
    if not streams:
        kind = "it only has audio" if container.streams.audio else "it has no picture stream"
        raise MediaError(f"{path} has no video stream ({kind}). Give a video file such as .mp4, "
                         f".mov, .mkv or .webm.")
    return streams[0]


def audio_stream(container, path: Path):
    if not container.streams.audio:
        raise MediaError(f"{path} has no audio stream. Give an audio file (.wav, .flac, .mp3, ...) "
                         f"or a video that has sound.")
    return container.streams.audio[0]


def time_origin(container) -> Fraction:
    """Time zero of the file, in seconds. Streams that start late as a whole (MPEG-TS clocks,
    trimmed captures) are measured from the container start, the same origin for audio and video,
    so their sync is kept; zero or negative starts (codec priming) keep absolute times, as the
    official decoder does."""
    st = container.start_time  # AV_TIME_BASE units (microseconds)
    if st is not None and st > 0:
        return Fraction(st, 1_000_000)
    return Fraction(0)


def stream_length(container, stream) -> float | None:
    """Seconds from the time origin to the end of the stream, from metadata (None if unknown)."""
    origin = time_origin(container)
    if stream.duration is not None and stream.time_base is not None:
        begin = stream.start_time if stream.start_time is not None else 0
        end = Fraction(begin + stream.duration) * stream.time_base
        return float(end - origin)
    if container.duration is not None:
        return float(Fraction(container.duration, 1_000_000) + Fraction(container.start_time or 0, 1_000_000) - origin)
    return None


def announced_video_length(container, stream) -> float | None:
    """The picture's length as the file announces it, for telling a cut-short file from a short
    one: the stream's own duration, or the container's when the picture is its only stream
    (a container's duration also covers a longer audio track). None when neither is known."""
    if stream.duration is not None and stream.time_base is not None:
        return stream_length(container, stream)
    if len(container.streams) == 1 and container.duration is not None:
        return stream_length(container, stream)
    return None
