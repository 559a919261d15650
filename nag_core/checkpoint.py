"""Reading and writing flat state dicts: .pth/.pt/.bin (torch.load with weights_only=True) and
.safetensors, with errors that name the file and say what to do."""

from __future__ import annotations

import os
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .atomic import write_with
from .errors import WeightsError, not_a_file

SAFETENSORS_EXT = {".safetensors", ".sft"}
TORCH_EXT = {".pth", ".pt", ".bin", ".ckpt"}


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Load a checkpoint file as (object, metadata). The object is whatever the file holds (a flat
    state dict, or a dict wrapping one); metadata is the safetensors header metadata ({} for .pth).
    Never unpickles arbitrary objects (weights_only=True)."""
    p = Path(path)
    _check_readable(p)
    if p.stat().st_size == 0:
        raise WeightsError(f"weight file {p} is empty (0 bytes): the download was probably "
                           "interrupted; delete it and download it again")
    ext = p.suffix.lower()
    if ext in SAFETENSORS_EXT:
        from safetensors import safe_open
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta
        except Exception as e:  # safetensors raises its own SafetensorError/OSError types
            raise WeightsError(f"{p} is not a readable safetensors file ({e}); it may be truncated "
                               "or corrupt: download it again") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=_can_mmap(p))
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ("it may be truncated or corrupt (download it again)"
                if ext in TORCH_EXT else f"'{ext}' is not a weight-file extension this pack reads "
                "(.pth, .pt, .bin, .ckpt, .safetensors)")
        raise WeightsError(f"cannot read {p} as a PyTorch checkpoint: {first}; {hint}") from None
    return obj, {}


def _check_readable(p: Path) -> None:
    """A WeightsError with the real cause when ``p`` cannot be read: missing, a folder, or
    not readable by this user (a permission problem is not "not found")."""
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise WeightsError(f"{not_a_file(p)} (a weight file belongs there), or "
                               "choose another file")
        with open(p, "rb"):
            pass
    except FileNotFoundError:
        raise WeightsError(f"weight file not found: {p}") from None
    except PermissionError:
        raise WeightsError(f"cannot read {p}: permission denied. Make the file (and the folders "
                           "above it) readable by this user") from None
    except OSError as e:
        raise WeightsError(f"cannot read {p}: {e.strerror or e}") from None


def _can_mmap(p: Path) -> bool:
    # mmap avoids a second in-RAM copy of multi-GB files; only zip-format checkpoints support it.
    return zipfile.is_zipfile(p)


def source_name(source) -> str:
    """How messages name where a state dict came from: its path, or "the given state dict"."""
    return "the given state dict" if isinstance(source, Mapping) else str(source)


def read_state_dict(source, *, unwrap: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """A flat ``{name: Tensor}`` from a checkpoint path or an in-memory mapping (the one way every
    loader gets its tensors). ``unwrap`` names wrapper keys to descend into when present (e.g.
    ("generator",) for BigVGAN files, ("state_dict",) for some CLIP files); a DataParallel
    ``module.`` prefix carried by every key is dropped. The caller's mapping is never modified."""
    if isinstance(source, (str, os.PathLike)):
        obj, _ = read_checkpoint(source)
    elif isinstance(source, Mapping):
        obj = source
    else:
        raise TypeError(f"expected a weight-file path or a state dict, got {type(source).__name__}")
    for key in unwrap:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or \
            not all(isinstance(v, Tensor) for v in obj.values()):
        what = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping)
                else type(obj).__name__)
        raise WeightsError(f"{source_name(source)} does not hold a state dict (a flat dict of "
                           f"tensors); found {what}")
    if all(k.startswith("module.") for k in obj):
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def write_safetensors(state: Mapping[str, Tensor], path: str | os.PathLike,
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write atomically (:mod:`nag_core.atomic`), so a crash never leaves half a file under
    the final name and never destroys an existing file before the new one is complete."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=dict(metadata or {})))


def write_torch(obj, path: str | os.PathLike) -> None:
    """torch.save atomically (:mod:`nag_core.atomic`)."""
    write_with(path, lambda tmp: torch.save(obj, str(tmp)))
