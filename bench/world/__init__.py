"""Proof that NAG works, on the synthetic Foley world (nag_core.world): build tiny models from
scratch, train them on generated clips, and measure CFG / negative prompting / NAG.

``python -m bench.world.evaluate`` does everything in one command (see its --help)."""
