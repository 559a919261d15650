"""Putting generated audio into a copy of a video: packets of the video stream are copied as they
are (no re-encoding, no quality loss), the new audio replaces any existing audio track."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import torch

from ..errors import ConfigError
from ..resample import resample
from ._container import check_file, open_input, stream_length, time_origin, video_stream
from ._files import check_not_input, prepare_output, written_atomically
from .audio import _as_channels_first, encode_frames
from .frames import check_times
from .video import rotation_ccw

# container -> (audio codec, sample rates it accepts or None for any)
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_AUDIO_FOR = {".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus"}


def _audio_plan(suffix: str, sr: int) -> tuple[str, int]:
    codec = _AUDIO_FOR.get(suffix.lower())
    if codec is None:
        raise ConfigError(f"cannot write a video with the extension {suffix!r}; use one of "
                          f"{', '.join(sorted(_AUDIO_FOR))}")
    if codec == "libopus":
        return codec, 48000  # Opus only runs at 48 kHz in practice
    return codec, sr if sr in _AAC_RATES else 48000


def mux_audio_into_video(video_path, wave, sample_rate: int, out_path, start: float = 0.0, *,
                         trim: bool = False) -> str:
    """Write ``out_path``: the video of ``video_path`` with ``wave`` ((C, T) or (T,) float in
    [-1, 1] at ``sample_rate``) as its only audio track, beginning ``start`` seconds into the video.

    The video stream is copied packet by packet (re-encoded only if the output container cannot
    hold its codec); audio beyond the end of the video is cut so the length is unchanged. With
    ``trim`` the output is only the segment the audio covers (``start`` to ``start`` + its
    length), the audio at time 0; a packet copy cannot cut between keyframes, so the segment's
    picture is re-encoded, unless the segment is the whole video (then it is copied as above).
    The output is written under a temporary name in the destination folder and renamed at the
    end; the input is never modified. Returns the output path as a string.
    """
    src = check_file(video_path, "video")
    out = prepare_output(out_path)
    check_not_input(out, [src])
    check_times(start, None)
    w = _as_channels_first(wave)
    if w.shape[0] > 2:
        w = w.mean(0, keepdim=True)
    codec, rate = _audio_plan(out.suffix, int(sample_rate))
    if rate != int(sample_rate):
        w = resample(w, int(sample_rate), rate)
    with written_atomically(out) as tmp:
        if trim and not _covers_whole_video(src, float(start), w.shape[-1] / rate):
            _write_segment(src, tmp, w, rate, codec, Fraction(repr(float(start))))
        else:
            try:
                _write(src, out, tmp, w, rate, codec, Fraction(repr(float(start))),
                       keep_tag=True)
            except av.InvalidDataError:
                # the output container refuses the source's codec tag (e.g. an MP4 tag in a
                # Matroska file): let the muxer pick its own, as a plain copy would
                _write(src, out, tmp, w, rate, codec, Fraction(repr(float(start))),
                       keep_tag=False)
    return str(out)


def _covers_whole_video(src, start: float, seconds: float) -> bool:
    inp = open_input(src, "video")
    try:
        vin = video_stream(inp, src)
        length = stream_length(inp, vin)
        frame = 1.0 / float(vin.average_rate or vin.guessed_rate or 25)
    finally:
        inp.close()
    return start < frame / 2 and length is not None and seconds >= length - frame / 2


def _open_source(src, start: Fraction):
    """The opened source, its video stream, its time origin and its length (s, or None), after
    checking that ``start`` lies inside it. The caller closes the container."""
    inp = open_input(src, "video")
    try:
        vin = video_stream(inp, src)
        length = stream_length(inp, vin)
        if length is not None and float(start) >= length:
            raise ConfigError(f"start {float(start):g} s is past the end of the video "
                              f"({length:.3f} s)")
        return inp, vin, time_origin(inp), length
    except BaseException:
        inp.close()
        raise


def _write_segment(src, tmp, wave: torch.Tensor, rate: int, codec: str, start: Fraction) -> None:
    """The segment [start, start + audio length) with its picture re-encoded, audio from 0."""
    inp, vin, origin, length = _open_source(src, start)
    try:
        end = start + Fraction(wave.shape[-1], rate)
        with av.open(str(tmp), "w") as dst:
            vout = _reencode_stream(dst, vin)
            if vout.codec_context.name == "libx264":
                vout.options = {"crf": "18"}  # near-transparent: this is a preview of the score
            aout = dst.add_stream(codec, rate=rate)
            aout.layout = "mono" if wave.shape[0] == 1 else "stereo"
            audio = _encode_audio(aout, wave, rate, 0)
            tb = vin.time_base
            if start > 0:
                inp.seek(int((start + origin) / tb), stream=vin, backward=True)
            ai, kept_rotation = 0, False
            for frame in inp.decode(vin):
                if frame.pts is None:
                    continue
                t = Fraction(frame.pts) * tb - origin
                if t < start:
                    continue
                if t >= end:
                    break
                if not kept_rotation:  # before the first frame is encoded, as PyAV requires
                    _keep_rotation(vout, rotation_ccw(frame, vin))
                    kept_rotation = True
                out_frame = frame.reformat(vout.width, vout.height, "yuv420p")
                out_frame.pts = int(round((t - start) / tb))
                out_frame.time_base = tb
                while ai < len(audio) and _packet_time(audio[ai]) <= float(t - start):
                    dst.mux(audio[ai])
                    ai += 1
                for p in vout.encode(out_frame):
                    dst.mux(p)
            for p in vout.encode():
                dst.mux(p)
            for p in audio[ai:]:
                dst.mux(p)
    finally:
        inp.close()


def _keep_rotation(vout, degrees_ccw: int) -> None:
    """A re-encoded picture keeps the source's display matrix (a phone's portrait video is
    stored landscape with a rotation flag): the frames are encoded as stored and the flag says
    how to show them, as in the source. A PyAV without ``VideoStream.set_display_rotation``
    (added in 2026; 18.1 has it) cannot write one: there the segment plays as stored (README,
    limits)."""
    if degrees_ccw and hasattr(vout, "set_display_rotation"):
        vout.set_display_rotation(degrees_ccw)


def _keep_picture_facts(vin, vout, keep_tag: bool) -> None:
    """What a stream copy must not lose: the codec tag (HEVC 'hvc1' is what Apple players accept,
    'hev1' is refused; ProRes 'apcn' must not become 'apch'), and the sample aspect ratio,
    which for some codecs (ProRes) lives only in the container, not in the codec parameters.
    The display matrix (rotation) is copied with the stream's side data by the template."""
    tag = vin.codec_context.codec_tag
    if keep_tag and tag and tag.strip("\x00"):
        vout.codec_context.codec_tag = tag
    sar = vin.sample_aspect_ratio or vin.codec_context.sample_aspect_ratio
    if sar and not vout.codec_context.sample_aspect_ratio:
        vout.codec_context.sample_aspect_ratio = sar


def _write(src, out, tmp, wave: torch.Tensor, rate: int, codec: str, start: Fraction,
           keep_tag: bool) -> None:
    inp, vin, origin, length = _open_source(src, start)
    try:
        if length is not None:  # keep the video's length: cut audio that runs past its end
            wave = wave[:, :max(0, int(math.floor((length - float(start)) * rate)))]  # before the lead-in
        with av.open(str(tmp), "w") as dst:
            try:
                vout = dst.add_stream_from_template(vin)
                _keep_picture_facts(vin, vout, keep_tag)
                copy = True
            except (av.FFmpegError, ValueError):
                copy = False
            if not copy:
                vout = _reencode_stream(dst, vin)
            aout = dst.add_stream(codec, rate=rate)
            aout.layout = "mono" if wave.shape[0] == 1 else "stereo"
            # Lead with silence up to `start` rather than starting the track late: MP4 stores a
            # late start as an edit in milliseconds (up to ~1 ms off); silence is sample-exact.
            lead = int(round(start * rate))
            wave = torch.nn.functional.pad(wave, (lead, 0))
            audio_packets = _encode_audio(aout, wave, rate, int(round(origin * rate)))
            _copy_video_with_audio(inp, vin, dst, vout, copy, audio_packets)
    finally:
        inp.close()


def _encode_audio(aout, wave, rate, pts0):
    fmt = aout.codec_context.format.name if aout.codec_context.format else "fltp"
    packets = []
    for frame in encode_frames(wave, rate, fmt, chunk=aout.codec_context.frame_size or 1024, pts0=pts0):
        packets.extend(aout.encode(frame))
    packets.extend(aout.encode())
    return packets


def _packet_time(packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None and packet.time_base else 0.0


def _copy_video_with_audio(inp, vin, dst, vout, copy: bool, audio_packets) -> None:
    """Interleave by time so the muxer never buffers a whole stream."""
    ai = 0
    for packet in inp.demux(vin):
        if packet.dts is None and packet.pts is None:
            continue  # demuxer flush packet
        t = _packet_time(packet)
        while ai < len(audio_packets) and _packet_time(audio_packets[ai]) <= t:
            dst.mux(audio_packets[ai])
            ai += 1
        if copy:
            packet.stream = vout
            dst.mux(packet)
        else:
            for frame in packet.decode():
                for p in vout.encode(frame):
                    dst.mux(p)
    if not copy:
        for p in vout.encode():
            dst.mux(p)
    for p in audio_packets[ai:]:
        dst.mux(p)


def _reencode_stream(dst, vin):
    """Re-encode when the output container cannot take the input codec as is: VP9 for WebM,
    H.264 elsewhere."""
    rate = vin.average_rate or vin.guessed_rate or 25
    if "webm" in dst.format.name:
        codec = "libvpx-vp9"
    else:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    vout = dst.add_stream(codec, rate=rate)
    vout.width = vin.codec_context.width // 2 * 2
    vout.height = vin.codec_context.height // 2 * 2
    vout.pix_fmt = "yuv420p"
    vout.time_base = vin.time_base
    vout.codec_context.time_base = vin.time_base
    sar = vin.sample_aspect_ratio or vin.codec_context.sample_aspect_ratio
    if sar:  # a re-encoded picture keeps its shape on screen
        vout.codec_context.sample_aspect_ratio = sar
    return vout
