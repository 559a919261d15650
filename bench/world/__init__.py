"""Measuring NAG on the synthetic Foley world (nag_core.world): build tiny models from scratch,
train them on generated clips, and measure independent CFG, the negative prompt, NAG, text NAG and
an oracle with model-free detectors (detectors.py).

``python -m bench.world.evaluate`` does everything in one command (see its --help);
``python -m bench.world.diagnose`` shows what each guidance branch predicts."""
