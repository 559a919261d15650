"""A step-by-step Foley chain run to files: one WAV per step, the −20 LUFS composite, the input
video with the composite muxed in, and ``record.json`` (every setting, file hashes, methods,
loudness, timings, versions), all in one output folder.

:func:`run_chain` starts a chain; :func:`redo_chain` reopens a folder from its record and
regenerates step k and every later step (or appends a step), leaving the files of the earlier
steps untouched, byte for byte. Tracks are written as 32-bit float WAV by default so a redo
conditions on exactly the audio the first run made.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

from .atomic import write_text
from .errors import ConfigError
from .filehash import cached_sha256, sha256_file

RECORD_NAME = "record.json"
RECORD_FORMAT = "nag-foley-record"
RECORD_VERSION = 1
COMPOSITE_NAME = "composite.wav"
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm")
STEP_FIELDS = ("prompt", "seed", "steps", "alpha", "beta", "method", "negative_text", "gain_db")


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return s or "track"


def track_name(k: int, prompt: str) -> str:
    return f"track_{k:02d}_{slug(prompt)}.wav"


def default_method(controlnet) -> str:
    return "nag" if controlnet else "negative_prompt"


def _versions() -> dict:
    import av
    import numpy
    import pyloudnorm
    import torch

    from . import __version__
    return {"nag_core": __version__, "torch": torch.__version__,
            "python": platform.python_version(),
            "av": av.__version__, "numpy": numpy.__version__,
            "pyloudnorm": getattr(pyloudnorm, "__version__", "unknown")}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _output_video_path(out_dir: Path, video: Path) -> Path:
    """``<stem>.foley<suffix>`` in the output folder, never the input itself."""
    from .media._files import same_file
    suffix = video.suffix.lower() if video.suffix.lower() in VIDEO_SUFFIXES else ".mp4"
    n = 1
    while True:
        name = f"{video.stem}.foley{'' if n == 1 else f'-{n}'}{suffix}"
        candidate = out_dir / name
        if not (candidate.exists() and same_file(candidate, video)):
            return candidate
        n += 1


# --------------------------------------------------------------------------- model + session
def _load(variant, models_dir, device, dtype, offline, progress, log):
    import torch

    from .download import ensure_model_files
    from .weights import load_model_files
    files = ensure_model_files(variant, models_dir, offline=offline, progress=progress)
    dev = torch.device(device) if device else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    dt = parse_dtype(dtype)
    log(f"loading {variant} from {files.network.parent} on {dev} ({str(dt).replace('torch.', '')})")
    model = load_model_files(files, device=dev, dtype=dt)
    return model, files


def parse_dtype(dtype):
    import torch
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if str(dtype).lower() not in names:
        raise ConfigError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return names[str(dtype).lower()]


def _file_entry(path: Path, cached: bool = False) -> dict:
    return {"path": str(path.resolve()), "size": path.stat().st_size,
            "sha256": cached_sha256(path) if cached else sha256_file(path)}


def _model_entry(files, model, variant, models_dir) -> dict:
    entry = {"variant": variant, "detected_variant": getattr(model, "variant", variant),
             "models_dir": str(Path(models_dir).resolve()),
             "sample_rate": model.sample_rate, "device": str(model.device),
             "dtype": str(model.dtype).replace("torch.", ""), "files": {}}
    for kind in ("network", "vae", "vocoder", "vocoder_config", "synchformer", "clip", "bpe_vocab"):
        p = getattr(files, kind)
        if p is not None:
            entry["files"][kind] = _file_entry(Path(p), cached=True)
    return entry


class _Progress:
    """tqdm bars on stderr: one over the chain's steps, one over each step's Euler steps."""

    def __init__(self, total_steps: int, enabled: bool):
        from tqdm import tqdm
        self.tqdm, self.enabled = tqdm, enabled
        self.chain = tqdm(total=total_steps, desc="chain", unit="step", disable=not enabled,
                          position=0)
        self.inner = None

    def start_step(self, k: int, prompt: str) -> None:
        self.close_inner()
        self.inner = self.tqdm(total=None, desc=f"step {k}: {prompt[:30]}", unit="it",
                               disable=not self.enabled, position=1, leave=False)

    def __call__(self, done: int, total: int) -> None:
        if self.inner is not None:
            if self.inner.total != total:
                self.inner.total = total
            self.inner.n = done
            self.inner.refresh()

    def end_step(self) -> None:
        self.close_inner()
        self.chain.update(1)

    def close_inner(self):
        if self.inner is not None:
            self.inner.close()
            self.inner = None

    def close(self):
        self.close_inner()
        self.chain.close()


# --------------------------------------------------------------------------- writing
def _write_track(out_dir: Path, k: int, result, sample_rate: int, encoding: str, inputs) -> dict:
    from .media import write_audio
    from .mix import measure_lufs
    path = out_dir / track_name(k, result.settings.prompt)
    for old in out_dir.glob(f"track_{k:02d}_*.wav"):  # a redone step may have a new prompt
        if old != path:
            old.unlink()
    write_audio(path, result.wave[None], sample_rate, encoding=encoding, inputs=inputs)
    wave = result.wave
    return {"index": k, **{f: getattr(result.settings, f) for f in STEP_FIELDS},
            "method_used": result.method_used, "file": path.name, "sha256": sha256_file(path),
            "samples": int(wave.shape[-1]), "sample_rate": sample_rate,
            "peak": float(wave.abs().max()) if wave.numel() else 0.0,
            "lufs": _finite(measure_lufs(wave[None].float(), sample_rate)),
            "seconds": round(result.seconds, 3)}


def _finite(x: float):
    import math
    return x if math.isfinite(x) else None  # JSON has no -inf


def _write_outputs(session, out_dir: Path, video: Path, start: float, encoding: str,
                   inputs) -> tuple[dict, dict]:
    from .media import mux_audio_into_video, write_audio
    comp = session.composite()
    cpath = out_dir / COMPOSITE_NAME
    write_audio(cpath, comp.wave, comp.sample_rate, encoding=encoding, inputs=inputs)
    composite = {"file": cpath.name, "sha256": sha256_file(cpath),
                 "target_lufs": session.target_lufs, "measured_lufs": _finite(comp.measured_lufs),
                 "gain_db": comp.gain_db, "note": comp.note, "samples": int(comp.wave.shape[-1]),
                 "true_peak_db": _finite(comp.true_peak_db), "ceiling_db": comp.ceiling_db,
                 "ceiling_reduction_db": comp.ceiling_reduction_db,
                 "sample_rate": comp.sample_rate,
                 "track_gains_db": [r.settings.gain_db for r in session.results]}
    vpath = _output_video_path(out_dir, video)
    mux_audio_into_video(video, comp.wave, comp.sample_rate, vpath, start=start)
    return composite, {"file": vpath.name, "sha256": sha256_file(vpath)}


def _save_record(out_dir: Path, record: dict) -> None:
    write_text(out_dir / RECORD_NAME, json.dumps(record, indent=2))


# --------------------------------------------------------------------------- the chain
def _run_steps(session, plan: list, first: int, out_dir: Path, encoding: str, inputs,
               bar: _Progress, log) -> list[dict]:
    """Generate steps ``first``.. (1-based) from ``plan`` (StepSettings), writing each track as
    soon as it is made (a crash keeps the finished ones)."""
    entries = []
    for k, settings in enumerate(plan, start=first):
        bar.start_step(k, settings.prompt)
        result = session.add_step(**asdict(settings))
        bar.end_step()
        entry = _write_track(out_dir, k, result, session.sample_rate, encoding, inputs)
        log(f"step {k}: {settings.prompt!r} -> {entry['file']} "
            f"(method {result.method_used}, {result.seconds:.1f} s)")
        entries.append(entry)
    return entries


def _step_settings(prompts, *, method, seed, steps, alpha, beta, negative, gains):
    from .pipeline import StepSettings
    gains = list(gains or [])
    if gains and len(gains) != len(prompts):
        raise ConfigError(f"{len(gains)} gains for {len(prompts)} prompts: give one --gain-db "
                          "per prompt, or none")
    return [StepSettings(prompt=p, seed=int(seed) + i, steps=steps, alpha=alpha, beta=beta,
                         method=method, negative_text=negative or "",
                         gain_db=float(gains[i]) if gains else 0.0)
            for i, p in enumerate(prompts)]


def _drop_stale_tracks(out: Path, steps: int) -> None:
    """In our folder from an earlier, longer chain, delete its tracks past ``steps`` (only once
    the new chain is made: a run that fails must not cost the old one its files)."""
    if not (out / RECORD_NAME).is_file():
        return
    for old in out.glob("track_*_*.wav"):
        index = old.name.split("_")[1]
        if index.isdigit() and int(index) > steps:
            old.unlink()


def _check_method(method, controlnet):
    if method == "nag" and not controlnet:
        raise ConfigError("method 'nag' needs a NAG ControlNet (--controlnet FILE); without one "
                          "use --method negative_prompt (the default) or independent")


def _open_session(model, video: Path, start, duration, controlnet_path, variant, bar):
    from .controlnet import load_controlnet
    from .media import decode_video
    from .pipeline import FoleySession
    controlnet = (load_controlnet(controlnet_path, model.network, base_variant=variant)
                  if controlnet_path else None)
    clip = decode_video(video, start=start, duration=duration)
    t = time.perf_counter()
    session = FoleySession(model, clip, controlnet=controlnet, progress=bar)
    return session, clip, time.perf_counter() - t


def run_chain(video, prompts: Sequence[str], out_dir, *, variant: str = "small_16k",
              models_dir=None, controlnet=None, method: Optional[str] = None,
              alpha: Optional[float] = None, beta: Optional[float] = None, steps: int = 25,
              seed: int = 42, start: float = 0.0, duration: Optional[float] = 8.0,
              negative: str = "", gains_db: Optional[Sequence[float]] = None, device=None,
              dtype=None, offline: Optional[bool] = None, encoding: str = "float",
              progress: bool = True, notes: Sequence[str] = (), smoke: Optional[bool] = None,
              command: Optional[list] = None, log: Callable[[str], None] = print) -> dict:
    """Run the whole chain (one prompt per step, in order) and write everything to ``out_dir``.
    Step k uses seed ``seed + k - 1``. Returns the record written to ``out_dir/record.json``."""
    from .download import resolve_models_dir
    from .guidance import ALPHA_DEFAULT, BETA_DEFAULT
    from .smoke import MARKER

    t0 = time.perf_counter()
    prompts = [p for p in prompts]
    if not prompts or any(not p.strip() for p in prompts):
        raise ConfigError("give at least one non-empty prompt (--prompt \"...\" per step)")
    video = Path(video).expanduser().resolve()
    if not video.is_file():
        raise ConfigError(f"video not found: {video}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    method = method or default_method(controlnet)
    _check_method(method, controlnet)
    alpha = ALPHA_DEFAULT if alpha is None else alpha
    beta = BETA_DEFAULT if beta is None else beta
    plan = _step_settings(prompts, method=method, seed=seed, steps=steps, alpha=alpha, beta=beta,
                          negative=negative, gains=gains_db)
    video_sha = sha256_file(video)

    root = resolve_models_dir(models_dir)
    t = time.perf_counter()
    model, files = _load(variant, root, device, dtype, offline, progress, log)
    load_s = time.perf_counter() - t
    is_smoke = (root / MARKER).exists() if smoke is None else smoke
    notes = list(notes)
    if is_smoke and not notes:
        notes = ["SMOKE-TEST WEIGHTS: the models folder holds tiny random weights; the audio is "
                 "NOISE."]
        log(notes[0])
    if len(plan) > 1:
        log(f"steps 2..{len(plan)} use the {method} method"
            + ("" if controlnet else " (no --controlnet given, so not NAG)"))
    bar = _Progress(len(plan), progress)
    try:
        session, clip, encode_s = _open_session(model, video, start, duration, controlnet,
                                                variant, bar)
        inputs = [video]
        entries = _run_steps(session, plan, 1, out, encoding, inputs, bar, log)
    finally:
        bar.close()
    _drop_stale_tracks(out, len(plan))
    t = time.perf_counter()
    composite, video_out = _write_outputs(session, out, video, clip.start, encoding, inputs)
    record = {
        "format": RECORD_FORMAT, "version": RECORD_VERSION, "created": _now(),
        "smoke_test_weights": bool(is_smoke), "notes": notes, "command": command,
        "input": {"video": str(video), "sha256": video_sha, "start": float(start),
                  "duration_requested": duration, "duration": clip.duration,
                  "fps": clip.fps, "size": list(clip.size)},
        "model": _model_entry(files, model, variant, root),
        "controlnet": _file_entry(Path(controlnet)) if controlnet else None,
        "settings": {"method": method, "alpha": alpha, "beta": beta, "steps": steps,
                     "seed": seed, "negative_text": negative, "encoding": encoding,
                     "target_lufs": session.target_lufs},
        "steps": entries, "composite": composite, "video_out": video_out,
        "timings": {"load_model_s": round(load_s, 3), "encode_video_s": round(encode_s, 3),
                    "steps_s": [e["seconds"] for e in entries],
                    "write_s": round(time.perf_counter() - t, 3),
                    "total_s": round(time.perf_counter() - t0, 3)},
        "versions": _versions(), "history": [],
    }
    _save_record(out, record)
    log(f"wrote {len(entries)} tracks, {composite['file']} "
        f"({composite['note'] or f'{session.target_lufs:g} LUFS'}) and {video_out['file']} to {out}")
    return record


def load_record(out_dir) -> dict:
    path = Path(out_dir).expanduser() / RECORD_NAME
    if not path.is_file():
        raise ConfigError(f"{path} not found: redo works on a folder written by "
                          "`python -m nag_core generate`")
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); it was damaged") from None
    if record.get("format") != RECORD_FORMAT:
        raise ConfigError(f"{path} is not a nag-foley record")
    return record


def _loaded_result(out: Path, entry: dict):
    """A StepResult for an earlier step, read back from its track file."""
    from .media import read_audio
    from .pipeline import StepResult, StepSettings
    path = out / entry["file"]
    if not path.is_file():
        raise ConfigError(f"{path} (step {entry['index']}) is missing; redo an earlier step "
                          "or run generate again")
    if sha256_file(path) != entry["sha256"]:
        raise ConfigError(f"{path} changed since it was generated (sha256 differs from "
                          f"{RECORD_NAME}); redo from that step instead (--step {entry['index']})")
    wave, _ = read_audio(path, mono=True)
    settings = StepSettings(**{f: entry[f] for f in STEP_FIELDS})
    return StepResult(settings, wave[0], entry["method_used"], float(entry.get("seconds", 0.0)))


def redo_chain(out_dir, step: int, *, changes: Optional[dict] = None, models_dir=None,
               controlnet=None, device=None, dtype=None, offline: Optional[bool] = None,
               to_dir=None, progress: bool = True, command: Optional[list] = None,
               log: Callable[[str], None] = print) -> dict:
    """Regenerate step ``step`` (1-based) of the chain in ``out_dir`` with ``changes`` (prompt,
    seed, steps, alpha, beta, method, negative_text, gain_db) and every later step with its
    recorded settings. ``step`` = number of steps + 1 appends a step (``changes`` needs a
    prompt). Earlier track files are not rewritten (with ``to_dir`` they are copied byte for
    byte into that folder and the result goes there). Returns the new record."""
    from .pipeline import StepSettings

    t0 = time.perf_counter()
    src = Path(out_dir).expanduser()
    record = load_record(src)
    entries = record["steps"]
    n = len(entries)
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    unknown = set(changes) - set(STEP_FIELDS)
    if unknown:
        raise ConfigError(f"cannot change {sorted(unknown)}; changeable: {', '.join(STEP_FIELDS)}")
    if not 1 <= step <= n + 1:
        raise ConfigError(f"there is no step {step}: the chain in {src} has {n} steps (use 1..{n} "
                          f"to redo one, or {n + 1} to add one)")
    video = Path(record["input"]["video"])
    if not video.is_file():
        raise ConfigError(f"the input video {video} is gone; put it back or run generate again")
    if sha256_file(video) != record["input"]["sha256"]:
        raise ConfigError(f"the input video {video} changed since the first run (sha256 "
                          "differs); run generate again")
    out = Path(to_dir).expanduser() if to_dir else src
    out.mkdir(parents=True, exist_ok=True)
    controlnet = controlnet or (record["controlnet"] or {}).get("path")

    if step <= n:
        base = entries[step - 1]
        first = StepSettings(**{**{f: base[f] for f in STEP_FIELDS}, **changes})
    else:
        if not changes.get("prompt"):
            raise ConfigError(f"adding step {step} needs a prompt (--prompt \"...\")")
        s = record["settings"]
        first = StepSettings(**{"seed": s["seed"] + n, "steps": s["steps"], "alpha": s["alpha"],
                                "beta": s["beta"], "method": s["method"],
                                "negative_text": s.get("negative_text", ""), **changes})
    if step > 1:
        _check_method(first.method, controlnet)
    later = [StepSettings(**{f: e[f] for f in STEP_FIELDS}) for e in entries[step:]]

    kept = [_loaded_result(src, e) for e in entries[: step - 1]]
    if out.resolve() != src.resolve():
        for e in entries[: step - 1]:
            shutil.copyfile(src / e["file"], out / e["file"])

    variant = record["model"]["variant"]
    root = Path(models_dir).expanduser() if models_dir else Path(record["model"]["models_dir"])
    t = time.perf_counter()
    model, files = _load(variant, root, device, dtype or record["model"].get("dtype"), offline,
                         progress, log)
    load_s = time.perf_counter() - t
    if record.get("smoke_test_weights"):
        log("SMOKE-TEST WEIGHTS: this chain was made with tiny random weights; the audio is NOISE.")
    encoding = record["settings"].get("encoding", "float")
    bar = _Progress(1 + len(later), progress)
    try:
        session, clip, encode_s = _open_session(
            model, video, record["input"]["start"], record["input"]["duration_requested"],
            controlnet, variant, bar)
        session.results = kept
        new_entries = _run_steps(session, [first] + later, step, out, encoding, [video], bar, log)
    finally:
        bar.close()
    t = time.perf_counter()
    composite, video_out = _write_outputs(session, out, video, clip.start, encoding, [video])
    old_video = src / record["video_out"]["file"]
    if out.resolve() == src.resolve() and video_out["file"] != record["video_out"]["file"] \
            and old_video.exists():
        old_video.unlink()
    new = dict(record)
    new["steps"] = [e for e in entries[: step - 1]] + new_entries
    new["composite"], new["video_out"] = composite, video_out
    new["model"] = _model_entry(files, model, variant, root)
    new["controlnet"] = _file_entry(Path(controlnet)) if controlnet else None
    new["timings"] = {"load_model_s": round(load_s, 3), "encode_video_s": round(encode_s, 3),
                      "steps_s": [e["seconds"] for e in new["steps"]],
                      "write_s": round(time.perf_counter() - t, 3),
                      "total_s": round(time.perf_counter() - t0, 3)}
    new["versions"] = _versions()
    new["history"] = list(record.get("history", [])) + [
        {"at": _now(), "action": "redo" if step <= n else "add", "step": step,
         "changes": changes, "command": command, "from": str(src.resolve())}]
    _save_record(out, new)
    log(f"redid steps {step}..{len(new['steps'])}; steps before {step} kept as they were")
    if composite["note"]:
        log(f"composite: {composite['note']}")
    return new
