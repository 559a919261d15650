"""Reading audio from any audio or video file, and writing .wav / .flac, with PyAV."""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from ..defaults import DECODE_TIMEOUT_S
from ..errors import ConfigError, MediaError
from ..resample import resample
from ._container import audio_stream, check_file, open_input, stream_length, time_origin
from ._files import check_not_input, prepare_output, written_atomically
from .frames import exact_seconds


# full scale of integer sample formats: int PCM is divided by it to land in [-1, 1)
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def _frame_to_float(frame) -> np.ndarray:
    """One decoded AudioFrame -> (C, n) float32 in [-1, 1], whatever its layout and format."""
    arr = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels)
    if not fmt.is_planar:  # packed: one plane of interleaved samples (1, n*C)
        arr = arr.reshape(-1, channels).T
    base = fmt.name.rstrip("p")
    if base == "u8":
        return (arr.astype(np.float32) - 128.0) / 128.0
    if base in _INT_SCALE:
        return (arr.astype(np.float64) / _INT_SCALE[base]).astype(np.float32)
    return arr.astype(np.float32)


def read_audio(path, sample_rate: int | None = None, mono: bool = True, start: float = 0.0,
               duration: float | None = None) -> tuple[Tensor, int]:
    """Decode the first audio stream of an audio or video file.

    Returns (wave (C, T) float32 in [-1, 1], sample rate). ``mono`` averages the channels
    (C = 1); ``sample_rate`` resamples (band-limited); ``start``/``duration`` (seconds) select
    a window by timestamp, the same time origin the video decoder uses, so the window lines up
    with the frames of decode_video(start=...).
    """
    p = check_file(path, "audio")
    try:
        t_start = exact_seconds(start)
    except (TypeError, ValueError):
        raise ConfigError(f"start must be a number of seconds, got {start!r}") from None
    if t_start < 0:
        raise ConfigError(f"start must be 0 or more seconds, got {start!r}")
    if duration is not None and not float(duration) > 0:
        raise ConfigError(f"duration must be more than 0 seconds, got {duration!r}")
    if sample_rate is not None and int(sample_rate) <= 0:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    container = open_input(p, "audio")
    try:
        stream = audio_stream(container, p)
        origin = time_origin(container)
        length = stream_length(container, stream)
        if length is not None and float(t_start) >= length:
            raise ConfigError(f"start {float(start):g} s is past the end of the audio: {p.name} is "
                              f"{length:.3f} s long. Use a start below that.")
        target = origin + t_start
        if t_start > 0:
            try:
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
            except av.FFmpegError:
                pass  # not seekable: decoding from the start reaches the same samples
        chunks, first_t, sr = _decode(container, stream, target, duration, p)
    finally:
        container.close()
    if not chunks:
        raise ConfigError(f"no audio at or after {float(start):g} s in {p.name}"
                          + (f" ({length:.3f} s long)" if length else "") + ".")
    wave = torch.from_numpy(np.concatenate(chunks, axis=1))
    # place the window by timestamps: skip samples before the target, pad if the stream
    # begins after it (so audio stays in sync with the video frames)
    offset = int(round((target - first_t) * sr))
    if offset >= 0:
        wave = wave[:, offset:]
    else:
        wave = torch.nn.functional.pad(wave, (-offset, 0))
    if duration is not None:
        wave = wave[:, :int(round(float(duration) * sr))]
    if mono and wave.shape[0] > 1:
        wave = wave.mean(0, keepdim=True)
    if sample_rate is not None and int(sample_rate) != sr:
        wave = resample(wave, sr, int(sample_rate))
        sr = int(sample_rate)
    return wave.contiguous(), sr


def _decode(container, stream, target, duration, p):
    deadline = time.monotonic() + DECODE_TIMEOUT_S
    end = None if duration is None else target + exact_seconds(duration)
    chunks, first_t, sr = [], None, stream.rate
    try:
        for packet in container.demux(stream):
            if time.monotonic() > deadline:
                raise MediaError(f"decoding {p} stopped making progress; the file is probably damaged.")
            for frame in packet.decode():
                sr = frame.sample_rate
                t = (Fraction(frame.pts) * frame.time_base if frame.pts is not None
                     else (first_t or Fraction(0)) + Fraction(sum(c.shape[1] for c in chunks), sr))
                data = _frame_to_float(frame)
                if t + Fraction(data.shape[1], sr) <= target:
                    continue  # wholly before the window
                if end is not None and t >= end:
                    return chunks, first_t, sr
                if first_t is None:
                    first_t = t
                chunks.append(data)
    except av.FFmpegError as e:
        if not chunks:
            raise MediaError(f"the audio of {p} cannot be decoded (FFmpeg: {e.strerror or e}); the "
                             f"file is damaged or truncated.") from None
    return chunks, first_t, sr


def _as_channels_first(wave) -> Tensor:
    w = torch.as_tensor(wave)
    if w.dim() == 3 and w.shape[0] == 1:  # a ComfyUI AUDIO batch of one
        w = w[0]
    if w.dim() == 1:
        w = w[None]
    if w.dim() != 2 or w.shape[-1] == 0:
        raise ConfigError(f"audio must be (channels, samples) with samples > 0, got {tuple(w.shape)}")
    if w.shape[0] > 8:
        raise ConfigError(f"audio has {w.shape[0]} channels; expected (channels, samples) with at "
                          f"most 8 channels (did you pass (samples, channels)?)")
    w = w.detach().to("cpu", torch.float32)
    if not torch.isfinite(w).all():
        raise ConfigError("audio contains NaN or infinite samples; refusing to write it")
    return w


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def _to_pcm16(wave: Tensor) -> np.ndarray:
    return np.round(wave.clamp(-1.0, 1.0).numpy() * 32767.0).astype(np.int16)


def pcm16_round_trip(wave: Tensor) -> Tensor:
    """Float audio as a 16-bit PCM file written by this module gives it back when read: clipped,
    rounded to 1/32767 steps on writing, divided by 32768 on reading."""
    return torch.from_numpy(_to_pcm16(wave.float()).astype(np.float32) / _INT_SCALE["s16"])


def encode_frames(wave: Tensor, sr: int, fmt: str, chunk: int = 4096, pts0: int = 0):
    """AudioFrames in the packed/planar sample format ``fmt`` from (C, T) float audio: clipped
    to [-1, 1] for 16-bit PCM only; float formats keep every value (peaks above full scale
    included)."""
    c = wave.shape[0]
    if fmt.startswith("s16"):  # integers end at full scale; float keeps what is beyond it
        x = _to_pcm16(wave)
    else:
        x = wave.numpy().astype(np.float32)
    planar = fmt.endswith("p")
    for s in range(0, x.shape[1], chunk):
        part = x[:, s:s + chunk]
        arr = part if planar else np.ascontiguousarray(part.T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt, layout=_layout(c))
        frame.sample_rate = sr
        frame.pts = pts0 + s
        frame.time_base = Fraction(1, sr)
        yield frame


_WRITERS = {  # (extension, encoding) -> (container format, codec, sample format)
    (".wav", "pcm16"): ("wav", "pcm_s16le", "s16"),
    (".wav", "float"): ("wav", "pcm_f32le", "flt"),
    (".flac", "pcm16"): ("flac", "flac", "s16"),
}


def write_audio(path, wave, sample_rate: int, *, encoding: str = "pcm16", inputs=()) -> Path:
    """Write (C, T) or (T,) float audio in [-1, 1] to .wav (encoding "pcm16" or "float") or .flac
    (16-bit). Written under a temporary name in the same folder, then renamed: a crash never
    leaves a half file under the real name. ``inputs``: files that must never be overwritten
    (a ConfigError if ``path`` is one of them). Returns the path written."""
    out = prepare_output(path)
    check_not_input(out, inputs)
    key = (out.suffix.lower(), encoding)
    if key not in _WRITERS:
        ok = ", ".join(f"{e} ({enc})" for e, enc in _WRITERS)
        raise ConfigError(f"cannot write {out.name} with encoding {encoding!r}; supported: {ok}")
    if int(sample_rate) <= 0:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    fmt_name, codec, sample_fmt = _WRITERS[key]
    w = _as_channels_first(wave)
    sr = int(sample_rate)
    with written_atomically(out) as tmp:
        with av.open(str(tmp), "w", format=fmt_name) as container:
            stream = container.add_stream(codec, rate=sr)
            stream.layout = _layout(w.shape[0])
            stream.format = sample_fmt
            for frame in encode_frames(w, sr, sample_fmt):
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return out
