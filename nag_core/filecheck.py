"""Cheap structural checks of the files the pack reads: is this really a safetensors file, a
PyTorch checkpoint, a gzip stream, a JSON config, or an HTML error page / a cut-off body under
that name? Used before a download gets its real name and on files already in a models folder.

Each check reads headers and directories only (a safetensors header, a zip's central directory),
except a ``.gz``, which is unpacked with a bound on its size (:func:`read_gzip`) because a gzip
stream has no directory: only unpacking finds a truncation.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Optional

from .errors import WeightsError

# A safetensors header is a few hundred kB even for a multi-GB file; a claimed header larger
# than this is damage, not data.
MAX_SAFETENSORS_HEADER = 100 << 20
# What a .gz we read may unpack to: the CLIP vocabulary is about 1.4 MB packed and a few MB
# unpacked; anything beyond this is not a vocabulary (a gzip bomb adds its size to memory).
MAX_GZIP_BYTES = 32 << 20
MAX_JSON_BYTES = 1 << 20  # config.json is 2 kB
# torch.save's pre-1.6 format: a pickle (protocol 2) of a magic number. Accepted as it is:
# nothing short of unpickling checks it, and the md5 covers the official files of that age.
_LEGACY_TORCH_START = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<!--")

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class _Damaged(Exception):
    """A file's content is wrong; the message says how (completes "it is damaged: ...")."""


def read_gzip(path, limit: int = MAX_GZIP_BYTES) -> bytes:
    """The unpacked content of the gzip file ``path``, refusing more than ``limit`` bytes (the
    memory a damaged or hostile file can take is bounded). A truncated or garbage stream is a
    WeightsError naming the file, never an EOFError."""
    p = Path(os.fspath(path))
    try:
        return _unpack_gzip(p, limit)
    except _Damaged as e:
        raise WeightsError(f"{p} is damaged: {e}; delete it and download it again") from None
    except OSError as e:
        raise WeightsError(f"cannot read {p}: {e.strerror or e}") from None


def _unpack_gzip(p: Path, limit: int) -> bytes:
    try:
        with gzip.open(p, "rb") as f:
            data = f.read(limit + 1)
    except EOFError:
        raise _Damaged("the gzip stream is cut off") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise _Damaged(f"it is not valid gzip ({e})") from None
    if len(data) > limit:
        raise _Damaged(f"it unpacks to more than {limit >> 20} MB, far more than any file the "
                       "pack reads (a damaged file, or not the right one)")
    return data


def file_problem(path, name: Optional[str] = None) -> Optional[str]:
    """What makes ``path`` unusable as the kind of file its name (or ``name``, for a file still
    under a temporary name) says by its extension, or None when it looks right. The text
    completes "<file> is unusable: ..."."""
    p = Path(os.fspath(path))
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    if size == 0:
        return "it is empty (0 bytes)"
    if head.lstrip().lower().startswith(_HTML_STARTS):
        return "it is a web page (HTML: an error or login page), not the file itself"
    name = (name or p.name).lower()
    if name.endswith(SAFETENSORS_SUFFIXES):
        return _safetensors_problem(p, size)
    if name.endswith(TORCH_SUFFIXES):
        return _torch_problem(p, head)
    if name.endswith(".gz"):
        try:
            _unpack_gzip(p, MAX_GZIP_BYTES)
        except _Damaged as e:
            return str(e)
        except OSError as e:
            return f"it cannot be read ({e.strerror or e})"
        return None
    if name.endswith(".json"):
        return _json_problem(p, size)
    return None


def _safetensors_problem(p: Path, size: int) -> Optional[str]:
    if size < 8:
        return f"it is {size} bytes, shorter than a safetensors header"
    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            return (f"its safetensors header claims {n} bytes but the file has {size}: it is cut "
                    "off or not a safetensors file")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        return "its safetensors header is not JSON: it is damaged or not a safetensors file"
    if not isinstance(header, dict):
        return "its safetensors header is not a table of tensors"
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            return f"its safetensors header entry {key[:60]!r} has no valid data_offsets"
    if 8 + n + end != size:
        return (f"its tensors need {8 + n + end} bytes but the file has {size}: it is "
                f"{'cut off' if size < 8 + n + end else 'followed by foreign bytes'}")
    return None


def _torch_problem(p: Path, head: bytes) -> Optional[str]:
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(p) as z:  # reads the central directory at the end of the file
                infos = z.infolist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "it is a cut-off or damaged zip (a PyTorch checkpoint is one)"
        if not infos:
            return "it is an empty zip, not a PyTorch checkpoint"
        return None
    if head.startswith(_LEGACY_TORCH_START):
        return None
    return "it is neither a zip-format nor a legacy PyTorch checkpoint"


def _json_problem(p: Path, size: int) -> Optional[str]:
    if size > MAX_JSON_BYTES:
        return f"it is {size} bytes, far more than a config file holds"
    try:
        data = json.loads(p.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return "it is not valid JSON (cut off or not a config file)"
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not a table of settings"
    return None
