"""Write world clips as ordinary video files with sound (.mkv: H.264 video, 16-bit PCM audio) plus
a captions.csv, so the world can be fed to tools that take real videos, e.g. the ControlNet
training CLI exactly as a user would run it:

    python -m bench.world.export --out /tmp/world_videos --clips 50
    python -m nag_core.train run --data /tmp/world_videos --models <world model folder> ...
"""

from __future__ import annotations

import argparse
import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from nag_core.media.audio import encode_frames

from nag_core.world.scene import FPS, P_SILENT, SAMPLE_RATE, render_clip, training_caption


def write_clip_video(clip, path: Path) -> Path:
    """One clip as .mkv (libx264 yuv444p, near lossless; pcm_s16le mono 16 kHz)."""
    path = Path(path)
    with av.open(str(path), mode="w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = clip.frames.shape[2], clip.frames.shape[1], "yuv444p"
        v.options = {"crf": "4", "preset": "veryfast"}
        a = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        for i, f in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray((np.clip(f, 0, 1) * 255).round().astype(np.uint8),
                                               format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        wave = torch.from_numpy(np.asarray(clip.audio, dtype=np.float32))[None]
        for frame in encode_frames(wave, SAMPLE_RATE, "s16", chunk=1024):
            for packet in a.encode(frame):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    return path


def world_video(seed: int, objects=("ball", "lamp"), duration: float = 4.0):
    """(Clip, VideoClip) of one world video, ready for nag_core.pipeline.FoleySession."""
    from nag_core.media import frames_from_images

    clip = render_clip(seed, objects, duration)
    return clip, frames_from_images(torch.from_numpy(clip.frames), FPS, 0.0, duration)


def export(out: Path, clips: int, duration: float = 8.0, p_silent: float = P_SILENT,
           first_seed: int = 0) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(first_seed)
    paths, rows = [], []
    for seed in range(first_seed, first_seed + clips):
        clip = render_clip(seed, None, duration, p_silent=p_silent)
        p = write_clip_video(clip, out / f"world_{seed:05d}.mkv")
        paths.append(p)
        rows.append({"file": p.name, "caption": training_caption(clip.audible, rng)})
    with open(out / "captions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "caption"])
        w.writeheader()
        w.writerows(rows)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.world.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--clips", type=int, default=50)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--p-silent", type=float, default=P_SILENT)
    p.add_argument("--first-seed", type=int, default=0)
    a = p.parse_args(argv)
    paths = export(Path(a.out), a.clips, a.duration, a.p_silent, a.first_seed)
    print(f"wrote {len(paths)} clips to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
