"""Training data: finding a user's clips, their captions and durations, and cutting them into
(target, condition) segment pairs.

Layout of a data folder (searched recursively, hidden files and folders skipped):

* videos with an audio track (any container PyAV reads; recognised by extension, see
  ``VIDEO_EXTENSIONS``): V = the video of the target segment;
* audio files (``AUDIO_EXTENSIONS``): V = ∅ (the network's learned empty clip/sync sequences);
* optional captions, recorded in the cache but never used by the loss (text is always ∅): a
  sidecar ``<name>.txt`` beside a file, or a ``captions.csv`` (columns ``file`` and ``caption``)
  or ``captions.jsonl`` (objects with ``file`` and ``caption``) in the data folder, where
  ``file`` is the path relative to the data folder (or just the file name).

Instead of a folder, ``--data`` may name a list file ``*.csv`` or ``*.tsv`` with a header row:
a ``file`` column (paths relative to the list's folder, or absolute) and an optional ``caption``
column. Listed files that do not exist are reported, not fatal.

Segment rule: a clip of duration d is cut into n = floor(d / s) adjacent, non-overlapping
segments of s seconds (default 4): [0, s), [s, 2s), ... (the rest is dropped). Every pair of
neighbours (k, k+1) gives two training pairs: target k with condition k+1, and the swap. A 9 s
clip therefore gives segments [0,4) [4,8) and the pairs (0→1), (1→0); a 12 s clip gives three
segments and four pairs. Clips with fewer than two segments are skipped (and counted).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional

from ..defaults import AUDIO_INPUT_SUFFIXES, VIDEO_INPUT_SUFFIXES
from ..errors import ConfigError, MediaError

log = logging.getLogger("nag_core.train")

DEFAULT_SEGMENT_SECONDS = 4.0
VIDEO_EXTENSIONS = VIDEO_INPUT_SUFFIXES  # the one list (nag_core.defaults)
AUDIO_EXTENSIONS = AUDIO_INPUT_SUFFIXES
CAPTION_FILES = ("captions.csv", "captions.jsonl")
LIST_SUFFIXES = (".csv", ".tsv")
# A segment may end this far past the probed end: container durations are rounded, and the
# decoders pad the last fraction of a frame / a few samples.
END_TOLERANCE_S = 0.02


@dataclass(frozen=True)
class Source:
    """One clip of the data folder."""

    path: Path
    kind: str  # "video" (video + audio) or "audio" (audio only, V = ∅)
    caption: Optional[str] = None


@dataclass
class Discovery:
    """What a data folder holds, plus what was ignored."""

    sources: list[Source]
    ignored: list[Path] = field(default_factory=list)  # files of no known kind
    missing: list[str] = field(default_factory=list)  # listed files that do not exist


def _captions_from_tables(root: Path) -> dict[str, str]:
    """{relative path or file name: caption} from captions.csv / captions.jsonl."""
    table: dict[str, str] = {}
    csv_path, jsonl_path = root / CAPTION_FILES[0], root / CAPTION_FILES[1]
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or ())
            if not {"file", "caption"} <= cols:
                raise ConfigError(f"{csv_path} needs the columns 'file' and 'caption' (it has "
                                  f"{sorted(cols)}); fix the header row")
            for row in reader:
                table[row["file"].strip()] = row["caption"] or ""
    if jsonl_path.is_file():
        with open(jsonl_path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    table[str(obj["file"]).strip()] = str(obj.get("caption", ""))
                except (ValueError, KeyError, TypeError):
                    raise ConfigError(f"{jsonl_path} line {n} is not a JSON object with 'file' "
                                      "and 'caption'; fix or remove that line") from None
    return table


def _caption_for(path: Path, root: Path, table: dict[str, str]) -> Optional[str]:
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8").strip()
    rel = path.relative_to(root).as_posix()
    return table.get(rel, table.get(path.name))


def discover(data_dir: str | os.PathLike, exclude: tuple[Path, ...] = ()) -> Discovery:
    """The clips under ``data_dir``, sorted by path. ``exclude``: folders to skip (the cache)."""
    root = Path(data_dir)
    if root.is_file() and root.suffix.lower() in LIST_SUFFIXES:
        return _discover_list(root)
    if not root.is_dir():
        raise ConfigError(f"data folder {root} does not exist; pass --data a folder of videos "
                          "with audio and/or audio files, or a .csv/.tsv list of them")
    table = _captions_from_tables(root)
    excluded = [Path(e).resolve() for e in exclude]
    sources, ignored = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (here / d).resolve() not in excluded)
        for name in sorted(filenames):
            p = here / name
            ext = p.suffix.lower()
            if name.startswith(".") or name in CAPTION_FILES:
                continue
            if ext in VIDEO_EXTENSIONS:
                sources.append(Source(p, "video", _caption_for(p, root, table)))
            elif ext in AUDIO_EXTENSIONS:
                sources.append(Source(p, "audio", _caption_for(p, root, table)))
            elif ext != ".txt":
                ignored.append(p)
    if not sources:
        raise ConfigError(
            f"no clips found in {root}: put videos with audio ({', '.join(VIDEO_EXTENSIONS[:5])}, "
            f"...) and/or audio files ({', '.join(AUDIO_EXTENSIONS[:4])}, ...) there"
            + (f" ({len(ignored)} other files were ignored, e.g. {ignored[0].name})"
               if ignored else ""))
    return Discovery(sorted(sources, key=lambda s: str(s.path)), ignored)


def _kind(path: Path) -> Optional[str]:
    ext = path.suffix.lower()
    return "video" if ext in VIDEO_EXTENSIONS else "audio" if ext in AUDIO_EXTENSIONS else None


def _discover_list(path: Path) -> Discovery:
    """The clips of a .csv / .tsv list (header ``file`` and optionally ``caption``)."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        cols = set(reader.fieldnames or ())
        if "file" not in cols:
            raise ConfigError(f"{path} needs a header row with a 'file' column (and optionally "
                              f"'caption'); it has {sorted(cols)}")
        rows = [((r["file"] or "").strip(), r.get("caption")) for r in reader]
    sources, ignored, missing, seen = [], [], [], set()
    for name, caption in rows:
        if not name:
            continue
        p = Path(name) if Path(name).is_absolute() else path.parent / name
        if p in seen:
            continue
        seen.add(p)
        kind = _kind(p)
        if kind is None:
            ignored.append(p)
        elif not p.is_file():
            missing.append(str(p))
        else:
            sources.append(Source(p, kind, caption.strip() if caption else None))
    if missing:
        log.warning("%d files listed in %s do not exist (e.g. %s)", len(missing), path,
                    missing[0])
    if not sources:
        raise ConfigError(f"{path} lists no existing video or audio files ({len(missing)} "
                          f"missing, {len(ignored)} of other kinds); paths are relative to the "
                          "list's folder")
    return Discovery(sorted(sources, key=lambda s: str(s.path)), ignored, missing)


# --------------------------------------------------------------------------- probing
def _stream_seconds(container, stream) -> Optional[float]:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return None


def _decoded_audio_seconds(container, stream) -> float:
    """Fallback for containers without a duration (raw streams): decode and count samples."""
    samples, rate = 0, stream.rate or 1
    for frame in container.decode(stream):
        samples += frame.samples
        rate = frame.sample_rate or rate
    return samples / rate


def probe_duration(source: Source) -> float:
    """Usable seconds of a clip: the audio length, and for videos the shorter of audio and video.
    Raises MediaError for a file PyAV cannot open or one without the streams its kind needs."""
    import av

    try:
        container = av.open(str(source.path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(f"{source.path} cannot be opened ({e}); it is damaged or not a media "
                         "file") from None
    try:
        audio = next((s for s in container.streams if s.type == "audio"), None)
        if audio is None:
            raise MediaError(f"{source.path} has no audio track; training needs the sound")
        seconds = _stream_seconds(container, audio)
        if source.kind == "video":
            video = next((s for s in container.streams if s.type == "video"), None)
            if video is None:
                raise MediaError(f"{source.path} has no video track")
            v = _stream_seconds(container, video)
            if v is not None:
                seconds = v if seconds is None else min(seconds, v)
        if seconds is None:
            seconds = _decoded_audio_seconds(container, audio)
        return float(seconds)
    except av.FFmpegError as e:
        raise MediaError(f"{source.path} cannot be read ({e}); it is damaged") from None
    finally:
        container.close()


# --------------------------------------------------------------------------- segments
def segment_starts(duration: float, seconds: float = DEFAULT_SEGMENT_SECONDS) -> list[float]:
    """Starts of the adjacent, non-overlapping ``seconds``-long segments of a clip."""
    if not seconds > 0:
        raise ConfigError(f"segment length must be positive, got {seconds}")
    # Exact fractions so 0.1-second steps do not drift.
    s = Fraction(seconds).limit_denominator(10_000)
    n = int(math.floor((duration + END_TOLERANCE_S) / float(s)))
    return [float(k * s) for k in range(max(n, 0))]


def segment_pairs(num_segments: int) -> list[tuple[int, int]]:
    """(target, condition) segment indices: each neighbour pair in both orders."""
    pairs = []
    for k in range(num_segments - 1):
        pairs += [(k, k + 1), (k + 1, k)]
    return pairs
