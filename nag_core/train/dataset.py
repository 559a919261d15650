"""The extracted cache as in-memory tensors, and seeded, resumable batch drawing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
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
    pair_clips: tuple = ()  # (P,) path of the clip each pair comes from

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def subset(self, mask: Tensor) -> "CachedPairs":
        """The same segments with only the pairs where ``mask`` (P,) is True."""
        keep = torch.nonzero(mask).flatten().tolist()
        clips = tuple(self.pair_clips[i] for i in keep) if self.pair_clips else ()
        return replace(self, pairs=self.pairs[mask], pair_clips=clips)

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
                       variant=current["variant"], segment_seconds=float(current["segment_seconds"]),
                       pair_clips=tuple(index["sources"][key]["path"]
                                        for key, _, _ in current["pairs"]))


def heldout_mask(clips, fraction: float = 0.0, names=()) -> Tensor:
    """(P,) True for the pairs of held-out clips: a clip is held out when its file name is in
    ``names`` (file names or paths; compared by name) or when a hash of its file name falls in
    the first ``fraction`` of the hash range. Whole clips are held out (their segments never
    appear in training), and the choice of a clip never changes when other clips are added."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"the held-out fraction must be in [0, 1), got {fraction}")
    listed = {Path(n).name for n in names}

    def held(path: str) -> bool:
        name = Path(path).name
        digest = hashlib.sha1(f"heldout/{name}".encode()).digest()
        return name in listed or int.from_bytes(digest[:8], "little") / 2 ** 64 < fraction

    return torch.tensor([held(c) for c in clips], dtype=torch.bool)


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

    The whole state is the number of samples drawn so far by all processes together, so
    resuming from a checkpoint that stores it continues with exactly the batches an
    uninterrupted run would have drawn, with any number of processes. Under torchrun each
    micro-batch step draws ``world.size × batch`` consecutive positions of the one global order
    and process r takes the r-th ``batch`` of them: the processes read disjoint shares of every
    epoch, and the global batch holds the same examples whatever the number of processes."""

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

    def pair_at(self, position: int) -> int:
        epoch, pos = divmod(position, self.num_pairs)
        return int(self._permutation(epoch)[pos])

    def take(self, batch: int, rank: int = 0, world_size: int = 1) -> tuple[Tensor, Tensor]:
        """(pair indices, global positions) of process ``rank``'s ``batch`` examples of the next
        micro-batch step; advances the global count by ``world_size × batch``."""
        first = self.drawn + rank * batch
        positions = list(range(first, first + batch))
        self.drawn += world_size * batch
        return (torch.tensor([self.pair_at(p) for p in positions], dtype=torch.long),
                torch.tensor(positions, dtype=torch.long))

    def next(self, batch: int) -> Tensor:
        return self.take(batch)[0]


def _noise_seed(stream: str, seed: int, position: int) -> int:
    digest = hashlib.sha1(f"{stream}/{seed}/{position}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def example_noise(seed: int, positions: Tensor, shape: tuple, stream: str = "train"
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """(ε, x0, n) for the examples at these global positions: ε and x0 of ``shape`` each, n a
    scalar (t = sigmoid(n)), drawn from a generator seeded by (stream, seed, position) alone. So
    an example gets the same noise whichever process draws it and whatever the batch split."""
    eps, x0, n = [], [], []
    for p in positions.tolist():
        g = torch.Generator().manual_seed(_noise_seed(stream, seed, int(p)))
        eps.append(torch.randn(shape, generator=g))
        x0.append(torch.randn(shape, generator=g))
        n.append(torch.randn((), generator=g))
    return torch.stack(eps), torch.stack(x0), torch.stack(n)
