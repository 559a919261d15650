"""Where the weights live and how they get there: models-folder resolution, offline mode, and
resumable, verified downloads from the official sources (urllib only).

Resolution order of the models folder (:func:`resolve_models_dir`):

1. an explicit folder (``--models DIR`` / ``models_dir=``);
2. the environment variable ``NAGFOLEY_MODELS_DIR``;
3. ``models/mmaudio`` of the ComfyUI installation we run inside (searched upwards from the
   current directory and from this package: a folder holding ``comfy/``, ``main.py`` and
   ``models/``), the folder the ComfyUI nodes use, so one download serves both;
4. the user cache: ``$XDG_CACHE_HOME/nag-foley/models`` (default ``~/.cache/nag-foley/models``).

A download goes to ``<name>.partial`` beside its final place and gets its real name only after
every check passed (:func:`verify_download`): the size the server announced, the publisher's md5
where one is known, the hub's sha256 where the server gives one (Hugging Face LFS answers carry
it in X-Linked-Etag / ETag), a content type that is not a web page, and the structure the name
promises (safetensors header, zip for .pth/.pt/.bin, gzip for .gz, JSON for .json). A file that
fails is deleted and never counts as present; one already in the folder that fails the
structural checks is moved aside to ``<name>.damaged`` and downloaded again. An interrupted
transfer resumes with an HTTP Range request guarded by If-Range (the validator of the first
transfer is kept in ``<name>.partial.json``), so changed content on the server starts over
instead of being spliced; a server that ignores Range restarts it from zero. Each file has an
overall deadline and a minimum rate (:class:`Limits`). Offline mode (``offline=True``,
``NAGFOLEY_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) never opens a connection: missing files are
reported with where to put them and where to get them.

Tests point the downloads at a local server with ``NAGFOLEY_HF_ENDPOINT`` (replaces
``https://huggingface.co``) and ``NAGFOLEY_GITHUB_ENDPOINT`` (replaces ``https://github.com``).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .atomic import commit, remove_quietly, set_aside, write_text
from .errors import WeightsError, not_a_file
from .filecheck import file_problem
from .smoke import MARKER as SMOKE_MARKER, smoke_files
from .weights import (HF, ModelFiles, RemoteFile, find_model_files, missing_files, missing_line,
                      required_files)

GITHUB = "https://github.com"
VOCAB_FILE = RemoteFile("bpe_simple_vocab_16e6.txt.gz",
                        f"{GITHUB}/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz",
                        None, "1.4 MB")
CHUNK = 1 << 20
# A file must arrive within DEADLINE_S and, averaged over RATE_WINDOW_S, at MIN_RATE bytes/s or
# faster (a slower stretch is cut off and resumed; retries exhausted, the message says so).
DEADLINE_S = 12 * 3600.0
MIN_RATE = 16 * 1024.0
RATE_WINDOW_S = 60.0
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
class _Interrupted(Exception):
    """The transfer stopped early; the partial file is kept for a resume."""


class _Refused(Exception):
    """The answer is not the file (a web page, a changed size): retrying would not help."""


class _OutOfTime(Exception):
    """The overall deadline passed."""


class _LocalError(Exception):
    """Writing the partial file on this machine failed (full disk, permissions)."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(str(error))
        self.path, self.error = path, error


@dataclass
class Expected:
    """What the server says the file is: its sha256 (Hugging Face LFS files), its size, and the
    validator (ETag or Last-Modified) that a resume sends as If-Range."""

    sha256: Optional[str] = None
    size: Optional[int] = None
    validator: Optional[str] = None

    def to_json(self) -> str:
        return json.dumps({"sha256": self.sha256, "size": self.size, "validator": self.validator})

    @classmethod
    def read(cls, path: Path) -> "Expected":
        try:
            d = json.loads(path.read_text())
            return cls(d.get("sha256"), d.get("size"), d.get("validator"))
        except (OSError, ValueError, AttributeError):
            return cls()  # no record of the first transfer: the checks at the end still run


@dataclass
class Limits:
    """How long one file may take: a per-read socket timeout, an overall deadline, and a minimum
    rate averaged over ``window`` seconds (a trickling server is cut off and resumed, then
    given up on with a message that says so)."""

    timeout: float = 60.0
    deadline: float = DEADLINE_S
    min_rate: float = MIN_RATE
    window: float = RATE_WINDOW_S


class _Hops(urllib.request.HTTPRedirectHandler):
    """Keeps the headers of every redirect: the Hugging Face hub puts the file's sha256 and size
    on its redirect to the CDN (X-Linked-Etag, X-Linked-Size), not on the CDN's answer."""

    def __init__(self):
        self.headers = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _hex_etag(value: Optional[str], length: int) -> Optional[str]:
    v = (value or "").strip()
    v = v[2:] if v.startswith("W/") else v
    v = v.strip('"').lower()
    return v if len(v) == length and all(c in "0123456789abcdef" for c in v) else None


def expected_from(hops: list, *, hub: bool, start: int, content_length: Optional[str],
                  content_range: str = "") -> Expected:
    """The sha256, size and validator the answer states. ``hops``: the headers of each response,
    the first request's first (redirects, then the final answer). A 64-hex-digit ETag counts as
    a sha256 only from the hub's own first answer (``hub``) or in X-Linked-Etag; other hosts'
    ETags are opaque validators."""
    sha = None
    for i, h in enumerate(hops):
        sha = sha or _hex_etag(h.get("X-Linked-Etag"), 64)
        if hub and i == 0:
            sha = sha or _hex_etag(h.get("ETag"), 64)
    size = None
    for h in hops:
        linked = h.get("X-Linked-Size")
        if linked and linked.strip().isdigit():
            size = int(linked)
    total = content_range.rpartition("/")[2].strip()
    if size is None and total.isdigit():
        size = int(total)
    if size is None and content_length is not None and content_length.strip().isdigit():
        size = start + int(content_length)
    final = hops[-1]
    etag = (final.get("ETag") or "").strip()
    validator = etag if etag and not etag.startswith("W/") else final.get("Last-Modified")
    return Expected(sha, size, validator)


def _progress_bar(name: str, total: Optional[int], initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled, leave=False)


def _state_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def _transfer(url: str, partial: Path, name: str, progress: bool, limits: Limits,
              ends_at: float, hub: bool) -> Expected:
    """One request: resume ``partial`` when it has bytes, else start it. Raises _Interrupted when
    the body ends early, the connection drops or the rate falls below the minimum; _Refused for
    an answer that is not the file; HTTPError for refusals; _LocalError for a local write."""
    have = partial.stat().st_size if partial.exists() else 0
    before = Expected.read(_state_path(partial)) if have else Expected()
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        if before.validator:
            headers["If-Range"] = before.validator  # changed content comes back whole (200)
    hops = _Hops()
    opener = urllib.request.build_opener(hops)
    try:
        response = opener.open(urllib.request.Request(url, headers=headers),
                               timeout=limits.timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our partial is not a prefix the server can continue
            _discard(partial)
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
        kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml"):
            raise _Refused(f"the server answered with a web page ({kind}) instead of the file: "
                           "an error or login page (a proxy, or a wrong address?)")
        resumed = bool(have) and response.status == 206
        start = _range_start(response.headers.get("Content-Range", "")) if resumed else 0
        now = expected_from([*hops.headers, response.headers], hub=hub, start=start or 0,
                            content_length=response.headers.get("Content-Length"),
                            content_range=response.headers.get("Content-Range", "") if resumed
                            else "")
        if resumed:
            if start != have:  # not the continuation we asked for: start over
                _discard(partial)
                raise _Interrupted(f"the server resumed at byte {start}, not {have}")
            changed = [what for what, a, b in (("sha256", before.sha256, now.sha256),
                                                ("size", before.size, now.size))
                       if a is not None and b is not None and a != b]
            if changed:  # the partial holds the start of another file
                _discard(partial)
                raise _Interrupted(f"the file changed on the server since the partial download "
                                   f"({' and '.join(changed)} differ); starting again")
        else:  # 200: the whole file (no partial, the server ignored Range, or If-Range failed)
            have = 0
        if not resumed or before.validator is None:
            _local(partial, lambda: write_text(_state_path(partial), now.to_json()))
        _read_body(response, partial, "ab" if resumed else "wb", have, now.size, name, progress,
                   limits, ends_at)
    return now


def _read_body(response, partial: Path, mode: str, have: int, expected: Optional[int],
               name: str, progress: bool, limits: Limits, ends_at: float) -> None:
    received = have
    window_start, window_bytes = time.monotonic(), 0
    out = _local(partial, lambda: open(partial, mode))
    with out, _progress_bar(name, expected, have, progress) as bar:
        while True:
            try:
                block = response.read1(CHUNK)  # whatever has arrived: the clock is checked often
            except (http.client.IncompleteRead, ConnectionError, socket.timeout) as e:
                raise _Interrupted(f"connection lost after {received} bytes ({e})") from None
            if not block:
                break
            _local(partial, lambda: out.write(block))
            received += len(block)
            window_bytes += len(block)
            bar.update(len(block))
            if expected is not None and received > expected:
                raise _Refused(f"the server sent more than the {expected} bytes it announced")
            now = time.monotonic()
            if now > ends_at:
                raise _OutOfTime(f"{received} of {expected or '?'} bytes received")
            if now - window_start >= limits.window:
                rate = window_bytes / (now - window_start)
                if rate < limits.min_rate:
                    raise _Interrupted(f"the server sends {rate:.0f} bytes/s, below the minimum "
                                       f"of {limits.min_rate:.0f} bytes/s")
                window_start, window_bytes = now, 0
        _local(partial, out.flush)
    if expected is not None and received < expected:
        raise _Interrupted(f"got {received} of {expected} bytes")


def _local(path: Path, action):
    """Run a local file operation; its OSError is this machine's problem, not the network's."""
    try:
        return action()
    except OSError as e:
        raise _LocalError(path, e) from None


def _range_start(content_range: str) -> Optional[int]:
    """First byte of ``Content-Range: bytes X-Y/Z`` (None when unreadable)."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _discard(partial: Path) -> None:
    remove_quietly(partial)
    remove_quietly(_state_path(partial))


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_download(path: Path, remote: RemoteFile, expected: Expected) -> Optional[str]:
    """Why the finished download ``path`` is not ``remote``'s file, or None when every check
    passes: the size the server announced, the publisher's md5, the hub's sha256, and the
    structure its name promises (safetensors header, zip, gzip, JSON)."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"it has {size} bytes, the server announced {expected.size}"
    problem = file_problem(path, name=remote.relpath)
    if problem:
        return problem
    if remote.md5 and _digest(path, "md5") != remote.md5:
        return f"its md5 is not the publisher's {remote.md5}"
    if expected.sha256 and _digest(path, "sha256") != expected.sha256:
        return f"its sha256 is not the {expected.sha256} the hub gives for it"
    return None


def download_file(remote: RemoteFile, models_dir, *, progress: bool = True, retries: int = 5,
                  retry_wait: float = 2.0, timeout: float = 60.0,
                  limits: Optional[Limits] = None, replace: bool = False) -> Path:
    """Download ``remote`` into ``models_dir/remote.relpath``. A file already there is kept when
    it passes the structural checks (:func:`nag_core.filecheck.file_problem`); a damaged one is
    moved aside to ``<name>.damaged`` (never deleted) and downloaded again; ``replace`` (the
    smoke-test set) downloads over it.

    Resumes from ``<name>.partial`` after an interruption (up to ``retries`` times here, and on
    the next call after that). The finished partial is verified (:func:`verify_download`)
    before it gets its real name; a failure deletes it and raises WeightsError, so nothing ever
    appears under the final name unchecked."""
    limits = limits or Limits(timeout=timeout)
    dest = Path(models_dir) / remote.relpath
    if dest.is_dir():
        raise WeightsError(f"{not_a_file(dest)} (the weight file {dest.name} goes there), "
                           "then run the command again")
    if dest.is_file() and not replace:
        problem = file_problem(dest)
        if problem is None:
            return dest
        aside = _local_or_raise(dest, lambda: set_aside(dest))
        print(f"{dest} is unusable ({problem}); moved it to {aside.name} and downloading it again",
              file=sys.stderr)
    _local_or_raise(dest.parent, lambda: dest.parent.mkdir(parents=True, exist_ok=True))
    partial = dest.with_name(dest.name + ".partial")
    url = resolve_url(remote.url)
    ends_at = time.monotonic() + limits.deadline
    expected = Expected()
    for attempt in range(retries + 1):
        try:
            expected = _transfer(url, partial, dest.name, progress, limits, ends_at,
                                 hub=remote.url.startswith(HF + "/"))
            break
        except _Interrupted as e:
            if attempt == retries:
                raise WeightsError(
                    f"downloading {url} was interrupted {retries + 1} times (last: {e}); the "
                    f"part received is kept in {partial}: run the same command again to resume, "
                    f"or download the file yourself to {dest}") from None
            time.sleep(min(retry_wait * (attempt + 1), max(0.0, ends_at - time.monotonic())))
        except _OutOfTime as e:
            raise WeightsError(
                f"downloading {url} did not finish within {limits.deadline:.0f} s ({e}); the part "
                f"received is kept in {partial}: run the same command again to resume, or "
                f"download the file yourself to {dest}") from None
        except _Refused as e:
            raise WeightsError(f"could not download {url}: {e}. Nothing was saved; download "
                               f"it yourself to {dest}") from None
        except _LocalError as e:
            raise WeightsError(_local_message(e.path, e.error, remote)) from None
        except urllib.error.HTTPError as e:
            raise WeightsError(f"could not download {url}: HTTP {e.code} {e.reason}. Download it "
                               f"yourself to {dest}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise WeightsError(f"could not download {url}: {reason}. If this machine cannot "
                               f"reach the internet, download the file elsewhere and put it at "
                               f"{dest}") from None
    problem = verify_download(partial, remote, expected)
    if problem:
        _discard(partial)
        raise WeightsError(f"the download of {url} is damaged: {problem}. It was deleted; run "
                           f"the command again to download it afresh, or download it yourself "
                           f"to {dest}")
    _local_or_raise(dest, lambda: commit(partial, dest))
    remove_quietly(_state_path(partial))
    return dest


def _local_message(path: Path, error: OSError, remote: RemoteFile) -> str:
    why = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        hint = (f"the disk is full: free space on the disk that holds {path.parent} (this file "
                f"needs about {remote.size_hint or 'its size'}), then run the command again "
                "(it resumes)")
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = (f"this user may not write there: fix the permissions of {path.parent}, or point "
                "--models at a folder you can write")
    else:
        hint = "check that folder, then run the command again"
    return f"could not write {path} on this machine: {why}; {hint}"


def _local_or_raise(path: Path, action):
    try:
        return action()
    except OSError as e:
        raise WeightsError(_local_message(path, e, RemoteFile(path.name, ""))) from None


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
                       progress: bool = True, replace_smoke: bool = False) -> ModelFiles:
    """The located files of ``variant``, downloading what is missing unless offline or
    ``download`` is False (then a WeightsError lists exactly which files are missing, where to
    put them and where to get them). When downloading is allowed, an official file that fails
    the structural checks counts as missing (it is set aside and fetched again), and with
    ``replace_smoke`` (``python -m nag_core download``) so does a smoke-test file."""
    root = resolve_models_dir(models_dir)
    offline = is_offline(offline)
    if root.exists() and not root.is_dir():
        raise WeightsError(f"the models folder {root} is a file, not a folder; point --models at "
                           "a folder")
    todo = missing_files(root, variant)
    if todo and (offline or not download):
        try:
            find_model_files(root, variant)
        except WeightsError as e:
            why = ("offline mode (--offline, NAGFOLEY_OFFLINE or HF_HUB_OFFLINE): nothing was "
                   "downloaded.\n" if offline else "")
            raise WeightsError(why + str(e)[:1].upper() + str(e)[1:]) from None
        todo = []  # only optional files (a 44k vocoder's config.json) are missing: go without
    replace: set = set()
    if download and not offline:
        smoke = smoke_files(root) if replace_smoke else set()
        for remote in required_files(variant) + [VOCAB_FILE]:
            path = root / remote.relpath
            if remote in todo or not path.is_file():
                continue
            if path in smoke:
                replace.add(remote)
                todo.append(remote)
            elif file_problem(path) is not None:
                todo.append(remote)  # download_file sets the damaged file aside
    for remote in todo:
        try:
            download_file(remote, root, progress=progress, replace=remote in replace)
        except WeightsError as e:
            try:
                find_model_files(root, variant)
            except WeightsError as listing:
                raise WeightsError(f"{e}\n{listing}") from None
            raise
    if replace and not smoke_files(root):
        remove_quietly(root / SMOKE_MARKER)  # every smoke file is gone: the folder is real now
    files = find_model_files(root, variant)
    if _needs_vocab(files):
        if offline or not download:
            if (root / VOCAB_FILE.relpath).is_dir():
                raise WeightsError("the CLIP BPE vocabulary cannot be read: "
                                   + missing_line(root / VOCAB_FILE.relpath, VOCAB_FILE))
            raise WeightsError(f"the CLIP BPE vocabulary is missing: put {VOCAB_FILE.relpath} "
                               f"(from {VOCAB_FILE.url}) into {root}")
        files.bpe_vocab = download_file(VOCAB_FILE, root, progress=progress)
    return files
