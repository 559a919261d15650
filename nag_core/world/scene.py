"""Rendering world clips: frames (T, 64, 64, 3) float in [0, 1] at 25 fps and 16 kHz audio, with
every object's own track kept (ground truth for the detectors) and the event times that tie
picture and sound together (ball contacts, lamp lit intervals).

Everything is drawn from one seed, so a clip is reproducible from ``(seed, objects, duration)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

OBJECTS = ("ball", "lamp", "fan", "rain")
CAPTIONS = {"ball": "ball bounces", "lamp": "lamp beeps", "fan": "fan hums", "rain": "rain falls"}
SIZE = 64
FPS = 25
SAMPLE_RATE = 16000
# Frequency band of each object's sound: disjoint, so a band's energy names its object.
BANDS = {"ball": (400.0, 720.0), "lamp": (800.0, 1250.0), "fan": (90.0, 260.0),
         "rain": (5000.0, 7000.0)}
BACKGROUND = 0.1
# The ball's sound at each contact: a short steady tone, harmonics 7-11 of 62.5 Hz (437.5-687.5
# Hz) with fixed (Schroeder) phases, held for BALL_SECONDS with 10 ms fades: the lamp's kind of
# sound (periodic per mel hop, below 2 kHz), only short and lower. History, measured through the
# tiny VAE + vocoder: a 40 ms burst of 2.5-4 kHz noise kept 2 dB of event contrast (the vocoder's
# last stage, 8 channels wide, is the only one that makes sound above 2 kHz); a 0.16 s thud of
# the same harmonics decaying in 35 ms lived in about two mel frames and the vocoder never made
# it (-16 dB). A tone held over many mel frames was chosen because the lamp showed the tiny
# models can make and learn such a sound. Measured (bench/RESULTS.md, sixth
# pass): the VAE keeps it (60 dB) and a vocoder trained on the true mels makes it (13 dB), but
# at 0.2 s the base made a ball-band sound when asked and did not time it: the Synchformer token
# a latent frame receives shows a moment up to 0.42 s away (MMAudio's token layout), so a 0.2 s
# sound is over before its token arrives. At 0.4 s, with bounces 0.9-1.4 s apart (the lamp's
# kind of durations), the base times it in most videos.
BALL_SECONDS, BALL_FADE, BALL_LEVEL = 0.4, 0.01, 0.2
BALL_PERIOD = (0.9, 1.4)  # s between bounces: at least 0.5 s of silence between tones
BALL_F0, BALL_HARMONICS = 62.5, (7, 8, 9, 10, 11)
LAMP_F0, LAMP_HARMONICS = 62.5, tuple(range(14, 20))  # the lamp's beep: 875-1187.5 Hz
FAN_HZ = 125.0  # the fan's hum: 125 + 250 Hz (harmonics of 62.5 Hz, as the lamp)
GLOW, GLOW_SIGMA = 0.25, 28.0  # brightness added around a lit lamp, its spread in pixels
# The orange glow on the floor while the ball sounds: its peak, spread in pixels and colour
BALL_GLOW, BALL_GLOW_SIGMA, BALL_GLOW_RGB = 0.25, 20.0, (1.0, 0.5, 0.0)


@dataclass
class Clip:
    """One rendered clip. ``tracks[name]`` is that object's sound alone; ``audio`` their sum."""

    seed: int
    objects: tuple  # visible objects
    duration: float
    frames: np.ndarray  # (T, 64, 64, 3) float32 in [0, 1], frame i shown at i / FPS
    audio: np.ndarray  # (samples,) float32 at SAMPLE_RATE
    tracks: dict = field(default_factory=dict)
    contacts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ball floor contacts, s
    lit: list = field(default_factory=list)  # lamp lit intervals [(start, end)], s
    audible: tuple = ()  # the visible objects that make their sound (the rest are silent)

    @property
    def fps(self) -> int:
        return FPS

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def sounding(self) -> list:
        """[(start, end)] s where the ball's sound plays (from its contacts)."""
        return ball_intervals(self.contacts, self.duration)

    def lit_mask(self, times: np.ndarray) -> np.ndarray:
        """True where the lamp is lit at ``times`` (seconds)."""
        return interval_mask(self.lit, times)

    def sounding_mask(self, times: np.ndarray) -> np.ndarray:
        """True where the ball's sound plays at ``times`` (seconds)."""
        return interval_mask(self.sounding, times)


def interval_mask(intervals, times: np.ndarray) -> np.ndarray:
    """True at ``times`` inside any [start, end) of ``intervals``."""
    mask = np.zeros(len(times), dtype=bool)
    for a, b in intervals:
        mask |= (times >= a) & (times < b)
    return mask


def sample_objects(rng: np.random.Generator, must=()) -> tuple:
    """2-3 distinct objects (always including ``must``), in OBJECTS order."""
    count = int(rng.integers(2, 4))
    rest = [o for o in OBJECTS if o not in must]
    chosen = list(must) + list(rng.choice(rest, size=max(0, count - len(must)), replace=False))
    return tuple(o for o in OBJECTS if o in chosen)


# How much the training captions leave out, and how often a visible object is silent (the one
# thing about the sound the picture cannot show). For a ball + lamp video and a model that learned
# the data exactly, p(ball audible | "lamp beeps") is about 0.66 at P_SILENT 0.2, 0.52 at 0.3 and
# 0.33 at 0.45 (sampled with sample_objects, sample_audible and training_caption). Independent
# CFG scales the ball the video implies by about α·p and a perfect negative branch adds β·(p - 1),
# so the silent share sets both how much leaks and how much NAG can remove (bench/RESULTS.md,
# eighth and ninth passes): at 0.2 the ball leaked in 97 % of videos and nothing removed it; at
# 0.45 the text steered 5-6 dB but the ball leaked in only 38 % (the check asks >= 50 %);
# 0.3 keeps it (about 70 %) and lets NAG and text NAG move it. The shipped set is trained at 0.3.
P_ONE_NAMED = 0.9
P_SILENT = 0.3


def training_caption(objects, rng: np.random.Generator) -> str:
    """A caption naming a random non-empty subset of the audible objects: the picture, not the
    text, tells the model everything that sounds (as with real MMAudio training captions).

    One object is named with probability P_ONE_NAMED (else 2 or more, as many as there are):
    short captions that leave audible objects out are what make a one-object prompt still give
    the other visible objects' sounds (the leakage a chain's later steps must avoid)."""
    objects = list(objects)
    if len(objects) == 1 or rng.random() < P_ONE_NAMED:
        k = 1
    else:
        k = int(rng.integers(2, len(objects) + 1))
    named = rng.permutation(objects)[:k]
    return " and ".join(CAPTIONS[o] for o in named)


def band_noise(rng: np.random.Generator, samples: int, lo: float, hi: float) -> np.ndarray:
    """White noise restricted to [lo, hi] Hz by zeroing FFT bins, scaled to unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1.0 / SAMPLE_RATE)
    spec[(freqs < lo) | (freqs > hi)] = 0
    x = np.fft.irfft(spec, n=samples)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def _grid():
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return y, x


# ----------------------------------------------------------------------------- objects
def bounce_sound() -> np.ndarray:
    """The ball's sound at one contact (BALL_SECONDS of samples): the same at every contact."""
    t = np.arange(int(BALL_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    n = len(BALL_HARMONICS)
    tone = sum(np.sin(2 * math.pi * BALL_F0 * h * t + math.pi * k * (k - 1) / n)
               for k, h in enumerate(BALL_HARMONICS))
    fade = np.minimum(1.0, np.minimum(t, BALL_SECONDS - t) / BALL_FADE)  # no clicks at the ends
    return BALL_LEVEL * tone / np.sqrt(n / 2) * fade


def ball_intervals(contacts, duration: float) -> list:
    """[(start, end)] s where the ball sounds: BALL_SECONDS from every contact."""
    return [(float(c), min(float(c) + BALL_SECONDS, duration)) for c in contacts if c < duration]


def _ball(rng, t_frames, t_audio, duration):
    period = rng.uniform(*BALL_PERIOD)
    phase = rng.uniform(0.1, period)
    cx = rng.uniform(10, 22)
    height = np.abs(np.sin(math.pi * (t_frames - phase) / period)) * 17.0
    cy = 25.0 - height
    y, x = _grid()
    disk = ((y[None] - cy[:, None, None]) ** 2 + (x[None] - cx) ** 2) <= 5.0 ** 2
    layer = np.where(disk[..., None], np.float32(1.0), np.nan)  # white, nan = transparent
    contacts = np.arange(phase, duration, period)
    sounding = ball_intervals(contacts, duration)
    # While the ball sounds (BALL_SECONDS from each contact) a splash lies on the floor under it
    # and the floor glows orange, as a lit lamp lights the room: the sound's state is then in
    # every frame it lasts and in most image patches, not only in the turn of the motion (a
    # splash for the 50 ms around a contact left "the ball sounds" in 80 % of Synchformer
    # tokens, against the lamp's 100 %, and the base never timed the ball).
    on = interval_mask(sounding, t_frames)
    splash = (y >= 30) & (y < 33) & (np.abs(x - cx) <= 9)
    mark = on[:, None, None] & splash[None]
    layer = np.where(mark[..., None], np.array([1.0, 0.6, 0.2], np.float32), layer)
    glow = BALL_GLOW * np.exp(-((y - 31.0) ** 2 + (x - cx) ** 2) / (2 * BALL_GLOW_SIGMA ** 2))
    glow = (on[:, None, None] * glow[None])[..., None] * np.array(BALL_GLOW_RGB, np.float32)
    audio = np.zeros_like(t_audio)
    sound = bounce_sound()
    n = len(sound)
    for c in contacts:
        i = int(round(c * SAMPLE_RATE))
        m = min(n, len(audio) - i)
        if m > 0:
            audio[i:i + m] += sound[:m]
    return layer, audio, {"contacts": contacts, "glow": glow.astype(np.float32)}


def _lamp(rng, t_frames, t_audio, duration):
    lit, t, on = [], 0.0, bool(rng.integers(0, 2))
    while t < duration:
        d = rng.uniform(0.3, 1.0)
        if on:
            lit.append((t, min(t + d, duration)))
        t, on = t + d, not on
    y, x = _grid()
    square = (y >= 8) & (y < 24) & (x >= 40) & (x < 56)
    lit_f = interval_mask(lit, t_frames)
    lit_a = interval_mask(lit, t_audio).astype(np.float64)
    on_rgb = np.array([1.0, 0.9, 0.2], np.float32)
    off_rgb = np.array([0.3, 0.3, 0.25], np.float32)
    colour = np.where(lit_f[:, None], on_rgb, off_rgb)  # (T, 3)
    layer = np.where(square[None, ..., None], colour[:, None, None, :], np.nan)
    # A lit lamp also lights the room (a broad glow added to the whole frame): the lit state then
    # shows in most image patches, not only in the 4 of 49 Synchformer patches under the lamp.
    glow = GLOW * np.exp(-((y - 16.0) ** 2 + (x - 48.0) ** 2) / (2 * GLOW_SIGMA ** 2))
    glow = (lit_f[:, None, None] * glow[None]).astype(np.float32)[..., None]  # all channels
    ramp = int(0.005 * SAMPLE_RATE)  # 5 ms fades: no clicks at switching times
    lit_a = np.convolve(lit_a, np.ones(ramp) / ramp, mode="same")
    # A beep around 1 kHz: harmonics 14-19 of 62.5 Hz (875-1187.5 Hz, 1 kHz among them) with
    # fixed (Schroeder) phases. Not a pure 1 kHz sine: that lives in one of the 80 mel bands,
    # which the tiny VAE smooths away. Not band noise: a deterministic vocoder trained for
    # minutes cannot make noise. And 62.5 Hz because its period is the mel hop (256 samples):
    # every frame of the beep is the same waveform, which a tiny BigVGAN learns quickly (at
    # harmonics of 110 Hz it made nothing in 500 steps). The detectors read 0.8-1.25 kHz.
    n = len(LAMP_HARMONICS)
    tone = sum(np.sin(2 * math.pi * LAMP_F0 * h * t_audio + math.pi * k * (k - 1) / n)
               for k, h in enumerate(LAMP_HARMONICS))
    audio = 0.18 * tone / np.sqrt(n / 2) * lit_a
    return layer.astype(np.float32), audio, {"lit": lit, "glow": glow}


def _fan(rng, t_frames, t_audio, duration):
    speed = rng.uniform(0.4, 0.9) * rng.choice([-1, 1])  # rev/s (slow enough to see at 25 fps)
    theta0 = rng.uniform(0, 2 * math.pi)
    y, x = _grid()
    cy, cx = 48.0, 48.0
    r = np.hypot(y - cy, x - cx)
    ang = np.arctan2(y - cy, x - cx)
    theta = theta0 + 2 * math.pi * speed * t_frames  # (T,)
    # distance in angle to the nearest of three blades
    d = (ang[None] - theta[:, None, None]) % (2 * math.pi / 3)
    d = np.minimum(d, 2 * math.pi / 3 - d)
    blade = (d * np.maximum(r[None], 1.0) <= 1.6) & (r[None] <= 13)
    hub = r <= 2.5
    mask = blade | hub[None]
    layer = np.where(mask[..., None], np.array([0.2, 0.4, 1.0], np.float32), np.nan)
    audio = 0.15 * (np.sin(2 * math.pi * FAN_HZ * t_audio)
                    + 0.5 * np.sin(2 * math.pi * 2 * FAN_HZ * t_audio))
    return layer.astype(np.float32), audio, {}


def _rain(rng, t_frames, t_audio, duration):
    drops = 12
    xs = rng.uniform(2, 30, drops)
    y0 = rng.uniform(0, 32, drops)
    v = rng.uniform(25, 45, drops)  # px/s
    y, x = _grid()
    mask = np.zeros((len(t_frames), SIZE, SIZE), dtype=bool)
    for k in range(drops):
        top = 32 + (y0[k] + v[k] * t_frames) % 28  # (T,)
        shift = (y[None] - top[:, None, None]) * 0.3  # slanted streaks
        streak = ((y[None] >= top[:, None, None]) & (y[None] < top[:, None, None] + 4)
                  & (np.abs(x[None] - xs[k] - shift) <= 0.6))
        mask |= streak
    layer = np.where(mask[..., None], np.array([0.4, 0.8, 1.0], np.float32), np.nan)
    audio = 0.06 * band_noise(rng, len(t_audio), *BANDS["rain"])
    return layer.astype(np.float32), audio, {}


_MAKERS = {"ball": _ball, "lamp": _lamp, "fan": _fan, "rain": _rain}


def sample_audible(rng: np.random.Generator, objects, p_silent: float) -> tuple:
    """Each visible object is silent with probability ``p_silent`` (at least one stays audible):
    as in real videos, the picture does not say everything about the sound, so the earlier tracks
    of a chain carry information the picture lacks."""
    keep = [o for o in objects if rng.random() >= p_silent]
    if not keep:
        keep = [objects[int(rng.integers(len(objects)))]]
    return tuple(o for o in objects if o in keep)


def render_clip(seed: int, objects=None, duration: float = 8.0, audible=None,
                p_silent: float = 0.0) -> Clip:
    """Render one clip. ``objects`` None draws 2-3 at random from the seed. ``audible`` (default:
    every object, or a random subset when ``p_silent`` > 0) are the objects that sound."""
    rng = np.random.default_rng(seed)
    if objects is None:
        objects = sample_objects(rng)
    objects = tuple(objects)
    if audible is None:
        audible = sample_audible(rng, objects, p_silent) if p_silent > 0 else objects
    audible = tuple(o for o in objects if o in audible)
    unknown = [o for o in objects if o not in OBJECTS]
    if unknown or not objects:
        raise ConfigError(f"unknown world objects {unknown}; choose from {', '.join(OBJECTS)}")
    if duration <= 0:
        raise ConfigError(f"duration must be positive, got {duration}")
    n_frames = int(round(duration * FPS))
    n_samples = int(round(duration * SAMPLE_RATE))
    t_frames = np.arange(n_frames) / FPS
    t_audio = np.arange(n_samples) / SAMPLE_RATE
    frames = np.full((n_frames, SIZE, SIZE, 3), BACKGROUND, dtype=np.float32)
    tracks, info = {}, {}
    for name in OBJECTS:  # fixed order: each object's draws do not depend on the others
        sub = np.random.default_rng([seed, OBJECTS.index(name)])
        if name not in objects:
            continue
        layer, audio, extra = _MAKERS[name](sub, t_frames, t_audio, duration)
        frames = np.where(np.isnan(layer), frames, layer)
        if "glow" in extra:
            glow = extra.pop("glow")
            frames = np.clip(frames + glow, 0.0, 1.0).astype(np.float32)
        if name in audible:
            tracks[name] = audio.astype(np.float32)
        info.update(extra)
    mix = np.sum([tracks[o] for o in audible], axis=0)
    peak = float(np.abs(mix).max())
    if peak > 0.95:  # the mel front end clamps to [-1, 1]: scale every track alike
        tracks = {k: (v * (0.95 / peak)).astype(np.float32) for k, v in tracks.items()}
        mix = mix * (0.95 / peak)
    mix = mix.astype(np.float32)
    return Clip(seed=seed, objects=objects, duration=float(duration), frames=frames, audio=mix,
                tracks=tracks, contacts=np.asarray(info.get("contacts", np.zeros(0))),
                lit=info.get("lit", []), audible=audible)
