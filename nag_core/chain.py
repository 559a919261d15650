"""A step-by-step Foley chain run to files: one WAV per step, the −20 LUFS composite, the scored
segment of the video with the composite muxed in, and ``record.json``, in one run folder.

:func:`run_chain` starts a chain; :func:`redo_chain` reopens a run folder from its record and
regenerates step k and every later step (or appends a step), leaving the files of the earlier
steps untouched, byte for byte. Tracks are written as 32-bit float WAV by default so a redo
conditions on exactly the audio the first run made.

Where the files go and when they become visible is :mod:`nag_core.run_folder`'s business; what
the record holds is :mod:`nag_core.record`'s.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import ConfigError
from .filehash import sha256_file
from .preflight import check_prompts, check_seeds, probe_video
from .progress import ChainProgress
from .record import (COMPOSITE_NAME, RECORD_NAME, STEP_FIELDS, build_record, choose_take,
                     file_entry, file_in, finite, load_record, model_entry, now, step_entry,
                     step_files, step_settings, write_record)
from .run_folder import (RunStage, describe_target, foley_video_name, free_target, leftovers,
                         link_in, take_names)

Log = Callable[[str], None]


def default_method(controlnet) -> str:
    """What ``auto`` runs for steps >= 2 (the one rule: nag_core.defaults.resolve_method)."""
    from .defaults import AUTO, resolve_method
    return resolve_method(AUTO, bool(controlnet))


def _check_method(method, controlnet) -> None:
    if method == "nag" and not controlnet:
        raise ConfigError("method 'nag' needs a NAG ControlNet (--controlnet FILE); without one "
                          "use --method text_nag (the default), negative_prompt or independent")


def _step_settings(prompts, *, method, seed, steps, alpha, beta, negative, gains, takes):
    from .defaults import step_seed
    from .pipeline import StepSettings
    gains = list(gains or [])
    if gains and len(gains) != len(prompts):
        raise ConfigError(f"{len(gains)} gains for {len(prompts)} prompts: give one --gain-db "
                          "per prompt, or none")
    return [StepSettings(prompt=p, seed=step_seed(seed, k), steps=steps, alpha=alpha, beta=beta,
                         method=method, negative_text=negative or "", takes=takes,
                         gain_db=float(gains[k - 1]) if gains else 0.0)
            for k, p in enumerate(prompts, start=1)]


def _note_leftovers(target: Path, log: Log) -> None:
    for p in leftovers(target):
        log(f"note: {p} was left by an interrupted run (or one still running); delete it when "
            "no run is in progress")


# --------------------------------------------------------------------------- one session
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


def _run_steps(session, plan: list, first: int, stage: RunStage, encoding: str, inputs,
               bar: ChainProgress, log: Log, chosen: Optional[dict] = None) -> list[dict]:
    """Generate steps ``first``.. (1-based) from ``plan`` (StepSettings; each step's takes in
    one batched call), writing every take into the stage as soon as it is made. ``chosen``
    maps a step to the take the chain goes on with (default take 0)."""
    from .media import write_audio
    entries = []
    for k, settings in enumerate(plan, start=first):
        bar.start_step(k, settings.prompt)
        result = session.add_step(**asdict(settings))
        result.take = (chosen or {}).get(k, 0)  # the mixes of later steps read the chosen take
        bar.end_step()
        paths = [stage.new_file(n) for n in take_names(k, settings.prompt, result.takes)]
        for path, wave in zip(paths, result.waves):
            write_audio(path, wave[None], session.sample_rate, encoding=encoding, inputs=inputs)
        entries.append(step_entry(k, result, paths, session.sample_rate))
        takes = f", {result.takes} takes, going on with take {result.take}" \
            if result.takes > 1 else ""
        log(f"step {k}: {settings.prompt!r} -> {entries[-1]['file']} "
            f"(method {result.method_used}{takes}, {result.seconds:.1f} s)")
    return entries


def _write_outputs(session, stage: RunStage, video: Path, clip, encoding: str,
                   whole_video: bool) -> tuple[dict, dict]:
    from .media import mux_audio_into_video, write_audio
    comp = session.composite()
    cpath = stage.new_file(COMPOSITE_NAME)
    write_audio(cpath, comp.wave, comp.sample_rate, encoding=encoding, inputs=[video])
    composite = {"file": cpath.name, "sha256": sha256_file(cpath),
                 "target_lufs": session.target_lufs, "measured_lufs": finite(comp.measured_lufs),
                 "gain_db": comp.gain_db, "note": comp.note, "samples": int(comp.wave.shape[-1]),
                 "true_peak_db": finite(comp.true_peak_db), "ceiling_db": comp.ceiling_db,
                 "ceiling_reduction_db": comp.ceiling_reduction_db,
                 "sample_rate": comp.sample_rate,
                 "track_gains_db": [r.settings.gain_db for r in session.results]}
    vpath = stage.new_file(foley_video_name(video))
    mux_audio_into_video(video, comp.wave, comp.sample_rate, vpath, start=clip.start,
                         trim=not whole_video)
    span = ({"span": "whole", "audio_at": float(clip.start)} if whole_video else
            {"span": "segment", "start": float(clip.start), "duration": float(clip.duration)})
    return composite, {"file": vpath.name, "sha256": sha256_file(vpath), **span}


def _loudness_said(composite: dict) -> str:
    """"-20 LUFS", or the note that says why the composite is not at the target."""
    return composite.get("note") or f"{composite['target_lufs']:g} LUFS"


def _input_entry(video: Path, sha: str, stage: RunStage, start, duration, clip) -> dict:
    """The input as the record names it: its absolute path, or its plain name when it lies in
    the run folder itself (the demo's video), so the folder can be moved."""
    inside = video.parent == stage.path
    return {"video": video.name if inside else str(video), "sha256": sha,
            "start": float(start), "duration_requested": duration, "duration": clip.duration,
            "fps": clip.fps, "size": list(clip.size)}


def _clip_warnings(clip) -> list[str]:
    """The record's ``warnings``: the clip's MediaWarning (a short or damaged input), if any."""
    return [clip.warning] if clip is not None and clip.warning else []


def _timings(load_s, encode_s, steps, write_t0, t0) -> dict:
    return {"load_model_s": round(load_s, 3), "encode_video_s": round(encode_s, 3),
            "steps_s": [e["seconds"] for e in steps],
            "write_s": round(time.perf_counter() - write_t0, 3),
            "total_s": round(time.perf_counter() - t0, 3)}


# --------------------------------------------------------------------------- generate
def _log_windows(session, log) -> None:
    clip = session.video
    if clip is not None and clip.truncated:
        log(f"the video has {clip.duration:g} s from the start on, less than the "
            f"{clip.requested_duration:g} s asked for: generating {clip.duration:g} s")
    windows = session.window_plan
    if not windows.single:
        log(f"{windows.duration:g} s in {len(windows.windows)} windows of "
            f"{windows.window_duration:g} s (the network's training length), overlapping by at "
            f"least {windows.overlap:g} s")


def run_chain(video, prompts: Sequence[str], out_dir, **options) -> dict:
    """Run the whole chain (one prompt per step, in order) and write everything to a new run
    folder: ``out_dir`` if it is absent or empty, else the first free ``out_dir-2``,
    ``out_dir-3``, ... beside it (nothing already in ``out_dir`` is touched). The folder appears
    only once complete. Step k uses seed ``seed + k - 1``. Options are those of
    :func:`run_chain_in`. Returns the record written to ``record.json``, with ``run_dir`` (the
    folder it went to) added."""
    log = options.get("log", print)
    target = free_target(out_dir)
    moved = describe_target(out_dir, target)
    if moved:
        log(moved)
    _note_leftovers(target, log)
    with RunStage(target, requested=Path(out_dir).expanduser()) as stage:
        record = run_chain_in(stage, video, prompts, **options)
        final = stage.publish()
    log(f"wrote {len(record['steps'])} tracks, {record['composite']['file']} "
        f"({_loudness_said(record['composite'])}) and {record['video_out']['file']} to {final}")
    return {**record, "run_dir": str(final)}


def run_chain_in(stage: RunStage, video, prompts: Sequence[str], *, variant: str = "small_16k",
                 models_dir=None, controlnet=None, method: Optional[str] = None,
                 alpha: Optional[float] = None, beta: Optional[float] = None, steps: int = 25,
                 seed: int = 42, start: float = 0.0, duration: Optional[float] = 8.0,
                 negative: str = "", gains_db: Optional[Sequence[float]] = None, takes: int = 1,
                 device=None,
                 dtype=None, offline: Optional[bool] = None, encoding: str = "float",
                 whole_video: bool = False, progress: bool = True, notes: Sequence[str] = (),
                 smoke: Optional[bool] = None, command: Optional[list] = None,
                 log: Log = print) -> dict:
    """The chain written into a :class:`RunStage` (which the caller publishes). Cheap checks
    (prompts, settings, seeds, the video, the device) come before any model loads."""
    from .download import resolve_models_dir
    from .guidance import ALPHA_DEFAULT, BETA_DEFAULT
    from .loading import load_variant, parse_dtype, resolve_device
    from .smoke import MARKER

    t0 = time.perf_counter()
    prompts = check_prompts(prompts)
    method = default_method(controlnet) if method in (None, "auto") else method
    _check_method(method, controlnet)
    alpha = ALPHA_DEFAULT if alpha is None else alpha
    beta = BETA_DEFAULT if beta is None else beta
    check_seeds(seed, len(prompts))
    plan = _step_settings(prompts, method=method, seed=seed, steps=steps, alpha=alpha, beta=beta,
                          negative=negative, gains=gains_db, takes=takes)
    if encoding not in ("float", "pcm16"):
        raise ConfigError(f"unknown encoding {encoding!r}; use float or pcm16")
    video = probe_video(video, start, duration).path
    resolve_device(device), parse_dtype(dtype)
    if controlnet is not None and not Path(controlnet).is_file():
        raise ConfigError(f"ControlNet file not found: {controlnet}")
    video_sha = sha256_file(video)

    root = resolve_models_dir(models_dir)
    t = time.perf_counter()
    model, files = load_variant(variant, root, device=device, dtype=dtype, offline=offline,
                                progress=progress, log=log)
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
    bar = ChainProgress(len(plan), progress)
    try:
        session, clip, encode_s = _open_session(model, video, start, duration, controlnet,
                                                variant, bar)
        _log_windows(session, log)
        entries = _run_steps(session, plan, 1, stage, encoding, [video], bar, log)
    finally:
        bar.close()
    t = time.perf_counter()
    composite, video_out = _write_outputs(session, stage, video, clip, encoding, whole_video)
    record = build_record(
        created=now(), smoke=is_smoke, notes=notes, command=command,
        input_entry=_input_entry(video, video_sha, stage, start, duration, clip),
        model=model_entry(files, model, variant, root),
        controlnet=file_entry(Path(controlnet)) if controlnet else None,
        settings={"method": method, "alpha": alpha, "beta": beta, "steps": steps, "seed": seed,
                  "negative_text": negative, "encoding": encoding,
                  "target_lufs": session.target_lufs, "whole_video": bool(whole_video),
                  "takes": takes},
        steps=entries, composite=composite, video_out=video_out,
        timings=_timings(load_s, encode_s, entries, t, t0), history=[],
        windows=session.window_plan.record(), warnings=_clip_warnings(clip))
    write_record(stage.path, record)
    return record


# --------------------------------------------------------------------------- redo
def _recorded_video(record: dict, src: Path, path: Path) -> Path:
    name = record["input"]["video"]
    video = Path(name) if os.path.isabs(name) else file_in(src, name, "the input video", path)
    if not video.is_file():
        raise ConfigError(f"the input video {video} is gone; put it back or run generate again")
    if sha256_file(video) != record["input"]["sha256"]:
        raise ConfigError(f"the input video {video} changed since the first run (sha256 "
                          "differs); run generate again")
    return video


def _loaded_result(src: Path, entry: dict, rpath: Path):
    """A StepResult for an earlier step, read back from its (checked) take files."""
    import torch

    from .media import read_audio
    from .pipeline import StepResult
    waves = []
    for f in step_files(entry):
        path = file_in(src, f["file"], f"step {entry['index']}'s track", rpath)
        if not path.is_file():
            raise ConfigError(f"{path} (step {entry['index']}) is missing; redo an earlier step "
                              "or run generate again")
        if sha256_file(path) != f["sha256"]:
            raise ConfigError(f"{path} changed since it was generated (sha256 differs from "
                              f"{RECORD_NAME}); redo from that step instead "
                              f"(--step {entry['index']})")
        waves.append(read_audio(path, mono=True)[0][0])
    return StepResult(step_settings(entry), torch.stack(waves), entry["method_used"],
                      float(entry.get("seconds", 0.0)), take=entry.get("take", 0))


def _owned(src: Path, record: dict, entries: list, keep: int) -> set[str]:
    """The files of ``src`` this redo replaces: the record, and the composite, video and the
    track files of the steps after the first ``keep`` it names, each only while it still holds
    what the record says (a file edited since, or one of yours that a record names, is kept)."""
    owned = {RECORD_NAME}
    files = [f for e in entries[keep:] for f in step_files(e)]
    for what in [record["composite"], record["video_out"], *files]:
        path = src / what["file"]
        if not path.exists() or ("sha256" in what and sha256_file(path) == what["sha256"]):
            owned.add(what["file"])
    # a kept track or the input video is never replaced, whatever else the record says
    kept = {f["file"] for e in entries[:keep] for f in step_files(e)}
    return owned - kept - {record["input"]["video"]}


def _check_take_choice(entries: list, step: int, take, changes: dict) -> None:
    if changes:
        raise ConfigError("--take picks one of the recorded takes of a step as it is; to change "
                          f"step {step} ({', '.join(sorted(changes))}), redo it without --take")
    if step > len(entries):
        raise ConfigError(f"there is no step {step} to choose a take of; the chain has "
                          f"{len(entries)} steps")
    count = entries[step - 1].get("takes", 1)
    if isinstance(take, bool) or not isinstance(take, int) or not 0 <= take < count:
        hint = (f"takes 0..{count - 1}" if count > 1 else
                "one take (make several with --takes N)")
        raise ConfigError(f"there is no take {take!r} of step {step}: it has {hint}")


def _new_step(record: dict, entries: list, step: int, changes: dict):
    from .pipeline import StepSettings
    n = len(entries)
    if step <= n:
        return step_settings(entries[step - 1], **changes)
    if not changes.get("prompt"):
        raise ConfigError(f"adding step {step} needs a prompt (--prompt \"...\")")
    s = record["settings"]
    check_seeds(s["seed"], n + 1)
    return StepSettings(**{"seed": s["seed"] + n, "steps": s["steps"], "alpha": s["alpha"],
                           "beta": s["beta"], "method": s["method"],
                           "negative_text": s.get("negative_text", ""),
                           "takes": s.get("takes", 1), **changes})


def redo_chain(out_dir, step: int, *, changes: Optional[dict] = None, models_dir=None,
               controlnet=None, device=None, dtype=None, offline: Optional[bool] = None,
               to_dir=None, take: Optional[int] = None, whole_video: Optional[bool] = None,
               progress: bool = True,
               command: Optional[list] = None, log: Log = print) -> dict:
    """Regenerate step ``step`` (1-based) of the chain in ``out_dir`` with ``changes`` (prompt,
    seed, steps, alpha, beta, method, negative_text, gain_db) and every later step with its
    recorded settings. ``step`` = number of steps + 1 appends a step (``changes`` needs a
    prompt). ``takes`` in ``changes`` makes that many takes of step ``step``; ``take`` instead
    picks one of step ``step``'s recorded takes (0-based) to go on with, and regenerates only
    the later steps. Earlier track files are not rewritten.

    In place, the new state of the folder is built beside it and swapped in at the end (an
    interruption leaves the folder as it was). With ``to_dir`` the earlier tracks are copied into
    a new run folder there (chosen as :func:`run_chain` chooses), and ``out_dir`` is only read.
    Returns the new record, with ``run_dir`` added."""
    from .loading import load_variant, parse_dtype, resolve_device

    t0 = time.perf_counter()
    src = Path(os.path.abspath(Path(out_dir).expanduser()))
    record = load_record(src)
    rpath = src / RECORD_NAME
    entries = record["steps"]
    n = len(entries)
    for e in entries:
        for f in step_files(e):
            file_in(src, f["file"], f"step {e['index']}'s track", rpath)
    for key in ("composite", "video_out"):
        file_in(src, record[key]["file"], f"the {key.replace('_', ' ')}", rpath)
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    changeable = STEP_FIELDS + ("takes",)
    unknown = set(changes) - set(changeable)
    if unknown:
        raise ConfigError(f"cannot change {sorted(unknown)}; changeable: {', '.join(changeable)}")
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= n + 1:
        raise ConfigError(f"there is no step {step}: the chain in {src} has {n} steps (use 1..{n} "
                          f"to redo one, or {n + 1} to add one)")
    if "seed" in changes:
        check_seeds(changes["seed"], 1)
    video = _recorded_video(record, src, rpath)
    start, duration = record["input"]["start"], record["input"]["duration_requested"]
    probe_video(video, start, duration)
    controlnet = controlnet or (record["controlnet"] or {}).get("path")
    if take is None:
        keep, first_index = step - 1, step  # steps kept as they are; the first one generated
        first = _new_step(record, entries, step, changes)
        if step > 1:
            _check_method(first.method, controlnet)
        plan = [first]
    else:
        _check_take_choice(entries, step, take, changes)
        keep, first_index, plan = step, step + 1, []
    plan += [step_settings(e) for e in entries[step:]]  # the later steps, as recorded
    chosen = {e["index"]: e.get("take", 0) for e in entries[step:]}
    kept = [_loaded_result(src, e, rpath) for e in entries[:keep]]
    kept_entries = list(entries[:keep])
    if take is not None:
        kept[-1].take = take
        kept_entries[-1] = choose_take(kept_entries[-1], take)
    resolve_device(device)
    dtype = dtype or record["model"].get("dtype")
    parse_dtype(dtype)
    if whole_video is None:
        whole_video = bool(record["settings"].get("whole_video", False))
    new_names = [name for k, s in enumerate(plan, start=first_index)
                 for name in take_names(k, s.prompt, s.takes)]
    new_names += [COMPOSITE_NAME, foley_video_name(video)]

    in_place = to_dir is None or os.path.abspath(Path(to_dir).expanduser()) == str(src)
    if in_place:
        _note_leftovers(src, log)
        stage = RunStage(src, kind="redo")
    else:
        target = free_target(to_dir)
        moved = describe_target(to_dir, target)
        if moved:
            log(moved)
        _note_leftovers(target, log)
        stage = RunStage(target, requested=Path(to_dir).expanduser())
    with stage:
        if in_place:
            owned = _owned(src, record, entries, keep)
            linked = link_in(stage, src, skip=owned)
        else:
            for f in (f for e in entries[:keep] for f in step_files(e)):
                shutil.copy2(src / f["file"], stage.new_file(f["file"]))
        for name in new_names:
            stage.new_file(name)  # a clash with a kept file fails now, before any loading

        variant = record["model"]["variant"]
        root = Path(models_dir).expanduser() if models_dir else Path(record["model"]["models_dir"])
        t = time.perf_counter()
        model, files = load_variant(variant, root, device=device, dtype=dtype, offline=offline,
                                    progress=progress, log=log)
        load_s = time.perf_counter() - t
        if record.get("smoke_test_weights"):
            log("SMOKE-TEST WEIGHTS: this chain was made with tiny random weights; the audio is "
                "NOISE.")
        encoding = record["settings"].get("encoding", "float")
        bar = ChainProgress(len(plan), progress)
        try:
            session, clip, encode_s = _open_session(model, video, start, duration, controlnet,
                                                    variant, bar)
            _log_windows(session, log)
            session.results = kept
            new_entries = _run_steps(session, plan, first_index, stage, encoding, [video], bar,
                                     log, chosen)
        finally:
            bar.close()
        t = time.perf_counter()
        composite, video_out = _write_outputs(session, stage, video, clip, encoding, whole_video)
        steps = kept_entries + new_entries
        input_entry = dict(record["input"])
        if not in_place:
            input_entry["video"] = str(video)
        settings = {**record["settings"], "whole_video": bool(whole_video)}
        new = build_record(
            created=record.get("created"), smoke=record.get("smoke_test_weights", False),
            notes=record.get("notes", []), command=record.get("command"),
            input_entry=input_entry, model=model_entry(files, model, variant, root),
            controlnet=file_entry(Path(controlnet)) if controlnet else None,
            settings=settings, steps=steps, composite=composite, video_out=video_out,
            timings=_timings(load_s, encode_s, steps, t, t0),
            history=list(record.get("history", [])) + [
                {"at": now(), "action": ("take" if take is not None else
                                         "redo" if step <= n else "add"),
                 "step": step, "changes": changes if take is None else {"take": take},
                 "command": command, "from": str(src)}],
            windows=session.window_plan.record(), warnings=_clip_warnings(clip))
        write_record(stage.path, new)
        final = stage.swap_into(src, owned, linked, log) if in_place else stage.publish()
    what = f"went on with take {take} of step {step}" if take is not None else \
        f"redid step {step}"
    log(f"{what} (steps {first_index}..{len(steps)} generated) in {final}; steps before "
        f"{first_index} kept as they were")
    if composite.get("note"):
        log(f"composite: {composite['note']}")
    return {**new, "run_dir": str(final)}
