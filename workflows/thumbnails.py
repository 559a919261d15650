"""A small diagram of a UI-format workflow as a JPEG (the template browser's thumbnail).

Drawn with numpy and encoded with PyAV's MJPEG encoder (PyAV is already a dependency; PIL is
not): one box per node, coloured by kind, and a line per link. No text: the template browser
shows the workflow's name under the picture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTH, HEIGHT, MARGIN = 512, 288, 16
BACKGROUND = (32, 32, 36)
LINK = (150, 150, 160)
COLOURS = {  # by the part of the node id after the prefix
    "LoadVideo": (70, 130, 180), "VideoFromFrames": (70, 130, 180),
    "MMAudioLoader": (120, 90, 170), "NAGControlNetLoader": (120, 90, 170),
    "EncodeVideo": (60, 150, 140), "NAGSampler": (200, 120, 50),
    "MixAndNormalize": (90, 160, 80), "SaveStems": (180, 60, 70),
    "SaveVideoWithAudio": (180, 60, 70), "PreviewAudio": (110, 110, 120),
    "Note": (90, 90, 70),
}


def _box(node) -> tuple[float, float, float, float]:
    x, y = node["pos"]
    w, h = node.get("size") or (300, 120)
    return float(x), float(y), float(x + w), float(y + h)


def _line(img, x0, y0, x1, y1, colour) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, n).round().astype(int).clip(0, WIDTH - 1)
    ys = np.linspace(y0, y1, n).round().astype(int).clip(0, HEIGHT - 1)
    img[ys, xs] = colour
    img[(ys + 1).clip(0, HEIGHT - 1), xs] = colour


def render(workflow: dict) -> np.ndarray:
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = BACKGROUND
    boxes = {n["id"]: _box(n) for n in workflow["nodes"]}
    x0 = min(b[0] for b in boxes.values())
    y0 = min(b[1] for b in boxes.values())
    x1 = max(b[2] for b in boxes.values())
    y1 = max(b[3] for b in boxes.values())
    scale = min((WIDTH - 2 * MARGIN) / (x1 - x0), (HEIGHT - 2 * MARGIN) / (y1 - y0))

    def to_px(x, y):
        return MARGIN + (x - x0) * scale, MARGIN + (y - y0) * scale

    for _, src, _, dst, _, _ in workflow["links"]:
        sx, sy = to_px(boxes[src][2], (boxes[src][1] + boxes[src][3]) / 2)
        dx, dy = to_px(boxes[dst][0], (boxes[dst][1] + boxes[dst][3]) / 2)
        _line(img, sx, sy, dx, dy, LINK)
    for n in workflow["nodes"]:
        a, b = to_px(*boxes[n["id"]][:2])
        c, d = to_px(*boxes[n["id"]][2:])
        a, b, c, d = int(a), int(b), max(int(c), int(a) + 3), max(int(d), int(b) + 3)
        kind = n["type"].split("_", 1)[-1]
        img[b:d, a:c] = COLOURS.get(kind, (100, 100, 100))
        img[b:b + 3, a:c] = np.minimum(np.array(COLOURS.get(kind, (100, 100, 100))) + 60, 255)
    return img


def write_thumbnail(workflow: dict, path) -> Path | None:
    """Write ``path`` (JPEG); None when PyAV cannot encode MJPEG here."""
    try:
        import av
    except ImportError:
        return None
    img = render(workflow)
    path = Path(path)
    try:
        with av.open(str(path), "w", format="mjpeg") as out:
            stream = out.add_stream("mjpeg", rate=1)
            stream.width, stream.height = WIDTH, HEIGHT
            stream.pix_fmt = "yuvj420p"
            stream.options = {"qmin": "2", "qmax": "4"}
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj420p")
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    except Exception:  # an FFmpeg build without the encoder: the thumbnail is optional
        path.unlink(missing_ok=True)
        return None
    return path
