"""ComfyUI node adapters over nag_core. Every node id carries the ``NAGFoley_`` prefix: ComfyUI
silently drops a custom id equal to a built-in one (``LoadVideo`` is built in), and a bare "NAG"
prefix is used by other packs."""

from .export_nodes import SaveStems, SaveVideoWithAudio
from .mix_nodes import MixAndNormalize
from .model_nodes import EncodeVideo, MMAudioLoader, NAGControlNetLoader
from .sampler_node import NAGSampler
from .video_nodes import LoadVideo, VideoFromFrames

PREFIX = "NAGFoley_"

_NODES = [
    (LoadVideo, "Load Video (NAG Foley)"),
    (VideoFromFrames, "Video From Frames (NAG Foley)"),
    (MMAudioLoader, "MMAudio Loader (NAG Foley)"),
    (NAGControlNetLoader, "NAG ControlNet Loader"),
    (EncodeVideo, "Encode Video (NAG Foley)"),
    (NAGSampler, "NAG Sampler"),
    (MixAndNormalize, "Mix And Normalize (NAG Foley)"),
    (SaveStems, "Save Stems (NAG Foley)"),
    (SaveVideoWithAudio, "Save Video With Audio (NAG Foley)"),
]

NODE_CLASS_MAPPINGS = {PREFIX + cls.__name__: cls for cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {PREFIX + cls.__name__: name for cls, name in _NODES}
