"""Checkpoint-compatible re-implementation of the MMAudio pieces (mel, VAE, vocoders, network)."""
