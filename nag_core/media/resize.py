"""Bicubic antialiased resize of uint8 frames, bit-compatible with torchvision v2 on uint8.

torchvision v2 hands uint8 frames straight to torch's uint8 kernel (PIL-SIMD lineage): weights are
the PIL-style cubic with a = -0.5 (torch's antialiased cubic filter; the non-antialiased path uses
-0.75, which does NOT match the goldens), its support widened by the scale when shrinking,
normalised per output pixel, then quantised to int16 with a per-axis precision. The image is filtered horizontally
first; that pass is rounded and saturated to uint8 before the vertical pass. Reproducing these
integer steps (rather than filtering in float) is what makes the output match exactly: a float
filter differs by up to 4 LSB on the golden frames.

On the CPU (where frames are decoded) ``resize_uint8`` calls that kernel itself
(``F.interpolate(..., mode="bicubic", antialias=True)`` on uint8): equal to the goldens and to
the implementation below on every size tested (tests/test_media.py), with or without AVX2, and
6-14x faster (bench/resize.py). Elsewhere (uint8 antialiased bicubic is a CPU-only kernel in
torch) the same integer pipeline runs as small dense matmuls over blocks of output pixels, on
integer-valued floats. float32 holds every partial sum exactly while sum|w_int| * 255 < 2**24;
past that (strong downscales) the pass runs in float64, which is exact for any size this code
meets.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

_A = -0.5  # antialias=True cubic in torch (PIL's value); checked exact against the goldens
_SPAN = 128  # input pixels a matmul block aims to read: blocks stay near the filter band when
# shrinking (little wasted work) and become one big matmul when enlarging (few calls)
_MAX_PREC = 22
_CHUNK_PIXELS = 8 * 1024 * 1024  # input pixels (planes x H x W) filtered at a time


def _cubic(x: float) -> float:
    x = abs(x)
    if x < 1.0:
        return ((_A + 2.0) * x - (_A + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * _A
    return 0.0


@lru_cache(maxsize=64)
def _axis_weights(in_size: int, out_size: int) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...], int]:
    """Per output pixel: first input tap, int16 weights; plus the fixed-point precision (bits)."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    starts, float_rows = [], []
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        w = [_cubic((j + lo - center + 0.5) * invscale) for j in range(hi - lo)]
        total = sum(w)
        if total != 0.0:
            w = [v / total for v in w]
        starts.append(lo)
        float_rows.append(w)
    w_max = max(max(r) for r in float_rows if r)
    prec = 0
    while prec < _MAX_PREC and int(0.5 + w_max * (1 << (prec + 1))) < (1 << 15):
        prec += 1
    one = 1 << prec
    # int() truncates toward zero: +-0.5 first gives round-half-away-from-zero, as torch does
    int_rows = tuple(tuple(int(v * one - 0.5) if v < 0 else int(v * one + 0.5) for v in r)
                     for r in float_rows)
    return tuple(starts), int_rows, prec


@lru_cache(maxsize=64)
def _axis_plan(in_size: int, out_size: int, first: int, count: int):
    """Dense weight blocks for output pixels [first, first+count): list of (out0, out1, in0, in1, W)
    with W (in1-in0, out1-out0) integer-valued, and the precision. Cached per geometry, so a clip
    of 200 frames computes its weights once."""
    starts, rows, prec = _axis_weights(in_size, out_size)
    blocks = []
    bound = 0
    step = max(16, int(_SPAN * out_size / in_size))
    for o0 in range(first, first + count, step):
        o1 = min(o0 + step, first + count)
        i0 = min(starts[o] for o in range(o0, o1))
        i1 = max(starts[o] + len(rows[o]) for o in range(o0, o1))
        w = torch.zeros(i1 - i0, o1 - o0, dtype=torch.float64)
        for o in range(o0, o1):
            r = rows[o]
            w[starts[o] - i0: starts[o] - i0 + len(r), o - o0] = torch.tensor(r, dtype=torch.float64)
            bound = max(bound, sum(abs(v) for v in r) * 255 + (1 << prec))
        blocks.append((o0 - first, o1 - first, i0, i1, w))
    dtype = torch.float32 if bound < 2 ** 24 else torch.float64
    return [(a, b, c, d, w.to(dtype)) for a, b, c, d, w in blocks], prec, dtype


def _requantise_(acc: Tensor, prec: int) -> Tensor:
    """In place: (sum + 2**(p-1)) >> p, saturated to 0..255, the rounding of torch's uint8 kernel.
    Scaling by a power of two is exact in float, so floor() is the arithmetic shift."""
    half = float(1 << (prec - 1)) if prec > 0 else 0.0
    return acc.add_(half).mul_(1.0 / (1 << prec)).floor_().clamp_(0.0, 255.0)


def _filter_cols(x: Tensor, in_size: int, out_size: int, first: int, count: int) -> Tensor:
    """Horizontal pass over the last axis of uint8 x (N, H, W) -> float (N, H, count) holding
    uint8 values. Each block converts only the input columns it reads."""
    blocks, prec, dtype = _axis_plan(in_size, out_size, first, count)
    out = torch.empty(*x.shape[:-1], count, dtype=dtype, device=x.device)
    for o0, o1, i0, i1, w in blocks:
        torch.matmul(x[..., i0:i1].to(dtype), w.to(x.device), out=out[..., o0:o1])
    return _requantise_(out, prec)


def _filter_rows(x: Tensor, in_size: int, out_size: int, first: int, count: int) -> Tensor:
    """Vertical pass over axis -2 of x (N, H, W) (float holding uint8 values) -> (N, count, W)."""
    blocks, prec, dtype = _axis_plan(in_size, out_size, first, count)
    x = x.to(dtype)
    out = torch.empty(x.shape[0], count, x.shape[2], dtype=dtype, device=x.device)
    for o0, o1, i0, i1, w in blocks:
        torch.matmul(w.to(x.device).t(), x[:, i0:i1, :], out=out[:, o0:o1, :])
    return _requantise_(out, prec)


def resize_uint8(frames: Tensor, height: int, width: int,
                 crop: tuple[int, int, int, int] | None = None) -> Tensor:
    """Bicubic antialiased resize of uint8 (..., H, W) frames to (height, width), uint8 out.

    ``crop = (top, left, crop_h, crop_w)`` returns only that window of the resized image (same
    values as resizing then cropping).
    """
    if frames.dtype != torch.uint8:
        raise TypeError(f"resize_uint8 expects uint8 frames, got {frames.dtype}")
    top, left, ch, cw = crop if crop is not None else (0, 0, height, width)
    if not (0 <= top and top + ch <= height and 0 <= left and left + cw <= width):
        raise ValueError(f"crop {crop} outside the {height}x{width} resized image")
    if frames.device.type == "cpu" and frames.numel():
        return _resize_torch(frames, height, width, (top, left, ch, cw))
    return resize_uint8_matmul(frames, height, width, crop)


def _resize_torch(frames: Tensor, height: int, width: int,
                  crop: tuple[int, int, int, int]) -> Tensor:
    """torch's own uint8 kernel over (N, C, H, W) views, in chunks of bounded size."""
    top, left, ch, cw = crop
    in_h, in_w = frames.shape[-2], frames.shape[-1]
    lead = frames.shape[:-3] if frames.dim() >= 3 else ()
    planes = frames.reshape(-1, frames.shape[-3] if frames.dim() >= 3 else 1, in_h, in_w)
    out = torch.empty(planes.shape[0], planes.shape[1], ch, cw, dtype=torch.uint8)
    step = max(1, _CHUNK_PIXELS // max(1, planes.shape[1] * in_h * in_w))
    for p0 in range(0, planes.shape[0], step):
        x = planes[p0:p0 + step]
        if (in_h, in_w) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True)
        out[p0:p0 + step] = x[..., top:top + ch, left:left + cw]
    return out.reshape(*lead, *frames.shape[-3:-2], ch, cw) if frames.dim() >= 3 else out[0, 0]


def resize_uint8_matmul(frames: Tensor, height: int, width: int,
                        crop: tuple[int, int, int, int] | None = None) -> Tensor:
    """The same resize as :func:`resize_uint8` on any device, by integer-exact matmuls; with a
    ``crop`` it computes only the pixels inside the window."""
    if frames.dtype != torch.uint8:
        raise TypeError(f"resize_uint8 expects uint8 frames, got {frames.dtype}")
    in_h, in_w = frames.shape[-2], frames.shape[-1]
    top, left, ch, cw = crop if crop is not None else (0, 0, height, width)
    lead = frames.shape[:-2]
    planes = frames.reshape(-1, in_h, in_w)
    out = torch.empty(planes.shape[0], ch, cw, dtype=torch.uint8, device=frames.device)
    step = max(1, _CHUNK_PIXELS // max(1, in_h * in_w))  # bounded temporaries for big frames
    for p0 in range(0, planes.shape[0], step):
        x = planes[p0:p0 + step]
        # Horizontal first, rounded to uint8, then vertical: the order of torch's uint8 kernel.
        if in_w != width:
            x = _filter_cols(x, in_w, width, left, cw)
        else:
            x = x[..., left:left + cw]
        if in_h != height:
            x = _filter_rows(x, in_h, height, top, ch)
        else:
            x = x[:, top:top + ch, :]
        out[p0:p0 + step] = x.to(torch.uint8)
    return out.reshape(*lead, ch, cw)


# --- the two MMAudio frame transforms (geometry only; float conversion is done model-side) ------

CLIP_SIZE = 384
SYNC_SIZE = 224


def clip_resize(frames: Tensor) -> Tensor:
    """(T,3,H,W) uint8 -> (T,3,384,384) uint8: squash, no aspect preservation (official)."""
    return resize_uint8(frames, CLIP_SIZE, CLIP_SIZE)


def sync_geometry(height: int, width: int) -> tuple[int, int, int, int]:
    """Resized size and centre-crop offsets: shorter side -> 224, longer = int(224*long/short),
    then top/left = round((size - 224) / 2) with Python's round (torchvision's CenterCrop)."""
    if height <= width:
        new_h, new_w = SYNC_SIZE, int(SYNC_SIZE * width / height)
    else:
        new_h, new_w = int(SYNC_SIZE * height / width), SYNC_SIZE
    top = int(round((new_h - SYNC_SIZE) / 2.0))
    left = int(round((new_w - SYNC_SIZE) / 2.0))
    return new_h, new_w, top, left


def sync_resize(frames: Tensor) -> Tensor:
    """(T,3,H,W) uint8 -> (T,3,224,224) uint8: shorter side to 224 then centre crop 224."""
    new_h, new_w, top, left = sync_geometry(frames.shape[-2], frames.shape[-1])
    return resize_uint8(frames, new_h, new_w, crop=(top, left, SYNC_SIZE, SYNC_SIZE))


def clip_to_float(frames: Tensor) -> Tensor:
    """CLIP stream to float: ToDtype(float32, scale=True) = u8 * (1/255). CLIP mean/std come later."""
    return frames.to(torch.float32) * (1.0 / 255.0)


def sync_to_float(frames: Tensor) -> Tensor:
    """Synchformer stream to float in [-1, 1]: (u8 * (1/255) - 0.5) / 0.5, as Normalize(0.5, 0.5)."""
    return (frames.to(torch.float32) * (1.0 / 255.0) - 0.5) / 0.5
