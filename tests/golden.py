"""Discovery and loading of the MMAudio golden files.

The folder is ``$NAG_GOLDEN_DIR`` (default ``tests/data/mmaudio/golden`` in this repository:
measured outputs of the official MMAudio modules at reduced size with seeded weights, kept here
as test data so a fresh clone tests itself). The release manifests (exact key/shape sets of the
released checkpoints) are in ``manifests/`` beside it. Tests discover files by kind prefix
(``network_``, ``vae_``, ...), so a golden file dropped into the folder is tested without a code
change; each test id is the file's name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("NAG_GOLDEN_DIR", REPO / "tests" / "data" / "mmaudio" / "golden"))
MANIFEST_DIR = GOLDEN_DIR.parent / "manifests"


def golden_files(prefix: str) -> list[Path]:
    return sorted(GOLDEN_DIR.glob(f"{prefix}*.safetensors"))


def golden_params(prefix: str) -> list:
    """pytest parameters, one per golden file of this kind, with the file name as the id."""
    files = golden_files(prefix)
    if not files:  # a missing folder must fail the run, not pass as an expected failure
        return [pytest.param(None, id=f"{prefix}MISSING")]
    return [pytest.param(f, id=f.stem) for f in files]


class Golden:
    """One golden file: its tensors by prefix and its JSON sidecar."""

    def __init__(self, path: Path):
        if path is None:
            pytest.fail(f"golden folder {GOLDEN_DIR} has no file of this kind: restore "
                        "tests/data/mmaudio or point $NAG_GOLDEN_DIR at a golden set")
        self.path = path
        self.tensors = load_file(str(path))
        side = path.with_suffix(".json")
        self.meta = json.loads(side.read_text()) if side.exists() else {}

    def input_file(self, name: str) -> tuple["Golden", str]:
        """The golden a pipeline golden chains for input ``name`` (its sidecar's ``inputs``, e.g.
        "network_v1_16k_reduced.safetensors : out.sample.x1_unnormalized") and the tensor key
        named after the colon ("" when none is)."""
        spec = self.meta.get("inputs", {}).get(name)
        if not spec:
            pytest.fail(f"{self.path.name}'s sidecar names no input {name!r}")
        key = spec.partition(":")[2].split()
        return Golden(self.path.parent / spec.split()[0]), (key[0] if key else "")

    def group(self, prefix: str) -> dict:
        """Tensors whose names start with ``prefix`` (e.g. "weights."), with the prefix stripped."""
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def __getitem__(self, key: str):
        return self.tensors[key]

    def __contains__(self, key: str) -> bool:
        return key in self.tensors


def golden_duration(mode: str, latent: int, clip: int, sync: int) -> float:
    """A duration (seconds) whose MMAudio sequence lengths are (latent, clip, sync) tokens.

    A golden stores its tensors, not its duration; every duration with the same three lengths
    builds the same tables, so the first match on a 1 ms grid inside the CLIP token's interval
    (clip = int(8 * duration)) is as good as the one the golden was made with."""
    from nag_core.errors import ConfigError
    from nag_core.mmaudio.variants import sequence_lengths
    for ms in range(max(1, clip * 125), (clip + 1) * 125):
        try:
            got = sequence_lengths(mode, ms / 1000)
        except ConfigError:  # below the shortest duration MMAudio takes
            continue
        if (got.latent, got.clip, got.sync) == (latent, clip, sync):
            return ms / 1000
    pytest.fail(f"no {mode} duration has sequence lengths latent {latent}, clip {clip}, "
                f"sync {sync}: the golden's tensors disagree with MMAudio's length rules")


def load_tables() -> dict:
    return json.loads((GOLDEN_DIR / "tables.json").read_text())


def load_manifest(name: str) -> dict:
    return json.loads((MANIFEST_DIR / f"{name}.json").read_text())


def assert_close(actual, expected, rtol_scale: float = 1e-5, what: str = ""):
    """The golden agreement rule: max |diff| < tol * max(1, max |ref|)."""
    import torch
    expected = expected.to(actual.dtype)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    diff = float((actual - expected).abs().max()) if expected.numel() else 0.0
    assert diff < rtol_scale * scale, f"{what}: max |diff| {diff:.3g} >= {rtol_scale * scale:.3g}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
