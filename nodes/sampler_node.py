"""One step of a Foley chain: a track for one prompt, pushed away from the mix so far."""

from __future__ import annotations

from nag_core.defaults import (ALPHA_DEFAULT, AUTO, BETA_DEFAULT, METHOD_CHOICES,
                               METHOD_DEFAULT, SEED_DEFAULT, SEED_MAX, STEPS_DEFAULT, TAKES_MAX,
                               check_method, resolve_method)
from nag_core.errors import ConfigError
from nag_core.mix import Normalized, loudness_normalize
from nag_core.pipeline import StepSettings, generate_track
from nag_core.windowed import plan_for

from . import host
from .messages import HIDDEN, node_title, reported_as, where
from .previews import preview_entries
from .values import (CATEGORY, CONTROLNET, FEATURES, MODEL, PROMPT_KEY, SEEDS_KEY, FoleyModel,
                     audio_dict, is_normalized_mix, prompts_of, track_from_audio)

NEEDS_EARLIER_PROMPTS = ("negative_prompt", "text_nag")  # their negative branch is that text


def conditioning_mix(negative_audio) -> Normalized:
    """The mix to steer away from. MixAndNormalize's mix is already the −20 LUFS composite (it is
    marked so) and is used exactly as it is (so a node chain equals the Python FoleySession); any
    other AUDIO is loudness-normalised first, as the paper's conditioning mix is."""
    track = track_from_audio(negative_audio, "negative_audio")
    if is_normalized_mix(negative_audio):
        return Normalized(track.wave, track.sample_rate, 0.0, float("nan"),
                          "MixAndNormalize output, used as given")
    return loudness_normalize(track)


def step_number(negative_audio) -> int:
    """1 for a first step; k when the mix holds the k − 1 earlier prompts."""
    if negative_audio is None:
        return 1
    earlier = prompts_of(negative_audio)
    return len(earlier) + 1 if earlier else 2


class NAGSampler:
    DISPLAY_NAME = "NAG Sampler (NAG Foley)"
    DESCRIPTION = (
        "Generates one track for a prompt. Without negative_audio this is step 1 (plain CFG). With "
        "the mix so far (MixAndNormalize's mix output) the new track is pushed away from it: "
        "'auto' = NAG when a ControlNet is connected, else text_nag (the same push with the "
        "earlier prompts and the same video, no trained weights); 'nag' = Negative Audio "
        "Guidance (needs a ControlNet), 'negative_prompt' = CFG with the earlier prompts as "
        "negative text (taken from the mix, or type them into negative_text), 'independent' = "
        "ignore the earlier steps. takes > 1 makes that many variations (seeds seed, seed + 1, "
        "...) in one batched run; pick one with Select Take. Same inputs and seed give the same "
        "audio.")
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
                "model": (MODEL, {"tooltip": "The MMAudio from MMAudio Loader."}),
                "features": (FEATURES, {"tooltip": "Encode Video's output (share one Encode "
                                                   "Video among all samplers of a chain)."}),
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "What this track should sound like."}),
                "method": (list(METHOD_CHOICES), {
                    "default": METHOD_DEFAULT,
                    "tooltip": "How to avoid the sounds already in negative_audio. auto: NAG when "
                               "a ControlNet is connected, else text_nag. nag: Negative Audio "
                               "Guidance (needs the ControlNet). text_nag: the same push with "
                               "the earlier prompts and the same video (no trained weights). "
                               "negative_prompt: earlier prompts as CFG negative text. "
                               "independent: ignore them. Step 1 (no negative_audio) is always "
                               "plain CFG."}),
                "alpha": ("FLOAT", {"default": ALPHA_DEFAULT, "min": 0.0, "max": 20.0,
                                    "step": 0.1, "tooltip": "Text guidance strength (CFG)."}),
                "beta": ("FLOAT", {"default": BETA_DEFAULT, "min": 0.0, "max": 10.0, "step": 0.1,
                                   "tooltip": "Strength of the push away from negative_audio "
                                              "(0 = independent)."}),
                "steps": ("INT", {"default": STEPS_DEFAULT, "min": 1, "max": 200,
                                  "tooltip": "Euler steps of the flow ODE."}),
                "seed": ("INT", {"default": SEED_DEFAULT, "min": 0, "max": SEED_MAX,
                                 "control_after_generate": True,
                                 "tooltip": "Noise seed: the same seed and inputs give the same "
                                            "track. The pack's web extension sets the control "
                                            "below it to 'fixed', so re-running a chain re-runs "
                                            "only what changed."}),
                "takes": ("INT", {"default": 1, "min": 1, "max": TAKES_MAX,
                                  "tooltip": "Variations to make at once, from seeds seed .. "
                                             "seed + takes − 1, in one batched run (cheaper "
                                             "than queueing them one by one); each gets a "
                                             "player. Pick one with Select Take (NAG Foley) "
                                             "before Mix And Normalize."}),
            },
            "optional": {
                "negative_audio": ("AUDIO", {
                    "tooltip": "The mix of the earlier tracks (Mix And Normalize's mix). Leave "
                               "unconnected for the first step."}),
                "controlnet": (CONTROLNET, {"tooltip": "Optional: a trained NAG ControlNet "
                                                       "(NAG ControlNet Loader). With it, auto "
                                                       "runs NAG."}),
                "negative_text": ("STRING", {
                    "multiline": False, "default": "",
                    "tooltip": "Extra negative prompt, used by every method. For negative_prompt "
                               "with a mix that did not come from Mix And Normalize, type the "
                               "earlier prompts here."}),
            },
            "hidden": dict(HIDDEN),
        }

    def sample(self, model: FoleyModel, features, prompt, method=METHOD_DEFAULT,
               alpha=ALPHA_DEFAULT, beta=BETA_DEFAULT, steps=STEPS_DEFAULT, seed=SEED_DEFAULT,
               takes=1, negative_audio=None, controlnet=None, negative_text="", graph=None,
               node_id=None):
        step = step_number(negative_audio)
        label = where(node_title(graph, node_id, self.DISPLAY_NAME), step)
        with reported_as(label):
            return self._sample(model, features, prompt, method, alpha, beta, steps, seed, takes,
                                negative_audio, controlnet, negative_text)

    def _sample(self, model, features, prompt, method, alpha, beta, steps, seed, takes,
                negative_audio, controlnet, negative_text):
        # Cheap checks first: nothing is loaded or moved for a graph that cannot run.
        if not prompt.strip():
            raise ConfigError("the prompt is empty: describe the sound this track should have")
        check_method(method)
        used = resolve_method(method, controlnet is not None) if negative_audio is not None \
            else "cfg"
        if used == "nag" and controlnet is None:
            raise ConfigError("method 'nag' needs a NAG ControlNet: connect a NAG ControlNet "
                              "Loader (NAG Foley) to controlnet, or choose 'auto' to use the "
                              "best method without one")
        mix = conditioning_mix(negative_audio) if negative_audio is not None else None
        earlier = prompts_of(negative_audio) or () if negative_audio is not None else ()
        if used in NEEDS_EARLIER_PROMPTS and not earlier and not (negative_text or "").strip():
            raise ConfigError(
                f"{used} needs the earlier prompts: connect Mix And Normalize's mix (it carries "
                "them) or type them into negative_text")
        settings = StepSettings(prompt=prompt, seed=int(seed), steps=int(steps),
                                alpha=float(alpha), beta=float(beta),
                                method=used if used != "cfg" else AUTO,
                                negative_text=negative_text or "", takes=int(takes))
        # the bar counts windows × Euler steps (one window for a clip of the training length)
        windows = len(plan_for(model.model, features.duration).windows)
        progress = host.Progress(windows * int(steps))
        # Only the nag method runs the ControlNet: for the others it is not moved to the GPU
        # (nor back, with offload) at all.
        extra = (controlnet,) if used == "nag" else ()
        with model.active(*extra):  # load_controlnet already gave it the network's dtype
            result = generate_track(model.model, features, settings, condition_mix=mix,
                                    controlnet=controlnet if extra else None,
                                    earlier_prompts=earlier, progress=progress)
        waves = result.waves[:, None, :]  # (takes, 1 channel, samples)
        out = audio_dict(waves, model.sample_rate,
                         **{PROMPT_KEY: prompt, SEEDS_KEY: tuple(settings.seeds)})
        return {"ui": {"audio": preview_entries(waves, model.sample_rate, "track")},
                "result": (out,)}
