"""Writing stems, the mix and the video with its new soundtrack into ComfyUI's output folder."""

from __future__ import annotations

import os

import torch

from nag_core import defaults
from nag_core.errors import ConfigError
from nag_core.media import mux_audio_into_video, write_audio
from nag_core.resample import resample

from . import host
from .messages import HIDDEN, node_title, reported_as
from .values import CATEGORY, CHAIN, VIDEO, track_from_audio

FORMATS = {"flac": (".flac", "pcm16"), "wav 16-bit": (".wav", "pcm16"),
           "wav 32-bit float": (".wav", "float")}
SCORED_CLIP, WHOLE_VIDEO = "scored clip", "whole video"


def _free_name(folder: str, name: str, counter: int, suffixes: list[str]) -> int:
    """The first counter >= ``counter`` for which none of ``name_NNNNN_<suffix>`` exists: files of
    earlier runs (or of a run racing this one) are never overwritten."""
    while any(os.path.exists(os.path.join(folder, f"{name}_{counter:05}_{s}")) for s in suffixes):
        counter += 1
    return counter


def _as_mixed(track, gain_db: float, mix):
    """A track as it sits in the mix: its gain and the mix normalisation applied, at the mix's
    rate and length, so the stems add up to the mix."""
    wave = resample(track.wave.float(), track.sample_rate, mix.sample_rate)
    wave = wave * 10.0 ** ((gain_db + mix.gain_db) / 20.0)
    length = mix.wave.shape[-1]
    if wave.shape[-1] < length:
        wave = torch.nn.functional.pad(wave, (0, length - wave.shape[-1]))
    return wave[..., :length]


class SaveStems:
    DISPLAY_NAME = "Save Stems (NAG Foley)"
    DESCRIPTION = ("Writes every track of a chain as a stem and the −20 LUFS composite as mix, "
                   "into ComfyUI's output folder with numbered names (never overwriting). 'as "
                   "mixed' stems carry their gain and the mix normalisation, so they add up to "
                   "the mix exactly; 'raw' stems are the tracks as generated.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "chain": (CHAIN, {"tooltip": "The chain from the last MixAndNormalize."}),
            "filename_prefix": ("STRING", {"default": "nag_foley/foley",
                                           "tooltip": "Output sub-folder and file name start."}),
            "format": (list(FORMATS), {"default": "flac",
                                       "tooltip": "FLAC and 16-bit WAV clip peaks above full "
                                                  "scale; 32-bit float WAV keeps them."}),
            "stems": (["as mixed", "raw"], {"default": "as mixed",
                                            "tooltip": "Level of the stem files (see the node "
                                                       "description)."}),
        }, "hidden": dict(HIDDEN)}

    def save(self, chain, filename_prefix="nag_foley/foley", format="flac", stems="as mixed",
             graph=None, node_id=None):
        with reported_as(node_title(graph, node_id, self.DISPLAY_NAME)):
            return self._save(chain, filename_prefix, format, stems)

    def _save(self, chain, filename_prefix, format, stems):
        if format not in FORMATS:
            raise ConfigError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
        suffix, encoding = FORMATS[format]
        mix = chain.composite()
        names = [f"stem{i + 1:02}{suffix}" for i in range(len(chain))] + [f"mix{suffix}"]
        folder, name, counter, subfolder = host.save_path(filename_prefix)
        counter = _free_name(folder, name, counter, names)
        results = []
        for i, track in enumerate(chain.tracks):
            if stems == "raw":
                wave, rate = track.wave, track.sample_rate
            else:
                wave, rate = _as_mixed(track, chain.gains_db[i], mix), mix.sample_rate
            results.append(self._write(folder, name, counter, names[i], wave, rate, encoding,
                                       subfolder))
        results.append(self._write(folder, name, counter, names[-1], mix.wave, mix.sample_rate,
                                   encoding, subfolder))
        return {"ui": {"audio": results}}

    @staticmethod
    def _write(folder, name, counter, tail, wave, rate, encoding, subfolder):
        filename = f"{name}_{counter:05}_{tail}"
        write_audio(os.path.join(folder, filename), wave, rate, encoding=encoding)
        return {"filename": filename, "subfolder": subfolder, "type": "output"}


class SaveVideoWithAudio:
    DISPLAY_NAME = "Save Video With Audio (NAG Foley)"
    DESCRIPTION = ("Writes the video with the given audio (e.g. the final mix) as its soundtrack "
                   "into ComfyUI's output folder. 'scored clip' (default): only the part that was "
                   "given sound (Load Video's start and duration), its picture re-encoded so the "
                   "cut is exact. 'whole video': the whole source file, picture copied as it is, "
                   "the audio placed at the clip's start. For clips made from IMAGE batches use "
                   "the core CreateVideo + SaveVideo nodes instead.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (VIDEO, {"tooltip": "The clip from LoadVideo (file-backed)."}),
            "audio": ("AUDIO", {"tooltip": "The soundtrack: usually the last mix."}),
            "filename_prefix": ("STRING", {"default": "nag_foley/video",
                                           "tooltip": "Output sub-folder and file name start."}),
            "keep": ([SCORED_CLIP, WHOLE_VIDEO], {
                "default": SCORED_CLIP,
                "tooltip": "scored clip: only start..start+duration (picture re-encoded). whole "
                           "video: the whole file, picture copied, audio at the clip's start."}),
        }, "hidden": dict(HIDDEN)}

    def save(self, video, audio, filename_prefix="nag_foley/video", keep=SCORED_CLIP,
             graph=None, node_id=None):
        with reported_as(node_title(graph, node_id, self.DISPLAY_NAME)):
            return self._save(video, audio, filename_prefix, keep)

    def _save(self, video, audio, filename_prefix, keep):
        if keep not in (SCORED_CLIP, WHOLE_VIDEO):
            raise ConfigError(f"unknown keep {keep!r}; use {SCORED_CLIP!r} or {WHOLE_VIDEO!r}")
        if not video.path:
            raise ConfigError("this clip was made from frames, not a file, so there is no video "
                              "to copy: use the core CreateVideo + SaveVideo nodes with the mix")
        suffix = os.path.splitext(video.path)[1].lower()
        suffix = suffix if suffix in defaults.VIDEO_SUFFIXES else ".mp4"
        track = track_from_audio(audio)
        folder, name, counter, subfolder = host.save_path(filename_prefix)
        counter = _free_name(folder, name, counter, [suffix])
        filename = f"{name}_{counter:05}_{suffix}"
        wave = track.wave
        if keep == SCORED_CLIP:  # the segment follows the audio: never past the scored clip
            wave = wave[..., :int(round(video.duration * track.sample_rate))]
        mux_audio_into_video(video.path, wave, track.sample_rate,
                             os.path.join(folder, filename), start=video.start,
                             trim=keep == SCORED_CLIP)
        return {"ui": {"images": [{"filename": filename, "subfolder": subfolder,
                                   "type": "output"}], "animated": (True,)}}
