"""A fingerprint of a network's exact weights, cheap to take and to check: which base a
ControlNet was trained on.

Two networks of the same shape (a released variant and a fine-tune of it, or two trainings of
a tiny test network) differ only in their values, so the fingerprint samples values: from
every floating-point tensor of the state dict, in name order, ``SAMPLES_PER_TENSOR`` elements
at fixed, evenly spaced positions, plus a digest of the names and shapes. It is compared with a
tolerance that the same weights loaded in bfloat16 or float16 meet and other weights do not
(relative 1e-2: bfloat16 rounds to 2**-8; unrelated weights differ by their own size), so the
check holds whatever precision the base was loaded in. Taking it reads a few elements per
tensor (one small device-to-host copy), never the whole network.

Text form: ``v1:<16 hex digits of the layout digest>:<base64 of the float32 samples>``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Optional

import torch
from torch import nn

VERSION = "v1"
SAMPLES_PER_TENSOR = 4
RTOL, ATOL = 1e-2, 1e-5


def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in sorted(module.state_dict().items()) if v.is_floating_point()]


def _layout_digest(tensors) -> str:
    h = hashlib.sha256()
    for k, v in tensors:
        h.update(f"{k}:{tuple(v.shape)};".encode())
    return h.hexdigest()[:16]


def _samples(tensors) -> torch.Tensor:
    picked = []
    for _, v in tensors:
        flat = v.detach().reshape(-1)
        n = flat.numel()
        if n == 0:
            continue
        idx = torch.tensor([(2 * i + 1) * n // (2 * SAMPLES_PER_TENSOR)
                            for i in range(SAMPLES_PER_TENSOR)], device=flat.device)
        picked.append(flat[idx.clamp(max=n - 1)].float())
    if not picked:
        return torch.zeros(0)
    return torch.cat(picked).cpu()


def fingerprint(module: nn.Module) -> str:
    """The fingerprint text of ``module``'s current weights ("" for a module without values
    yet, on the meta device: there is nothing to recognise it by)."""
    tensors = _tensors(module)
    if any(v.device.type == "meta" for _, v in tensors):
        return ""
    samples = _samples(tensors).numpy().astype("<f4").tobytes()
    return f"{VERSION}:{_layout_digest(tensors)}:{base64.b64encode(samples).decode('ascii')}"


def mismatch(recorded: str, module: nn.Module) -> Optional[str]:
    """Why ``module`` is not the network ``recorded`` was taken from (None: it is). The text
    completes "the base weights differ: ..."."""
    try:
        version, layout, data = recorded.split(":", 2)
        stored = torch.frombuffer(bytearray(base64.b64decode(data, validate=True)),
                                  dtype=torch.float32)
    except (ValueError, TypeError):
        return "the recorded fingerprint is unreadable (a damaged file?)"
    if version != VERSION:
        return f"the fingerprint is of version {version!r}; this pack reads {VERSION}"
    tensors = _tensors(module)
    if layout != _layout_digest(tensors):
        return "the networks have different tensor names or shapes"
    now = _samples(tensors)
    if now.shape != stored.shape:
        return "the networks have different tensor names or shapes"
    close = torch.isclose(now, stored, rtol=RTOL, atol=ATOL)
    if bool(close.all()):
        return None
    return (f"{int((~close).sum())} of {close.numel()} sampled weights differ (e.g. "
            f"{now[~close][0].item():.6g} here, {stored[~close][0].item():.6g} in the "
            "fingerprint)")
