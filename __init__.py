"""ComfyUI entry point of the NAG Foley pack: exposes the node mappings and the workflows folder.

ComfyUI imports this folder as a package. The library ``nag_core`` sits beside this file; the folder
is appended (not prepended) to sys.path so ``import nag_core`` works without shadowing ComfyUI's own
top-level modules (ComfyUI owns the name ``nodes``; ours is only ever imported relatively here).
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"  # the players, the seed control default and the loader note
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
