"""Feature/latent extraction into a cache folder, run once before training (like MMAudio's
extraction scripts), so that training steps touch only the flow network.

Cache folder layout::

    index.json                     what is cached (see below), rewritten atomically
    shards/<source key>.safetensors  one shard per clip version: every segment of that clip

Per segment k of a clip the shard holds (channel-last, float32, batch axis dropped):

* ``k.mean`` / ``k.std`` (N, C): the VAE posterior of the segment (un-normalized; training
  draws x1 = mean + std·ε fresh each step and normalizes with the network's statistics);
* ``k.cond_mean`` (N, C): the posterior mean of the segment as a conditioning mix, i.e. after
  loudness normalisation to ``cond_lufs`` (-20 LUFS, as the inference mix is), or the same as
  ``k.mean`` when ``cond_lufs`` is None;
* for videos ``k.clip_f`` (Nc, clip_dim) and ``k.sync_f`` (Ns, sync_dim): CLIP (8 fps) and
  Synchformer (25 fps) features of the segment's video.

A source's key hashes its absolute path, mtime, size, the segment length, ``cond_lufs`` and the
model files' fingerprint (names, sizes, mtimes of VAE, CLIP, Synchformer): a changed file or
model gets new entries; an unchanged one is never recomputed (also failures are remembered).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

import av
import torch
from torch import Tensor

from ..atomic import write_text
from ..errors import ConfigError, MediaError, NAGFoleyError
from .distributed import (DEFAULT_TIMEOUT_MINUTES, World, barrier, gather_objects,
                          process_group, share, world_from_env)
from .data import (DEFAULT_SEGMENT_SECONDS, Source, discover, probe_duration, segment_pairs,
                   segment_starts)

log = logging.getLogger("nag_core.train")

CACHE_FORMAT = "nag-train-cache"
CACHE_VERSION = 1
INDEX_NAME = "index.json"
JOURNAL_PREFIX = "index.journal-"  # + rank + .jsonl: what each process encoded, until merged
SHARD_DIR = "shards"
DEFAULT_COND_LUFS = -20.0
# A segment whose decoded audio is shorter than this share of its length is unusable.
MIN_AUDIO_SHARE = 0.9


class SegmentEncoder(Protocol):
    """What extraction needs from a model (tests may count or fake its calls)."""

    mode: str
    variant: str
    fingerprint: str  # changes whenever the features would change

    def encode_audio(self, path: Path, start: float, seconds: float) -> dict[str, Tensor]:
        """{"mean", "std", "cond_mean"}: (N, C) each."""

    def encode_video(self, path: Path, start: float, seconds: float) -> dict[str, Tensor]:
        """{"clip_f": (Nc, clip_dim), "sync_f": (Ns, sync_dim)}."""


def file_identity(path: Path) -> dict:
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "mtime_ns": st.st_mtime_ns, "size": st.st_size}


def models_fingerprint(files) -> str:
    """Identity of the model files that determine the cached features (a nag_core.weights
    ModelFiles): VAE, CLIP, Synchformer (the network only enters at training time)."""
    parts = [file_identity(p) for p in (files.vae, files.clip, files.synchformer)]
    return _digest({"models": parts, "variant": files.variant})


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


class ModelSegmentEncoder:
    """SegmentEncoder on an :class:`nag_core.model.MMAudioModel`: the same audio path as the
    inference-time conditioning mix (``MMAudioModel.encode_mix``: mono, model rate, fitted to the
    latent length, mel -> VAE), and ``MMAudioModel.encode_video`` for the video."""

    def __init__(self, model, fingerprint: str, cond_lufs: Optional[float] = DEFAULT_COND_LUFS,
                 mode: Optional[str] = None, variant: Optional[str] = None):
        # ``model`` may be a zero-argument callable that loads it: a re-run whose clips are all
        # cached then never loads gigabytes of weights.
        self._model = model
        self.mode = mode or model.mode
        self.variant = variant or model.variant
        self.cond_lufs = cond_lufs
        self.fingerprint = _digest({"models": fingerprint, "cond_lufs": cond_lufs})

    @classmethod
    def from_files(cls, files, device="cpu", cond_lufs: Optional[float] = DEFAULT_COND_LUFS
                   ) -> "ModelSegmentEncoder":
        """An encoder for located model files (nag_core.weights.ModelFiles), loaded lazily."""
        from ..weights import load_model_files
        mode = "16k" if files.variant.endswith("16k") else "44k"
        return cls(lambda: load_model_files(files, device=device, dtype=torch.float32),
                   models_fingerprint(files), cond_lufs, mode=mode, variant=files.variant)

    @property
    def model(self):
        if callable(self._model) and not isinstance(self._model, torch.nn.Module):
            self._model = self._model()
        return self._model

    @torch.no_grad()
    def encode_audio(self, path: Path, start: float, seconds: float) -> dict[str, Tensor]:
        from ..media import read_audio
        from ..mix import Track, loudness_normalize
        from ..mmaudio.variants import MODES, sequence_lengths

        model = self.model
        mode = MODES[self.mode]
        latent_len = sequence_lengths(self.mode, seconds).latent
        need = latent_len * 2 * mode.hop
        wave, _ = read_audio(path, sample_rate=mode.sample_rate, mono=True, start=start,
                             duration=seconds)
        if wave.shape[-1] < MIN_AUDIO_SHARE * need:
            raise MediaError(f"{path}: only {wave.shape[-1] / mode.sample_rate:.2f} s of audio at "
                             f"{start:g} s, the segment needs {seconds:g} s")
        wave = torch.nn.functional.pad(wave, (0, max(0, need - wave.shape[-1])))[..., :need]

        def posterior(w: Tensor):
            return model.encode_posterior(w, mode.sample_rate, latent_len)

        target = posterior(wave)
        out = {"mean": target.mean[0].transpose(0, 1), "std": target.std[0].transpose(0, 1)}
        if self.cond_lufs is None:
            out["cond_mean"] = out["mean"]
        else:
            mix = loudness_normalize(Track(wave, mode.sample_rate), self.cond_lufs)
            out["cond_mean"] = posterior(mix.wave).mean[0].transpose(0, 1)
        return {k: v.float().cpu().contiguous() for k, v in out.items()}

    @torch.no_grad()
    def encode_video(self, path: Path, start: float, seconds: float) -> dict[str, Tensor]:
        from ..media import decode_video

        from ..mmaudio.variants import sequence_lengths

        clip = decode_video(path, start=start, duration=seconds)
        want = sequence_lengths(self.mode, seconds)
        if clip.duration < seconds - 1e-6:  # the last segment of a clip may lack a frame or two
            raise MediaError(f"{path}: only {clip.duration:.3f} s of video at {start:g} s, the "
                             f"segment needs {seconds:g} s")
        features = self.model.encode_video(clip)
        got = (features.clip_f.shape[1], features.sync_f.shape[1])
        if got != (want.clip, want.sync):
            raise MediaError(f"{path}: the video segment at {start:g} s gave {got} CLIP/"
                             f"Synchformer tokens, {(want.clip, want.sync)} are needed")
        return {"clip_f": features.clip_f[0].float().cpu().contiguous(),
                "sync_f": features.sync_f[0].float().cpu().contiguous()}


# --------------------------------------------------------------------------- index
def read_index(cache_dir: Path) -> dict:
    path = Path(cache_dir) / INDEX_NAME
    if not path.is_file():
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "sources": {}, "current": None}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigError(f"{path} is damaged (not JSON); delete the cache folder and run the "
                          "extraction again") from None
    if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
        raise ConfigError(f"{path} is not a training cache of this version; use an empty folder "
                          "for --cache")
    return index


def write_index(cache_dir: Path, index: dict) -> None:
    write_text(Path(cache_dir) / INDEX_NAME, json.dumps(index, indent=1, sort_keys=True))


@dataclass
class ExtractReport:
    """Counts of one extraction run (also logged)."""

    sources: int = 0
    encoded_segments: int = 0
    reused_segments: int = 0
    pairs: int = 0
    too_short: list[str] = field(default_factory=list)  # clips with < 2 segments
    unreadable: list[str] = field(default_factory=list)  # "path: reason"
    failed_segments: int = 0  # segments dropped (short audio/video at the end of a clip)

    def summary(self, list_limit: int = 50) -> str:
        """Counts on one line, then the clips that could not be used, one per line."""
        text = (f"{self.sources} clips: {self.encoded_segments} segments encoded, "
                f"{self.reused_segments} reused from the cache, {self.failed_segments} dropped; "
                f"{len(self.too_short)} clips too short for two segments, "
                f"{len(self.unreadable)} unreadable; {self.pairs} training pairs")
        failed = self.unreadable[:list_limit]
        if failed:
            text += "\nunreadable clips (skipped):" + "".join(f"\n  {f}" for f in failed)
            if len(self.unreadable) > list_limit:
                text += f"\n  ... and {len(self.unreadable) - list_limit} more"
        return text


def source_key(source: Source, seconds: float, fingerprint: str) -> str:
    return _digest({"file": file_identity(source.path), "seconds": seconds,
                    "features": fingerprint})


def _encode_source(source: Source, starts: list[float], seconds: float,
                   encoder: SegmentEncoder) -> tuple[dict[str, Tensor], list[dict], int]:
    """Tensors of every usable segment, the segment records and how many were dropped."""
    tensors, segments, dropped = {}, [], 0
    for k, start in enumerate(starts):
        try:
            parts = dict(encoder.encode_audio(source.path, start, seconds))
            if source.kind == "video":
                parts.update(encoder.encode_video(source.path, start, seconds))
        except (MediaError, ConfigError) as e:
            # The last segment of a clip may run a frame or a few samples past the end.
            log.warning("skipping segment %d (%.3g s) of %s: %s", k, start, source.path, e)
            dropped += 1
            continue
        for name, value in parts.items():
            tensors[f"{k}.{name}"] = value
        segments.append({"index": k, "start": start, "video": source.kind == "video"})
    return tensors, segments, dropped


def _check_shapes(segments: list[dict], tensors: dict[str, Tensor], path: Path) -> list[dict]:
    """Drop segments whose features differ in shape from the clip's first (truncated ends)."""
    if not segments:
        return segments
    ref = {n.split(".", 1)[1]: t.shape for n, t in tensors.items()
           if n.startswith(f"{segments[0]['index']}.")}
    kept = []
    for seg in segments:
        shapes = {n: tensors[f"{seg['index']}.{n}"].shape for n in ref}
        if shapes == ref:
            kept.append(seg)
        else:
            log.warning("skipping segment %d of %s: features are shorter than the others (%s)",
                        seg["index"], path, shapes)
    return kept


def extract(data_dir, cache_dir, encoder: SegmentEncoder,
            segment_seconds: float = DEFAULT_SEGMENT_SECONDS, progress: bool = True,
            world: Optional[World] = None,
            timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> ExtractReport:
    """Encode every segment of every clip under ``data_dir`` that is not already in the cache,
    then record the current training pairs in the index. Returns the counts (of all processes).

    Under torchrun (``world`` of several processes, in a joined process group) each process
    encodes its round-robin share of the clips into its own shards and journal; rank 0 then
    merges what every process did into the one index, the same index one process writes.
    ``world`` defaults to what torchrun put in the environment; the process group (gloo: only
    small Python objects travel) is joined here when it is not already."""
    world = world_from_env() if world is None else world
    with process_group(world, torch.device("cpu"), timeout_minutes):
        return _extract(data_dir, cache_dir, encoder, segment_seconds, progress, world)


def _extract(data_dir, cache_dir, encoder: SegmentEncoder, segment_seconds: float,
             progress: bool, world: World) -> ExtractReport:
    cache = Path(cache_dir)
    if world.is_main:
        (cache / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        _fold_journals(cache)  # the work of an interrupted run (any number of processes)
    barrier(world)
    found = discover(data_dir, exclude=(cache,))
    index = read_index(cache)
    report = ExtractReport(sources=len(found.sources))
    if world.is_main:  # counted once
        report.unreadable += [f"{m}: listed but not found" for m in found.missing]
    new: dict[str, dict] = {}
    journal = cache / f"{JOURNAL_PREFIX}{world.rank:05d}.jsonl"
    with open(journal, "a", encoding="utf-8") as jf:
        for source in _progress(share(found.sources, world), progress and world.is_main,
                                world):
            key = source_key(source, segment_seconds, encoder.fingerprint)
            entry = index["sources"].get(key)
            if entry is None:
                entry = _extract_source(source, key, cache, encoder, segment_seconds, report)
                new[key] = entry
                jf.write(json.dumps({"key": key, "entry": entry}) + "\n")
                jf.flush()  # progress survives an interruption
            else:
                report.reused_segments += len(entry.get("segments", []))
                if entry.get("skipped"):
                    _count_skip(entry, report)
    gathered = gather_objects(world, (new, report))
    total = _merge_reports([r for _, r in gathered], len(found.sources))
    if world.is_main:
        for part, _ in gathered:
            index["sources"].update(part)
        pairs = _current_pairs(found.sources, index, segment_seconds, encoder.fingerprint)
        total.pairs = len(pairs)
        index["current"] = {"fingerprint": encoder.fingerprint, "mode": encoder.mode,
                            "variant": encoder.variant, "segment_seconds": segment_seconds,
                            "data": str(Path(data_dir).resolve()), "pairs": pairs}
        write_index(cache, index)
        for p in _journals(cache):
            p.unlink()
    total.pairs = gather_objects(world, total.pairs)[0]
    barrier(world)
    log.debug("extraction: %s", total.summary())
    if not total.pairs:
        raise ConfigError(f"no training pairs from {data_dir}: {total.summary(0)}. Each clip "
                          f"needs at least {2 * segment_seconds:g} s of audio (two segments)")
    return total


def _current_pairs(sources: list[Source], index: dict, seconds: float,
                   fingerprint: str) -> list[list]:
    """[source key, target segment, condition segment] of every usable pair, in source order."""
    pairs = []
    for source in sources:
        key = source_key(source, seconds, fingerprint)
        entry = index["sources"][key]
        if entry.get("skipped"):
            continue
        usable = {s["index"] for s in entry["segments"]}
        for tgt, cond in segment_pairs(len(entry["starts"])):
            if tgt in usable and cond in usable:
                pairs.append([key, tgt, cond])
    return pairs


def _merge_reports(reports: list[ExtractReport], sources: int) -> ExtractReport:
    total = ExtractReport(sources=sources)
    for r in reports:
        total.encoded_segments += r.encoded_segments
        total.reused_segments += r.reused_segments
        total.failed_segments += r.failed_segments
        total.too_short += r.too_short
        total.unreadable += r.unreadable
    total.too_short.sort()
    total.unreadable.sort()
    return total


def _journals(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"{JOURNAL_PREFIX}*.jsonl"))


def _fold_journals(cache: Path) -> None:
    """Move the entries journalled by an interrupted run into the index (a torn last line, cut
    by the interruption, is dropped: that clip is encoded again)."""
    found = _journals(cache)
    if not found:
        return
    index = read_index(cache)
    for path in found:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
                index["sources"][item["key"]] = item["entry"]
            except (ValueError, KeyError, TypeError):
                continue
    write_index(cache, index)
    for path in found:
        path.unlink()


def _count_skip(entry: dict, report: ExtractReport) -> None:
    if entry["skipped"] == "too short":
        report.too_short.append(entry["path"])
    else:
        report.unreadable.append(f"{entry['path']}: {entry['skipped']}")


def _extract_source(source: Source, key: str, cache: Path, encoder: SegmentEncoder,
                    seconds: float, report: ExtractReport) -> dict:
    entry = {"path": str(source.path), "kind": source.kind, "caption": source.caption,
             "segment_seconds": seconds, "starts": [], "segments": [], "skipped": None}
    try:
        duration = probe_duration(source)
    except MediaError as e:
        log.warning("skipping unreadable clip: %s", e)
        entry["skipped"] = str(e)
        _count_skip(entry, report)
        return entry
    starts = segment_starts(duration, seconds)
    entry["duration"], entry["starts"] = duration, starts
    if len(starts) < 2:
        entry["skipped"] = "too short"
        _count_skip(entry, report)
        return entry
    try:
        tensors, segments, dropped = _encode_source(source, starts, seconds, encoder)
    except NAGFoleyError as e:
        log.warning("skipping unreadable clip %s: %s", source.path, e)
        entry["skipped"] = str(e)
        _count_skip(entry, report)
        return entry
    except torch.cuda.OutOfMemoryError:
        raise  # not the clip's fault
    except (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError) as e:
        # A clip that opens but fails to decode half way (a damaged stream, a truncated
        # download) is one bad clip of thousands: count it, list it, carry on.
        reason = f"cannot be decoded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        log.warning("skipping clip %s: %s", source.path, reason)
        entry["skipped"] = reason
        _count_skip(entry, report)
        return entry
    segments = _check_shapes(segments, tensors, source.path)
    report.encoded_segments += len(starts) - dropped
    report.failed_segments += len(starts) - len(segments)
    entry["segments"] = segments
    keep = {f"{s['index']}." for s in segments}
    tensors = {n: t for n, t in tensors.items() if n[: n.index(".") + 1] in keep}
    shard = f"{SHARD_DIR}/{key}.safetensors"
    if tensors:
        from ..checkpoint import write_safetensors
        write_safetensors(tensors, cache / shard, metadata={"source": str(source.path)})
    entry["shard"] = shard
    return entry


def _progress(items, enabled: bool, world: World):
    if not enabled:
        return items
    from tqdm import tqdm
    desc = "extract" if not world.distributed else f"extract (rank 0, 1/{world.size} of the clips)"
    return tqdm(items, desc=desc, unit="clip")
