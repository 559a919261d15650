"""Every decision the command line, the Python API and the ComfyUI nodes share, made once.

Defaults, ranges, the method registry and how ``auto`` resolves, the seed of each step and take,
precision and device choice, and the fixed facts of MMAudio's input streams. Nothing here
imports the rest of nag_core (torch only inside the functions that need it), so any module,
high or low, can read it.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import ConfigError

# ----------------------------------------------------------------------------- generation
ALPHA_DEFAULT = 4.5  # w1 / cfg_strength: MMAudio's default and the paper's value
BETA_DEFAULT = 1.5  # the paper's negative-audio guidance scale
ALPHA_MAX = 50.0  # far past any useful guidance; beyond it a typo, not a setting
BETA_MAX = 50.0
STEPS_DEFAULT = 25  # MMAudio's default number of Euler steps
STEPS_MAX = 1000
SEED_DEFAULT = 42
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes a 64-bit unsigned seed
TAKES_MAX = 64  # takes of one step are one batched call: the batch must fit in memory
GAIN_DB_MAX = 60.0  # a track's gain in the mixes, in dB either way
DURATION_DEFAULT = 8.0  # seconds: MMAudio's training length
VARIANT_DEFAULT = "small_16k"  # the paper's base model


def step_seed(seed: int, k: int) -> int:
    """The seed of step k (1-based) of a chain whose first step has ``seed``: seed + k − 1."""
    return int(seed) + int(k) - 1


def take_seeds(seed: int, takes: int) -> list[int]:
    """The seeds of the takes of one step: seed, seed + 1, ..., seed + takes − 1 (take i is
    what a single run with seed + i makes)."""
    return [int(seed) + i for i in range(int(takes))]


# ----------------------------------------------------------------------------- methods
METHODS = ("nag", "text_nag", "negative_prompt", "independent")
"""How step k >= 2 avoids the sounds of steps < k (see nag_core.pipeline):

* ``nag``: Negative Audio Guidance (paper Eq. 9) with an audio ControlNet;
* ``text_nag``: Eq. 9 with the ControlNet branch replaced by the frozen network's flow for the
  same video and the earlier prompts (this project's addition, training-free);
* ``negative_prompt``: the paper's baseline, CFG whose unconditional text is the earlier prompts;
* ``independent``: plain CFG, ignoring earlier steps.
"""
AUTO = "auto"
METHOD_CHOICES = (AUTO,) + METHODS  # what a user may ask for
METHOD_DEFAULT = AUTO
AUTO_WITH_CONTROLNET = "nag"
# The training-free method that measured better on leakage at equal fidelity in the synthetic
# world (bench/RESULTS.md, fourth pass: text_nag lowered the leaked lamp by 1.9 / 2.5 dB at
# beta 1.5 / 3, CIs excluding 0; negative_prompt by 0.4 dB, CI crossing 0; the same fidelity).
AUTO_WITHOUT_CONTROLNET = "text_nag"
STEP_ONE_METHOD = "cfg"  # what runs at step 1, whatever was asked: there is nothing to avoid

TEXT_NAG_BRANCHES = ("joined", "averaged")
"""How text_nag turns several earlier prompts into its negative branch: ``joined`` = one branch
whose text is the prompts joined with ", " (as the negative-prompt baseline joins them);
``averaged`` = one branch per earlier prompt, their velocities averaged."""
TEXT_NAG_BRANCHES_DEFAULT = "joined"


def check_method(method) -> str:
    if method not in METHOD_CHOICES:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHOD_CHOICES)}")
    return method


def resolve_method(method, has_controlnet: bool) -> str:
    """The method that runs at step k >= 2 for what was asked: ``auto`` is NAG when a ControlNet
    is loaded, else the training-free default (``AUTO_WITHOUT_CONTROLNET``)."""
    check_method(method)
    if method == AUTO:
        return AUTO_WITH_CONTROLNET if has_controlnet else AUTO_WITHOUT_CONTROLNET
    return method


# ----------------------------------------------------------------------------- validation
def check_finite(name: str, value, low: float, high: float) -> float:
    """``value`` as a float within [low, high], or a ConfigError saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{name} must be a finite number from {low:g} to {high:g}, got {value}")
    return value


def check_int(name: str, value, low: int, high: int) -> int:
    """``value`` as an int within [low, high] (a float such as 2.5 is refused, not rounded)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be from {low} to {high}, got {value}")
    return value


# ----------------------------------------------------------------------------- device, precision
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
                "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def resolve_device(device=None):
    """A torch.device that exists on this machine; None or "auto" = cuda when available, else
    cpu. A device that is absent or unknown is a ConfigError saying what to use instead."""
    import torch
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no usable GPU"
            raise ConfigError(f"device {device!r} is not available: this torch "
                              f"({torch.__version__}) has {build}; use --device cpu, or "
                              "install a CUDA build of torch")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {device!r} does not exist: this machine has {count} "
                              f"CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {device!r} is not available on this machine; use "
                              "--device cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def resolve_dtype(dtype, device):
    """The model precision: None or "auto" = bfloat16 on a CUDA device that supports it
    (MMAudio's own choice), float32 elsewhere (CPU bf16 matmuls are slow and CPU fp16 is not
    worth it). Explicit names: float32/fp32, bfloat16/bf16, float16/fp16, or a torch.dtype."""
    import torch
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or str(dtype).lower() == "auto":
        dev = torch.device(device) if device is not None else resolve_device()
        if dev.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    name = _DTYPE_NAMES.get(str(dtype).lower())
    if name is None:
        raise ConfigError(f"unknown precision {dtype!r}; use auto, float32, bfloat16 or float16")
    return getattr(torch, name)


# ----------------------------------------------------------------------------- MMAudio's inputs
CLIP_FPS = 8  # the CLIP frame stream
SYNC_FPS = 25  # the Synchformer frame stream
SYNC_SEGMENT_FRAMES = 16  # Synchformer frames per segment
SYNC_SEGMENT_STRIDE = 8  # frames between segment starts
SYNC_TOKENS_PER_SEGMENT = 8  # Synchformer tokens per segment
# Durations below this give zero Synchformer segments: (0.64 * 25 - 16) // 8 + 1 == 1 is the
# first non-empty case.
MIN_DURATION = 0.64


def sync_frames_needed(segments: int) -> int:
    """Frames at SYNC_FPS that ``segments`` overlapping Synchformer segments cover."""
    return SYNC_SEGMENT_FRAMES + SYNC_SEGMENT_STRIDE * (segments - 1)


# ----------------------------------------------------------------------------- files
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm")
"""Containers a result video is written in (the input's, else .mp4)."""
VIDEO_INPUT_SUFFIXES = VIDEO_SUFFIXES + (".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".mts",
                                         ".3gp", ".ogv")
"""Files recognised as videos (training discovery, file pickers); PyAV reads any of them."""
AUDIO_INPUT_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
"""Files recognised as audio-only sources."""
DECODE_TIMEOUT_S = 600.0  # a decoder that stops making progress must not hang a run


def mode_of_variant(variant: str) -> str:
    """The audio mode ("16k" or "44k") of a released variant name."""
    from .mmaudio.variants import VARIANTS
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    return VARIANTS[variant].mode
