"""Loading a variant's MMAudio parts from the models folder: the one path used by
:func:`nag_core.load` and by the chain (``generate`` / ``redo``).

The device and precision are checked before anything is read, so a CPU-only torch asked for
``cuda`` fails in a line instead of after the weights are found."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def parse_dtype(dtype):
    """A torch dtype from a name (float32 / bfloat16 / float16 and their short forms) or a
    dtype; None means float32."""
    import torch
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or torch.float32
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ConfigError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return getattr(torch, name)


def resolve_device(device):
    """A torch.device that exists on this machine; None means cuda when available, else cpu."""
    import torch
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no usable GPU"
            raise ConfigError(f"device {device!r} is not available: this torch "
                              f"({torch.__version__}) has {build}; use --device cpu, or "
                              "install a CUDA build of torch")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {device!r} does not exist: this machine has {count} "
                              f"CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {device!r} is not available on this machine; use "
                              "--device cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def load_variant(variant, models_dir, *, device=None, dtype=None, offline=None,
                 download: bool = True, progress: bool = True, log=None):
    """``(MMAudioModel, ModelFiles)`` of ``variant`` from ``models_dir`` (resolved as in
    :func:`nag_core.download.resolve_models_dir`), downloading missing files unless offline."""
    from .download import ensure_model_files
    from .weights import load_model_files
    dev, dt = resolve_device(device), parse_dtype(dtype)
    files = ensure_model_files(variant, models_dir, offline=offline, download=download,
                               progress=progress)
    if log is not None:
        log(f"loading {variant} from {Path(files.network).parent} on {dev} "
            f"({str(dt).replace('torch.', '')})")
    return load_model_files(files, device=dev, dtype=dt), files
