"""The benchmark scripts run (--quick: tiny network, one repetition) and print their ratio
lines. No time is asserted: the scripts measure, CI machines differ."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

SCRIPTS = {
    "step_cost.py": ["flops_nag_over_cfg", "time_nag_step_over_cfg_step"],
    "naive_cfg.py": ["ours_cfg_over_naive_cfg"],
    "memory.py": ["peak_memory_nag_over_cfg", "working_memory_nag_over_cfg"],
    "chain.py": ["chain_over_parts", "last_step_over_step2"],
    "resize.py": ["resize_torch_over_matmul"],
}


def run_quick(script: str, monkeypatch) -> str:
    """Run bench/<script> --quick in this process (one torch import for all of them)."""
    monkeypatch.setattr(sys, "argv", [str(BENCH / script), "--quick", "--threads", "1"])
    monkeypatch.syspath_prepend(str(BENCH))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    assert done.value.code in (0, None), out.getvalue()
    return out.getvalue()


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_prints_its_ratios(script, monkeypatch):
    text = run_quick(script, monkeypatch)
    for name in SCRIPTS[script]:
        lines = [x for x in text.splitlines() if x.startswith(f"RATIO {name} ")]
        assert len(lines) == 1, text
        assert float(lines[0].split()[2]) > 0
    assert "GOAL " in text
