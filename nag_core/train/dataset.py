"""The extracted cache as in-memory tensors, and seeded, resumable batch drawing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from .extract import read_index


@dataclass
class CachedPairs:
    """Every cached segment stacked (S, ...) plus the (P, 2) (target, condition) segment table.

    Features of audio-only segments are zeros with ``has_video`` False; the training step swaps
    in the network's learned empty sequences for those rows. Kept in host memory (pinned on CUDA)
    because steps only gather rows: ~0.3 MB per 4 s segment at real size.
    """

    mean: Tensor  # (S, N, C) posterior mean, un-normalized
    std: Tensor  # (S, N, C)
    cond_mean: Tensor  # (S, N, C)
    clip_f: Tensor  # (S, Nc, clip_dim)
    sync_f: Tensor  # (S, Ns, sync_dim)
    has_video: Tensor  # (S,) bool
    pairs: Tensor  # (P, 2) long: target segment, condition segment
    mode: str
    variant: str
    segment_seconds: float

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def pin(self) -> "CachedPairs":
        for name in ("mean", "std", "cond_mean", "clip_f", "sync_f"):
            setattr(self, name, getattr(self, name).pin_memory())
        return self


def load_cache(cache_dir, clip_shape: Optional[tuple] = None,
               sync_shape: Optional[tuple] = None) -> CachedPairs:
    """Read the pairs of the last extraction. ``clip_shape``/``sync_shape`` (Nc, D) / (Ns, D)
    give the zero placeholders' shapes when the cache holds no video at all."""
    from safetensors import safe_open

    cache = Path(cache_dir)
    index = read_index(cache)
    current = index.get("current")
    if not current or not current.get("pairs"):
        raise ConfigError(f"{cache} holds no extracted training pairs; run "
                          "`python -m nag_core.train extract --data DIR --cache "
                          f"{cache} ...` first")
    slots: dict[tuple[str, int], int] = {}
    rows: dict[str, list[Tensor]] = {k: [] for k in ("mean", "std", "cond_mean", "clip_f", "sync_f")}
    has_video: list[bool] = []
    for key in sorted({p[0] for p in current["pairs"]}):
        entry = index["sources"][key]
        path = cache / entry["shard"]
        if not path.is_file():
            raise ConfigError(f"cache shard {path} is missing; run the extraction again (it "
                              "recomputes only what is missing) after deleting index.json, or "
                              "use a fresh cache folder")
        with safe_open(str(path), framework="pt") as f:
            for seg in entry["segments"]:
                k = seg["index"]
                slots[(key, k)] = len(has_video)
                for name in ("mean", "std", "cond_mean"):
                    rows[name].append(f.get_tensor(f"{k}.{name}"))
                video = bool(seg["video"])
                has_video.append(video)
                rows["clip_f"].append(f.get_tensor(f"{k}.clip_f") if video else None)
                rows["sync_f"].append(f.get_tensor(f"{k}.sync_f") if video else None)
    clip_f = _stack_with_placeholders(rows["clip_f"], clip_shape, "clip")
    sync_f = _stack_with_placeholders(rows["sync_f"], sync_shape, "sync")
    try:
        pairs = torch.tensor([[slots[(key, t)], slots[(key, c)]] for key, t, c in current["pairs"]],
                             dtype=torch.long)
    except KeyError:
        raise ConfigError(f"{cache}/index.json lists pairs of segments it does not hold; the "
                          "cache is damaged: use a fresh cache folder") from None
    return CachedPairs(mean=torch.stack(rows["mean"]), std=torch.stack(rows["std"]),
                       cond_mean=torch.stack(rows["cond_mean"]), clip_f=clip_f, sync_f=sync_f,
                       has_video=torch.tensor(has_video), pairs=pairs, mode=current["mode"],
                       variant=current["variant"], segment_seconds=float(current["segment_seconds"]))


def _stack_with_placeholders(items: list, shape: Optional[tuple], what: str) -> Tensor:
    present = [t for t in items if t is not None]
    if present:
        shape = tuple(present[0].shape)
        bad = [tuple(t.shape) for t in present if tuple(t.shape) != shape]
        if bad:
            raise ConfigError(f"cached {what} features have different shapes ({shape} and "
                              f"{bad[0]}); the cache mixes extraction settings: use a fresh one")
    if shape is None:
        shape = (1, 1)
    zero = torch.zeros(shape)
    return torch.stack([zero if t is None else t for t in items])


class PairSampler:
    """Batches of pair indices: a fresh seeded permutation per epoch, consumed in order.

    The whole state is the number of samples drawn so far, so resuming from a checkpoint that
    stores it continues with exactly the batches an uninterrupted run would have drawn."""

    def __init__(self, num_pairs: int, seed: int, drawn: int = 0):
        if num_pairs < 1:
            raise ConfigError("no training pairs to sample from")
        self.num_pairs, self.seed, self.drawn = num_pairs, seed, drawn
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.num_pairs, generator=g), epoch
        return self._perm

    def next(self, batch: int) -> Tensor:
        out = []
        for _ in range(batch):
            epoch, pos = divmod(self.drawn, self.num_pairs)
            out.append(int(self._permutation(epoch)[pos]))
            self.drawn += 1
        return torch.tensor(out, dtype=torch.long)
