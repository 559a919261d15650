"""Step-by-step Foley: a session that encodes a video once and generates one track per step.

Step 1 is plain CFG. Step k >= 2 is pushed away from the tracks of steps 1..k-1 by one of the
methods of ``METHODS`` (the registry lives in :mod:`nag_core.defaults`):

* ``"nag"``: Negative Audio Guidance, Eq. 9, with an audio ControlNet (needs ControlNet weights);
* ``"text_nag"``: Eq. 9 with the ControlNet branch replaced by the frozen network's flow for
  the same video and the earlier prompts (training-free; this project's addition);
* ``"negative_prompt"``: CFG whose unconditional text is the earlier prompts;
* ``"independent"``: plain CFG, ignoring earlier steps (NAG with beta = 0).

The default, ``"auto"``, is NAG when the session has a ControlNet and
``defaults.AUTO_WITHOUT_CONTROLNET`` (text_nag) when it has none (the command line and the node
choose the same way).

Redoing step k (new prompt or seed) keeps tracks 1..k-1 untouched and regenerates k and every
later step, because their conditioning mixes depend on track k. A step may have several takes
(one batched call); the chosen take is the one the chain goes on with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from torch import Tensor

from . import defaults as d
from .defaults import METHODS
from .errors import ConfigError
from .media import VideoClip
from .mix import TARGET_LUFS, Normalized, Track, composite
from .mmaudio.variants import sequence_lengths
from .model import MMAudioModel, VideoFeatures
from .windowed import plan_for
from .windows import WINDOWS_PER_BATCH, WINDOWS_PER_BATCH_MAX, WindowPlan
from .step import (STEP_SETTING_NAMES, StepProgress, StepResult, StepSettings,
                   check_setting_names, generate_track)

__all__ = ["METHODS", "FoleySession", "StepSettings", "StepResult", "StepProgress",
           "generate_track"]


@dataclass
class FoleySession:
    """Load once, add steps, redo step k. Video features are computed once per session.

    >>> session = FoleySession(model, video_clip, controlnet=controlnet)
    >>> session.add_step("footsteps on gravel", seed=1)
    >>> r = session.add_step("wind through trees", takes=4)   # 4 takes, one batched call
    >>> r.waves.shape                                         # (4, samples); take i: seed + i
    >>> session.choose_take(2, 3)                             # the chain goes on with take 3
    >>> session.redo_step(2, prompt="wind in tall grass")      # step 1 is kept as it is
    >>> session.composite().wave                              # −20 LUFS mix of all tracks

    Without ``seed``, step k uses ``defaults.step_seed(SEED_DEFAULT, k)`` = 42 + k − 1, as the
    command line does. Settings are the fields of :class:`StepSettings`; any other name is a
    ConfigError that lists them.
    """

    model: MMAudioModel
    video: Optional[VideoClip]
    controlnet: object = None
    duration: Optional[float] = None  # only for text-to-audio sessions (video None)
    target_lufs: float = TARGET_LUFS
    progress: Optional[StepProgress] = None
    results: list = field(default_factory=list)
    features: Optional[VideoFeatures] = None  # given: reused (e.g. from another session)
    # Clips longer than the network's training length run in overlapping windows of that length
    # (nag_core.windows): the overlap in seconds (None: a quarter of the window), the windows of
    # one Euler step per network call, and the window length (None: model.trained_duration).
    window_overlap: Optional[float] = None
    windows_per_batch: int = WINDOWS_PER_BATCH
    window_seconds: Optional[float] = None

    def __post_init__(self):
        self.windows_per_batch = d.check_int("windows_per_batch", self.windows_per_batch, 1,
                                             WINDOWS_PER_BATCH_MAX)
        if self.features is None:
            self._encode()
        self.window_plan  # a bad overlap or window length fails here, before any step

    def _encode(self) -> None:
        if self.video is not None:
            # the model's own window length unless one is asked for (tail encoding, see windows)
            self.features = (self.model.encode_video(self.video) if self.window_seconds is None
                             else self.model.encode_video(self.video, self.window_seconds))
        else:
            if self.duration is None:
                raise ConfigError("a session without video needs a duration")
            lengths = sequence_lengths(self.model.mode, self.duration)
            self.features = VideoFeatures(None, None, lengths.duration)

    @property
    def window_plan(self) -> WindowPlan:
        """The windows every step of this session is generated in (one for a short clip)."""
        return plan_for(self.model, self.features.duration, self.window_overlap,
                        self.window_seconds)

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
            progress=self.progress, window_overlap=self.window_overlap,
            windows_per_batch=self.windows_per_batch, window_seconds=self.window_seconds)

    def add_step(self, prompt: str, **settings) -> StepResult:
        """Generate step k = len(results) + 1 and append it. ``takes=N`` makes N takes in one
        batched call (take i from seed + i; the result's ``waves`` holds all of them) and the
        chain goes on with take 0 until :meth:`choose_take` picks another."""
        check_setting_names(settings, [n for n in STEP_SETTING_NAMES if n != "prompt"])
        k = len(self.results) + 1
        settings.setdefault("seed", d.step_seed(d.SEED_DEFAULT, k))
        result = self._generate(k, StepSettings(prompt=prompt, **settings))
        self.results.append(result)
        return result

    def _check_step(self, k) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.results):
            raise ConfigError(f"there is no step {k!r}; the session has {len(self.results)} "
                              f"(1..{len(self.results)})")

    def _regenerate(self, k: int, first: StepResult | StepSettings) -> list[StepResult]:
        """Replace step k with ``first`` (a result kept as it is, or settings to generate), then
        regenerate every later step with its own settings and chosen take index. On any failure
        or cancel the session keeps all its previous steps, as they were."""
        old = list(self.results)
        del self.results[k - 1:]
        done = []
        try:
            if isinstance(first, StepResult):
                self.results.append(first)
            else:
                done.append(self._generate(k, first))
                self.results.append(done[-1])
            for r in old[k:]:
                result = self._generate(len(self.results) + 1, r.settings)
                result.take = r.take  # the same seed as the take chosen before
                self.results.append(result)
                done.append(result)
        except BaseException:
            self.results[:] = old  # a failed redo must not cost the user steps k..n
            raise
        return done

    def redo_step(self, k: int, **changes) -> list[StepResult]:
        """Regenerate step k (1-based) with changed settings (prompt=, seed=, beta=, takes=, ...),
        then every later step with its own settings. Steps before k are not touched. If any of
        them fails or is cancelled, the session keeps all its previous steps, as they were.
        Returns the regenerated steps (k first)."""
        self._check_step(k)
        check_setting_names(changes)
        return self._regenerate(k, replace(self.results[k - 1].settings, **changes))

    def choose_take(self, k: int, take: int) -> list[StepResult]:
        """Go on with take ``take`` (0-based) of step k: it becomes step k's track in every mix
        and the composite. The takes of step k are kept; later steps are regenerated (their
        conditioning mix contains track k) with their own settings. Returns the regenerated
        later steps (empty when k is the last step or the take is already chosen)."""
        self._check_step(k)
        current = self.results[k - 1]
        if isinstance(take, bool) or not isinstance(take, int) \
                or not 0 <= take < current.takes:
            raise ConfigError(f"there is no take {take!r} of step {k}; it has {current.takes} "
                              f"(0..{current.takes - 1})")
        if take == current.take:
            return []
        return self._regenerate(k, replace(current, take=take))
