"""Media I/O: exact resize goldens, frame picking by timestamp, truncation, seeking, rotation,
audio round trips, muxing, and the error messages a user sees."""

from __future__ import annotations

import math
import re
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golden import Golden, golden_params, load_tables
from media_samples import cfr_times, expected_picks, make_video, read_index
from nag_core.errors import ConfigError, MediaError, MediaWarning
from nag_core.media import (VideoClip, clip_resize, clip_to_float, decode_video, frames_from_images,
                            frames_from_video_object, mux_audio_into_video, read_audio,
                            resize_uint8, sync_resize, sync_to_float, write_audio)
from nag_core.media.resize import CLIP_SIZE, SYNC_SIZE, resize_uint8_matmul, sync_geometry


# ---------------------------------------------------------------- resize ---------------------

@pytest.mark.parametrize("path", golden_params("preprocess_"))
def test_resize_matches_golden(path):
    g = Golden(path)
    i = 0
    while f"in.frame{i}_uint8" in g:
        x = g[f"in.frame{i}_uint8"]
        h, w, top, left = sync_geometry(x.shape[-2], x.shape[-1])
        for got, key in ((clip_resize(x), f"out.frame{i}.clip_resized_uint8"),
                         (sync_resize(x), f"out.frame{i}.sync_resized_cropped_uint8"),
                         (resize_uint8_matmul(x, CLIP_SIZE, CLIP_SIZE),
                          f"out.frame{i}.clip_resized_uint8"),
                         (resize_uint8_matmul(x, h, w, crop=(top, left, SYNC_SIZE, SYNC_SIZE)),
                          f"out.frame{i}.sync_resized_cropped_uint8")):
            # both paths (torch's CPU kernel and the matmul one) equal the official bytes
            assert got.shape == g[key].shape and torch.equal(got, g[key]), key
        i += 1
    assert i > 0


@pytest.mark.parametrize("path", golden_params("preprocess_"))
def test_sync_geometry_from_sidecar(path):
    # each frame's sidecar line: "HxW -> clip: ...; sync: shorter side to 224 -> H'xW', center
    # crop 224 (top=T, left=L)"
    g = Golden(path)
    rule = re.compile(r"^(\d+)x(\d+) ->.*-> (\d+)x(\d+), center crop \d+ \(top=(\d+), left=(\d+)\)")
    frames = g.meta["frames"]
    assert frames, f"{path.name}'s sidecar describes no frames"
    for name, text in frames.items():
        h, w, rh, rw, top, left = map(int, rule.match(text).groups())
        assert tuple(g[f"in.{name}_uint8"].shape[-2:]) == (h, w), name
        assert sync_geometry(h, w) == (rh, rw, top, left), name
        assert sync_geometry(w, h) == (rw, rh, left, top), f"{name} turned portrait"


@pytest.mark.parametrize("hw,out", [((63, 95), (384, 384)), ((17, 5), (40, 3)), ((300, 201), (224, 149)),
                                    ((48, 64), (48, 9))])
def test_resize_matches_torch_uint8_kernel(hw, out):
    # torch's own uint8 antialiased kernel is what torchvision v2 calls: the matmul path (used
    # off the CPU) reproduces its integer pipeline bit for bit, crops included
    x = torch.randint(0, 256, (2, 3, *hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ref = F.interpolate(x, size=out, mode="bicubic", antialias=True)
    assert torch.equal(resize_uint8(x, *out), ref)
    assert torch.equal(resize_uint8_matmul(x, *out), ref)
    crop = (out[0] // 3, out[1] // 4, out[0] - out[0] // 3, out[1] // 2)
    window = ref[..., crop[0]:crop[0] + crop[2], crop[1]:crop[1] + crop[3]]
    assert torch.equal(resize_uint8(x, *out, crop=crop), window)
    assert torch.equal(resize_uint8_matmul(x, *out, crop=crop), window)
    # other leading shapes: one plane, and (batch, time, 3, H, W)
    assert torch.equal(resize_uint8(x[0, 0], *out), ref[0, 0])
    assert torch.equal(resize_uint8(x[None], *out), ref[None])


def test_float_conversions():
    u = torch.tensor([0, 128, 255], dtype=torch.uint8)
    assert torch.equal(clip_to_float(u), u.float() * (1.0 / 255.0))
    s = sync_to_float(u)
    assert s[0] == -1.0 and s[2] == 1.0 and abs(float(s[1]) - (128 / 255 - 0.5) / 0.5) < 1e-7


# ---------------------------------------------------------------- frame picking --------------

def _indices(clip: VideoClip, src_w: int, src_h: int):
    return ([read_index(f, src_w, src_h, "clip") for f in clip.clip_frames],
            [read_index(f, src_w, src_h, "sync") for f in clip.sync_frames])


def _expected(times, start, duration):
    c = expected_picks(times, 8, start, duration)
    s = expected_picks(times, 25, start, duration)
    d = min(duration, len(c) / 8, len(s) / 25)
    return c[:int(8 * d)], s[:int(25 * d)], d


RATES = {"12": Fraction(12), "24": Fraction(24), "25": Fraction(25), "29.97": Fraction(30000, 1001),
         "60": Fraction(60)}


@pytest.mark.parametrize("name", list(RATES))
def test_frames_picked_by_timestamp(tmp_path, name):
    fps = RATES[name]
    times = cfr_times(fps, 3)
    tb = Fraction(1, 30000) if name == "29.97" else Fraction(1, int(fps) * 10)
    path = make_video(tmp_path / f"v{name}.mp4", times, rate=fps, time_base=tb)
    clip = decode_video(path, 0.0, 2.0)
    c, s, d = _expected(times, 0, 2.0)
    assert clip.duration == d == 2.0
    assert _indices(clip, 64, 48) == (c, s)
    assert clip.fps == pytest.approx(float(fps)) and clip.size == (64, 48) and clip.rotation == 0


def test_25fps_source_is_not_shifted(tmp_path):
    # exact ties: sync frame k of a 25 fps video is source frame k (the float rule picks k+1)
    times = cfr_times(25, 2)
    path = make_video(tmp_path / "v25.mp4", times, rate=25, time_base=Fraction(1, 250))
    clip = decode_video(path, 0.0, 1.5)
    assert _indices(clip, 64, 48)[1] == list(range(37)) and clip.warning is None
    # the float rule picks one frame late, so its 25 fps stream falls one frame short of 1.5 s
    # although the video goes on: a truncation, said as such
    with pytest.warns(MediaWarning, match=r"used 1\.480 s of the 1\.5 s asked from 0 s: the 8 "
                      r"and 25 fps frame streams picked up to the requested end hold 1\.480 s"):
        official = decode_video(path, 0.0, 1.5, official_float_times=True)
    assert "ends there" not in official.warning
    assert _indices(official, 64, 48)[1] != list(range(37))


def test_variable_frame_rate(tmp_path):
    rng = np.random.default_rng(3)
    gaps = rng.choice([10, 20, 33, 50, 70, 100], size=80)  # ms
    times = [Fraction(int(t), 1000) for t in np.concatenate([[0], np.cumsum(gaps)[:-1]])]
    path = make_video(tmp_path / "vfr.mkv", times, rate=30, time_base=Fraction(1, 1000))
    clip = decode_video(path, 0.5, 2.0)
    c, s, d = _expected(times, Fraction(1, 2), 2.0)
    assert _indices(clip, 64, 48) == (c, s)


def test_lengths_follow_tables_and_truncation(tmp_path):
    times = cfr_times(24, 3)
    path = make_video(tmp_path / "v3s.mp4", times, rate=24, time_base=Fraction(1, 240))
    rows = {r["duration"]: r for r in load_tables()["sequence_lengths"] if r["mode"] == "16k"}
    for dur in (0.64, 1.5, 2.0):
        clip = decode_video(path, 0.0, dur)
        assert clip.clip_frames.shape[0] == rows[dur]["clip_frames_used"]
        assert clip.sync_frames.shape[0] == rows[dur]["sync_frames_used"]
        assert clip.duration == dur and not clip.truncated
    long = decode_video(path, 0.0, 8.0)  # 3 s video, 8 s asked: truncated to what exists
    c, s, d = _expected(times, 0, 8.0)
    # 72 frames, the last at 2.958 s: 74 sync targets (to 2.92 s) -> 2.96 s; clip cut to int(8*2.96)
    assert long.truncated and long.duration == d == 74 / 25
    assert long.clip_frames.shape[0] == len(c) == 23 and long.sync_frames.shape[0] == len(s) == 74
    assert _indices(long, 64, 48) == (c, s)
    assert decode_video(path, 0.0, None).duration == 74 / 25


def test_start_offset_seeks_instead_of_decoding_from_zero(tmp_path):
    times = cfr_times(24, 11)
    path = make_video(tmp_path / "v11.mp4", times, rate=24, time_base=Fraction(1, 240), gop=24)
    clip = decode_video(path, 10.0, 8.0)
    c, s, d = _expected(times, 10, 8.0)
    assert clip.duration == d == 24 / 25 and clip.start == 10.0  # last frame at 10.958 s
    assert _indices(clip, 64, 48) == (c, s)
    assert c[0] == 240
    assert clip.frames_decoded <= 2 * 24 + 2, "decoded from the beginning instead of seeking"
    mid = decode_video(path, 4.3, 2.0)  # start between frames and between keyframes
    assert _indices(mid, 64, 48) == _expected(times, Fraction(43, 10), 2.0)[:2]


def test_rotated_portrait_comes_out_upright(tmp_path):
    times = cfr_times(25, 1)
    # upright 48x64 portrait stored as 64x48 landscape + a 90 degree display matrix (as phones do)
    path = make_video(tmp_path / "rot.mp4", times, width=48, height=64, rate=25,
                      time_base=Fraction(1, 250), rotate_ccw=90)
    clip = decode_video(path, 0.0, 0.8)
    assert clip.rotation == 90 and clip.size == (48, 64)
    c, s, _ = _expected(times, 0, 0.8)
    assert _indices(clip, 48, 64) == (c, s)


def test_odd_size(tmp_path):
    times = cfr_times(12, 1)
    path = make_video(tmp_path / "odd.mkv", times, width=63, height=47, codec="ffv1", rate=12,
                      time_base=Fraction(1, 12))
    clip = decode_video(path, 0.0, 1.0)
    assert clip.size == (63, 47)
    assert _indices(clip, 63, 47) == _expected(times, 0, 1.0)[:2]


def test_frames_from_images_and_video_objects(tmp_path):
    fps = Fraction(30000, 1001)
    n = 60
    imgs = torch.stack([torch.from_numpy(np.asarray(
        __import__("media_samples").pattern(i, 64, 48))) for i in range(n)]).float() / 255.0
    clip = frames_from_images(imgs, float(fps), start=0.2, duration=1.0)
    times = [Fraction(i) / fps for i in range(n)]
    assert _indices(clip, 64, 48) == _expected(times, Fraction(1, 5), 1.0)[:2]

    class Components:
        images, frame_rate, audio = imgs, fps, None

    class InMemory:
        def get_components(self):
            return Components()

    again = frames_from_video_object(InMemory(), 0.2, 1.0)
    assert torch.equal(again.sync_frames, clip.sync_frames)

    path = make_video(tmp_path / "obj.mp4", cfr_times(24, 2), rate=24, time_base=Fraction(1, 240))

    class FromFile(InMemory):
        def get_stream_source(self):
            return str(path)

    from_file = frames_from_video_object(FromFile(), 0.0, 1.0)
    assert from_file.path == str(path)


# ---------------------------------------------------------------- audio ----------------------

def _tone(sr, seconds, freq=440.0, amp=0.5):
    t = torch.arange(int(sr * seconds)) / sr
    return amp * torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("name,enc,tol", [("a.wav", "pcm16", 1e-4), ("b.wav", "float", 0.0),
                                          ("c.flac", "pcm16", 1e-4)])
def test_write_read_audio_round_trip(tmp_path, name, enc, tol):
    w = torch.stack([_tone(16000, 0.5), _tone(16000, 0.5, 660, 0.25)])
    out = write_audio(tmp_path / name, w, 16000, encoding=enc)
    r, sr = read_audio(out, mono=False)
    assert sr == 16000 and r.shape == w.shape and r.dtype == torch.float32
    assert (r - w).abs().max() <= tol
    m, _ = read_audio(out)  # mono by mean
    assert torch.allclose(m[0], r.mean(0))
    part, _ = read_audio(out, mono=False, start=0.25, duration=0.1)
    assert torch.allclose(part, r[:, 4000:5600])
    up, sr2 = read_audio(out, sample_rate=44100)
    assert sr2 == 44100 and up.shape[-1] == math.ceil(8000 * 44100 / 16000)
    assert not list(tmp_path.glob(".*partial*")), "temporary file left behind"


def test_read_audio_int_formats(tmp_path):
    # packed s16 written by hand: full scale maps to about +-1
    p = tmp_path / "s16.wav"
    with av.open(str(p), "w", format="wav") as c:
        st = c.add_stream("pcm_s16le", rate=8000)
        st.layout = "stereo"
        arr = np.array([[32767, -32768, 16384, 0] * 100], dtype=np.int16)  # interleaved L R
        fr = av.AudioFrame.from_ndarray(arr, format="s16", layout="stereo")
        fr.sample_rate = 8000
        for pkt in st.encode(fr):
            c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    r, _ = read_audio(p, mono=False)
    assert r.shape == (2, 200)
    assert r[0, 0] == pytest.approx(32767 / 32768) and r[1, 0] == -1.0 and r[0, 1] == 0.5


def test_pcm16_round_trip_is_what_a_16_bit_file_gives_back(tmp_path):
    """The world trains on audio as a file returns it: the function must equal writing and
    reading a 16-bit file, for quantisation-sized values, ordinary ones and peaks past full
    scale."""
    from nag_core.media.audio import pcm16_round_trip

    g = torch.Generator().manual_seed(0)
    w = torch.cat([torch.randn(1, 800, generator=g) * 1e-5, _tone(16000, 0.1)[None],
                   torch.tensor([[1.3, -1.7, 0.99999, -1.0, 0.0]])], dim=1)
    out = write_audio(tmp_path / "q.wav", w, 16000, encoding="pcm16")
    r, _ = read_audio(out, mono=False)
    assert torch.equal(pcm16_round_trip(w), r)
    assert (pcm16_round_trip(w)[:, :800] == 0).float().mean() > 0.3  # tiny values do round away


def test_write_audio_refuses_to_overwrite_an_input(tmp_path):
    src = write_audio(tmp_path / "in.wav", _tone(16000, 0.1), 16000)
    with pytest.raises(ConfigError, match="input file"):
        write_audio(src, _tone(16000, 0.1), 16000, inputs=[src])
    with pytest.raises(ConfigError, match="supported"):
        write_audio(tmp_path / "x.mp3", _tone(16000, 0.1), 16000)


def test_mux_keeps_video_and_adds_audio(tmp_path):
    src = make_video(tmp_path / "in.mp4", cfr_times(24, 3), rate=24, time_base=Fraction(1, 240),
                     audio_tone=(300, 16000))
    before = src.read_bytes()
    sr = 44100
    gen = _tone(sr, 2.0)
    out = mux_audio_into_video(src, gen, sr, tmp_path / "out.mp4", start=0.5)
    assert src.read_bytes() == before, "input modified"
    with av.open(out) as c:
        assert len(c.streams.audio) == 1 and c.streams.audio[0].codec_context.name == "aac"
        v = c.streams.video[0]
        assert float(v.duration * v.time_base) == pytest.approx(3.0, abs=0.05)
        assert c.duration / 1e6 == pytest.approx(3.0, abs=0.05)
    # video packets copied: the frames decode to the same indices
    assert _indices(decode_video(out, 0, 2.0), 64, 48) == _indices(decode_video(src, 0, 2.0), 64, 48)
    back, bsr = read_audio(out, sample_rate=sr)
    seg = back[0, int(0.5 * sr): int(0.5 * sr) + gen.shape[0]]
    assert np.corrcoef(seg.numpy(), gen[:seg.shape[0]].numpy())[0, 1] > 0.9
    assert back[0, :int(0.45 * sr)].abs().max() < 0.05  # the old 300 Hz track is gone
    long = mux_audio_into_video(src, _tone(sr, 8.0), sr, tmp_path / "long.mkv")
    with av.open(long) as c:
        assert c.duration / 1e6 == pytest.approx(3.0, abs=0.05)  # audio cut at the video's end
    with pytest.raises(ConfigError, match="input file"):
        mux_audio_into_video(src, gen, sr, src)
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("rotate_ccw", [90, 270])
def test_a_re_encoded_segment_keeps_the_rotation(tmp_path, rotate_ccw):
    """A phone video (landscape frames + a display matrix) cut to the scored segment: the
    picture is re-encoded, and the segment carries the source's display matrix, so it plays
    upright like the source (and decodes upright here)."""
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (the README says so)")
    times = cfr_times(25, 2)
    src = make_video(tmp_path / "phone.mp4", times, width=48, height=64, rate=25,
                     time_base=Fraction(1, 12800), rotate_ccw=rotate_ccw)
    upright = decode_video(src, 0.5, 1.0)
    assert upright.rotation == rotate_ccw and upright.size == (48, 64)
    out = mux_audio_into_video(src, _tone(16000, 1.0), 16000, tmp_path / "seg.mp4", start=0.5,
                               trim=True)
    with av.open(out) as c:
        v = c.streams.video[0]
        assert float(v.duration * v.time_base) == pytest.approx(1.0, abs=0.05)  # the segment
    seg = decode_video(out, 0.0, 1.0)
    assert seg.rotation == rotate_ccw and seg.size == upright.size
    assert _indices(seg, 48, 64) == _indices(upright, 48, 64)


def _picture(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return v.codec_context.name, v.codec_context.codec_tag, v.sample_aspect_ratio


@pytest.mark.parametrize("codec,tag,sar,src,outs,options,pix", [
    ("libx265", "hvc1", Fraction(4, 3), "hevc.mp4", (".mp4", ".mov", ".mkv"),
     {"x265-params": "log-level=error"}, "yuv420p"),
    ("prores_ks", "apcn", Fraction(10, 11), "prores.mov", (".mov",), {"profile": "standard"},
     "yuv422p10le")])
def test_mux_keeps_codec_tag_and_aspect_ratio(tmp_path, codec, tag, sar, src, outs, options, pix):
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    path = make_video(tmp_path / src, cfr_times(25, 1), rate=25, time_base=Fraction(1, 12800),
                      codec=codec, codec_tag=tag, sample_aspect_ratio=sar, options=options,
                      pix_fmt=pix)
    name, src_tag, src_sar = _picture(path)
    assert (src_tag, src_sar) == (tag, sar), "the sample does not carry the tag and ratio"
    for suffix in outs:
        out = mux_audio_into_video(path, _tone(16000, 0.5), 16000, tmp_path / f"out{suffix}")
        got_name, got_tag, got_sar = _picture(out)
        assert got_name == name and got_sar == sar, suffix
        if suffix == ".mkv":  # Matroska has no such tags: the muxer's own choice, no failure
            assert got_tag.strip("\x00") == ""
        else:
            assert got_tag == tag, f"{suffix}: {got_tag!r}"
        assert _indices(decode_video(out, 0, 0.8), 64, 48) == _indices(decode_video(path, 0, 0.8), 64, 48)


# ---------------------------------------------------------------- errors ---------------------

def test_error_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        decode_video(tmp_path / "nope.mp4")
    with pytest.raises(MediaError, match="not found"):
        read_audio(tmp_path / "nope.wav")


def test_error_not_a_video(tmp_path):
    txt = tmp_path / "notes.mp4"
    txt.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError, match="cannot be read as a video"):
        decode_video(txt)
    wav = write_audio(tmp_path / "tone.wav", _tone(16000, 1.0), 16000)
    with pytest.raises(MediaError, match="no video stream .*only has audio"):
        decode_video(wav)
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(make_video(tmp_path / "silent.mp4", cfr_times(24, 1), rate=24))


def test_error_empty_and_truncated(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        decode_video(empty)
    full = make_video(tmp_path / "full.mp4", cfr_times(24, 2), rate=24)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # index (moov) lost
    with pytest.raises(MediaError, match="damaged or truncated"):
        decode_video(cut)
    mkv = make_video(tmp_path / "full.mkv", cfr_times(24, 3), rate=24, time_base=Fraction(1, 1000))
    half = tmp_path / "half.mkv"
    half.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])
    with pytest.warns(MediaWarning) as caught:
        clip = decode_video(half, 0.0, 8.0)  # the readable part, no hang
    assert 0.64 <= clip.duration < 3.0
    # what was used and why, on the clip and as the warning
    used = f"{clip.duration:.3f}"
    assert re.search(rf"used {used} s of the 8 s asked from 0 s: its frames stop at [\d.]+ s "
                     r"although the file says it is 3\.000 s long: it is cut short or damaged",
                     clip.warning), clip.warning
    assert [str(w.message) for w in caught] == [clip.warning]
    # asking for less than the readable part is no shortfall
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)
        assert decode_video(half, 0.0, 0.64).warning is None


def test_shorter_than_asked_is_reported(tmp_path):
    times = cfr_times(24, 3)
    path = make_video(tmp_path / "v3.mp4", times, rate=24, time_base=Fraction(1, 240),
                      audio_tone=(300, 16000))
    with pytest.warns(MediaWarning, match="v3.mp4: used"):
        clip = decode_video(path, 0.5, 8.0)
    _, _, d = _expected(times, Fraction(1, 2), 8.0)
    last = float(times[-1])
    assert clip.duration == d and clip.truncated
    assert clip.warning.startswith(f"v3.mp4: used {d:.3f} s of the 8 s asked from 0.5 s: the "
                                   f"source ends there (its last frame is at {last:.3f} s)")
    assert "damaged" not in clip.warning  # a short file is not a damaged one
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)
        assert decode_video(path, 0.5, 2.0).warning is None
    n = 30
    with pytest.warns(MediaWarning, match=rf"IMAGE batch \({n} frames at 10 fps\): used"):
        images = frames_from_images(torch.zeros(n, 8, 8, 3), 10, duration=8.0)
    assert images.truncated and images.warning.startswith(
        f"the IMAGE batch ({n} frames at 10 fps): used {images.duration:.3f} s of the 8 s asked "
        f"from 0 s: the source ends there (its last frame is at {(n - 1) / 10:.3f} s)")


def test_mpegts_single_keyframe_late_start_decodes_from_the_beginning(tmp_path):
    # one keyframe for the whole file: a seek past it lands nowhere and must fall back to
    # reading from the start instead of calling the file empty
    times = cfr_times(25, 3)
    path = make_video(tmp_path / "one_key.ts", times, rate=25, time_base=Fraction(1, 90000),
                      gop=10 * len(times))
    with av.open(str(path)) as c:
        keys = sum(1 for pkt in c.demux(video=0) if pkt.is_keyframe)
    assert keys == 1, f"the sample has {keys} keyframes"
    clip = decode_video(path, 1.0, 1.5)
    assert _indices(clip, 64, 48) == _expected(times, 1, 1.5)[:2]
    assert clip.duration == 1.5 and clip.warning is None


def test_error_start_past_end_says_length(tmp_path):
    path = make_video(tmp_path / "v.mp4", cfr_times(24, 3), rate=24, time_base=Fraction(1, 240))
    with pytest.raises(ConfigError, match=r"past the end.* 3\.0\d* s long"):
        decode_video(path, start=5.0)
    imgs = torch.zeros(10, 8, 8, 3)
    with pytest.raises(ConfigError, match="past the end"):
        frames_from_images(imgs, 10, start=2.0)


def test_error_too_short(tmp_path):
    with pytest.raises(ConfigError, match="0.64 s minimum"):
        decode_video(tmp_path / "whatever.mp4", duration=0.5)
    path = make_video(tmp_path / "v.mp4", cfr_times(24, 3), rate=24, time_base=Fraction(1, 240))
    with pytest.raises(MediaError, match="0.64 s minimum"):
        decode_video(path, start=2.6, duration=2.0)
