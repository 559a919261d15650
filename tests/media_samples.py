"""Small synthetic videos for the media tests: every frame shows its index as a 4x4 grid of black
or white blocks in the centre square, so the frame picked for any target time can be read back
from the pixels, after the CLIP squash and the Synchformer crop alike."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

GRID = 4
BITS = GRID * GRID


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 upright frame: mid-grey, index bits in the centred square (MSB first)."""
    img = np.full((height, width, 3), 128, np.uint8)
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    cell = side / GRID
    for b in range(BITS):
        r, c = divmod(b, GRID)
        on = (index >> (BITS - 1 - b)) & 1
        ys, ye = y0 + int(round(r * cell)), y0 + int(round((r + 1) * cell))
        xs, xe = x0 + int(round(c * cell)), x0 + int(round((c + 1) * cell))
        img[ys:ye, xs:xe] = 255 if on else 0
    return img


def read_index(frame_chw, src_w: int, src_h: int, kind: str) -> int:
    """Index shown by an output frame (3, H, W) of the given stream, for an upright source of
    src_w x src_h: block centres mapped through the stream's geometry."""
    from nag_core.media.resize import sync_geometry
    f = np.asarray(frame_chw, dtype=np.float32).mean(0)
    side = min(src_w, src_h)
    x0, y0 = (src_w - side) / 2, (src_h - side) / 2
    if kind == "clip":
        sx, sy, ox, oy = f.shape[1] / src_w, f.shape[0] / src_h, 0.0, 0.0
    else:
        nh, nw, top, left = sync_geometry(src_h, src_w)
        sx, sy, ox, oy = nw / src_w, nh / src_h, left, top
    cell = side / GRID
    value = 0
    for b in range(BITS):
        r, c = divmod(b, GRID)
        cx = (x0 + (c + 0.5) * cell) * sx - ox
        cy = (y0 + (r + 0.5) * cell) * sy - oy
        v = f[int(cy), int(cx)]
        value = (value << 1) | int(v > 128)
    return value


def make_video(path, times, width=64, height=48, *, codec="libx264", time_base=None, rate=None,
               rotate_ccw=0, gop=12, audio_tone=None, codec_tag=None, sample_aspect_ratio=None,
               options=None, pix_fmt=None):
    """Write frames i = 0..len(times)-1 at presentation times ``times`` (Fractions, seconds).

    rotate_ccw: the stored frames are the upright pattern turned clockwise by that angle and the
    display matrix says to turn them back (as phones do); width/height are the upright size.
    audio_tone: (freq_hz, sample_rate) adds a mono sine track of the video's length.
    codec_tag ("hvc1"), sample_aspect_ratio (Fraction), options (encoder options) and pix_fmt
    are handed to the encoder as given.
    """
    tb = time_base or Fraction(1, 1000)
    out = av.open(str(path), "w")
    k = (rotate_ccw // 90) % 4
    sw, sh = (height, width) if k % 2 else (width, height)
    st = out.add_stream(codec, rate=rate or 25)
    st.width, st.height = sw, sh
    st.pix_fmt = "yuv444p" if codec == "libx264" and (sw % 2 or sh % 2) else (
        "yuv420p" if codec in ("libx264", "mpeg4") else st.pix_fmt)
    st.time_base = tb
    st.codec_context.time_base = tb
    if pix_fmt is not None:
        st.pix_fmt = pix_fmt
    if codec == "libx264":
        st.options = {"crf": "12", "g": str(gop), "bf": "0"}
    if options:
        st.options = dict(options)
    if codec_tag is not None:
        st.codec_context.codec_tag = codec_tag
    if sample_aspect_ratio is not None:
        st.codec_context.sample_aspect_ratio = sample_aspect_ratio
    if rotate_ccw:
        st.set_display_rotation(rotate_ccw)
    ast = None
    if audio_tone is not None:
        ast = out.add_stream("aac", rate=audio_tone[1])
        ast.layout = "mono"
    for i, t in enumerate(times):
        img = np.ascontiguousarray(np.rot90(pattern(i, width, height), -k))
        fr = av.VideoFrame.from_ndarray(img, format="rgb24")
        fr.pts = int(Fraction(t) / tb)
        fr.time_base = tb
        for pkt in st.encode(fr):
            out.mux(pkt)
    for pkt in st.encode():
        out.mux(pkt)
    if ast is not None:
        freq, sr = audio_tone
        n = int(float(times[-1]) * sr) + sr // 10
        wave = (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)
        for s in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(wave[None, s:s + 1024], format="fltp", layout="mono")
            af.sample_rate = sr
            af.pts = s
            for pkt in ast.encode(af):
                out.mux(pkt)
        for pkt in ast.encode():
            out.mux(pkt)
    out.close()
    return path


def cfr_times(fps, seconds):
    fps = Fraction(fps)
    return [Fraction(i) / fps for i in range(int(seconds * fps))]


def expected_picks(times, fps_target, start, duration):
    """The official rule in exact arithmetic: indices of the frames emitted for each target."""
    start, out, k = Fraction(start), [], 0
    dur = None if duration is None else Fraction(duration)
    for i, t in enumerate(times):
        rel = Fraction(t) - start
        if rel < 0:
            continue
        if dur is not None and rel > dur:
            break
        while rel >= Fraction(k, fps_target):
            out.append(i)
            k += 1
    return out
