"""``record.json``: what a run folder holds and how it was made (every setting, file hashes,
methods, loudness, timings, versions), its schema, and the checks a record passes before a
``redo`` trusts it.

A record may come from a folder a user downloaded or was sent, so nothing in it is trusted:
:func:`load_record` checks every field a redo uses (types, ranges, and that every file it names is
a plain file name inside the run folder) before any file is read, copied or deleted.
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

from .atomic import write_text
from .defaults import SEED_MAX  # noqa: F401  (record.SEED_MAX: read by preflight)
from .errors import ConfigError
from .filehash import cached_sha256, sha256_file

RECORD_NAME = "record.json"
RECORD_FORMAT = "nag-foley-record"
RECORD_VERSION = 1
COMPOSITE_NAME = "composite.wav"
STEP_FIELDS = ("prompt", "seed", "steps", "alpha", "beta", "method", "negative_text", "gain_db")
ENCODINGS = ("float", "pcm16")


# --------------------------------------------------------------------------- names
def is_plain_name(name) -> bool:
    """A file name with no folder part: not empty, not . or .., no separator, no NUL."""
    if not isinstance(name, str) or name in ("", ".", "..") or "\0" in name:
        return False
    return not any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep))


def file_in(folder: Path, name, what: str, record_path: Path) -> Path:
    """``folder / name`` for a name read from a record, refused unless it is a plain file name
    (so it cannot lead outside the folder) and, if it exists, a regular file (not a link)."""
    if not is_plain_name(name):
        raise ConfigError(f"{record_path} names {what} {name!r}, which is not a plain file name "
                          "inside the run folder; the record was edited or is not trustworthy: "
                          "nothing was read or changed. Run generate again.")
    path = folder / name
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ConfigError(f"{path} ({what}) is not a regular file (a link or a folder); "
                          "nothing was read or changed. Put the generated file back or run "
                          "generate again.")
    return path


# --------------------------------------------------------------------------- checking
_KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v), "a finite number"),
}


class _Check:
    """Field checks that name the field and the file in their message."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, what: str):
        raise ConfigError(f"{self.path} is damaged or not a nag-foley record: {where} {what}. "
                          "Restore the file or run generate again.")

    def dict(self, parent: dict, key: str, where: str, optional: bool = False):
        value = parent.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            self.fail(f"{where}{key!r}", "is missing or not an object")
        return value

    def value(self, parent: dict, key: str, where: str, kind, optional: bool = False):
        if key not in parent:
            self.fail(where, f"has no {key!r}")
        value = parent[key]
        if value is None and optional:
            return None
        test, noun = _KINDS[kind]
        if not test(value):
            self.fail(f"{where}{key!r}", f"is {value!r}, not {noun}")
        return value


def validate_record(record, path: Path) -> dict:
    """``record`` if every field a redo reads is present and of the right kind; else a
    ConfigError naming the field."""
    from .pipeline import METHODS
    c = _Check(path)
    if not isinstance(record, dict):
        c.fail("the top level", f"is a {type(record).__name__}, not an object")
    if record.get("format") != RECORD_FORMAT:
        c.fail("'format'", f"is {record.get('format')!r}, not {RECORD_FORMAT!r}")
    version = c.value(record, "version", "the top level ", "int")
    if version > RECORD_VERSION:
        raise ConfigError(f"{path} was written by a newer nag-foley (record version {version}); "
                          "update nag-foley to redo it")
    inp = c.dict(record, "input", "")
    for key in ("video", "sha256"):
        c.value(inp, key, "'input' ", "str")
    if c.value(inp, "start", "'input' ", "number") < 0:
        c.fail("'input' 'start'", "is negative")
    c.value(inp, "duration_requested", "'input' ", "number", optional=True)
    model = c.dict(record, "model", "")
    for key in ("variant", "models_dir"):
        c.value(model, key, "'model' ", "str")
    c.value(model, "dtype", "'model' ", "str", optional=True)
    net = c.dict(record, "controlnet", "", optional=True)
    if net is not None:
        c.value(net, "path", "'controlnet' ", "str")
    settings = c.dict(record, "settings", "")
    _check_step(c, settings, "'settings' ", with_prompt=False)
    if settings.get("encoding", "float") not in ENCODINGS:
        c.fail("'settings' 'encoding'", f"is {settings.get('encoding')!r}, not one of "
               f"{', '.join(ENCODINGS)}")
    steps = record.get("steps")
    if not isinstance(steps, list) or not steps:
        c.fail("'steps'", f"is {steps!r}, not a list of steps")
    for i, step in enumerate(steps, start=1):
        where = f"'steps' item {i} "
        if not isinstance(step, dict):
            c.fail(where.strip(), "is not an object")
        if c.value(step, "index", where, "int") != i:
            c.fail(f"{where}'index'", f"is {step['index']!r}, not {i}")
        _check_step(c, step, where, with_prompt=True)
        if step["method"] not in METHODS + ("auto",):
            c.fail(f"{where}'method'", f"is {step['method']!r}, not one of {', '.join(METHODS)}")
        c.value(step, "method_used", where, "str")
        c.value(step, "file", where, "str")
        c.value(step, "sha256", where, "str")
        _check_takes(c, step, where)
    for key in ("composite", "video_out"):
        c.value(c.dict(record, key, ""), "file", f"{key!r} ", "str")
    if not isinstance(record.get("history", []), list):
        c.fail("'history'", "is not a list")
    return record


def _check_takes(c: _Check, step: dict, where: str) -> None:
    """A step of several takes names each take's file; ``file`` is the chosen one's."""
    if "take_files" not in step:
        return
    takes, take = c.value(step, "takes", where, "int"), c.value(step, "take", where, "int")
    files = step["take_files"]
    if not isinstance(files, list) or len(files) != takes or takes < 1:
        c.fail(f"{where}'take_files'", f"is not a list of {takes} takes")
    if not 0 <= take < takes:
        c.fail(f"{where}'take'", f"is {take}, not a take from 0 to {takes - 1}")
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            c.fail(f"{where}'take_files' item {i}", "is not an object")
        c.value(f, "file", f"{where}'take_files' item {i} ", "str")
        c.value(f, "sha256", f"{where}'take_files' item {i} ", "str")
    if files[take]["file"] != step["file"] or files[take]["sha256"] != step["sha256"]:
        c.fail(f"{where}'file'", "is not the chosen take's file")


def step_files(entry: dict) -> list[dict]:
    """``[{"file", "sha256"}, ...]``: every take file of a step (one for a single take)."""
    return entry.get("take_files") or [{"file": entry["file"], "sha256": entry["sha256"]}]


def step_settings(entry: dict, **changes):
    """The StepSettings a step was made with (``takes`` only where the record has several)."""
    from .pipeline import StepSettings
    values = {f: entry[f] for f in STEP_FIELDS}
    if entry.get("takes", 1) != 1:
        values["takes"] = entry["takes"]
    return StepSettings(**{**values, **changes})


def _check_step(c: _Check, step: dict, where: str, with_prompt: bool) -> None:
    if with_prompt:
        c.value(step, "prompt", where, "str")
        c.value(step, "negative_text", where, "str")
        c.value(step, "gain_db", where, "number")
    seed = c.value(step, "seed", where, "int")
    if not 0 <= seed <= SEED_MAX:
        c.fail(f"{where}'seed'", f"is {seed}, outside 0..{SEED_MAX}")
    if c.value(step, "steps", where, "int") < 1:
        c.fail(f"{where}'steps'", "is below 1")
    for key in ("alpha", "beta"):
        c.value(step, key, where, "number")
    c.value(step, "method", where, "str")


def load_record(run_dir) -> dict:
    """The checked record of a run folder."""
    path = Path(run_dir).expanduser() / RECORD_NAME
    if not path.is_file():
        raise ConfigError(f"{path} not found: redo works on a folder written by "
                          "`python -m nag_core generate`")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); it was damaged. Restore it or run "
                          "generate again.") from None
    return validate_record(record, path)


def write_record(run_dir: Path, record: dict) -> Path:
    """Write ``record.json`` into a run folder that is still being built (atomically, and the
    folder is what becomes visible at the end, so a failed write leaves nothing behind)."""
    return write_text(run_dir / RECORD_NAME, json.dumps(record, indent=2))


# --------------------------------------------------------------------------- entries
def finite(x: float):
    return x if math.isfinite(x) else None  # JSON has no -inf


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    import av
    import numpy
    import pyloudnorm
    import torch

    from .version import __version__
    return {"nag_core": __version__, "torch": torch.__version__,
            "python": platform.python_version(),
            "av": av.__version__, "numpy": numpy.__version__,
            "pyloudnorm": getattr(pyloudnorm, "__version__", "unknown")}


def file_entry(path: Path, cached: bool = False) -> dict:
    return {"path": str(path.resolve()), "size": path.stat().st_size,
            "sha256": cached_sha256(path) if cached else sha256_file(path)}


def model_entry(files, model, variant: str, models_dir: Path) -> dict:
    entry = {"variant": variant, "detected_variant": getattr(model, "variant", variant),
             "models_dir": str(Path(models_dir).resolve()),
             "sample_rate": model.sample_rate, "device": str(model.device),
             "dtype": str(model.dtype).replace("torch.", ""), "files": {}}
    for kind in ("network", "vae", "vocoder", "vocoder_config", "synchformer", "clip", "bpe_vocab"):
        p = getattr(files, kind)
        if p is not None:
            entry["files"][kind] = file_entry(Path(p), cached=True)
    return entry


def step_entry(k: int, result, paths: list, sample_rate: int) -> dict:
    """A step's record: its settings, what ran, and its take files (``paths``, one per take;
    ``file`` is the chosen take's)."""
    from .mix import measure_lufs
    wave = result.wave
    take = getattr(result, "take", 0)
    shas = [sha256_file(p) for p in paths]
    entry = {"index": k, **{f: getattr(result.settings, f) for f in STEP_FIELDS},
             "method_used": result.method_used, "file": paths[take].name, "sha256": shas[take],
             "samples": int(wave.shape[-1]), "sample_rate": sample_rate,
             "peak": float(wave.abs().max()) if wave.numel() else 0.0,
             "lufs": finite(measure_lufs(wave[None].float(), sample_rate)),
             "seconds": round(result.seconds, 3)}
    if len(paths) > 1:
        entry.update(takes=len(paths), take=take, take_files=[
            {"file": p.name, "sha256": h, "seed": result.settings.seed + i}
            for i, (p, h) in enumerate(zip(paths, shas))])
    return entry


def choose_take(entry: dict, take: int) -> dict:
    """A step's record with take ``take`` chosen (its files unchanged)."""
    chosen = entry["take_files"][take]
    return {**entry, "take": take, "file": chosen["file"], "sha256": chosen["sha256"]}


def build_record(*, created: str, smoke: bool, notes, command, input_entry: dict,
                 model: dict, controlnet: Optional[dict], settings: dict, steps: list,
                 composite: dict, video_out: dict, timings: dict, history: list,
                 windows: Optional[dict] = None, warnings: Sequence[str] = ()) -> dict:
    """The one shape of a record, for a new run and for a redo alike. ``windows``: the window
    plan the tracks were generated in (nag_core.windows.WindowPlan.record); ``warnings``: what
    the run used that is not what was asked (a short or damaged input: ``VideoClip.warning``),
    the same messages the run showed as MediaWarnings."""
    return {"format": RECORD_FORMAT, "version": RECORD_VERSION, "created": created,
            "smoke_test_weights": bool(smoke), "notes": list(notes), "command": command,
            "input": input_entry, "model": model, "controlnet": controlnet,
            "settings": settings, "windows": windows, "steps": steps, "composite": composite,
            "video_out": video_out, "timings": timings, "versions": versions(),
            "warnings": list(warnings), "history": history}
