"""Loading MMAudio and the NAG ControlNet from models/mmaudio, and encoding a video once."""

from __future__ import annotations

import os
from pathlib import Path

import torch

import logging

from nag_core import defaults
from nag_core.controlnet import load_controlnet
from nag_core.errors import ConfigError, NAGFoleyError
from nag_core.smoke import is_smoke_file
from nag_core.weights import (CLIP_FILE, NETWORK_FILES, SYNCHFORMER_FILE, VAE_FILES,
                              VOCODER_FILES, ModelFiles, classify, find_vocab,
                              load_model_files)

from . import host
from .messages import HIDDEN, node_title, reported_as
from .values import CATEGORY, CONTROLNET, FEATURES, MODEL, VIDEO, FoleyModel

log = logging.getLogger("nag_foley")
PARTS = ("network", "vae", "vocoder", "synchformer", "clip")
# Every official file a loader combo may name, by its path inside models/mmaudio: where a
# missing one comes from (the messages below and the workflows' properties.models use it).
OFFICIAL_FILES = {f.relpath: f for f in [*NETWORK_FILES.values(), *VAE_FILES.values(),
                                         *VOCODER_FILES.values(), SYNCHFORMER_FILE, CLIP_FILE]}


# The official file each combo preselects when it is present (first match wins).
PREFERRED = {
    "network": [f.relpath for f in NETWORK_FILES.values()],
    "vae": [f.relpath for f in VAE_FILES.values()],
    "vocoder": [f.relpath for f in VOCODER_FILES.values()],
    "synchformer": [SYNCHFORMER_FILE.relpath],
    "clip": [CLIP_FILE.relpath],
}


def files_of_kind(kind: str) -> list[str]:
    return [f for f in host.list_model_files() if classify(f) == kind]


def combo(kind: str, tooltip: str):
    names = files_of_kind(kind)
    options = {"tooltip": tooltip}
    for preferred in PREFERRED.get(kind, []):
        if preferred in names:
            options["default"] = preferred
            break
    return (names, options)


def resolve_precision(choice: str, device: torch.device) -> torch.dtype:
    """The node's precision widget through the one rule of nag_core.defaults.resolve_dtype
    ("auto": bf16 on CUDA when supported, float32 elsewhere)."""
    return defaults.resolve_dtype(choice, device)


def missing_files_message(chosen: dict) -> str | None:
    """None when every chosen file is in the model folders, else one message that lists each
    missing one with where it goes and where it comes from."""
    present = set(host.list_model_files())
    missing = [(part, name) for part, name in chosen.items() if name not in present]
    if not missing:
        return None
    folder = host.model_folders()[0]
    lines = []
    for part, name in missing:
        official = OFFICIAL_FILES.get(name)
        source = f" ({official.size_hint}, {official.url})" if official else ""
        lines.append(f"{part} {name!r}{source}")
    return (f"{len(missing)} of the MMAudio files are not in {folder}: " + "; ".join(lines)
            + f". Put them there under these names (python -m nag_core download --models "
            f"{folder} fetches the small_16k set), then press R to refresh the lists.")


def smoke_parts(paths: dict) -> list[str]:
    """The parts whose file is still a smoke-test file (random weights: noise, never Foley)."""
    return [part for part, path in paths.items() if is_smoke_file(path)]


def files_state(paths) -> str:
    """What the loaders' IS_CHANGED returns: each file's size and modification time (or
    "missing"), so a file replaced under the same name (a damaged download fixed, smoke weights
    swapped for real ones, a vocabulary that did not belong to the CLIP) loads again on the
    next queue instead of ComfyUI's cached model; nothing is hashed on every queue."""
    parts = []
    for path in paths:
        try:
            st = os.stat(path)
            parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
        except (OSError, TypeError, ValueError):
            parts.append(f"{path}:missing")
    return ";".join(parts)


def _chosen_paths(chosen: dict) -> dict:
    return {k: Path(host.model_path(n)) for k, n in chosen.items()}


def _read_beside(paths: dict) -> tuple[Path | None, Path | None]:
    """The files a load reads besides the chosen five: a 44k vocoder's config.json and the CLIP
    vocabulary (nag_core.weights.find_vocab's rule)."""
    config = paths["vocoder"].parent / "config.json"
    vocab = find_vocab(paths["clip"], paths["network"], *host.model_folders())
    return (config if config.is_file() else None), vocab


SMOKE_NOTE = ("smoke-test models loaded (random weights: {parts}): the audio is noise. Download "
              "the real MMAudio weights (python -m nag_core download) for Foley.")


class MMAudioLoader:
    DISPLAY_NAME = "MMAudio Loader (NAG Foley)"
    DESCRIPTION = ("Loads an MMAudio model from models/mmaudio: the flow network, the VAE and "
                   "vocoder of the same mode (16k: v1-16.pth + best_netG.pt; 44k: v1-44.pth + "
                   "BigVGAN-v2), Synchformer and CLIP. Official .pth files and kijai's fp16 "
                   "safetensors conversions both load. Parts of different modes are refused "
                   "with both names.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded MMAudio (its sample rate follows the network: 16000 or "
                       "44100 Hz).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "network": combo("network", "The MMAudio flow network (mmaudio_small_16k, "
                                        "mmaudio_large_44k_v2, ...). Its mode decides the "
                                        "VAE and vocoder."),
            "vae": combo("vae", "The VAE of the network's mode: v1-16.pth for 16k, v1-44.pth for "
                                "44k."),
            "vocoder": combo("vocoder", "The vocoder of the network's mode: best_netG.pt for "
                                        "16k, nvidia/bigvgan_v2_44khz_128band_512x for 44k."),
            "synchformer": combo("synchformer", "The Synchformer visual encoder "
                                                "(synchformer_state_dict.pth)."),
            "clip": combo("clip", "The DFN5B CLIP ViT-H-14-384 weights "
                                  "(apple/DFN5B-CLIP-ViT-H-14-384/open_clip_pytorch_model.bin)."),
            "precision": (["auto", "fp32", "bf16", "fp16"], {
                "default": "auto",
                "tooltip": "Weights and compute precision. auto = bf16 on a CUDA GPU, fp32 on "
                           "the CPU."}),
            "offload": ("BOOLEAN", {
                "default": False, "label_on": "offload after each node",
                "label_off": "keep on GPU",
                "tooltip": "Move the model back to the CPU after each node that used it (saves "
                           "GPU memory, costs a transfer per node). ComfyUI also unloads it "
                           "when another model needs the room, and on Free model cache."}),
        }, "hidden": dict(HIDDEN)}

    @classmethod
    def IS_CHANGED(cls, network, vae, vocoder, synchformer, clip, **_):
        # ComfyUI passes every input, hidden ones too; the precision and offload widgets are
        # part of ComfyUI's own cache key already
        try:
            paths = _chosen_paths(dict(network=network, vae=vae, vocoder=vocoder,
                                       synchformer=synchformer, clip=clip))
            return files_state([*paths.values(), *_read_beside(paths)])
        except (NAGFoleyError, OSError, TypeError, ValueError):
            return "missing"  # the load itself then says what is missing

    @classmethod
    def VALIDATE_INPUTS(cls, network, vae, vocoder, synchformer, clip):
        # Naming the file inputs replaces ComfyUI's "Value not in list: ... not in []" for an
        # empty or incomplete models folder with a message that says which files go where.
        return missing_files_message(dict(network=network, vae=vae, vocoder=vocoder,
                                          synchformer=synchformer, clip=clip)) or True

    def load(self, network, vae, vocoder, synchformer, clip, precision="auto", offload=False,
             graph=None, node_id=None):
        chosen = dict(network=network, vae=vae, vocoder=vocoder, synchformer=synchformer,
                      clip=clip)
        with reported_as(node_title(graph, node_id, self.DISPLAY_NAME)):
            problem = missing_files_message(chosen)
            if problem:
                raise ConfigError(problem)
            device = host.torch_device()
            dtype = resolve_precision(precision, device)
            paths = _chosen_paths(chosen)
            config, vocab = _read_beside(paths)
            files = ModelFiles(network=paths["network"], vae=paths["vae"],
                               vocoder=paths["vocoder"], synchformer=paths["synchformer"],
                               clip=paths["clip"], vocoder_config=config, bpe_vocab=vocab)
            model = load_model_files(files, device=host.placement(device, bool(offload)),
                                     dtype=dtype)
        smoke = smoke_parts(paths)
        foley = FoleyModel(model, device, bool(offload), {k: str(v) for k, v in paths.items()},
                           smoke=bool(smoke))
        notes = [f"{model.variant}, {model.sample_rate} Hz, {str(dtype).replace('torch.', '')}"]
        if smoke:
            note = SMOKE_NOTE.format(parts=", ".join(smoke))
            log.warning("NAG Foley: %s (%s)", note, paths["network"].parent)
            notes.insert(0, note)
        return {"ui": {"text": notes}, "result": (foley,)}


class NAGControlNetLoader:
    DISPLAY_NAME = "NAG ControlNet Loader (NAG Foley)"
    DESCRIPTION = ("Optional. Loads a trained NAG ControlNet (the audio-conditioned flow "
                   "estimator of Negative Audio Guidance) for the given MMAudio; connect it to a "
                   "sampler's controlnet input and 'auto' runs NAG. No ControlNet is released "
                   "with MMAudio: the samplers work without one. A ControlNet trained for "
                   "another MMAudio variant is refused with both names.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (CONTROLNET,)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The ControlNet, bound to this model; connect it to NAGSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The MMAudio the ControlNet was trained for."}),
            "controlnet": combo("controlnet", "A NAG ControlNet .safetensors file in "
                                              "models/mmaudio."),
        }, "hidden": dict(HIDDEN)}

    @classmethod
    def IS_CHANGED(cls, controlnet, **_):
        try:
            return files_state([host.model_path(controlnet)])
        except (NAGFoleyError, OSError, TypeError, ValueError):
            return "missing"

    @classmethod
    def VALIDATE_INPUTS(cls, controlnet):
        if controlnet not in files_of_kind("controlnet"):
            return (f"the ControlNet {controlnet!r} is not in {host.model_folders()[0]}: put a "
                    "trained NAG ControlNet there (python -m nag_core train makes one), or "
                    "delete this node; the samplers run without a ControlNet")
        return True

    def load(self, model: FoleyModel, controlnet, graph=None, node_id=None):
        with reported_as(node_title(graph, node_id, self.DISPLAY_NAME)):
            net = model.model
            cn = load_controlnet(host.model_path(controlnet), net.network,
                                 base_variant=net.variant)
        return (cn,)


class EncodeVideo:
    DISPLAY_NAME = "Encode Video (NAG Foley)"
    DESCRIPTION = ("Computes the CLIP and Synchformer features of a clip once. Connect its output "
                   "to every sampler of a chain: ComfyUI then encodes the video a single time.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (FEATURES,)
    RETURN_NAMES = ("features",)
    OUTPUT_TOOLTIPS = ("Video features for the samplers (they also fix the duration).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The MMAudio whose CLIP and Synchformer encode the "
                                         "clip."}),
            "video": (VIDEO, {"tooltip": "The clip from Load Video or Video From Frames."}),
        }, "hidden": dict(HIDDEN)}

    def encode(self, model: FoleyModel, video, graph=None, node_id=None):
        mm = model.model
        with reported_as(node_title(graph, node_id, self.DISPLAY_NAME)), model.active(), \
                host.cancel_points(mm.clip, mm.synchformer):
            features = mm.encode_video(video)
        keep = host.intermediate_device()
        features.clip_f = features.clip_f.to(keep)
        features.sync_f = features.sync_f.to(keep)
        if features.tail_sync_f is not None:  # the last window of a long clip
            features.tail_sync_f = features.tail_sync_f.to(keep)
        return (features,)
