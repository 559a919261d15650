"""Where each MMAudio weight file comes from, where it goes, and how a folder is searched for it.

One folder holds everything (``models/mmaudio`` inside ComfyUI, the folder kijai's pack uses, so
existing downloads work). Both the official file names and kijai's fp16 safetensors names are
recognised. Loading the files into a model is :func:`load_model_files`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .defaults import mode_of_variant
from .errors import WeightsError, not_a_file

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".sft")

HF = "https://huggingface.co"
GH = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1"


@dataclass(frozen=True)
class RemoteFile:
    """A file of the official release: where it is downloaded from and where it goes."""

    relpath: str  # inside the models folder
    url: str
    md5: Optional[str] = None  # None where the publisher gives none
    size_hint: str = ""


NETWORK_FILES = {
    "small_16k": RemoteFile("mmaudio_small_16k.pth",
                            f"{HF}/hkchengrex/MMAudio/resolve/main/weights/mmaudio_small_16k.pth",
                            "af93cde404179f58e3919ac085b8033b", "601 MB"),
    "small_44k": RemoteFile("mmaudio_small_44k.pth",
                            f"{HF}/hkchengrex/MMAudio/resolve/main/weights/mmaudio_small_44k.pth",
                            "babd74c884783d13701ea2820a5f5b6d", "601 MB"),
    "medium_44k": RemoteFile("mmaudio_medium_44k.pth",
                             f"{HF}/hkchengrex/MMAudio/resolve/main/weights/mmaudio_medium_44k.pth",
                             "5a56b6665e45a1e65ada534defa903d0", "2.4 GB"),
    "large_44k": RemoteFile("mmaudio_large_44k.pth",
                            f"{HF}/hkchengrex/MMAudio/resolve/main/weights/mmaudio_large_44k.pth",
                            "fed96c325a6785b85ce75ae1aafd2673", "3.9 GB"),
    "large_44k_v2": RemoteFile("mmaudio_large_44k_v2.pth",
                               f"{HF}/hkchengrex/MMAudio/resolve/main/weights/mmaudio_large_44k_v2.pth",
                               "01ad4464f049b2d7efdaa4c1a59b8dfe", "3.9 GB"),
}
VAE_FILES = {
    "16k": RemoteFile("v1-16.pth", f"{GH}/v1-16.pth", "69f56803f59a549a1a507c93859fd4d7", "655 MB"),
    "44k": RemoteFile("v1-44.pth", f"{GH}/v1-44.pth", "fab020275fa44c6589820ce025191600", "1.2 GB"),
}
BIGVGAN_44K_DIR = "nvidia/bigvgan_v2_44khz_128band_512x"  # kijai's pack uses this folder too
VOCODER_FILES = {
    "16k": RemoteFile("best_netG.pt", f"{GH}/best_netG.pt", "eeaf372a38a9c31c362120aba2dde292",
                      "429 MB"),
    "44k": RemoteFile(f"{BIGVGAN_44K_DIR}/bigvgan_generator.pt",
                      f"{HF}/nvidia/bigvgan_v2_44khz_128band_512x/resolve/main/bigvgan_generator.pt",
                      None, "489 MB"),
}
VOCODER_44K_CONFIG = RemoteFile(
    f"{BIGVGAN_44K_DIR}/config.json",
    f"{HF}/nvidia/bigvgan_v2_44khz_128band_512x/resolve/main/config.json", None, "2 kB")
SYNCHFORMER_FILE = RemoteFile("synchformer_state_dict.pth", f"{GH}/synchformer_state_dict.pth",
                              "5b2f5594b0730f70e41e549b7c94390c", "950 MB")
CLIP_FILE = RemoteFile("apple/DFN5B-CLIP-ViT-H-14-384/open_clip_pytorch_model.bin",
                       f"{HF}/apple/DFN5B-CLIP-ViT-H-14-384/resolve/main/open_clip_pytorch_model.bin",
                       None, "3.9 GB")

# File-name patterns per kind (lower-cased relative paths). Official names first, then kijai's
# fp16 safetensors (mmaudio_large_44k_v2_fp16.safetensors, mmaudio_vae_44k_fp16.safetensors,
# mmaudio_synchformer_fp16.safetensors, apple_DFN5B-CLIP-ViT-H-14-384_fp16.safetensors).
_KIND_PATTERNS = {
    "controlnet": re.compile(r"(controlnet|nag[_-]?cn|nag_foley)"),
    "synchformer": re.compile(r"synchformer"),
    "clip": re.compile(r"(dfn5b|clip|open_clip_pytorch_model)"),
    "vocoder": re.compile(r"(best_netg|bigvgan|vocoder)"),
    "vae": re.compile(r"(v1-16|v1-44|(^|[/_-])vae)"),
    "network": re.compile(r"mmaudio_(small|medium|large)_(16k|44k)"),
}
KINDS = tuple(_KIND_PATTERNS)


def classify(relpath: str) -> Optional[str]:
    """The kind of a weight file from its name (None if it does not look like one of ours)."""
    name = relpath.replace(os.sep, "/").lower()
    if not name.endswith(WEIGHT_SUFFIXES):
        return None
    for kind, pattern in _KIND_PATTERNS.items():  # ordered: most specific first
        if pattern.search(name):
            return kind
    return None


def list_weight_files(folder: str | os.PathLike, kind: Optional[str] = None) -> list[str]:
    """Relative paths of the weight files under ``folder`` (recursive), optionally of one kind."""
    root = Path(folder)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".git" not in p.parts:
            rel = p.relative_to(root).as_posix()
            k = classify(rel)
            if k is not None and (kind is None or k == kind):
                out.append(rel)
    return out


def network_variant_from_name(relpath: str) -> Optional[str]:
    m = re.search(r"mmaudio_(small_16k|small_44k|medium_44k|large_44k_v2|large_44k)",
                  relpath.lower())
    return m.group(1) if m else None


@dataclass
class ModelFiles:
    """The files of one complete model. ``vocoder_config`` only for BigVGAN-v2 folders that
    carry a config.json; ``bpe_vocab`` is optional (see nag_core.mmaudio.tokenizer)."""

    network: Path
    vae: Path
    vocoder: Path
    synchformer: Path
    clip: Path
    vocoder_config: Optional[Path] = None
    bpe_vocab: Optional[Path] = None
    variant: str = ""
    extra: dict = field(default_factory=dict)


def required_files(variant: str) -> list[RemoteFile]:
    """Every file a variant needs, in download order (small ones first)."""
    if variant not in NETWORK_FILES:
        raise WeightsError(f"unknown variant {variant!r}; choose one of {', '.join(NETWORK_FILES)}")
    mode = mode_of_variant(variant)
    files = [NETWORK_FILES[variant], VAE_FILES[mode], VOCODER_FILES[mode]]
    if mode == "44k":
        files.append(VOCODER_44K_CONFIG)
    return files + [SYNCHFORMER_FILE, CLIP_FILE]


def _first_existing(root: Path, candidates: list[str]) -> Optional[Path]:
    for rel in candidates:
        p = root / rel
        if p.is_file():
            return p
    return None


def _mode_of_name(relpath: str) -> Optional[str]:
    """'16k' / '44k' when a file name says which (v1-16.pth, mmaudio_vae_44k_fp16.safetensors,
    best_netG.pt is the 16k vocoder, the nvidia bigvgan_v2_44khz folder is 44k), else None."""
    name = relpath.lower()
    if "44" in name:
        return "44k"
    if "16" in name or "best_netg" in name:
        return "16k"
    return None


def _alternatives(root: Path, kind: str, mode: str, variant: str) -> list[str]:
    """Other names the same weights go by in this folder (kijai's fp16 conversions, ...)."""
    found = list_weight_files(root, kind)
    if kind == "network":
        return [f for f in found if network_variant_from_name(f) == variant]
    if kind in ("vae", "vocoder"):
        return [f for f in found if _mode_of_name(f) == mode]
    return found


def _beside(root: Path, folder: Path, official: str, candidates: list[str]) -> list[str]:
    """The candidates inside ``folder`` (the chosen network's folder, when it is a sub-folder of
    ``root`` such as models/mmaudio/world/), the official name there first: a model set kept in
    a sub-folder is taken whole, not mixed with the parts at the top of the folder."""
    try:
        prefix = folder.relative_to(root).as_posix()
    except ValueError:
        return []
    if prefix in ("", "."):
        return []
    inside = [c for c in candidates if c.startswith(prefix + "/")]
    return [f"{prefix}/{official}"] + inside


def missing_files(models_dir: str | os.PathLike, variant: str) -> list[RemoteFile]:
    """The official files of ``variant`` that ``models_dir`` lacks, in download order. A file
    counts as present under any name :func:`find_model_files` accepts (kijai's fp16 files, ...)."""
    root = Path(models_dir)
    required = required_files(variant)  # refuses an unknown variant
    mode = mode_of_variant(variant)
    out = []
    for remote in required:
        kind = classify(remote.relpath)
        if kind is None:  # a config file: only the official place counts
            present = (root / remote.relpath).is_file()
        else:
            present = _first_existing(
                root, [remote.relpath] + _alternatives(root, kind, mode, variant)) is not None
        if not present:
            out.append(remote)
    return out


def find_model_files(models_dir: str | os.PathLike, variant: str) -> ModelFiles:
    """Locate the files of ``variant`` in ``models_dir``. Missing files raise a WeightsError that
    lists exactly which files are missing, where to put them and where to get them."""
    root = Path(models_dir)
    if variant not in NETWORK_FILES:
        raise WeightsError(f"unknown variant {variant!r}; choose one of {', '.join(NETWORK_FILES)}")
    mode = mode_of_variant(variant)
    wanted = {
        "network": NETWORK_FILES[variant],
        "vae": VAE_FILES[mode],
        "vocoder": VOCODER_FILES[mode],
        "synchformer": SYNCHFORMER_FILE,
        "clip": CLIP_FILE,
    }
    found: dict[str, Path] = {}
    missing: list[RemoteFile] = []
    for kind, remote in wanted.items():  # the network first: the others are looked for
        candidates = [remote.relpath] + _alternatives(root, kind, mode, variant)  # beside it
        if kind != "network" and "network" in found:
            candidates = _beside(root, found["network"].parent, remote.relpath, candidates) \
                + candidates
        path = _first_existing(root, candidates)
        if path is None:
            missing.append(remote)
        else:
            found[kind] = path
    if missing:
        lines = "\n".join(f"  - {missing_line(root / m.relpath, m)}" for m in missing)
        raise WeightsError(f"the {variant} model is incomplete in {root}:\n{lines}\n"
                           "Download them there (or let `python -m nag_core download --variant "
                           f"{variant}` do it), or point --models at the folder that has them.")
    config = None
    if mode == "44k":
        cand = found["vocoder"].parent / "config.json"
        config = cand if cand.is_file() else None
    vocab = find_vocab(found["clip"], found["network"], root)
    return ModelFiles(network=found["network"], vae=found["vae"], vocoder=found["vocoder"],
                      synchformer=found["synchformer"], clip=found["clip"],
                      vocoder_config=config, bpe_vocab=vocab, variant=variant)


def missing_line(path: Path, remote: RemoteFile) -> str:
    """How a file that is not there is listed: where it goes and where it comes from, or, when a
    folder sits in its place, that (the folder is the user's: nothing moves it for them)."""
    size = f"{remote.size_hint}; " if remote.size_hint else ""
    source = f"({size}from {remote.url})"
    if path.is_dir():
        return f"{not_a_file(path)}, then put the file there {source}"
    return f"{path}  missing {source}"


def find_vocab(clip: Path, network: Optional[Path] = None, *roots) -> Optional[Path]:
    """The CLIP BPE vocabulary of a model set: beside the chosen CLIP first (the vocabulary
    belongs to the CLIP's text tower), then beside the network, then in each of ``roots`` (the
    models folder). None when none of them has it (load_tokenizer then looks further and says
    what is missing)."""
    from .mmaudio.tokenizer import VOCAB_NAMES
    folders = [Path(clip).parent] + ([Path(network).parent] if network else []) \
        + [Path(r) for r in roots]
    for folder in dict.fromkeys(folders):
        for name in VOCAB_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def load_model_files(files: ModelFiles, *, device="cpu", dtype=None):
    """Build a :class:`nag_core.model.MMAudioModel` from located files. Each part is checked
    against the network's mode, so a 44k VAE beside a 16k network is refused with both names.
    ``model.variant`` is the variant DETECTED from the network's weights ("custom" for a size
    no release has); a file whose weights are another released variant than ``files.variant``
    names is refused. Smoke-test files (nag_core.smoke) load with a loud warning and
    ``model.smoke_test_weights`` True."""
    import torch

    from .mmaudio.bigvgan import load_vocoder
    from .mmaudio.clip import load_clip
    from .mmaudio.network_loading import load_network
    from .mmaudio.synchformer import load_synchformer
    from .mmaudio.tokenizer import load_tokenizer
    from .mmaudio.vae import load_vae
    from .model import MMAudioModel
    from .smoke import is_smoke_file

    network, variant = load_network(files.network)
    if files.variant in NETWORK_FILES and variant in NETWORK_FILES and variant != files.variant:
        raise WeightsError(f"{files.network} holds the weights of MMAudio {variant}, not of the "
                           f"requested {files.variant}: select variant {variant} (and name the "
                           f"file {NETWORK_FILES[variant].relpath}), or put the real "
                           f"{NETWORK_FILES[files.variant].relpath} there")
    mode = network.config.mode
    vae = load_vae(files.vae, expect_mode=mode)
    vocoder = load_vocoder(files.vocoder, config=files.vocoder_config, expect_mode=mode)
    clip = load_clip(files.clip)
    synchformer = load_synchformer(files.synchformer)
    vocab = files.bpe_vocab or find_vocab(files.clip, files.network)
    tokenizer = load_tokenizer(vocab, weights_path=files.clip.parent)
    sources = {k: str(getattr(files, k)) for k in ("network", "vae", "vocoder", "clip",
                                                    "synchformer")}
    from .windows import trained_duration
    model = MMAudioModel(network, vae, vocoder, clip, synchformer, tokenizer, variant=variant,
                         trained_duration=trained_duration(files.network.parent),
                         sources=sources)
    smoke = [Path(p).name for p in sources.values() if is_smoke_file(p)]
    model.smoke_test_weights = bool(smoke)
    if smoke:
        log.warning("WARNING: SMOKE-TEST WEIGHTS (%s): tiny random weights written by "
                    "`python -m nag_core smoke-models`; what they generate is NOISE. Run "
                    "`python -m nag_core download` to replace them with the real weights.",
                    ", ".join(smoke))
    model.to(device=torch.device(device), dtype=dtype or torch.float32)
    return model
