"""Checks every MMAudio component loader runs on a state dict (read with
nag_core.checkpoint.read_state_dict): what kind of file it looks like, whether it holds the keys a
component needs, strict key/shape agreement with the model, and finite values. Each failure is a
WeightsError that names the file and says what to do."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import Tensor

from ..checkpoint import source_name
from ..errors import WeightsError


def _has_prefix(keys: Iterable[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def describe(keys: Iterable[str]) -> str:
    """A guess at which MMAudio component file a state dict is, from its key names, for 'wrong
    file' messages (a noun phrase: "an MMAudio VAE (v1-16.pth / v1-44.pth)")."""
    keys = [str(k) for k in keys]
    ks = set(keys)
    if "latent_mean" in ks or _has_prefix(ks, "audio_input_proj.", "joint_blocks.",
                                          "fused_blocks."):
        return "an MMAudio flow network (mmaudio_*.pth)"
    if "data_mean" in ks or "data_std" in ks or (_has_prefix(ks, "encoder.")
                                                 and _has_prefix(ks, "decoder.")):
        return "an MMAudio VAE (v1-16.pth / v1-44.pth)"
    if "generator" in ks or _has_prefix(ks, "conv_pre.", "conv_post.", "ups.", "resblocks."):
        return "a BigVGAN vocoder (best_netG.pt / bigvgan_generator.pt)"
    if _has_prefix(ks, "vfeat_extractor", "patch_embed_3d.", "spatial_attn_agg."):
        return "a Synchformer file (synchformer_state_dict.pth)"
    if "token_embedding.weight" in ks or "logit_scale" in ks or \
            _has_prefix(ks, "visual.", "text_projection", "transformer.resblocks."):
        return "a CLIP model (open_clip_pytorch_model.bin)"
    return f"an unknown model (first keys: {sorted(keys)[:5]})"


def require_keys(sd: Mapping[str, Tensor], keys: Iterable[str], *, what: str, source,
                 expected: str) -> None:
    """The keys a loader reads its configuration from must all be there; otherwise the file is
    of another kind: say which it seems to be and which file was expected."""
    missing = [k for k in keys if k not in sd]
    if missing:
        raise WeightsError(f"{source_name(source)} is not {what}: it lacks "
                           f"{', '.join(missing[:4])}, and looks like {describe(sd)}; "
                           f"expected {expected}")


def check_keys(sd: Mapping[str, Tensor], expected: Mapping, *, what: str, source) -> None:
    """Strict key-set and shape comparison, like load_state_dict(strict=True) but with a message
    that names the file, gives a few missing/unexpected keys and the first wrong shapes, and
    says what the file seems to be. ``expected``: name -> shape (or tensor, e.g. a meta-device
    model's state_dict())."""
    want = {k: tuple(getattr(v, "shape", v)) for k, v in expected.items()}
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    wrong = [f"{k}: file {tuple(sd[k].shape)}, expected {shape}" for k, shape in want.items()
             if k in sd and tuple(sd[k].shape) != shape]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:4])})")
    if wrong:
        parts.append(f"{len(wrong)} tensors with unexpected shapes (e.g. {'; '.join(wrong[:3])})")
    if missing or unexpected:
        advice = (f"It looks like {describe(sd)}. Choose the right file for this slot (or "
                  "download it again if it is damaged).")
    else:
        advice = "The file is of a different model size or variant, or damaged."
    raise WeightsError(f"{source_name(source)} does not match {what}: {'; '.join(parts)}. "
                       f"{advice}")


def check_finite(sd: Mapping[str, Tensor], *, source) -> None:
    for k, v in sd.items():
        if v.is_floating_point() and v.device.type != "meta" and not bool(torch.isfinite(v).all()):
            raise WeightsError(f"{source_name(source)} is damaged: tensor {k} holds NaN or "
                               "infinite values. Download the file again.")
