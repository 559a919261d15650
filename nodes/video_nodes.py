"""Video in: a file from ComfyUI's input folder, or frames / a VIDEO from other nodes."""

from __future__ import annotations

import os

from nag_core.errors import ConfigError
from nag_core.media import decode_video, frames_from_images, frames_from_video_object

from . import host
from .messages import HIDDEN, clip_output, node_title, reported_as
from .values import CATEGORY, VIDEO

_START = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                    "tooltip": "Where the clip starts in the source, in seconds."})
_DURATION = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                       "tooltip": "Seconds of video to give sound to; 0 = the whole video. "
                                  "MMAudio was trained on 8 s: a longer clip is generated in "
                                  "overlapping 8 s windows blended at every step. A shorter "
                                  "source is truncated to its own length (see the duration "
                                  "output)."})


def _duration(value) -> float | None:
    """The widget's seconds; 0 means to the end of the video."""
    return None if float(value) == 0.0 else float(value)
_OUTPUTS = dict(RETURN_TYPES=(VIDEO, "FLOAT"), RETURN_NAMES=("video", "duration"),
                OUTPUT_TOOLTIPS=("The clip as MMAudio sees it (8 fps for CLIP, 25 fps for "
                                 "Synchformer).",
                                 "Effective duration in seconds (shorter than asked when the "
                                 "source ends earlier)."))


class LoadVideo:
    DISPLAY_NAME = "Load Video (NAG Foley)"
    DESCRIPTION = ("Loads a video from ComfyUI's input folder (upload one with the button) and "
                   "cuts the clip to give sound to: start time and duration in seconds. Frames are "
                   "picked by presentation time, as MMAudio does.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = _OUTPUTS["RETURN_TYPES"]
    RETURN_NAMES = _OUTPUTS["RETURN_NAMES"]
    OUTPUT_TOOLTIPS = _OUTPUTS["OUTPUT_TOOLTIPS"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (host.list_input_videos(), {
                "video_upload": True,
                "tooltip": "A video file in ComfyUI's input folder (mp4, mov, mkv, webm, ...)."}),
            "start_time": _START,
            "duration": _DURATION,
        }}

    @classmethod
    def IS_CHANGED(cls, video, start_time=0.0, duration=8.0):
        # Size and modification time: a replaced file re-runs the node (and everything after it)
        # without hashing gigabytes on every queue.
        path = host.input_path(video)
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        return f"{st.st_size}:{st.st_mtime_ns}"

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        # Naming only ``video`` skips ComfyUI's combo check for it alone (annotated names such as
        # "clip.mp4 [input]" are not in the list); min/max checks of the others still apply.
        if not host.input_exists(video):
            return f"video file not found in the input folder: {video}"
        return True

    def load(self, video, start_time=0.0, duration=8.0):
        # No hidden inputs here: ComfyUI passes them to IS_CHANGED too, so the title is the
        # display name.
        with reported_as(self.DISPLAY_NAME):
            clip = decode_video(host.input_path(video), float(start_time),
                                _duration(duration))
        return clip_output(clip)


class VideoFromFrames:
    DISPLAY_NAME = "Video From Frames (NAG Foley)"
    DESCRIPTION = ("Turns a core VIDEO (e.g. from the core Load Video node) or an IMAGE batch with "
                   "its frame rate into a NAG Foley clip. A file-backed VIDEO is decoded from its "
                   "file by timestamps; an IMAGE batch uses the fps given here.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = _OUTPUTS["RETURN_TYPES"]
    RETURN_NAMES = _OUTPUTS["RETURN_NAMES"]
    OUTPUT_TOOLTIPS = _OUTPUTS["OUTPUT_TOOLTIPS"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001,
                                  "tooltip": "Frame rate of the IMAGE batch (ignored for a "
                                             "VIDEO input, which carries its own)."}),
                "start_time": _START,
                "duration": _DURATION,
            },
            "optional": {
                "video": ("VIDEO", {"tooltip": "A core VIDEO value. Takes precedence over "
                                               "images."}),
                "images": ("IMAGE", {"tooltip": "Frames [F, H, W, 3] shown at fps."}),
            },
            "hidden": dict(HIDDEN),
        }

    def convert(self, fps, start_time=0.0, duration=8.0, video=None, images=None, graph=None,
                node_id=None):
        with reported_as(node_title(graph, node_id, self.DISPLAY_NAME)):
            if video is not None:
                clip = frames_from_video_object(video, float(start_time),
                                                _duration(duration))
            elif images is not None:
                clip = frames_from_images(images, float(fps), float(start_time),
                                          _duration(duration))
            else:
                raise ConfigError("connect a VIDEO or an IMAGE batch to video or images")
        return clip_output(clip)
