"""ControlNet training for NAG (the design: README.md, "Training a ControlNet"). ``python -m nag_core.train``.

extract (data folder -> latent/feature cache), fit (cache -> ControlNet), synthesize-ema
(post-hoc EMA of any width from the saved snapshots), run (extract + fit).
"""

from .data import (AUDIO_EXTENSIONS, DEFAULT_SEGMENT_SECONDS, VIDEO_EXTENSIONS, Source, discover,
                   probe_duration, segment_pairs, segment_starts)
from .dataset import CachedPairs, PairSampler, load_cache
from .ema import (PowerEMA, gamma_from_sigma_rel, power_ema_direct, sigma_rel_from_gamma,
                  solve_weights, synthesize)
from .extract import (ExtractReport, ModelSegmentEncoder, SegmentEncoder, extract,
                      models_fingerprint)
from .loop import FitResult, TrainConfig, Trainer, fit, lr_factor
from .synth import synthesize_controlnet

__all__ = [
    "Source", "discover", "probe_duration", "segment_starts", "segment_pairs",
    "VIDEO_EXTENSIONS", "AUDIO_EXTENSIONS", "DEFAULT_SEGMENT_SECONDS",
    "CachedPairs", "PairSampler", "load_cache",
    "PowerEMA", "gamma_from_sigma_rel", "sigma_rel_from_gamma", "solve_weights", "synthesize",
    "power_ema_direct",
    "SegmentEncoder", "ModelSegmentEncoder", "ExtractReport", "extract", "models_fingerprint",
    "TrainConfig", "Trainer", "FitResult", "fit", "lr_factor", "synthesize_controlnet",
]
