"""Kernel-3 convolutions with a third fewer multiplies: Winograd's minimal filtering F(2, 3).

A "same"-padded k = 3 convolution y[n] = W0 x[n-1] + W1 x[n] + W2 x[n+1] computes two outputs
from four inputs d0..d3 = x[2t-1 .. 2t+2] with four channel matrix products instead of six:

    V0 = d0 - d2,  V1 = d1 + d2,  V2 = d2 - d1,  V3 = d1 - d3          (input transform)
    U0 = W0,  U1 = (W0 + W1 + W2) / 2,  U2 = (W0 - W1 + W2) / 2,  U3 = W2  (weights, once)
    y[2t] = U0 V0 + U1 V1 + U2 V2,   y[2t+1] = U1 V1 - U2 V2 - U3 V3

(the algebra is exact; only the float32 rounding order differs, at the level of the direct
convolution's own rounding). The four products run as one batched GEMM over (time, channel)
rows. Used for inference on the CPU in float32 where the channel matrices are large enough for
the saved GEMM work to outweigh the transforms (``applies``); everything else, and anything
autograd must see, keeps F.conv1d.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Both channel counts at least this: below it the transforms' memory passes eat the saving
# (measured on a 1-thread CPU: ~0.85x of F.conv1d at 768-1536 channels, ~1.0x at 384).
MIN_CHANNELS = 448


def applies(x: Tensor, weight: Tensor) -> bool:
    """Whether ``conv1d_k3`` should replace F.conv1d(x, weight, padding=1) here."""
    return (weight.ndim == 3 and weight.shape[-1] == 3 and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and min(weight.shape[0], weight.shape[1]) >= MIN_CHANNELS
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def transformed_weights(weight: Tensor) -> Tensor:
    """(Cout, Cin, 3) -> U, (4, Cin, Cout): the four channel matrices, transposed for the GEMM."""
    w0, w1, w2 = weight.unbind(-1)
    u = torch.stack([w0, (w0 + w1 + w2) * 0.5, (w0 - w1 + w2) * 0.5, w2])
    return u.transpose(1, 2).contiguous()


# The transformed weights take 4/3 of a convolution's own weight memory (small_16k's network:
# +492 MiB, the 16k VAE: +432 MiB, large_44k_v2's network: +3.3 GiB). At most this many bytes
# of them are kept, all models of the process together; convolutions beyond it keep F.conv1d.
CACHE_BUDGET_BYTES = 1 << 30
_cached_bytes = 0


class _Cache:
    """One module's transformed weights; gives its bytes back to the budget when dropped
    (module freed or weight changed). Copies of a module (deepcopy, pickle) start without."""

    def __init__(self, key, u: Tensor):
        global _cached_bytes
        self.key, self.u, self.size = key, u, u.numel() * u.element_size()
        _cached_bytes += self.size

    def __del__(self):
        global _cached_bytes
        _cached_bytes -= self.size

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (_no_cache, ())


def _no_cache():
    return None


def cached_weights(module: torch.nn.Module, weight: Tensor) -> Tensor | None:
    """U for ``weight``, kept on ``module`` (not in its state dict) and rebuilt whenever the
    weight is replaced or changed in place (its version counter moves); None when it would
    not fit in CACHE_BUDGET_BYTES (the caller then runs F.conv1d). Tensors made under
    ``torch.inference_mode`` (as a host may load models) keep no version counter: for them
    only a replaced weight is noticed, not one changed in place."""
    version = None if weight.is_inference() else weight._version
    key = (weight.data_ptr(), version, weight.dtype, weight.device, tuple(weight.shape))
    cache = module.__dict__.get("_winograd_cache")
    if cache is not None and cache.key == key:
        return cache.u
    module.__dict__["_winograd_cache"] = None  # an outdated one gives its bytes back first
    del cache
    size = 4 * weight.shape[0] * weight.shape[1] * weight.element_size()
    if _cached_bytes + size > CACHE_BUDGET_BYTES:
        return None
    cache = _Cache(key, transformed_weights(weight.detach()))
    module.__dict__["_winograd_cache"] = cache
    return cache.u


def conv1d_k3(x: Tensor, u: Tensor, bias: Tensor | None = None, *,
              channels_last: bool = False) -> Tensor:
    """F.conv1d(x, weight, bias, padding=1) with U = transformed_weights(weight).
    x: (B, C, L), or (B, L, C) with ``channels_last``; the result has the same layout."""
    rows = x if channels_last else x.transpose(1, 2)  # (B, L, Cin), a view
    b, n, c = rows.shape
    half = (n + 1) // 2
    # padded[j] = x[j - 1]; zero rows before, after, and one more when n is odd
    padded = rows.new_empty(b, 2 * half + 2, c)
    padded[:, 0].zero_()
    padded[:, n + 1:].zero_()
    padded[:, 1:n + 1] = rows
    even, odd = padded[:, 0::2], padded[:, 1::2]  # (B, half + 1, Cin) each
    d0, d1, d2, d3 = even[:, :half], odd[:, :half], even[:, 1:], odd[:, 1:]
    v = rows.new_empty(4, b, half, c)
    torch.sub(d0, d2, out=v[0])
    torch.add(d1, d2, out=v[1])
    torch.sub(d2, d1, out=v[2])
    torch.sub(d1, d3, out=v[3])
    m = torch.bmm(v.view(4, b * half, c), u).view(4, b, half, -1)
    if bias is not None:
        m[1] += bias  # M1 enters both outputs with a plus sign
    cout = m.shape[-1]
    if channels_last:
        y = rows.new_empty(b, half, 2, cout)
        y_even, y_odd = y[:, :, 0], y[:, :, 1]
    else:
        y = rows.new_empty(b, cout, half, 2)
        y_even, y_odd = y[..., 0].transpose(1, 2), y[..., 1].transpose(1, 2)
    torch.add(m[0], m[1], out=y_even).add_(m[2])
    torch.sub(m[1], m[2], out=y_odd).sub_(m[3])
    if channels_last:
        y = y.view(b, 2 * half, cout)
        return y if 2 * half == n else y[:, :n]
    y = y.view(b, cout, 2 * half)
    return y if 2 * half == n else y[..., :n]
