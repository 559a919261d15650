"""One step of a Foley chain: a track for one prompt, pushed away from the mix so far."""

from __future__ import annotations

from nag_core.errors import ConfigError
from nag_core.guidance import ALPHA_DEFAULT, BETA_DEFAULT
from nag_core.mix import Normalized, loudness_normalize
from nag_core.defaults import METHOD_CHOICES, METHOD_DEFAULT, resolve_method
from nag_core.pipeline import StepSettings, generate_track
from nag_core.windowed import plan_for

from . import host
from .values import (CATEGORY, CONTROLNET, FEATURES, MODEL, PROMPT_KEY, FoleyModel, audio_dict,
                     prompts_of, track_from_audio)

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def conditioning_mix(negative_audio) -> Normalized:
    """The mix to steer away from. MixAndNormalize's mix is already the −20 LUFS composite and is
    used exactly as it is (so a node chain equals the Python FoleySession); any other AUDIO is
    loudness-normalised first, as the paper's conditioning mix is."""
    track = track_from_audio(negative_audio, "negative_audio")
    if prompts_of(negative_audio) is not None:
        return Normalized(track.wave, track.sample_rate, 0.0, float("nan"),
                          "MixAndNormalize output, used as given")
    return loudness_normalize(track)


class NAGSampler:
    DESCRIPTION = (
        "Generates one track for a prompt. Without negative_audio this is step 1 (plain CFG). With "
        "the mix so far (MixAndNormalize's mix output) the new track is pushed away from it: "
        "'nag' = Negative Audio Guidance (needs a ControlNet), 'negative_prompt' = CFG with the "
        "earlier prompts as negative text (taken from the mix, or type them into negative_text), "
        "'independent' = ignore the earlier steps. Same inputs and seed give the same audio.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("track",)
    OUTPUT_TOOLTIPS = ("The new track: mono, at the model's true sample rate (16000 or 44100 "
                       "Hz), as long as the clip.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The MMAudio from MMAudioLoader."}),
                "features": (FEATURES, {"tooltip": "EncodeVideo's output (share one EncodeVideo "
                                                   "among all samplers of a chain)."}),
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "What this track should sound like."}),
                "method": (list(METHOD_CHOICES), {
                    "default": METHOD_DEFAULT,
                    "tooltip": "How to avoid the sounds already in negative_audio: nag (Negative "
                               "Audio Guidance, needs the ControlNet), negative_prompt (earlier "
                               "prompts as CFG negative text), independent (ignore them). Step 1 "
                               "(no negative_audio) is always plain CFG."}),
                "alpha": ("FLOAT", {"default": ALPHA_DEFAULT, "min": 0.0, "max": 20.0,
                                    "step": 0.1, "tooltip": "Text guidance strength (CFG)."}),
                "beta": ("FLOAT", {"default": BETA_DEFAULT, "min": 0.0, "max": 10.0, "step": 0.1,
                                   "tooltip": "Negative audio guidance strength (nag only; 0 = "
                                              "independent)."}),
                "steps": ("INT", {"default": 25, "min": 1, "max": 200,
                                  "tooltip": "Euler steps of the flow ODE."}),
                "seed": ("INT", {"default": 42, "min": 0, "max": MAX_SEED,
                                 "tooltip": "Noise seed: the same seed and inputs give the same "
                                            "track."}),
            },
            "optional": {
                "negative_audio": ("AUDIO", {
                    "tooltip": "The mix of the earlier tracks (MixAndNormalize's mix). Leave "
                               "unconnected for the first step."}),
                "controlnet": (CONTROLNET, {"tooltip": "The NAG ControlNet (needed by the nag "
                                                       "method)."}),
                "negative_text": ("STRING", {
                    "multiline": False, "default": "",
                    "tooltip": "Extra negative prompt, used by every method. For negative_prompt "
                               "with a mix that did not come from MixAndNormalize, type the "
                               "earlier prompts here."}),
            },
        }

    def sample(self, model: FoleyModel, features, prompt, method=METHOD_DEFAULT,
               alpha=ALPHA_DEFAULT, beta=BETA_DEFAULT, steps=25, seed=42, negative_audio=None,
               controlnet=None, negative_text=""):
        if not prompt.strip():
            raise ConfigError("the prompt is empty: describe the sound this track should have")
        settings = StepSettings(prompt=prompt, seed=int(seed), steps=int(steps),
                                alpha=float(alpha), beta=float(beta), method=method,
                                negative_text=negative_text or "")
        mix, earlier = None, ()
        if negative_audio is not None:
            mix = conditioning_mix(negative_audio)
            earlier = prompts_of(negative_audio) or ()
            if method == "negative_prompt" and not earlier and not settings.negative_text.strip():
                raise ConfigError(
                    "negative_prompt needs the earlier prompts: connect MixAndNormalize's mix "
                    "(it carries them) or type them into negative_text")
        # the bar counts windows × Euler steps (one window for a clip of the training length)
        windows = len(plan_for(model.model, features.duration).windows)
        progress = host.Progress(windows * int(steps))
        # Only the nag method (with a mix to push away from) runs the ControlNet: for the others
        # it is not moved to the GPU (nor back, with offload) at all.
        uses_controlnet = (controlnet is not None and mix is not None
                           and resolve_method(method, True) == "nag")
        extra = (controlnet,) if uses_controlnet else ()
        with model.active(*extra):  # load_controlnet already gave it the network's dtype
            result = generate_track(model.model, features, settings, condition_mix=mix,
                                    controlnet=controlnet if extra else None,
                                    earlier_prompts=earlier, progress=progress)
        return (audio_dict(result.wave, model.sample_rate, **{PROMPT_KEY: prompt}),)
