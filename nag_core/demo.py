"""The demo: a synthetic video (a bouncing ball and a blinking lamp, drawn with torch, no audio)
and the whole step-by-step chain on it.

``python -m nag_core demo`` never downloads gigabytes: it uses real weights only when they are
already in the models folder, and otherwise the tiny smoke-test set (written once to the user
cache), in which case it says plainly, at the start, at the end and in record.json, that the
audio is noise from random weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import torch

from .errors import WeightsError

DEMO_NAME = "nag_foley_demo.mp4"
DEMO_PROMPTS = ("a ball bounces", "a lamp beeps", "rain falls")
BALL_RADIUS = 0.09  # of the frame width
BOUNCES_PER_S = 1.25
BLINK_HZ = 1.0


def demo_frames(seconds: float = 8.0, fps: int = 25, size: int = 128) -> torch.Tensor:
    """(T, H, W, 3) uint8: a ball bouncing on a floor (left) and a lamp blinking (right)."""
    n = int(round(seconds * fps))
    t = torch.arange(n, dtype=torch.float32) / fps
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = coords[:, None], coords[None, :]
    floor_y = 0.85
    # |sin| makes a bounce: the ball touches the floor twice per sine period.
    height = torch.abs(torch.sin(math.pi * BOUNCES_PER_S * t))
    ball_y = floor_y - BALL_RADIUS - 0.6 * height
    ball_x = 0.3 + 0.05 * torch.sin(2 * math.pi * 0.2 * t)
    lamp_on = (torch.remainder(t * BLINK_HZ, 1.0) < 0.5).float()

    sky = torch.tensor([0.15, 0.2, 0.35])
    frames = sky.expand(n, size, size, 3).clone()
    frames[:, yy[:, 0] > floor_y, :, :] = torch.tensor([0.3, 0.25, 0.2])
    d2 = (yy[None] - ball_y[:, None, None]) ** 2 + (xx[None] - ball_x[:, None, None]) ** 2
    ball = d2 < BALL_RADIUS ** 2
    frames[ball] = torch.tensor([0.9, 0.3, 0.2])
    lamp = ((yy - 0.35) ** 2 + (xx - 0.75) ** 2) < 0.07 ** 2
    lamp_colour = (torch.tensor([0.25, 0.25, 0.2])
                   + lamp_on[:, None] * torch.tensor([0.75, 0.7, 0.1]))
    frames[:, lamp] = lamp_colour[:, None, :]
    post = (xx > 0.735) & (xx < 0.765) & (yy > 0.42) & (yy < floor_y)
    frames[:, post] = torch.tensor([0.5, 0.5, 0.5])
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


def write_demo_video(path, seconds: float = 8.0, fps: int = 25, size: int = 128) -> Path:
    """Encode :func:`demo_frames` to ``path`` (H.264 in MP4, no audio; written atomically)."""
    import av

    from .media._files import written_atomically

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = demo_frames(seconds, fps, size).numpy()
    with written_atomically(out) as tmp:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264" if _has_encoder("libx264") else "mpeg4",
                                          rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for image in frames:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return out


def _has_encoder(name: str) -> bool:
    import av
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError by version
        return False


# --------------------------------------------------------------------------- the demo run
SMOKE_NOTE = ("SMOKE-TEST WEIGHTS: no real MMAudio weights were found, so this demo ran on tiny "
              "RANDOM weights; the audio is NOISE. It only shows that everything works. For real "
              "sound, download the weights (`python -m nag_core download --variant small_16k`) "
              "and run the demo again.")
NO_CONTROLNET_NOTE = ("Real weights, no NAG ControlNet: steps 2 and 3 used the negative-prompt "
                      "baseline (earlier prompts as CFG's negative text), not NAG.")


def pick_demo_models(models_dir=None, variant: str = "small_16k") -> tuple[Path, bool]:
    """(models folder, is_smoke): the resolved folder when it holds complete weights already,
    else the smoke-test set in the user cache (written on first use)."""
    from .download import cache_dir, resolve_models_dir
    from .smoke import MARKER, write_smoke_models
    from .weights import find_model_files

    root = resolve_models_dir(models_dir)
    try:
        find_model_files(root, variant)
        return root, (root / MARKER).exists()
    except WeightsError:
        pass
    smoke = cache_dir() / "smoke-models"
    try:
        find_model_files(smoke, "small_16k")
    except WeightsError:
        write_smoke_models(smoke)
    return smoke, True


def run_demo(out_dir=None, *, models_dir=None, variant: str = "small_16k", seconds: float = 8.0,
             steps: Optional[int] = None, device=None, progress: bool = True,
             log: Callable[[str], None] = print) -> dict:
    """Write the demo video into ``out_dir`` (default ./nag_foley_demo) and run the 3-prompt chain
    on it. Returns the run record."""
    from .chain import run_chain

    out = Path(out_dir or "nag_foley_demo")
    out.mkdir(parents=True, exist_ok=True)
    root, smoke = pick_demo_models(models_dir, variant)
    if smoke:
        variant = "small_16k"
    notes = [SMOKE_NOTE] if smoke else [NO_CONTROLNET_NOTE]
    for note in notes:
        log(note)
    video = write_demo_video(out / DEMO_NAME, seconds=seconds)
    log(f"demo video: {video}")
    record = run_chain(video, list(DEMO_PROMPTS), out, variant=variant, models_dir=root,
                       steps=steps or (10 if smoke else 25), duration=seconds, device=device,
                       offline=True, progress=progress, notes=notes, smoke=smoke, log=log)
    for note in notes:
        log(note)
    return record
