"""Synthetic clips (tiny PyAV-made videos with tones, audio files) and a counting fake encoder
for the training tests."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import pytest
import numpy as np
import torch

from nag_core.media.audio import encode_frames
from nag_core.mmaudio.network import MMAudioNetwork, randomize_parameters_
from nag_core.mmaudio.variants import MODES, sequence_lengths
from nag_core.smoke import tiny_network_config

SR = 16000


def tone(seconds: float, freq: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def make_video(path: Path, seconds: float, freq: float = 440.0, fps: int = 25,
               size: int = 64) -> Path:
    """An mp4 (mpeg4 video, aac audio) of a moving gradient and a tone."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("aac", rate=SR)
        aus.layout = "mono"
        for i in range(int(round(seconds * fps))):
            img = np.zeros((size, size, 3), np.uint8)
            img[..., 0] = (np.arange(size)[None, :] * 4 + i * 3) % 256
            img[..., 1] = (i * 7) % 256
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        _write_audio(out, aus, tone(seconds, freq))
    return path


def _write_audio(out, stream, wave: np.ndarray, chunk: int = 1024) -> None:
    mono = torch.from_numpy(np.asarray(wave, dtype=np.float32))[None]
    for frame in encode_frames(mono, SR, "flt", chunk=chunk):
        for p in stream.encode(frame):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)


def make_audio(path: Path, seconds: float, freq: float = 330.0) -> Path:
    codec = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "mp3"}[path.suffix]
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=SR)
        s.layout = "mono"
        _write_audio(out, s, tone(seconds, freq))
    return path


class FakeEncoder:
    """A SegmentEncoder with deterministic features of the right shapes that counts its calls."""

    def __init__(self, network_config, mode: str = "16k", fingerprint: str = "fake"):
        self.mode, self.variant, self.fingerprint = mode, "small_16k", fingerprint
        self.cfg = network_config
        self.audio_calls = self.video_calls = 0

    def _gen(self, path, start, salt):
        seed = (sum(map(ord, str(Path(path).name))) * 1000 + int(start * 100) + salt) % 2 ** 31
        return torch.Generator().manual_seed(seed)

    def encode_audio(self, path, start, seconds):
        self.audio_calls += 1
        n = sequence_lengths(self.mode, seconds).latent
        g = self._gen(path, start, 1)
        c = MODES[self.mode].latent_dim
        mean = torch.randn(n, c, generator=g)
        return {"mean": mean, "std": 0.1 * torch.rand(n, c, generator=g),
                "cond_mean": 0.5 * mean}

    def encode_video(self, path, start, seconds):
        self.video_calls += 1
        lengths = sequence_lengths(self.mode, seconds)
        g = self._gen(path, start, 2)
        return {"clip_f": torch.randn(lengths.clip, self.cfg.clip_dim, generator=g),
                "sync_f": torch.randn(lengths.sync, self.cfg.sync_dim, generator=g)}


def tiny_base(seed: int = 1, duration: float = 1.0) -> MMAudioNetwork:
    """The smoke-test network (same config as nag_core.smoke writes)."""
    net = MMAudioNetwork(tiny_network_config("16k"), duration=duration)
    randomize_parameters_(net, seed=seed)
    return net.eval().requires_grad_(False)


@pytest.fixture
def single_thread():
    """Tiny tensors: extra threads only add synchronisation, which on a busy 2-core CI machine
    costs far more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
