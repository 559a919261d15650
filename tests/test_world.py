"""The synthetic Foley world: reproducible clips and signature detectors on ground-truth audio."""

import numpy as np
import pytest

from nag_core.errors import ConfigError
from bench.world.detectors import aa_similarity, log_mel, signature_report
from nag_core.world.scene import (BALL_FADE, BALL_LEVEL, BALL_SECONDS, BANDS, CAPTIONS, SIZE,
                                  render_clip, training_caption)


@pytest.fixture(scope="module")
def clip():
    return render_clip(5, ("ball", "lamp", "fan", "rain"), 4.0)


def test_clip_is_reproducible_and_shaped(clip):
    again = render_clip(5, ("ball", "lamp", "fan", "rain"), 4.0)
    assert clip.frames.shape == (100, SIZE, SIZE, 3)
    assert clip.audio.shape == (64000,)
    assert np.array_equal(clip.audio, again.audio) and np.array_equal(clip.frames, again.frames)
    assert np.abs(clip.audio).max() <= 0.95 + 1e-6
    # an object's draws do not depend on which other objects share the clip
    pair = render_clip(5, ("ball", "lamp"), 4.0)
    assert np.allclose(pair.contacts, clip.contacts) and pair.lit == clip.lit


def test_lamp_is_bright_exactly_while_lit(clip):
    times = np.arange(100) / 25
    lit = clip.lit_mask(times)
    square = clip.frames[:, 8:24, 40:56, 2]  # blue channel: 0.2 lit, 0.25 dark
    assert lit.any() and (~lit).any()
    assert np.all(clip.frames[lit, 16, 48, 0] == 1.0) and np.all(clip.frames[~lit, 16, 48, 0] < 0.5)
    assert square.shape == (100, 16, 16)


def test_ball_touches_floor_at_contacts(clip):
    # the ball's lowest pixel row is near the floor at contact frames only
    rows = [np.nonzero(clip.frames[i, :32, :32, 1] == 1.0)[0].max() for i in range(100)]
    at = [int(round(c * 25)) for c in clip.contacts if c * 25 < 99.5]
    assert min(rows[i] for i in at) >= 28
    assert np.median(rows) < 25


def test_detectors_name_each_object(clip):
    mels = {k: log_mel(v) for k, v in clip.tracks.items()}
    lamp, ball = signature_report(mels["lamp"], clip), signature_report(mels["ball"], clip)
    assert lamp["lamp_present"] and not lamp["ball_present"]
    assert ball["ball_present"] and not ball["lamp_present"]
    assert lamp["share_lamp"] > -1 and lamp["share_ball"] < -40
    for name in ("fan", "rain"):
        r = signature_report(mels[name], clip)
        assert not r["lamp_present"] and not r["ball_present"]
        assert r[f"share_{name}"] > -1
    mix = signature_report(log_mel(clip.audio), clip)
    assert mix["lamp_present"] and mix["ball_present"]


def test_detectors_see_timing_not_just_band():
    # a lamp tone at the wrong times (another clip's schedule) is not "present"
    a, b = render_clip(1, ("ball", "lamp"), 4.0), render_clip(2, ("ball", "lamp"), 4.0)
    wrong = signature_report(log_mel(b.tracks["lamp"]), a)
    assert not wrong["lamp_present"] or wrong["lamp_sync"] < signature_report(
        log_mel(a.tracks["lamp"]), a)["lamp_sync"] / 2
    assert not signature_report(log_mel(b.tracks["ball"]), a)["ball_present"]


def test_aa_similarity(clip):
    mb, ml, mm = (log_mel(clip.tracks["ball"]), log_mel(clip.tracks["lamp"]),
                  log_mel(clip.audio))
    assert aa_similarity(mm, mm) == pytest.approx(1.0)
    assert aa_similarity(mb, ml) < 0.2
    assert aa_similarity(mb, ml) < aa_similarity(mm, ml)


def test_captions_and_errors():
    rng = np.random.default_rng(0)
    caps = {training_caption(("ball", "lamp"), rng) for _ in range(50)}
    assert {"ball bounces", "lamp beeps"} <= caps
    assert all(set(c.split(" and ")) <= set(CAPTIONS.values()) for c in caps)
    with pytest.raises(ConfigError, match="unknown world objects"):
        render_clip(0, ("dog",))


def test_captions_mostly_name_one_audible_object():
    # short captions that leave audible objects out are what make a one-object prompt still give
    # the other objects' sounds (the leakage the chain's later steps must avoid)
    from nag_core.world.scene import P_ONE_NAMED
    rng = np.random.default_rng(1)
    objects = ("ball", "lamp", "fan")
    caps = [training_caption(objects, rng) for _ in range(2000)]
    counts = np.array([len(c.split(" and ")) for c in caps])
    assert abs((counts == 1).mean() - P_ONE_NAMED) < 0.04
    assert (counts == 2).any() and (counts == 3).any()
    assert all(len(set(c.split(" and "))) == n for c, n in zip(caps, counts))
    assert {training_caption(("rain",), rng) for _ in range(5)} == {"rain falls"}


def test_ball_sounds_for_its_interval_after_every_contact_and_is_silent_between():
    c = render_clip(6, ("ball",), 4.0)
    wave = c.tracks["ball"]
    t = np.arange(len(wave)) / c.sample_rate
    on = np.zeros(len(wave), dtype=bool)
    for a, b in c.sounding:
        on |= (t >= a) & (t < b)
        inner = (t >= a + BALL_FADE) & (t < b - BALL_FADE)
        # the tone holds (RMS of a steady sum of 5 unit-power harmonics at BALL_LEVEL)
        assert np.sqrt(np.mean(wave[inner] ** 2)) > 0.5 * BALL_LEVEL
        assert b - a == pytest.approx(min(BALL_SECONDS, c.duration - a))
    assert len(c.sounding) == int((c.contacts < c.duration).sum()) > 2
    assert np.abs(wave[~on]).max() == 0.0  # silent between bounces
    # its band: nearly all of its energy between 400 and 720 Hz
    spec = np.abs(np.fft.rfft(wave)) ** 2
    f = np.fft.rfftfreq(len(wave), 1 / c.sample_rate)
    lo, hi = BANDS["ball"]
    assert spec[(f >= lo) & (f <= hi)].sum() > 0.95 * spec.sum()


def test_silent_objects_are_seen_not_heard():
    full = render_clip(7, ("ball", "lamp", "fan"), 2.0)
    muted = render_clip(7, ("ball", "lamp", "fan"), 2.0, audible=("lamp",))
    assert np.array_equal(full.frames, muted.frames)
    assert set(muted.tracks) == {"lamp"} and muted.audible == ("lamp",)
    rng_clips = [render_clip(s, None, 1.0, p_silent=0.5) for s in range(20)]
    assert all(c.audible and set(c.audible) <= set(c.objects) for c in rng_clips)
    assert any(len(c.audible) < len(c.objects) for c in rng_clips)


def test_vae_band_weights_favour_bands_that_switch():
    import torch
    from bench.world.train import band_weights
    mel = torch.zeros(3, 80, 100)
    mel[:, 10, ::2] = 1.0  # band 10 switches on and off; the others are stationary
    w = band_weights(mel, 3.0)
    assert w.shape == (1, 80, 1)
    assert abs(float(w.mean()) - 1.0) < 1e-6
    assert float(w[0, 10, 0]) > 10 * float(w[0, 0, 0])
    assert torch.allclose(band_weights(mel, 0.0), torch.ones(1, 80, 1))


def test_lit_lamp_lights_the_room():
    # the glow puts the lamp's state in image patches far from the lamp (e.g. the ball's corner)
    c = render_clip(4, ("lamp",), 4.0)
    lit = c.lit_mask(np.arange(len(c.frames)) / c.fps)
    corner = c.frames[:, 20:30, 0:10].mean(axis=(1, 2, 3))
    assert lit.any() and (~lit).any()
    assert corner[lit].min() > corner[~lit].max() + 0.03


def test_training_windows_are_exact_crops_of_the_whole_clip():
    """A 4 s window cut from an 8 s clip's features is what encoding that window gives: exactly
    for Synchformer tokens (windows start every 8 frames = one 0.32 s shift), within 1/16 s of
    CLIP frames."""
    import torch

    from bench.world import train as T
    from nag_core.media import frames_from_images

    torch.set_num_threads(1)
    fm = T.features_model()
    data = T.build_data(fm, [3], 8.0, p_silent=0.2)
    assert data.shifts == 13 and len(data.windows()) == 13
    clip = render_clip(3, None, 8.0, p_silent=0.2)
    for j in (0, 5, 12):
        direct = fm.encode_video(frames_from_images(torch.from_numpy(clip.frames), 25,
                                                    start=T.SHIFT * j, duration=4.0))
        clip_f, sync_f = data.video(torch.tensor([0]), torch.tensor([j]))
        assert torch.equal(sync_f, direct.sync_f)
        assert clip_f.shape == direct.clip_f.shape
        mel = data.mel_windows(torch.tensor([0]), torch.tensor([j]))
        wave = data.wave_windows(torch.tensor([0]), torch.tensor([j]))
        # the same mel frames, except at the window's edges (the front end pads each input)
        assert torch.allclose(mel[..., 4:-4], fm.mel(wave)[..., 4:-4], atol=1e-4)


def test_training_audio_and_latents_are_what_the_product_encodes():
    """The training audio is the clip's audio as a 16-bit file returns it, and each window's
    latents are that window encoded alone (the VAE's attention makes crops of a whole clip's
    latents differ), as the chain's conditioning mix and the ControlNet CLI's extraction."""
    import torch

    from bench.world import train as T
    from nag_core.media.audio import pcm16_round_trip

    torch.set_num_threads(1)
    fm = T.features_model()
    data = T.build_data(fm, [4, 5], 8.0, p_silent=0.2)
    clip = render_clip(5, None, 8.0, p_silent=0.2)
    assert torch.equal(data.wave[1], pcm16_round_trip(torch.from_numpy(clip.audio)))
    mean, std = T.window_posteriors(fm, data, batch=5)  # batches that split a clip's windows
    n = fm.network.latent_seq_len
    assert mean.shape == std.shape == (len(data), data.shifts, n, mean.shape[-1])
    for c, j in ((0, 0), (1, 7), (1, data.shifts - 1)):
        wave = data.wave_windows(torch.tensor([c]), torch.tensor([j]))[0]
        alone = fm.encode_posterior(wave, T.SR, n)
        assert torch.allclose(mean[c, j], alone.mean[0].T, atol=1e-5)
        assert torch.allclose(std[c, j], alone.std[0].T, atol=1e-5)
        assert torch.equal(T.latent_windows(mean, torch.tensor([c]), torch.tensor([j]))[0],
                           mean[c, j])


def test_the_picture_shows_the_ball_sounding_in_every_frame_it_lasts():
    c = render_clip(5, ("ball",), 4.0)
    t = np.arange(len(c.frames)) / c.fps
    on = c.sounding_mask(t)
    assert on.any() and (~on).any()
    splash = c.frames[:, 30:33, :, 1].max(axis=(1, 2))  # the splash's green 0.6 vs background
    assert np.all(splash[on] > 0.5) and np.all(splash[~on] < 0.2)
    # the floor's glow reaches patches far from the ball (the lamp's corner), in red not blue
    corner = c.frames[:, 0:10, 54:64]
    red, blue = corner[..., 0].mean(axis=(1, 2)), corner[..., 2].mean(axis=(1, 2))
    assert red[on].min() > red[~on].max() + 0.01
    assert np.allclose(blue[on], blue[~on].mean(), atol=1e-6)


def test_criteria_read_the_issue_checks_off_a_summary():
    from bench.world.evaluate import criteria

    def row(leak, ask):  # (mean, lo, hi) as table() stores them
        return {"leak_rate": (leak, leak, leak), "ask_rate": (ask, ask, ask)}

    summary = {"step1": row(0.92, 0.0), "independent": row(0.8, 0.9),
               "nag_b1.5": row(0.5, 0.9), "nag_b3": row(0.4, 0.86),
               "text_nag_b1.5": row(0.3, 0.8), "text_nag_b3": row(0.2, 0.7)}
    c = criteria(summary, "ball_then_lamp", "nag")
    assert c["step1_ok"] and c["leak_ok"] and c["halved"] and c["best"][0] == 3.0
    t = criteria(summary, "ball_then_lamp", "text_nag")  # halves it, but loses the step-2 object
    assert not t["halved"] and t["best"][1] == 0.2
    summary["step1"] = row(0.85, 0.0)
    summary["independent"] = row(0.45, 0.9)
    c = criteria(summary, "ball_then_lamp", "nag")
    assert not c["step1_ok"] and not c["leak_ok"]
    summary["independent"] = row(0.0, 0.9)  # nothing leaks: 0 <= 0 / 2 is not a halving
    assert not criteria(summary, "ball_then_lamp", "nag")["halved"]


def test_vocoder_training_keeps_its_best_checked_state(monkeypatch):
    import torch

    from bench.world import train as T

    torch.set_num_threads(1)
    fm = T.features_model()
    clip = render_clip(2, ("ball", "lamp"), 1.0)
    wave = torch.from_numpy(clip.audio)[None]
    data = T.WorldData([clip], None, None, fm.mel(wave), wave)
    scores, states = iter([1.0, 5.0, 2.0]), []

    def score(voc, mel_conv, clips):
        assert clips == ["held-out"] and not voc.training
        states.append({k: v.clone() for k, v in voc.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(T, "vocoder_score", score)
    voc = T.train_vocoder(fm, data, 3, batch=1, frames=8, check_every=1,
                          check_clips=["held-out"])
    assert len(states) == 3  # checked after every step
    assert not torch.equal(states[1]["conv_post.weight"], states[2]["conv_post.weight"])
    assert all(torch.equal(v, states[1][k]) for k, v in voc.state_dict().items())  # the 5.0 one
    with pytest.raises(ValueError, match="check_clips"):
        T.train_vocoder(fm, data, 1, batch=1, frames=8, check_every=1)


def test_a_band_that_follows_the_events_at_a_whisper_is_not_the_object():
    # a lamp 30 dB under the ball: its band follows the lit intervals (contrast well over the
    # threshold) but holds a tiny share of the track while lit, as another object's spill does
    from bench.world.detectors import PRESENT_DB, PRESENT_SHARE_DB

    c = render_clip(3, ("ball", "lamp"), 4.0)
    faint = signature_report(log_mel(c.tracks["ball"] + 0.03 * c.tracks["lamp"]), c)
    assert faint["lamp_sync"] > PRESENT_DB and faint["lamp_on_share"] < PRESENT_SHARE_DB
    assert not faint["lamp_present"] and faint["ball_present"]
    clear = signature_report(log_mel(c.tracks["ball"] + 0.5 * c.tracks["lamp"]), c)
    assert clear["lamp_present"] and clear["ball_present"]


def test_shipping_halves_float32_files_and_leaves_float16_ones_untouched(tmp_path):
    """ship_model_set stores float32 tensors as float16; a file already in float16 (kept from an
    earlier shipped set) keeps its bytes, so a new ship does not add it to the history again."""
    import torch

    from bench.world.evaluate import ship_model_set
    from nag_core.checkpoint import read_checkpoint, write_torch

    src = tmp_path / "src"
    src.mkdir()
    g = torch.Generator().manual_seed(0)
    write_torch({"w": torch.randn(4, 3, generator=g)}, src / "full.pth")
    write_torch({"w": torch.randn(4, 3, generator=g).half()}, src / "half.pth")
    kept = (src / "half.pth").read_bytes()
    dst = ship_model_set(src, tmp_path / "dst")
    assert (dst / "half.pth").read_bytes() == kept
    full, _ = read_checkpoint(dst / "full.pth")
    original, _ = read_checkpoint(src / "full.pth")
    assert full["w"].dtype == torch.float16
    assert torch.equal(full["w"], original["w"].half())
