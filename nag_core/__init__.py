"""nag_core: step-by-step video-to-audio Foley with Negative Audio Guidance on MMAudio.

Plain PyTorch. Never imports ComfyUI; the ComfyUI nodes in ../nodes are thin adapters over it.

The names below are imported on first use, so ``import nag_core`` stays light::

    import nag_core
    model = nag_core.load("small_16k")                 # finds (or downloads) the weights
    clip = nag_core.load_video("clip.mp4")             # the whole video (or start=, duration=)
    session = nag_core.FoleySession(model, clip)
    session.add_step("footsteps on gravel")
"""

from __future__ import annotations

import importlib

from .version import __version__

_LAZY = {
    "FoleySession": "pipeline", "StepSettings": "pipeline", "StepResult": "pipeline",
    "METHODS": "defaults",
    "MMAudioModel": "model", "VideoClip": "media", "write_audio": "media",
    "read_audio": "media", "mux_audio_into_video": "media",
    "load_controlnet": "controlnet", "resolve_models_dir": "download",
    "ensure_model_files": "download", "run_chain": "chain", "redo_chain": "chain",
    "NAGFoleyError": "errors", "WeightsError": "errors", "MediaError": "errors",
    "ConfigError": "errors",
}
__all__ = ["load", "load_video", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nag_core' has no attribute {name!r}")


def load(variant: str = "small_16k", models_dir=None, device=None, dtype=None, *,
         offline: bool | None = None, download: bool = True, progress: bool = True):
    """An :class:`MMAudioModel` of ``variant`` from the models folder (resolved as in
    :func:`nag_core.download.resolve_models_dir`), downloading missing files unless offline.
    ``device`` defaults to cuda when available, ``dtype`` to bf16 on CUDA and float32 on the CPU
    (:func:`nag_core.defaults.resolve_device` / :func:`~nag_core.defaults.resolve_dtype`, the
    rule the command line and the nodes use too)."""
    from .loading import load_variant
    return load_variant(variant, models_dir, device=device, dtype=dtype, offline=offline,
                        download=download, progress=progress)[0]


def load_video(path, start: float = 0.0, duration: float | None = None):
    """The CLIP and Synchformer frame streams of a video file (a :class:`VideoClip`) from
    ``start`` over ``duration`` seconds (None: the whole video). A session generates the whole
    clip, in windows of the model's training length when it is longer."""
    from .media import decode_video
    return decode_video(path, start=start, duration=duration)
