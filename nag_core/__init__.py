"""nag_core: step-by-step video-to-audio Foley with Negative Audio Guidance on MMAudio.

Plain PyTorch. Never imports ComfyUI; the ComfyUI nodes in ../nodes are thin adapters over it.
"""

__version__ = "0.1.0"
