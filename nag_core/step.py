"""One step of a Foley chain: its settings, the method that runs, and the three stages that make
its takes (condition building, sampling, decoding).

:func:`generate_track` is the whole step: :func:`step_method` resolves what runs,
:func:`build_conditions` encodes the prompts into network conditions (batch 1),
:func:`sample_step` integrates B = ``settings.takes`` noises in ONE batched Euler run (the
guided velocities of :mod:`nag_core.generation`, chosen by :func:`step_velocity`),
:func:`decode_takes` turns the latents into waves as long as the clip. The chain in memory (add, redo, choose a take) is :mod:`nag_core.pipeline`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from . import defaults as d
from .errors import ConfigError
from .generation import cfg_velocity, nag_velocity, noise_for_seeds, text_nag_velocity
from .guidance import negative_prompt_text
from .mix import Normalized
from .mmaudio.network import Conditions
from .model import MMAudioModel, VideoFeatures
from .sampling import Velocity, euler
from .windowed import plan_for, sample_windows, step_for_windows, window_features
from .windows import WINDOWS_PER_BATCH

StepProgress = Callable[[int, int], None]
"""``progress(euler_step_done, total_euler_steps)``; raising from it cancels the generation."""


@dataclass(frozen=True)
class StepSettings:
    """Everything that decides one step's audio. Checked here, where the values enter: a bad
    value is a ConfigError naming it and its valid range, never NaN audio later."""

    prompt: str
    seed: int = d.SEED_DEFAULT  # take i uses seed + i
    steps: int = d.STEPS_DEFAULT
    alpha: float = d.ALPHA_DEFAULT
    beta: float = d.BETA_DEFAULT
    method: str = d.METHOD_DEFAULT  # resolved by nag_core.defaults.resolve_method
    negative_text: str = ""  # user's own negative prompt (appended to the baseline's, if any)
    gain_db: float = 0.0  # this track's gain in the mixes (composite and later conditioning)
    takes: int = 1  # takes of this step, made in one batched call from seeds seed..seed+takes-1
    text_nag_branches: str = d.TEXT_NAG_BRANCHES_DEFAULT  # text_nag: "joined" or "averaged"

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError(f"the prompt must be a non-empty text, got {self.prompt!r}: "
                              "describe the sound this track should have")
        if not isinstance(self.negative_text, str):
            raise ConfigError(f"negative_text must be a text, got {self.negative_text!r}")
        d.check_method(self.method)
        if self.text_nag_branches not in d.TEXT_NAG_BRANCHES:
            raise ConfigError(f"unknown text_nag_branches {self.text_nag_branches!r}; use "
                              f"{' or '.join(d.TEXT_NAG_BRANCHES)}")
        checked = {
            "steps": d.check_int("steps", self.steps, 1, d.STEPS_MAX),
            "takes": d.check_int("takes", self.takes, 1, d.TAKES_MAX),
            "seed": d.check_int("seed", self.seed, 0, d.SEED_MAX),
            "alpha": d.check_finite("alpha", self.alpha, 0.0, d.ALPHA_MAX),
            "beta": d.check_finite("beta", self.beta, 0.0, d.BETA_MAX),
            "gain_db": d.check_finite("gain_db", self.gain_db, -d.GAIN_DB_MAX, d.GAIN_DB_MAX),
        }
        if checked["seed"] + checked["takes"] - 1 > d.SEED_MAX:
            raise ConfigError(f"seed {checked['seed']} with {checked['takes']} takes runs past "
                              f"the largest seed {d.SEED_MAX}; use a smaller seed")
        for name, value in checked.items():  # plain int/float (not numpy, not bool) from here on
            object.__setattr__(self, name, value)

    @property
    def seeds(self) -> list[int]:
        """The seed of each take."""
        return d.take_seeds(self.seed, self.takes)


STEP_SETTING_NAMES = tuple(f.name for f in fields(StepSettings))


def check_setting_names(names, allowed: Sequence[str] = STEP_SETTING_NAMES) -> None:
    """A ConfigError naming the unknown settings and the valid ones (not a TypeError)."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; the settings of a step are "
                          f"{', '.join(allowed)}")


@dataclass
class StepResult:
    """The takes of one step. ``waves`` (takes, samples) float32 at the model's sample rate,
    trimmed to the clip duration; take i was made from seed ``settings.seed + i``. ``take`` is the
    one that goes into the chain (its mixes and composite): ``wave``."""

    settings: StepSettings
    waves: Tensor
    method_used: str  # what actually ran ("cfg" for step 1, else the method)
    seconds: float
    take: int = 0

    def __post_init__(self):
        if self.waves.dim() == 1:  # one take given as a plain wave
            self.waves = self.waves[None]
        if not 0 <= self.take < self.waves.shape[0]:
            raise ConfigError(f"there is no take {self.take}; this step has "
                              f"{self.waves.shape[0]} (0..{self.waves.shape[0] - 1})")

    @property
    def wave(self) -> Tensor:
        """The chosen take, (samples,)."""
        return self.waves[self.take]

    @property
    def takes(self) -> int:
        return self.waves.shape[0]

    @property
    def seed(self) -> int:
        """The seed of the chosen take: a single run with it makes ``wave``."""
        return self.settings.seed + self.take


# --------------------------------------------------------------------------- stage 0: method
NAG_NEEDS_CONTROLNET = ("NAG needs ControlNet weights (NAGControlNetLoader / --controlnet); "
                        "without them choose 'text_nag' (training-free), 'negative_prompt' or "
                        "'independent'")


def step_method(settings: StepSettings, has_earlier: bool, has_controlnet: bool) -> str:
    """What runs: "cfg" at step 1 (nothing earlier to avoid), else the resolved method, with
    nag/text_nag at beta = 0 reported as "independent" (Eq. 9 at beta = 0 is plain CFG)."""
    if not has_earlier:
        return d.STEP_ONE_METHOD
    method = d.resolve_method(settings.method, has_controlnet)
    if method in ("nag", "text_nag") and settings.beta == 0:
        return "independent"
    if method == "nag" and not has_controlnet:
        raise ConfigError(NAG_NEEDS_CONTROLNET)
    return method


# --------------------------------------------------------------------------- stage 1: conditions
@dataclass
class StepConditions:
    """What the sampler of one step needs besides the noise, each at batch 1 (the samplers
    expand them to the takes): (V, C_k), the unconditional branch, and per method the (V, ∅)
    control conditions with the mix latent x_cond (nag) or the (V, C_<k) branches (text_nag)."""

    method: str
    conditions: Conditions
    empty: Conditions
    control: Optional[Conditions] = None
    x_cond: Optional[Tensor] = None
    earlier: tuple = ()


def _video_features(model: MMAudioModel, features: VideoFeatures) -> tuple[Tensor, Tensor]:
    net, dev, dt = model.network, model.device, model.dtype
    clip_f, sync_f = features.clip_f, features.sync_f
    if clip_f is None:  # text-to-audio: the learned empty video sequences
        clip_f, sync_f = net.get_empty_clip_sequence(1), net.get_empty_sync_sequence(1)
    return clip_f.to(dev, dt), sync_f.to(dev, dt)


@torch.no_grad()  # a base whose parameters require grad must not build graphs here either
def build_conditions(model: MMAudioModel, features: VideoFeatures, settings: StepSettings,
                     method: str, *, condition_mix: Optional[Normalized] = None,
                     earlier_prompts: Sequence[str] = (),
                     mix_latent_len: Optional[int] = None) -> StepConditions:
    """Encode one step's texts (and for nag the mix) into network conditions for ``method``
    (as :func:`step_method` resolved it). The network must be set to ``features.duration``."""
    net, dt = model.network, model.dtype
    clip_f, sync_f = _video_features(model, features)

    def video_with(text: str) -> Conditions:
        return net.preprocess_conditions(clip_f, sync_f, model.encode_text([text]).to(dt))

    negatives = [settings.negative_text] if settings.negative_text.strip() else []
    if method == "negative_prompt":
        negatives = [negative_prompt_text(earlier_prompts)] + negatives
    negative = ", ".join(n for n in negatives if n)
    neg_features = model.encode_text([negative]).to(dt) if negative else None
    step = StepConditions(method, video_with(settings.prompt),
                          net.get_empty_conditions(1, negative_text_features=neg_features))
    if method == "nag":
        if condition_mix is None:
            raise ConfigError("nag needs the mix of the earlier tracks")
        step.x_cond = model.encode_mix(condition_mix.wave, condition_mix.sample_rate,
                                       mix_latent_len)
        step.control = net.preprocess_conditions(clip_f, sync_f, net.get_empty_string_sequence(1))
    elif method == "text_nag":
        prompts = [p for p in earlier_prompts if p and p.strip()]
        if not prompts:
            raise ConfigError("text_nag needs the prompts of the earlier steps: connect "
                              "MixAndNormalize's mix (it carries them), or use another method")
        if settings.text_nag_branches == "averaged":
            step.earlier = tuple(video_with(p) for p in prompts)
        else:  # joined, as the negative-prompt baseline joins them
            step.earlier = (video_with(negative_prompt_text(prompts)),)
    return step


# --------------------------------------------------------------------------- stage 2: sampling
def sample_step(model: MMAudioModel, step: StepConditions, x0: Tensor, settings: StepSettings,
                controlnet=None, callback=None) -> Tensor:
    """Euler from the B noises x0 to B normalized latents with the step's method: one batched
    network call per Euler step whatever B is. The method's guidance is :func:`step_velocity`'s
    (the one place that maps a method to its velocity, for one window and for many), so a
    one-window clip and a long clip's windows are guided alike. Without autograd: a base or a
    ControlNet whose parameters require grad would otherwise chain a graph through all steps."""
    with torch.no_grad():
        velocity = step_velocity(model, step, settings, controlnet, x0.shape[0])
        return euler(velocity, x0, settings.steps, callback)


def step_velocity(model: MMAudioModel, step: StepConditions, settings: StepSettings,
                  controlnet, batch: int) -> Velocity:
    """The guided velocity of the step's method over ``batch`` rows (conditions of batch 1 are
    expanded to them): what :func:`sample_step` integrates, and what the windowed sampler
    blends for one batch of windows. The method was resolved by :func:`step_method` (beta = 0
    already runs as plain CFG, "independent"); negative_prompt is CFG whose empty branch
    carries the earlier prompts (:func:`build_conditions` put them there)."""
    net, method = model.network, step.method
    if method == "nag":
        if controlnet is None:
            raise ConfigError(NAG_NEEDS_CONTROLNET)
        return nag_velocity(net, controlnet, step.conditions, step.empty, step.control,
                            step.x_cond, batch, settings.alpha, settings.beta)
    if method == "text_nag":
        return text_nag_velocity(net, step.conditions, step.empty, step.earlier, batch,
                                 settings.alpha, settings.beta)
    return cfg_velocity(net, step.conditions, step.empty, settings.alpha, batch)


# --------------------------------------------------------------------------- stage 3: decoding
def fit_length(wave: Tensor, samples: int) -> Tensor:
    """Trim (or pad with silence) to exactly ``samples``: MMAudio's output is a whole number of
    latent frames (8.011 s for 8 s at 44.1 kHz), the video is not."""
    if wave.shape[-1] >= samples:
        return wave[..., :samples]
    return torch.nn.functional.pad(wave, (0, samples - wave.shape[-1]))


def decode_takes(model: MMAudioModel, x1: Tensor, duration: float) -> Tensor:
    """B normalized latents -> (B, samples) float32 waves on the CPU, as long as ``duration``."""
    with torch.no_grad():
        waves = model.decode(x1)
    return fit_length(waves, model.num_samples(duration)).cpu()


# --------------------------------------------------------------------------- the whole step
def generate_track(model: MMAudioModel, features: VideoFeatures, settings: StepSettings, *,
                   condition_mix: Optional[Normalized] = None, controlnet=None,
                   earlier_prompts: Sequence[str] = (),
                   progress: Optional[StepProgress] = None,
                   window_overlap: Optional[float] = None,
                   windows_per_batch: int = WINDOWS_PER_BATCH,
                   window_seconds: Optional[float] = None) -> StepResult:
    """Generate the ``settings.takes`` takes of one step in one batched run. ``condition_mix`` is
    the normalised mix of the earlier tracks (None for step 1), ``earlier_prompts`` their prompts.
    Take i equals a single run with seed ``settings.seed + i`` up to float rounding (the network
    sees a larger batch; on the CPU it is bit-equal in the tests).

    A clip longer than the network's training length (``model.trained_duration``, or
    ``window_seconds``) runs in overlapping windows of that length whose velocities are blended
    at every Euler step (nag_core.windows), ``windows_per_batch`` windows per network call;
    ``progress`` then counts windows × Euler steps. A clip no longer than one window is
    generated exactly as before."""
    start = time.perf_counter()
    plan = plan_for(model, features.duration, window_overlap, window_seconds)
    model.network.set_duration(plan.window_duration)
    method = step_method(settings, condition_mix is not None, controlnet is not None)
    if plan.single:
        step = build_conditions(model, features, settings, method, condition_mix=condition_mix,
                                earlier_prompts=tuple(earlier_prompts))
        x0 = noise_for_seeds(settings.seeds, model.network, model.device, model.dtype)
        callback = (lambda i, n, _x: progress(i, n)) if progress else None
        x1 = sample_step(model, step, x0, settings, controlnet, callback)
    else:
        # conditions: one row per window (video) or shared (text, empty); x_cond of the whole mix
        step = build_conditions(model, window_features(model, features, plan), settings, method,
                                condition_mix=condition_mix,
                                earlier_prompts=tuple(earlier_prompts),
                                mix_latent_len=plan.latent_len)
        x0 = noise_for_seeds(settings.seeds, model.network, model.device, model.dtype,
                             length=plan.latent_len)
        takes = x0.shape[0]

        def make(group):
            rows = step_for_windows(step, plan, group, takes)
            return step_velocity(model, rows, settings, controlnet, len(group) * takes)

        x1 = sample_windows(plan, make, x0, settings.steps, windows_per_batch, progress)
    waves = decode_takes(model, x1, features.duration)
    return StepResult(settings, waves, method, time.perf_counter() - start)
