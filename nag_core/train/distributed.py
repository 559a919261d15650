"""Running under ``torchrun``: which process this is, its device, the process group, and the few
collectives training and extraction need. With no torchrun environment everything here is a
no-op for one process, so the loop keeps the shape of a single-process loop.

torchrun starts one process per device and sets RANK, WORLD_SIZE and LOCAL_RANK (plus the
rendezvous address) in each one's environment; it also watches them and terminates the others
when one fails. The process group gets a timeout so that a collective waiting on a process that
hangs or vanished without torchrun noticing raises instead of blocking forever.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.distributed as dist

from ..errors import ConfigError, NAGFoleyError

log = logging.getLogger("nag_core.train")

# Long enough for a checkpoint or an EMA snapshot of the real model on slow storage, short
# enough that a hung peer is noticed within the hour. --timeout-minutes changes it.
DEFAULT_TIMEOUT_MINUTES = 30.0


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run (rank 0 is the one that writes)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return "1 process" if self.size == 1 else f"{self.size} processes"


def world_from_env(env: Optional[Mapping[str, str]] = None) -> World:
    """The World torchrun describes in the environment (one process when it does not)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return World()
    try:
        world = World(rank=int(env.get("RANK", "0")), size=int(env["WORLD_SIZE"]),
                      local_rank=int(env.get("LOCAL_RANK", "0")))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK in the environment are not integers; "
                          "start the run with torchrun, which sets them") from None
    if world.size < 1 or not 0 <= world.rank < world.size:
        raise ConfigError(f"RANK {world.rank} is outside WORLD_SIZE {world.size}; start the run "
                          "with torchrun, which sets them")
    return world


def rank_device(name: str, world: World) -> torch.device:
    """The device of this process: ``auto`` is CUDA when there is one; under torchrun CUDA
    means the GPU of this process's LOCAL_RANK (one process per GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but this PyTorch has no CUDA device; "
                              "use --device cpu (slow) or a CUDA build of PyTorch")
        if world.distributed:
            if dev.index is not None:
                raise ConfigError(f"--device {name}: under torchrun each process uses the GPU of "
                                  "its LOCAL_RANK; pass --device cuda (or auto)")
            if world.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {world.local_rank} but only "
                                  f"{torch.cuda.device_count()} GPUs are visible; start at most "
                                  "one process per GPU (--nproc_per_node)")
            dev = torch.device("cuda", world.local_rank)
    return dev


class PeerFailure(NAGFoleyError):
    """Another process of the run failed, vanished or did not answer in time; this one stopped."""


# What the backends say when a peer is gone (gloo raises plain RuntimeErrors).
_PEER_SIGNS = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout",
               "broken pipe")


def _peer_failure(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(s in text for s in _PEER_SIGNS)


@contextlib.contextmanager
def peers_watched(world: World):
    """Turn a collective that fails because a peer is gone into one clear PeerFailure."""
    try:
        yield
    except RuntimeError as e:
        if not world.distributed or not _peer_failure(e):
            raise
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise PeerFailure(f"rank {world.rank} stopped: another process of the run failed or did "
                          f"not answer within --timeout-minutes ({first[:200]}); its own error "
                          "is above in the log") from None


@contextlib.contextmanager
def process_group(world: World, device: torch.device,
                  timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES):
    """Join the run's process group (NCCL for CUDA tensors, gloo for CPU ones) for the body of
    the ``with``; nothing for one process."""
    if not world.distributed:
        yield
        return
    if dist.is_initialized():  # a caller (notebook, test) set it up itself
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if timeout_minutes <= 0:
        raise ConfigError(f"--timeout-minutes must be positive, got {timeout_minutes}")
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    try:
        with peers_watched(world):
            yield
    finally:
        dist.destroy_process_group()


def _active(world: World) -> bool:
    return world.distributed and dist.is_initialized()


def barrier(world: World) -> None:
    if _active(world):
        dist.barrier()


def mean_over_ranks(world: World, value: float, device: torch.device) -> float:
    """The mean of a float over all processes (the loss of the global batch)."""
    if not _active(world):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world.size


def sum_over_ranks(world: World, values: torch.Tensor) -> torch.Tensor:
    if not _active(world):
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out


def gather_objects(world: World, obj) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not _active(world):
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def share(items: list, world: World) -> list:
    """This process's round-robin share of ``items`` (balanced when they are sorted by size or
    arrive in any order; disjoint, and together they are all of ``items``)."""
    return items[world.rank::world.size]
