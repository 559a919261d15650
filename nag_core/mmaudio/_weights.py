"""Shared checks for the audio loaders: where a state dict comes from, what kind of file it looks
like, and key/shape/value mismatches turned into WeightsError messages that say what to do."""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import torch
from torch import Tensor

from ..checkpoint import read_checkpoint
from ..errors import WeightsError


def source_name(source) -> str:
    return "the given state dict" if isinstance(source, Mapping) else str(source)


def read_flat(source, *, unwrap: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """A flat {name: Tensor} from a path or a mapping, descending into wrapper keys (``unwrap``)."""
    if isinstance(source, (str, os.PathLike)):
        obj, _ = read_checkpoint(source)
    elif isinstance(source, Mapping):
        obj = source
    else:
        raise TypeError(f"expected a file path or a state dict, got {type(source).__name__}")
    for key in unwrap:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or \
            not all(isinstance(v, Tensor) for v in obj.values()):
        what = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping)
                else type(obj).__name__)
        raise WeightsError(f"{source_name(source)} does not hold a state dict (a flat dict of "
                           f"tensors); found {what}")
    return dict(obj)


def describe(keys: Iterable[str]) -> str:
    """A guess at what a state dict is, for 'wrong file' messages."""
    keys = list(keys)
    ks = set(keys)
    if "latent_mean" in ks or any(k.startswith(("joint_blocks.", "fused_blocks.")) for k in ks):
        return "an MMAudio flow network (mmaudio_*.pth)"
    if any(k.startswith("conv_pre.") for k in ks):
        return "a BigVGAN vocoder"
    if any(k.startswith(("decoder.", "encoder.")) for k in ks) and "data_mean" in ks:
        return "an MMAudio VAE (v1-16.pth / v1-44.pth)"
    if any(k.startswith("vfeat_extractor") for k in ks):
        return "a Synchformer checkpoint"
    if any(k.startswith(("visual.", "text_projection", "transformer.resblocks")) for k in ks):
        return "a CLIP model"
    return f"an unknown model (first keys: {sorted(keys)[:5]})"


def check_keys(sd: Mapping[str, Tensor], expected: Mapping[str, torch.Size], *, what: str,
               source) -> None:
    """Strict key-set and shape comparison, like load_state_dict(strict=True) but with a message
    that names the file and what it seems to be."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:4]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:4]})")
        raise WeightsError(f"{source_name(source)} does not match {what}: " + ", ".join(parts) +
                           f". It looks like {describe(sd)}. Choose the right file for this "
                           "slot (or download it again if it is damaged).")
    bad = [(k, tuple(sd[k].shape), tuple(shape)) for k, shape in expected.items()
           if tuple(sd[k].shape) != tuple(shape)]
    if bad:
        k, got, want = bad[0]
        raise WeightsError(f"{source_name(source)} does not match {what}: {len(bad)} tensors have "
                           f"the wrong shape (e.g. {k}: {got}, expected {want}). The file is of a "
                           "different model size or variant.")


def check_finite(sd: Mapping[str, Tensor], *, source) -> None:
    for k, v in sd.items():
        if v.is_floating_point() and v.device.type != "meta" and not bool(torch.isfinite(v).all()):
            raise WeightsError(f"{source_name(source)} is damaged: tensor {k} holds NaN or "
                               "infinite values. Download the file again.")
