"""ComfyUI node adapters over nag_core. Every node id carries the ``NAGFoley_`` prefix: ComfyUI
silently drops a custom id equal to a built-in one (``LoadVideo`` is built in), and a bare "NAG"
prefix is used by other packs. Every display name ends "(NAG Foley)", so a node found by search
says which pack it comes from; it lives on each class (DISPLAY_NAME) because the error messages
use it as the node's title when the graph gives none."""

from .export_nodes import SaveStems, SaveVideoWithAudio
from .mix_nodes import MixAndNormalize, SelectTake
from .model_nodes import EncodeVideo, MMAudioLoader, NAGControlNetLoader
from .sampler_node import NAGSampler
from .video_nodes import LoadVideo, VideoFromFrames

PREFIX = "NAGFoley_"

_NODES = [LoadVideo, VideoFromFrames, MMAudioLoader, NAGControlNetLoader, EncodeVideo, NAGSampler,
          SelectTake, MixAndNormalize, SaveStems, SaveVideoWithAudio]

NODE_CLASS_MAPPINGS = {PREFIX + cls.__name__: cls for cls in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {PREFIX + cls.__name__: cls.DISPLAY_NAME for cls in _NODES}
