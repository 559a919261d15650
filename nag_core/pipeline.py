"""Step-by-step Foley: a session that encodes a video once and generates one track per step.

Step 1 is plain CFG. Step k >= 2 is pushed away from the loudness-normalised mix of tracks 1..k-1
by one of three methods (the paper's Table 2):

* ``"nag"``: Negative Audio Guidance, Eq. 9, with an audio ControlNet (needs ControlNet weights);
* ``"negative_prompt"``: CFG whose unconditional text is the earlier prompts;
* ``"independent"``: plain CFG, ignoring earlier steps (NAG with beta = 0).

The default, ``"auto"``, is NAG when the session has a ControlNet and negative prompting when it
has none (the command line chooses the same way).

Redoing step k (new prompt or seed) keeps tracks 1..k-1 untouched and regenerates k and every
later step, because their conditioning mixes depend on track k.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch
from torch import Tensor

from .errors import ConfigError
from .generation import sample_cfg, sample_nag
from .guidance import ALPHA_DEFAULT, BETA_DEFAULT, negative_prompt_text
from .media import VideoClip
from .mix import TARGET_LUFS, Normalized, Track, composite
from .mmaudio.variants import sequence_lengths
from .model import MMAudioModel, VideoFeatures

METHODS = ("nag", "negative_prompt", "independent")

StepProgress = Callable[[int, int], None]
"""``progress(euler_step_done, total_euler_steps)``; raising from it cancels the generation."""


@dataclass(frozen=True)
class StepSettings:
    prompt: str
    seed: int = 42
    steps: int = 25
    alpha: float = ALPHA_DEFAULT
    beta: float = BETA_DEFAULT
    method: str = "auto"  # nag with a ControlNet, else negative_prompt (as the CLI chooses)
    negative_text: str = ""  # user's own negative prompt (appended to the baseline's, if any)
    gain_db: float = 0.0  # this track's gain in the mixes (composite and later conditioning)

    def __post_init__(self):
        if self.method not in METHODS + ("auto",):
            raise ConfigError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)} "
                              "or auto")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")


@dataclass
class StepResult:
    settings: StepSettings
    wave: Tensor  # (samples,) float32 at the model's sample rate, trimmed to the clip duration
    method_used: str  # what actually ran ("cfg" for step 1, else the method)
    seconds: float


def generate_track(model: MMAudioModel, features: VideoFeatures, settings: StepSettings, *,
                   condition_mix: Optional[Normalized] = None, controlnet=None,
                   earlier_prompts: tuple[str, ...] = (),
                   progress: Optional[StepProgress] = None) -> StepResult:
    """Generate one track. ``condition_mix`` is the normalised mix of the earlier tracks (None for
    step 1). Returns the waveform trimmed to ``features.duration``."""
    start = time.perf_counter()
    net = model.network
    net.set_duration(features.duration)
    dev, dt = model.device, model.dtype

    clip_f, sync_f = features.clip_f, features.sync_f
    if clip_f is None:  # text-to-audio: the learned empty video sequences
        clip_f, sync_f = net.get_empty_clip_sequence(1), net.get_empty_sync_sequence(1)
    clip_f, sync_f = clip_f.to(dev, dt), sync_f.to(dev, dt)

    text = model.encode_text([settings.prompt]).to(dt)
    conditions = net.preprocess_conditions(clip_f, sync_f, text)

    method = "cfg" if condition_mix is None else settings.method
    if method == "auto":
        method = "nag" if controlnet is not None else "negative_prompt"
    if method == "nag" and settings.beta == 0:
        method = "independent"  # Eq. 9 with beta = 0 is plain CFG, bit for bit
    negatives = [settings.negative_text] if settings.negative_text.strip() else []
    if method == "negative_prompt":
        negatives = [negative_prompt_text(earlier_prompts)] + negatives
    negative = ", ".join(n for n in negatives if n)
    neg_features = model.encode_text([negative]).to(dt) if negative else None
    empty = net.get_empty_conditions(1, negative_text_features=neg_features)

    generator = torch.Generator(device=dev).manual_seed(int(settings.seed))
    x0 = torch.randn(1, net.latent_seq_len, net.config.latent_dim, generator=generator,
                     device=dev, dtype=dt)
    callback = (lambda i, n, _x: progress(i, n)) if progress else None

    with torch.no_grad():
        if method == "nag":
            if controlnet is None:
                raise ConfigError("NAG needs ControlNet weights (NAGControlNetLoader / "
                                  "--controlnet); without them choose 'negative_prompt' or "
                                  "'independent'")
            x_cond = model.encode_mix(condition_mix.wave, condition_mix.sample_rate)
            ctrl_conditions = net.preprocess_conditions(clip_f, sync_f,
                                                        net.get_empty_string_sequence(1))
            x1 = sample_nag(net, controlnet, conditions, empty, ctrl_conditions, x_cond, x0,
                            settings.steps, alpha=settings.alpha, beta=settings.beta,
                            callback=callback)
        else:
            x1 = sample_cfg(net, conditions, empty, x0, settings.steps, settings.alpha,
                            callback=callback)
        wave = model.decode(x1)[0]
    wave = _fit(wave, model.num_samples(features.duration)).cpu()
    return StepResult(settings, wave, method, time.perf_counter() - start)


def _fit(wave: Tensor, samples: int) -> Tensor:
    """Trim (or pad with silence) to exactly ``samples``: MMAudio's output is a whole number of
    latent frames (8.011 s for 8 s at 44.1 kHz), the video is not."""
    if wave.shape[-1] >= samples:
        return wave[..., :samples]
    return torch.nn.functional.pad(wave, (0, samples - wave.shape[-1]))


@dataclass
class FoleySession:
    """Load once, add steps, redo step k. Video features are computed once per session.

    >>> session = FoleySession(model, video_clip, controlnet=controlnet)
    >>> session.add_step("footsteps on gravel", seed=1)
    >>> session.add_step("wind through trees", seed=2)
    >>> session.redo_step(2, prompt="wind in tall grass")      # step 1 is kept as it is
    >>> session.composite().wave                              # −20 LUFS mix of all tracks
    """

    model: MMAudioModel
    video: Optional[VideoClip]
    controlnet: object = None
    duration: Optional[float] = None  # only for text-to-audio sessions (video None)
    target_lufs: float = TARGET_LUFS
    progress: Optional[StepProgress] = None
    results: list = field(default_factory=list)

    def __post_init__(self):
        if self.video is not None:
            self.features = self.model.encode_video(self.video)
        else:
            if self.duration is None:
                raise ConfigError("a session without video needs a duration")
            lengths = sequence_lengths(self.model.mode, self.duration)
            self.features = VideoFeatures(None, None, lengths.duration)

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def tracks(self) -> list[Tensor]:
        return [r.wave for r in self.results]

    def _mix(self, n: int, ceiling: bool = True) -> Normalized:
        """normalize(Σ of the first n raw tracks, each with its gain) at the target loudness,
        with the composite's true-peak ceiling unless ``ceiling`` is False."""
        first = self.results[:n]
        kw = {} if ceiling else {"ceiling_db": None}
        return composite([Track(r.wave[None], self.sample_rate) for r in first],
                         [r.settings.gain_db for r in first], self.target_lufs, **kw)

    def conditioning_mix(self, k: int) -> Optional[Normalized]:
        """Step k's conditioning mix (1-based): the mix of tracks 1..k−1 at the target loudness
        without a peak ceiling (as in training); None for k = 1."""
        return self._mix(k - 1, ceiling=False) if k > 1 else None

    def composite(self) -> Normalized:
        """The −20 LUFS composite of every track so far."""
        if not self.results:
            raise ConfigError("no tracks yet: add a step first")
        return self._mix(len(self.results))

    def _generate(self, k: int, settings: StepSettings) -> StepResult:
        return generate_track(
            self.model, self.features, settings, condition_mix=self.conditioning_mix(k),
            controlnet=self.controlnet,
            earlier_prompts=tuple(r.settings.prompt for r in self.results[: k - 1]),
            progress=self.progress)

    def add_step(self, prompt: str, **settings) -> StepResult:
        s = StepSettings(prompt=prompt, **settings)
        result = self._generate(len(self.results) + 1, s)
        self.results.append(result)
        return result

    def redo_step(self, k: int, **changes) -> list[StepResult]:
        """Regenerate step k (1-based) with changed settings (prompt=, seed=, beta=, ...), then
        every later step with its own settings. Steps before k are not touched. If any of them
        fails or is cancelled, the session keeps all its previous steps, as they were."""
        if not 1 <= k <= len(self.results):
            raise ConfigError(f"there is no step {k}; the session has {len(self.results)}")
        old = list(self.results)
        later = [r.settings for r in old[k:]]
        new = replace(old[k - 1].settings, **changes)
        del self.results[k - 1:]
        redone = []
        try:
            for s in [new] + later:
                result = self._generate(len(self.results) + 1, s)
                self.results.append(result)
                redone.append(result)
        except BaseException:
            self.results[:] = old  # a failed redo must not cost the user steps k..n
            raise
        return redone
