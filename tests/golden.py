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

    def group(self, prefix: str) -> dict:
        """Tensors whose names start with ``prefix`` (e.g. "weights."), with the prefix stripped."""
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def __getitem__(self, key: str):
        return self.tensors[key]

    def __contains__(self, key: str) -> bool:
        return key in self.tensors


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
