"""The values that travel between the pack's nodes (custom socket types) and small helpers for
ComfyUI's AUDIO dicts.

Socket types (strings in RETURN_TYPES / INPUT_TYPES):
* NAGFOLEY_VIDEO: a :class:`nag_core.media.VideoClip` (frames at 8 and 25 fps, effective duration);
* NAGFOLEY_MODEL: a :class:`FoleyModel` (the MMAudioModel plus where it runs);
* NAGFOLEY_CONTROLNET: a :class:`nag_core.controlnet.NAGControlNet`;
* NAGFOLEY_VIDEO_FEATURES: a :class:`nag_core.model.VideoFeatures` (on the CPU);
* NAGFOLEY_CHAIN: a :class:`Chain` (the raw tracks, their gains and prompts; immutable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from nag_core.errors import ConfigError, MediaError
from nag_core.mix import TARGET_LUFS, Normalized, Track, composite

from . import host

VIDEO = "NAGFOLEY_VIDEO"
MODEL = "NAGFOLEY_MODEL"
CONTROLNET = "NAGFOLEY_CONTROLNET"
FEATURES = "NAGFOLEY_VIDEO_FEATURES"
CHAIN = "NAGFOLEY_CHAIN"
CATEGORY = "audio/NAG Foley"

# Extra keys in the AUDIO dicts this pack makes. Core audio nodes read only "waveform" and
# "sample_rate" and ignore them; they let the negative_prompt method find the earlier prompts.
PROMPT_KEY = "nag_foley_prompt"  # on a sampler's track: the prompt that made it
PROMPTS_KEY = "nag_foley_prompts"  # on MixAndNormalize's mix: the prompts of the tracks in it
# On MixAndNormalize's mix: True. It is already the -20 LUFS composite, used as it is; any other
# AUDIO given as a negative is loudness-normalised first.
NORMALIZED_KEY = "nag_foley_normalized"
SEEDS_KEY = "nag_foley_seeds"  # on a sampler's track: the seed of each take in the batch


@dataclass(eq=False)
class FoleyModel:
    """A loaded MMAudio and where it runs: ``load_device`` while a node uses it; with
    ``offload`` it goes back to the offload device (CPU) after each node."""

    model: object  # nag_core.model.MMAudioModel
    load_device: torch.device
    offload: bool
    files: dict
    smoke: bool = False  # the smoke-test set (random weights): never real Foley

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def active(self, *extra: torch.nn.Module):
        """Context: the model (and ``extra`` modules, e.g. a ControlNet) on the load device,
        through ComfyUI's model management when it is there (see host.models_loaded)."""
        return host.models_loaded((self.model, *extra), self.load_device, self.offload)


@dataclass(frozen=True)
class Chain:
    """Tracks 1..k of a Foley chain as generated (raw), with the gain (dB) of each in the mix and
    the prompt that made it. Immutable: adding a track returns a new Chain (ComfyUI caches node
    outputs, so an input chain must never change under a cached consumer)."""

    tracks: tuple = ()  # of nag_core.mix.Track (channels, samples)
    gains_db: tuple = ()
    prompts: tuple = ()
    target_lufs: float = TARGET_LUFS

    def __len__(self) -> int:
        return len(self.tracks)

    def add(self, track: Track, gain_db: float, prompt: str) -> "Chain":
        return Chain(self.tracks + (track,), self.gains_db + (float(gain_db),),
                     self.prompts + (prompt,), self.target_lufs)

    def composite(self) -> Normalized:
        """normalize(Σ gain_i · track_i) at the target loudness: the conditioning mix of the next
        step, and the final mix."""
        if not self.tracks:
            raise ConfigError("the chain is empty: connect a track to MixAndNormalize first")
        return composite(list(self.tracks), list(self.gains_db), self.target_lufs)


def audio_dict(wave: torch.Tensor, sample_rate: int, **extra) -> dict:
    """ComfyUI AUDIO from (samples,), (channels, samples) or a batch (B, channels, samples):
    waveform [B, C, T] float32 (CPU)."""
    w = wave.detach().float().cpu()
    while w.dim() < 3:
        w = w[None]
    out = {"waveform": w.contiguous(), "sample_rate": int(sample_rate)}
    out.update(extra)
    return out


def _waveform(audio, what: str) -> torch.Tensor:
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ConfigError(f"{what} is not an AUDIO value (a dict with waveform and sample_rate)")
    wave = audio["waveform"]
    if not isinstance(wave, torch.Tensor) or wave.dim() not in (2, 3):
        raise MediaError(f"{what}: waveform must be [batch, channels, samples], got "
                         f"{tuple(getattr(wave, 'shape', ()))}")
    if wave.dim() == 2:
        wave = wave[None]
    if wave.shape[-1] == 0:
        raise MediaError(f"{what} is empty (0 samples)")
    return wave


def takes_in(audio: dict, what: str = "audio") -> int:
    """How many tracks (batch items) an AUDIO value holds."""
    return int(_waveform(audio, what).shape[0])


def track_from_audio(audio: dict, what: str = "audio") -> Track:
    """The one track of a ComfyUI AUDIO dict as a Track (channels, samples). An AUDIO batch of
    several takes is refused: silently using the first would hide the others."""
    wave = _waveform(audio, what)
    if wave.shape[0] != 1:
        raise MediaError(f"{what} holds {wave.shape[0]} takes (an AUDIO batch) where one track "
                         "is meant: pick one with Select Take (NAG Foley)")
    return Track(wave[0].detach().float().cpu(), int(audio["sample_rate"]))


def select_take(audio: dict, index: int, what: str = "takes") -> dict:
    """Take ``index`` (0-based) of an AUDIO batch, with this pack's extra keys carried over."""
    wave = _waveform(audio, what)
    if not 0 <= index < wave.shape[0]:
        raise ConfigError(f"{what} has {wave.shape[0]} takes (0 to {wave.shape[0] - 1}); take "
                          f"{index} does not exist")
    out = {k: v for k, v in audio.items() if k not in ("waveform", SEEDS_KEY)}
    out["waveform"] = wave[index:index + 1].contiguous()
    seeds = audio.get(SEEDS_KEY)
    if seeds is not None and len(seeds) == wave.shape[0]:
        out[SEEDS_KEY] = (seeds[index],)
    return out


def is_normalized_mix(audio) -> bool:
    return isinstance(audio, dict) and audio.get(NORMALIZED_KEY) is True


def prompts_of(audio: Optional[dict]) -> Optional[tuple]:
    if isinstance(audio, dict) and PROMPTS_KEY in audio:
        return tuple(audio[PROMPTS_KEY])
    return None
