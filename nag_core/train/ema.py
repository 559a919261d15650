"""Post-hoc EMA (Karras et al., "Analyzing and Improving the Training Dynamics of Diffusion
Models", EDM2, 2024): power-function EMA profiles tracked during training, snapshots of them
saved every K steps, and the least-squares synthesis of an EMA of any other width afterwards.

Math (own derivation, following the paper's definitions):

* A power-function EMA with exponent γ averages the training trajectory θ(τ) with weight
  ∝ τ^γ over τ ∈ [0, t]. Its relative standard deviation (width / t) is
  σ_rel = sqrt((γ+1) / ((γ+2)² (γ+3))); for a given σ_rel, γ is the largest real root of
  σ² γ³ + 7σ² γ² + (16σ² − 1) γ + (12σ² − 1) = 0.
* Discretely (t = optimiser steps done, t ≥ 1): θ̂ ← β θ̂ + (1 − β) θ with β = (1 − 1/t)^(γ+1).
  This gives step s the weight (s^(γ+1) − (s−1)^(γ+1)) / t^(γ+1) = ∫_{s−1}^{s} p(τ) dτ with the
  normalised profile p(τ) = (γ+1) τ^γ / t^(γ+1): exactly the continuous profile applied to the
  piecewise-constant trajectory.
* A snapshot i (profile γ_i at step t_i) is the trajectory averaged with p_i. A target profile
  p_r is approximated by Σ x_i p_i with x minimising ∫ (Σ x_i p_i − p_r)² dτ subject to
  Σ x_i = 1 (every profile integrates to 1, and the constraint makes a constant parameter come
  back exactly). With m = min(t_i, t_j):
      ∫ p_i p_j dτ = (γ_i+1)(γ_j+1) m^(γ_i+γ_j+1) / ((γ_i+γ_j+1) t_i^(γ_i+1) t_j^(γ_j+1)).
  The synthesised parameters are Σ x_i θ̂_i.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

SNAPSHOT_FORMAT = "nag-train-ema"
DEFAULT_SIGMA_RELS = (0.05, 0.10)
_SNAPSHOT_RE = re.compile(r"^ema-(\d+)\.safetensors$")


def gamma_from_sigma_rel(sigma_rel: float) -> float:
    """The exponent γ of the power-function EMA of relative width ``sigma_rel``."""
    s2 = float(sigma_rel) ** 2
    if not 0 < sigma_rel < 0.28:
        raise ConfigError(f"sigma_rel must be between 0 and 0.28 (EDM2 uses 0.05-0.2), got "
                          f"{sigma_rel}")
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    real = [r.real for r in roots if abs(r.imag) < 1e-9 and r.real > -1]
    if not real:
        raise ConfigError(f"no power-function EMA has sigma_rel {sigma_rel}")
    return float(max(real))


def sigma_rel_from_gamma(gamma: float) -> float:
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def ema_beta(step: int, gamma: float) -> float:
    """Decay for the update made after ``step`` optimiser steps (step >= 1)."""
    return (1.0 - 1.0 / step) ** (gamma + 1)


class PowerEMA:
    """Several power-function EMA profiles of a set of parameters, kept in float32."""

    def __init__(self, params: Mapping[str, Tensor], sigma_rels: Sequence[float] = DEFAULT_SIGMA_RELS):
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(gamma_from_sigma_rel(s) for s in self.sigma_rels)
        self.step = 0
        self.profiles = [{k: v.detach().float().clone() for k, v in params.items()}
                         for _ in self.sigma_rels]

    @torch.no_grad()
    def update(self, params: Mapping[str, Tensor], step: int) -> None:
        """Fold in the parameters after optimiser step ``step`` (1, 2, ...)."""
        for gamma, profile in zip(self.gammas, self.profiles):
            beta = ema_beta(step, gamma)
            for k, avg in profile.items():
                avg.lerp_(params[k].detach().float(), 1.0 - beta)
        self.step = step

    def state_dict(self) -> dict:
        return {"step": self.step, "sigma_rels": list(self.sigma_rels),
                "profiles": [{k: v.clone() for k, v in p.items()} for p in self.profiles]}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["sigma_rels"]) != self.sigma_rels:
            raise ConfigError(f"the checkpoint tracks EMA sigma_rels {state['sigma_rels']}, this "
                              f"run {list(self.sigma_rels)}; resume with the same --ema-sigma-rels")
        self.step = int(state["step"])
        for mine, saved in zip(self.profiles, state["profiles"]):
            for k, v in mine.items():
                v.copy_(saved[k])

    def snapshot(self, folder, metadata: Optional[Mapping[str, str]] = None) -> Path:
        """Write every profile at the current step to ``folder/ema-<step>.safetensors``."""
        from ..checkpoint import write_safetensors
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"{i}/{k}": v for i, p in enumerate(self.profiles) for k, v in p.items()}
        meta = {"format": SNAPSHOT_FORMAT, "step": str(self.step),
                "sigma_rels": json.dumps(list(self.sigma_rels)), **dict(metadata or {})}
        path = folder / f"ema-{self.step:08d}.safetensors"
        write_safetensors(tensors, path, metadata=meta)
        return path


def solve_weights(steps: Sequence[float], gammas: Sequence[float], target_step: float,
                  target_gamma: float) -> np.ndarray:
    """Coefficients x of the snapshots (t_i, γ_i) whose sum approximates the target profile
    (t_r, γ_r) best in L2, with Σ x = 1 (see the module docstring)."""
    t = np.asarray(steps, dtype=np.float64)
    g = np.asarray(gammas, dtype=np.float64)
    if t.shape != g.shape or t.size == 0:
        raise ConfigError("need at least one EMA snapshot (steps and gammas of equal length)")
    if np.any(t <= 0) or target_step <= 0:
        raise ConfigError("EMA snapshot steps must be positive")
    scale = float(target_step)  # the solution is invariant to scaling time; keeps powers tame
    t, tr = t / scale, 1.0

    def gram(ta, ga, tb, gb):  # (n,) x (m,) -> (n, m) inner products of the profiles
        ta, ga = ta[:, None], ga[:, None]
        tb, gb = tb[None, :], gb[None, :]
        m = np.minimum(ta, tb)
        return ((ga + 1) * (gb + 1) * m ** (ga + gb + 1)
                / ((ga + gb + 1) * ta ** (ga + 1) * tb ** (gb + 1)))

    a = gram(t, g, t, g)
    b = gram(t, g, np.array([tr]), np.array([target_gamma]))[:, 0]
    n = t.size
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n], kkt[:n, n], kkt[n, :n] = a, 1.0, 1.0
    rhs = np.concatenate([b, [1.0]])
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return sol[:n]


def list_snapshots(folder) -> list[tuple[int, Path]]:
    folder = Path(folder)
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SNAPSHOT_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
    return sorted(out)


def synthesize(folder, sigma_rel: float, step: Optional[int] = None
               ) -> tuple[dict[str, Tensor], dict]:
    """The EMA of width ``sigma_rel`` at ``step`` (default: the last snapshot) from the snapshots
    in ``folder``. Returns (parameters, metadata of the last snapshot used)."""
    from safetensors import safe_open

    snaps = list_snapshots(folder)
    if step is not None:
        snaps = [(s, p) for s, p in snaps if s <= step]
    if not snaps:
        raise ConfigError(f"no EMA snapshots (ema-<step>.safetensors) in {folder}"
                          + (f" up to step {step}" if step is not None else "")
                          + "; train with EMA snapshots enabled first")
    target_step = step if step is not None else snaps[-1][0]
    entries, meta = [], {}
    for s, path in snaps:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != SNAPSHOT_FORMAT:
                raise ConfigError(f"{path} is not an EMA snapshot of this trainer")
            for i, sr in enumerate(json.loads(meta["sigma_rels"])):
                entries.append((s, gamma_from_sigma_rel(sr), path, i))
    weights = solve_weights([e[0] for e in entries], [e[1] for e in entries], target_step,
                            gamma_from_sigma_rel(sigma_rel))
    out: dict[str, Tensor] = {}
    for (s, _, path, i), w in zip(entries, weights):
        with safe_open(str(path), framework="pt") as f:
            prefix = f"{i}/"
            for name in f.keys():
                if name.startswith(prefix):
                    k = name[len(prefix):]
                    v = f.get_tensor(name).double() * float(w)
                    out[k] = out[k] + v if k in out else v
    return {k: v.float() for k, v in out.items()}, meta


def power_ema_direct(trajectory: Iterable[Tensor], gamma: float) -> Tensor:
    """Reference: the power-function EMA of a whole trajectory θ_1..θ_t by its explicit weights
    (s^(γ+1) − (s−1)^(γ+1)) / t^(γ+1). For tests and checks."""
    items = list(trajectory)
    t = len(items)
    total = torch.zeros_like(items[0], dtype=torch.float64)
    for s, theta in enumerate(items, 1):
        w = (s ** (gamma + 1) - (s - 1) ** (gamma + 1)) / t ** (gamma + 1)
        total += w * theta.double()
    return total


def snapshot_path_step(path: os.PathLike) -> Optional[int]:
    m = _SNAPSHOT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None
