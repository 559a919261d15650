"""Where the weights live and how they get there: models-folder resolution, offline mode, and
resumable, md5-checked downloads from the official sources (urllib only).

Resolution order of the models folder (:func:`resolve_models_dir`):

1. an explicit folder (``--models DIR`` / ``models_dir=``);
2. the environment variable ``NAGFOLEY_MODELS_DIR``;
3. ``models/mmaudio`` of the ComfyUI installation we run inside (searched upwards from the
   current directory and from this package: a folder holding ``comfy/``, ``main.py`` and
   ``models/``), the folder the ComfyUI nodes use, so one download serves both;
4. the user cache: ``$XDG_CACHE_HOME/nag-foley/models`` (default ``~/.cache/nag-foley/models``).

A download goes to ``<name>.partial`` beside its final place and is renamed only after its md5
(where the publisher gives one) matched; an interrupted transfer resumes with an HTTP Range
request (a server that ignores Range restarts it from zero). Offline mode (``offline=True``,
``NAGFOLEY_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) never opens a connection: missing files are
reported with where to put them and where to get them.

Tests point the downloads at a local server with ``NAGFOLEY_HF_ENDPOINT`` (replaces
``https://huggingface.co``) and ``NAGFOLEY_GITHUB_ENDPOINT`` (replaces ``https://github.com``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from .atomic import commit
from .errors import WeightsError
from .weights import (HF, RemoteFile, find_model_files, missing_files, ModelFiles)

GITHUB = "https://github.com"
VOCAB_FILE = RemoteFile("bpe_simple_vocab_16e6.txt.gz",
                        f"{GITHUB}/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz",
                        None, "1.4 MB")
CHUNK = 1 << 20
USER_AGENT = "nag-foley (urllib)"
_TRUE = ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- where
def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/nag-foley`` (default ``~/.cache/nag-foley``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nag-foley"


def is_comfyui_root(folder: Path) -> bool:
    return (folder / "comfy").is_dir() and (folder / "main.py").is_file() \
        and (folder / "models").is_dir()


def find_comfyui_root(*starts) -> Optional[Path]:
    """The first ComfyUI root found walking up from each start (default: the current directory,
    then this package's folder, which lies inside ComfyUI when installed as a custom node)."""
    starts = starts or (Path.cwd(), Path(__file__).resolve().parent)
    for start in starts:
        for folder in [Path(start).resolve(), *Path(start).resolve().parents]:
            if is_comfyui_root(folder):
                return folder
    return None


def resolve_models_dir(explicit=None) -> Path:
    """The models folder, by the order in the module docstring."""
    if explicit:
        return Path(os.fspath(explicit)).expanduser()
    env = os.environ.get("NAGFOLEY_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    comfy = find_comfyui_root()
    if comfy is not None:
        return comfy / "models" / "mmaudio"
    return cache_dir() / "models"


def is_offline(offline: Optional[bool] = None) -> bool:
    """``offline`` when given, else the environment (NAGFOLEY_OFFLINE or HF_HUB_OFFLINE)."""
    if offline is not None:
        return bool(offline)
    return any(os.environ.get(k, "").strip().lower() in _TRUE
               for k in ("NAGFOLEY_OFFLINE", "HF_HUB_OFFLINE"))


def resolve_url(url: str) -> str:
    """``url`` with the Hugging Face / GitHub host replaced by the endpoint overrides, if set."""
    for base, env in ((HF, "NAGFOLEY_HF_ENDPOINT"), (GITHUB, "NAGFOLEY_GITHUB_ENDPOINT")):
        override = os.environ.get(env)
        if override and url.startswith(base + "/"):
            return override.rstrip("/") + url[len(base):]
    return url


# --------------------------------------------------------------------------- one file
def _md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class _Interrupted(Exception):
    """The transfer stopped early; the partial file is kept for a resume."""


def _progress_bar(name: str, total: Optional[int], initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled, leave=False)


def _transfer(url: str, partial: Path, name: str, progress: bool, timeout: float) -> None:
    """One request: resume ``partial`` when it has bytes, else start it. Raises _Interrupted when
    the body ends early or the connection drops, HTTPError for refusals."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our partial is not a prefix the server can continue
            partial.unlink()
            raise _Interrupted("the server refused to resume; starting again") from None
        raise
    except (urllib.error.URLError, OSError) as e:
        # A timeout or a reset is worth retrying; a refused connection or an unknown host is
        # not (blocked network, offline machine): fail at once with the list of files.
        reason = getattr(e, "reason", e)
        if isinstance(reason, (socket.timeout, TimeoutError, ConnectionResetError)):
            raise _Interrupted(str(reason)) from None
        raise
    with response:
        if have and response.status == 206:
            mode = "ab"
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != have:  # not the continuation we asked for: start over
                partial.unlink()
                raise _Interrupted(f"the server resumed at byte {start}, not {have}")
        else:  # 200: the server sent the whole file (it ignored Range, or there was no partial)
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        received = have
        with open(partial, mode) as out, _progress_bar(name, expected, have, progress) as bar:
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, ConnectionError, socket.timeout) as e:
                    raise _Interrupted(f"connection lost after {received} bytes ({e})") from None
                if not block:
                    break
                out.write(block)  # a full disk is not retried: OSError goes to the caller
                received += len(block)
                bar.update(len(block))
        if expected is not None and received < expected:
            raise _Interrupted(f"got {received} of {expected} bytes")


def _range_start(content_range: str) -> Optional[int]:
    """First byte of ``Content-Range: bytes X-Y/Z`` (None when unreadable)."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def download_file(remote: RemoteFile, models_dir, *, progress: bool = True, retries: int = 5,
                  retry_wait: float = 2.0, timeout: float = 60.0) -> Path:
    """Download ``remote`` into ``models_dir/remote.relpath`` (skipped when it is already there).

    Resumes from ``<name>.partial`` after an interruption (up to ``retries`` times here, and on
    the next call after that). A wrong md5 deletes the partial and raises WeightsError; nothing
    ever appears under the final name unchecked."""
    dest = Path(models_dir) / remote.relpath
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    url = resolve_url(remote.url)
    for attempt in range(retries + 1):
        try:
            _transfer(url, partial, dest.name, progress, timeout)
            break
        except _Interrupted as e:
            if attempt == retries:
                raise WeightsError(
                    f"downloading {url} was interrupted {retries + 1} times (last: {e}); the "
                    f"part received is kept in {partial}: run the same command again to resume, "
                    f"or download the file yourself to {dest}") from None
            time.sleep(retry_wait * (attempt + 1))
        except urllib.error.HTTPError as e:
            raise WeightsError(f"could not download {url}: HTTP {e.code} {e.reason}. Download it "
                               f"yourself to {dest}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise WeightsError(f"could not download {url}: {reason}. If this machine cannot "
                               f"reach the internet, download the file elsewhere and put it at "
                               f"{dest}") from None
    if remote.md5:
        got = _md5_of(partial)
        if got != remote.md5:
            partial.unlink()
            raise WeightsError(f"the download of {url} is damaged: md5 {got}, expected "
                               f"{remote.md5}. It was deleted; run the command again to "
                               f"download it afresh, or download it yourself to {dest}")
    commit(partial, dest)
    return dest


# --------------------------------------------------------------------------- a whole model
def _needs_vocab(files: ModelFiles) -> bool:
    if files.bpe_vocab is not None:
        return False
    from .mmaudio.tokenizer import find_bpe_vocab
    try:
        find_bpe_vocab(None, files.clip.parent)
        return False
    except WeightsError:
        return True


def ensure_model_files(variant: str = "small_16k", models_dir=None, *,
                       offline: Optional[bool] = None, download: bool = True,
                       progress: bool = True) -> ModelFiles:
    """The located files of ``variant``, downloading what is missing unless offline or
    ``download`` is False (then a WeightsError lists exactly which files are missing, where to
    put them and where to get them)."""
    root = resolve_models_dir(models_dir)
    offline = is_offline(offline)
    todo = missing_files(root, variant)
    if todo and (offline or not download):
        try:
            find_model_files(root, variant)
        except WeightsError as e:
            why = ("offline mode (--offline, NAGFOLEY_OFFLINE or HF_HUB_OFFLINE): nothing was "
                   "downloaded.\n" if offline else "")
            raise WeightsError(why + str(e)[:1].upper() + str(e)[1:]) from None
        todo = []  # only optional files (a 44k vocoder's config.json) are missing: go without
    for remote in todo:
        try:
            download_file(remote, root, progress=progress)
        except WeightsError as e:
            try:
                find_model_files(root, variant)
            except WeightsError as listing:
                raise WeightsError(f"{e}\n{listing}") from None
            raise
    files = find_model_files(root, variant)
    if _needs_vocab(files):
        if offline or not download:
            raise WeightsError(f"the CLIP BPE vocabulary is missing: put {VOCAB_FILE.relpath} "
                               f"(from {VOCAB_FILE.url}) into {root}")
        files.bpe_vocab = download_file(VOCAB_FILE, root, progress=progress)
    return files
