"""Loading a variant's MMAudio parts from the models folder: the one path used by
:func:`nag_core.load` and by the chain (``generate`` / ``redo``).

The device and precision are checked before anything is read, so a CPU-only torch asked for
``cuda`` fails in a line instead of after the weights are found."""

from __future__ import annotations

from pathlib import Path

from .defaults import resolve_device, resolve_dtype

__all__ = ["load_variant", "parse_dtype", "resolve_device"]


def parse_dtype(dtype, device=None):
    """The model precision for ``device``: nag_core.defaults.resolve_dtype (None or "auto" =
    bf16 on CUDA, float32 elsewhere; or a name such as float32 / bf16, or a torch.dtype)."""
    return resolve_dtype(dtype, device if device is not None else resolve_device(None))


def load_variant(variant, models_dir, *, device=None, dtype=None, offline=None,
                 download: bool = True, progress: bool = True, log=None):
    """``(MMAudioModel, ModelFiles)`` of ``variant`` from ``models_dir`` (resolved as in
    :func:`nag_core.download.resolve_models_dir`), downloading missing files unless offline."""
    from .download import ensure_model_files
    from .weights import load_model_files
    dev = resolve_device(device)
    dt = parse_dtype(dtype, dev)
    files = ensure_model_files(variant, models_dir, offline=offline, download=download,
                               progress=progress)
    if log is not None:
        log(f"loading {variant} from {Path(files.network).parent} on {dev} "
            f"({str(dt).replace('torch.', '')})")
    return load_model_files(files, device=dev, dtype=dt), files
