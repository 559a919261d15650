"""Choosing the take that goes into a Foley chain, adding it and making the −20 LUFS composite."""

from __future__ import annotations

from nag_core.errors import ConfigError

from .messages import HIDDEN, node_title, reported_as, where
from .previews import preview_entries
from .values import (CATEGORY, CHAIN, NORMALIZED_KEY, PROMPT_KEY, PROMPTS_KEY, Chain, audio_dict,
                     select_take, takes_in, track_from_audio)


class SelectTake:
    DISPLAY_NAME = "Select Take (NAG Foley)"
    DESCRIPTION = ("Picks one take of a sampler that made several (its takes input): take 1 is "
                   "the sampler's seed, take n is seed + n − 1. The chosen take is what goes on "
                   "into Mix And Normalize; changing the choice re-runs only what comes after.")
    CATEGORY = CATEGORY
    FUNCTION = "select"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("track",)
    OUTPUT_TOOLTIPS = ("The chosen take (one track, with its prompt and seed).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "takes": ("AUDIO", {"tooltip": "A sampler's track output holding several takes."}),
            "take": ("INT", {"default": 1, "min": 1, "max": 64,
                             "tooltip": "Which take: 1 = the sampler's seed, n = seed + n − 1."}),
        }, "hidden": dict(HIDDEN)}

    def select(self, takes, take=1, graph=None, node_id=None):
        with reported_as(node_title(graph, node_id, self.DISPLAY_NAME)):
            count = takes_in(takes, "takes")
            if not 1 <= int(take) <= count:
                raise ConfigError(f"take {int(take)} does not exist: the sampler made {count} "
                                  f"take{'s' if count != 1 else ''} (choose 1 to {count})")
            return (select_take(takes, int(take) - 1),)


class MixAndNormalize:
    DISPLAY_NAME = "Mix And Normalize (NAG Foley)"
    DESCRIPTION = (
        "Adds a track to a Foley chain (leave chain unconnected to start one) with a gain in dB, "
        "and outputs the new chain and the composite: the sum of the raw tracks with their gains, "
        "loudness-normalised to −20 LUFS. That composite is exactly what the next NAG Sampler "
        "should get as negative_audio. Input chains are never changed.")
    CATEGORY = CATEGORY
    FUNCTION = "mix"
    RETURN_TYPES = (CHAIN, "AUDIO")
    RETURN_NAMES = ("chain", "mix")
    OUTPUT_TOOLTIPS = ("The chain with this track added (for the next Mix And Normalize or "
                       "Save Stems).",
                       "The −20 LUFS composite of every track so far (negative_audio of the next "
                       "step; also the final mix).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "track": ("AUDIO", {"tooltip": "The track to add (a NAG Sampler output, a "
                                               "Select Take output, or any AUDIO)."}),
                "gain_db": ("FLOAT", {"default": 0.0, "min": -60.0, "max": 24.0, "step": 0.1,
                                      "tooltip": "This track's level in the mix, in dB (before "
                                                 "the whole mix is normalised)."}),
            },
            "optional": {
                "chain": (CHAIN, {"tooltip": "The chain so far; unconnected starts a new one."}),
            },
            "hidden": dict(HIDDEN),
        }

    def mix(self, track, gain_db=0.0, chain=None, graph=None, node_id=None):
        base = chain if chain is not None else Chain()
        label = where(node_title(graph, node_id, self.DISPLAY_NAME), len(base) + 1)
        with reported_as(label):
            prompt = str(track.get(PROMPT_KEY, "")) if isinstance(track, dict) else ""
            new = base.add(track_from_audio(track, "track"), float(gain_db), prompt)
            total = new.composite()
        out = audio_dict(total.wave, total.sample_rate,
                         **{PROMPTS_KEY: new.prompts, NORMALIZED_KEY: True})
        return {"ui": {"audio": preview_entries(out["waveform"], total.sample_rate, "mix")},
                "result": (new, out)}

