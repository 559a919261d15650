"""Video and audio I/O for MMAudio: frame streams picked by presentation time, exact resizes,
audio reading/writing and muxing generated audio into a copy of a video."""

from .audio import read_audio, write_audio
from .frames import (CLIP_FPS, MIN_DURATION, SYNC_FPS, VideoClip, frames_from_images,
                     frames_from_video_object)
from .mux import mux_audio_into_video
from .resize import (CLIP_SIZE, SYNC_SIZE, clip_resize, clip_to_float, resize_uint8, sync_resize,
                     sync_to_float)
from .video import decode_video

__all__ = [
    "VideoClip", "decode_video", "frames_from_images", "frames_from_video_object",
    "clip_to_float", "sync_to_float", "clip_resize", "sync_resize", "resize_uint8",
    "read_audio", "write_audio", "mux_audio_into_video",
    "CLIP_FPS", "SYNC_FPS", "CLIP_SIZE", "SYNC_SIZE", "MIN_DURATION",
]
