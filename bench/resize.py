"""What the frame resize costs: torch's own uint8 bicubic antialiased kernel (what
``nag_core.media.resize_uint8`` calls on the CPU) next to the integer-exact matmul path (what it
used to run everywhere, and still runs off the CPU), on the frames of an 8 s clip.

The clip's frames are what ``decode_video`` resizes: int(8 * d) CLIP frames squashed to
384 x 384 and int(25 * d) Synchformer frames (shorter side to 224, centre crop 224), from a
source of --size (default 1280x720, random pixels). Both paths must give the same bytes.

Goal: torch path / matmul path at most 1.0, outputs equal.

    python bench/resize.py [--size 1280x720] [--duration 8] [--reps 3] [--quick]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import torch

from common import Goals, interleaved, parser, ratio, setup
from nag_core.media.frames import CLIP_FPS, SYNC_FPS
from nag_core.media.resize import (CLIP_SIZE, SYNC_SIZE, resize_uint8, resize_uint8_matmul,
                                   sync_geometry)


def streams(resize, clip_src, sync_src):
    h, w = clip_src.shape[-2:]
    nh, nw, top, left = sync_geometry(h, w)
    return (resize(clip_src, CLIP_SIZE, CLIP_SIZE),
            resize(sync_src, nh, nw, crop=(top, left, SYNC_SIZE, SYNC_SIZE)))


def main() -> None:
    p = parser(__doc__.splitlines()[0], reps=3)
    p.add_argument("--size", default="1280x720", help="source frame size WxH")
    args = p.parse_args()
    setup(args)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.quick:
        w, h = 160, 90
    goals = Goals()
    g = torch.Generator().manual_seed(0)
    n_clip, n_sync = int(CLIP_FPS * args.duration), int(SYNC_FPS * args.duration)
    clip_src = torch.randint(0, 256, (n_clip, 3, h, w), dtype=torch.uint8, generator=g)
    sync_src = torch.randint(0, 256, (n_sync, 3, h, w), dtype=torch.uint8, generator=g)
    print(f"{n_clip} CLIP + {n_sync} Synchformer frames of {w}x{h}")

    fast = streams(resize_uint8, clip_src, sync_src)
    exact = streams(resize_uint8_matmul, clip_src, sync_src)
    same = all(torch.equal(a, b) for a, b in zip(fast, exact))
    goals.check("same_bytes", same, "torch kernel and matmul path give identical frames"
                if same else "the two paths differ")
    times = interleaved({"torch": lambda: streams(resize_uint8, clip_src, sync_src),
                         "matmul": lambda: streams(resize_uint8_matmul, clip_src, sync_src)},
                        args.reps)
    r = ratio(times["torch"], times["matmul"])
    print(r.line("resize_torch_over_matmul"))
    goals.check("torch_kernel_not_slower", r.value <= 1.0,
                f"torch kernel / matmul path = {r.value:.3f} (at most 1.0 wanted)")
    goals.finish(args.quick)


if __name__ == "__main__":
    main()
