"""SHA-256 of files for the run record, with a cache for weights: weight files are gigabytes, so
each is hashed once and remembered by (absolute path, size, modification time) in
``<cache>/nag-foley/sha256-cache.json``; a changed file has a new size or mtime and is hashed
again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .atomic import write_text

CHUNK = 1 << 20
CACHE_NAME = "sha256-cache.json"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _cache_path() -> Path:
    from .download import cache_dir
    return cache_dir() / CACHE_NAME


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: hashing again is always correct


def _write_cache(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only cache only costs time


def cached_sha256(path) -> str:
    """sha256 of ``path``, from the cache when the file's size and mtime are unchanged."""
    p = Path(path).resolve()
    st = p.stat()
    key = str(p)
    cache_file = _cache_path()
    cache = _read_cache(cache_file)
    entry = cache.get(key)
    if (isinstance(entry, dict) and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("sha256")):
        return entry["sha256"]
    digest = sha256_file(p)
    cache = _read_cache(cache_file)  # re-read: another process may have added entries meanwhile
    cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    _write_cache(cache_file, cache)
    return digest
