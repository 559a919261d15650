"""Everything the nodes need from ComfyUI, in one place, each with a plain fallback.

Inside ComfyUI these functions use ``folder_paths``, ``comfy.model_management`` and
``comfy.utils.ProgressBar``. Without ComfyUI (tests, scripts) they fall back to folders named by
environment variables and to no-ops, so every node runs anywhere. No other module of the pack
imports ComfyUI.

Fallback folders (only used when ComfyUI is absent):
* the MMAudio weights: the folder the CLI and ``nag_core.load`` use
  (``nag_core.download.resolve_models_dir``: ``NAGFOLEY_MODELS_DIR``, a ComfyUI tree's
  models/mmaudio, else ~/.cache/nag-foley/models);
* ``NAGFOLEY_INPUT_DIR``: videos for the loader (default ``./input``);
* ``NAGFOLEY_OUTPUT_DIR``: saved stems and videos (default ``./output``);
* ``NAGFOLEY_TEMP_DIR``: audio previews (default: the system temp folder).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator, Optional

import torch

from nag_core import defaults

MODEL_KEY = "mmaudio"  # models/mmaudio: the folder kijai's MMAudio pack uses too
WEIGHT_EXTENSIONS = {".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".sft"}
# The file picker also lists GIFs (PyAV reads them; training discovery leaves them out).
VIDEO_EXTENSIONS = frozenset(defaults.VIDEO_INPUT_SUFFIXES) | {".gif"}


log = logging.getLogger("nag_foley")
_FAILED: set = set()  # host modules whose import raised something other than ImportError


def _module(name: str):
    """The ComfyUI module ``name`` if the host has it, else None.

    Already-imported modules are used as they are (tests put fakes into sys.modules). Only an
    ImportError means "not inside ComfyUI": any other failure is a broken host, so it is logged
    (once per module) instead of silently turning Cancel, progress and memory management into
    no-ops."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
    except Exception as e:  # noqa: BLE001 - reported, then treated as absent
        if name not in _FAILED:
            _FAILED.add(name)
            log.warning("NAG Foley: importing ComfyUI's %s failed (%s: %s); Cancel, progress "
                        "and memory management that need it are off", name,
                        type(e).__name__, e)
        return None


def in_comfyui() -> bool:
    return _module("folder_paths") is not None


# ---------------------------------------------------------------------------- model folders
def register_model_folder() -> list[str]:
    """Make ``models/mmaudio`` a ComfyUI model folder restricted to weight files; returns its
    paths. Adds to, never replaces, what another pack (kijai's) registered under the same key."""
    fp = _module("folder_paths")
    if fp is None:
        from nag_core.download import resolve_models_dir
        return [str(resolve_models_dir())]
    folder = os.path.join(fp.models_dir, MODEL_KEY)
    os.makedirs(folder, exist_ok=True)
    known = fp.folder_names_and_paths.get(MODEL_KEY)
    if known is None:
        fp.folder_names_and_paths[MODEL_KEY] = ([folder], set(WEIGHT_EXTENSIONS))
    else:
        paths, exts = known
        if folder not in paths:
            paths.append(folder)
        if exts:  # an empty set means "any file": keep it, ours is only narrower
            exts.update(WEIGHT_EXTENSIONS)
    return list(fp.folder_names_and_paths[MODEL_KEY][0])


def model_folders() -> list[str]:
    return register_model_folder()


def list_model_files() -> list[str]:
    """Relative paths of every weight file in the model folders (sorted, no duplicates)."""
    fp = _module("folder_paths")
    if fp is not None:
        register_model_folder()
        names = fp.get_filename_list(MODEL_KEY)
    else:
        names = []
        for folder in model_folders():
            for root, dirs, files in os.walk(folder):
                dirs[:] = [d for d in dirs if d != ".git"]
                for f in files:
                    rel = os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
                    names.append(rel)
    return sorted({n.replace(os.sep, "/") for n in names
                   if os.path.splitext(n)[1].lower() in WEIGHT_EXTENSIONS})


def model_path(name: str) -> str:
    """Absolute path of a file chosen from :func:`list_model_files`."""
    fp = _module("folder_paths")
    if fp is not None:
        register_model_folder()
        path = fp.get_full_path(MODEL_KEY, name)
        if path:
            return path
    else:
        for folder in model_folders():
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    from nag_core.errors import WeightsError
    raise WeightsError(f"model file {name!r} was not found in {', '.join(model_folders())}; "
                       "put it into models/mmaudio (or refresh the node list with R)")


# ---------------------------------------------------------------------------- input / output
def input_directory() -> str:
    fp = _module("folder_paths")
    if fp is not None:
        return fp.get_input_directory()
    return os.environ.get("NAGFOLEY_INPUT_DIR") or os.path.join(os.getcwd(), "input")


def output_directory() -> str:
    fp = _module("folder_paths")
    if fp is not None:
        return fp.get_output_directory()
    return os.environ.get("NAGFOLEY_OUTPUT_DIR") or os.path.join(os.getcwd(), "output")


def temp_directory() -> str:
    """Where previews go (ComfyUI empties its temp folder at start)."""
    fp = _module("folder_paths")
    if fp is not None:
        return fp.get_temp_directory()
    # Outside ComfyUI previews are throw-away: the system temp folder, never the working folder.
    return os.environ.get("NAGFOLEY_TEMP_DIR") or os.path.join(tempfile.gettempdir(),
                                                               "nag_foley_previews")


def list_input_videos() -> list[str]:
    folder = input_directory()
    if not os.path.isdir(folder):
        return []
    files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
    fp = _module("folder_paths")
    if fp is not None and hasattr(fp, "filter_files_content_types"):
        return sorted(fp.filter_files_content_types(files, ["video"]))
    return sorted(f for f in files if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS)


def input_path(name: str) -> str:
    """Absolute path of a file picked in an upload combo ("name", "name [input]", "sub/name")."""
    fp = _module("folder_paths")
    if fp is not None and hasattr(fp, "get_annotated_filepath"):
        return fp.get_annotated_filepath(name)
    return os.path.join(input_directory(), re.sub(r"\s*\[input\]$", "", name))


def input_exists(name: str) -> bool:
    fp = _module("folder_paths")
    if fp is not None and hasattr(fp, "exists_annotated_filepath"):
        return fp.exists_annotated_filepath(name)
    return os.path.isfile(input_path(name))


def save_path(prefix: str) -> tuple[str, str, int, str]:
    """(folder, base name, next counter, subfolder) for ``prefix`` in the output folder, with
    ComfyUI's own numbering (``name_00001_...``): files of earlier runs are never reused."""
    out = output_directory()
    fp = _module("folder_paths")
    if fp is not None:
        folder, name, counter, subfolder, _ = fp.get_save_image_path(prefix, out)
        return folder, name, counter, subfolder
    norm = os.path.normpath(prefix)
    subfolder, name = os.path.dirname(norm), os.path.basename(norm)
    folder = os.path.join(out, subfolder)
    if os.path.commonpath((os.path.abspath(out), os.path.abspath(folder))) != os.path.abspath(out):
        from nag_core.errors import ConfigError
        raise ConfigError(f"filename_prefix {prefix!r} points outside the output folder")
    os.makedirs(folder, exist_ok=True)
    pattern = re.compile(re.escape(name) + r"_(\d+)_")
    used = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
    return folder, name, max(used, default=0) + 1, subfolder


# ---------------------------------------------------------------------------- devices
def torch_device() -> torch.device:
    mm = _module("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    mm = _module("comfy.model_management")
    if mm is not None:
        return mm.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    mm = _module("comfy.model_management")
    if mm is not None:
        return mm.intermediate_device()
    return torch.device("cpu")


def free_memory(num_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI to unload other models until ``num_bytes`` fit on ``device``."""
    mm = _module("comfy.model_management")
    if mm is not None and device.type != "cpu" and num_bytes > 0:
        mm.free_memory(num_bytes, device)


def soft_empty_cache() -> None:
    mm = _module("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    return tensor.device.type == device.type and (device.index is None
                                                  or tensor.device.index == device.index)


def bytes_to_move(module: torch.nn.Module, device: torch.device) -> int:
    """Bytes of ``module``'s parameters and buffers that are not on ``device`` yet."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if not _on(t, device))


@contextlib.contextmanager
def model_on_device(module: torch.nn.Module, device: torch.device,
                    offload_to: Optional[torch.device]) -> Iterator[torch.nn.Module]:
    """Move ``module`` to ``device`` for the block; afterwards (also after Cancel or an error)
    move it to ``offload_to`` when given, and release cached GPU memory."""
    if device.type != "cpu":
        # Only what still has to move: a module already resident (offload off) needs no room,
        # and asking for its whole size again would evict other models on every node run.
        free_memory(bytes_to_move(module, device), device)
    module.to(device)
    try:
        yield module
    finally:
        if offload_to is not None and offload_to != device:
            module.to(offload_to)
            soft_empty_cache()


# ---------------------------------------------------------------------------- model memory
class _Managed(torch.nn.Module):
    """What ComfyUI's ModelPatcher holds for one of our modules. A plain container because the
    patcher writes ``.device`` and its bookkeeping attributes onto the module it manages, and
    MMAudioModel's ``device`` is a read-only property."""

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = inner
        self.device = device


_MANAGED_TYPES: dict = {}
_PATCHER_ATTR = "_nagfoley_patcher"  # where a module keeps its ModelPatcher


def _managed_type(module: torch.nn.Module) -> type:
    # ComfyUI logs "Requested to load <class name>": name it after what it holds.
    name = f"NAGFoley{type(module).__name__}"
    if name not in _MANAGED_TYPES:
        _MANAGED_TYPES[name] = type(name, (_Managed,), {})
    return _MANAGED_TYPES[name]


def _device_of(module: torch.nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def _comfy_memory():
    """(model_management, model_patcher) when the host manages model memory, else None."""
    mm, mp = _module("comfy.model_management"), _module("comfy.model_patcher")
    if mm is None or mp is None or not hasattr(mm, "load_models_gpu"):
        return None
    return mm, mp


def _patcher(module: torch.nn.Module, mm, mp, load_device: torch.device):
    patcher = module.__dict__.get(_PATCHER_ATTR)
    if patcher is None or patcher.load_device != load_device:
        holder = _managed_type(module)(module, _device_of(module))
        patcher = mp.ModelPatcher(holder, load_device=load_device,
                                  offload_device=mm.unet_offload_device())
        module.__dict__[_PATCHER_ATTR] = patcher  # not a submodule: state_dict stays ours
    return patcher


def _low_vram(mm) -> bool:
    state = getattr(mm, "vram_state", None)
    return getattr(state, "name", "") in ("LOW_VRAM", "NO_VRAM")


def _unload(mm, patchers) -> None:
    for loaded in list(getattr(mm, "current_loaded_models", [])):
        if any(loaded.model is p for p in patchers):
            loaded.model_unload()
            mm.current_loaded_models.remove(loaded)
    soft_empty_cache()


def placement(load_device: torch.device, offload: bool) -> torch.device:
    """Where a loader puts freshly read weights. Under ComfyUI's memory management that is the
    offload device: the first node that needs them asks ComfyUI to load them."""
    if _comfy_memory() is not None:
        return offload_device()
    return offload_device() if offload else load_device


@contextlib.contextmanager
def models_loaded(modules, device: torch.device, offload: bool) -> Iterator[None]:
    """``modules`` on ``device`` for the block.

    Inside ComfyUI each module is wrapped once in a ``comfy.model_patcher.ModelPatcher`` and
    loaded with ``comfy.model_management.load_models_gpu``, so ComfyUI counts its memory, evicts
    other models to make room, unloads it on "Free model and node cache" (``POST /free``) and
    reloads it on the next run. The load is always full: the layers are plain ``torch.nn``, not
    the ``comfy.ops`` ones ComfyUI can stream, so a partial load would leave some layers on the
    CPU. ``--novram`` keeps everything on the CPU (ComfyUI loads nothing), ``--lowvram`` and the
    loader's ``offload`` give the modules back to the offload device after each node.
    Without ComfyUI the modules are moved by hand (see :func:`model_on_device`)."""
    comfy = _comfy_memory()
    if comfy is not None:
        mm, mp = comfy
        patchers = [_patcher(m, mm, mp, device) for m in modules]
        mm.load_models_gpu(patchers, force_full_load=True)
        try:
            yield
        finally:
            if offload or _low_vram(mm):
                _unload(mm, patchers)
        return
    back = offload_device() if offload else None
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(model_on_device(module, device, back))
        yield


# ---------------------------------------------------------------------------- progress / cancel
def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel."""
    mm = _module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class Progress:
    """A progress bar over ``total`` steps; each update is also a Cancel point."""

    def __init__(self, total: int):
        utils = _module("comfy.utils")
        self._bar = utils.ProgressBar(total) if utils is not None else None
        self.total = total

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        if self._bar is not None:
            self._bar.update_absolute(done, total or self.total)
        check_interrupt()


@contextlib.contextmanager
def cancel_points(*modules: torch.nn.Module) -> Iterator[None]:
    """Cancel checks before every block of ``modules`` (each item of each nn.ModuleList): the
    video encoders run CLIP over every frame and Synchformer over every segment in one call,
    which would otherwise finish seconds after the user pressed Cancel."""
    if _module("comfy.model_management") is None:
        yield
        return
    blocks = [b for m in modules for lst in m.modules() if isinstance(lst, torch.nn.ModuleList)
              for b in lst]
    handles = [b.register_forward_pre_hook(lambda *_: check_interrupt()) for b in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
