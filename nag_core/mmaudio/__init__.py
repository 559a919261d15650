"""Checkpoint-compatible re-implementation of MMAudio's modules (plain PyTorch).

Never imports open_clip, timm or torchvision: on a CPU-only torch they fail to import."""
