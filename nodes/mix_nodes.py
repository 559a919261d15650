"""Adding a track to a Foley chain and making the −20 LUFS composite."""

from __future__ import annotations

from .values import CATEGORY, CHAIN, PROMPT_KEY, PROMPTS_KEY, Chain, audio_dict, track_from_audio


class MixAndNormalize:
    DESCRIPTION = (
        "Adds a track to a Foley chain (leave chain unconnected to start one) with a gain in dB, "
        "and outputs the new chain and the composite: the sum of the raw tracks with their gains, "
        "loudness-normalised to −20 LUFS. That composite is exactly what the next NAGSampler "
        "should get as negative_audio. Input chains are never changed.")
    CATEGORY = CATEGORY
    FUNCTION = "mix"
    RETURN_TYPES = (CHAIN, "AUDIO")
    RETURN_NAMES = ("chain", "mix")
    OUTPUT_TOOLTIPS = ("The chain with this track added (for the next MixAndNormalize or "
                       "SaveStems).",
                       "The −20 LUFS composite of every track so far (negative_audio of the next "
                       "step; also the final mix).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "track": ("AUDIO", {"tooltip": "The track to add (a NAGSampler output, or any "
                                               "AUDIO)."}),
                "gain_db": ("FLOAT", {"default": 0.0, "min": -60.0, "max": 24.0, "step": 0.1,
                                      "tooltip": "This track's level in the mix, in dB (before "
                                                 "the whole mix is normalised)."}),
            },
            "optional": {
                "chain": (CHAIN, {"tooltip": "The chain so far; unconnected starts a new one."}),
            },
        }

    def mix(self, track, gain_db=0.0, chain=None):
        base = chain if chain is not None else Chain()
        prompt = str(track.get(PROMPT_KEY, "")) if isinstance(track, dict) else ""
        new = base.add(track_from_audio(track, "track"), float(gain_db), prompt)
        total = new.composite()
        return (new, audio_dict(total.wave, total.sample_rate, **{PROMPTS_KEY: new.prompts}))
