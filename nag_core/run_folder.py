"""Where a run writes, and how it becomes visible only when it is complete.

The rules (README, "Where a run writes"):

* A run is built in a fresh hidden folder beside its target (``.<name>.partial-XXXX``) and renamed
  to the target when every file is written. An interrupted or failed run deletes that folder
  (a killed one leaves it behind, hidden, and the next run names it); the target is untouched.
* ``generate --out DIR`` writes the run to DIR when DIR is absent or empty. When DIR already holds
  anything (an earlier run, your own files) nothing in it is touched: the run goes to the first
  free ``DIR-2``, ``DIR-3``, ... beside it, and the command says so.
* ``redo DIR`` (in place) builds the new state of DIR beside it, hard-links in every file it does
  not regenerate (earlier tracks, your own files), and swaps the two folders in one atomic
  rename; then it deletes from the old folder only what its record named and what was linked.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional

from .defaults import VIDEO_SUFFIXES
from .errors import ConfigError

_TAKEN = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR)


# --------------------------------------------------------------------------- names
def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return s or "track"


def track_name(k: int, prompt: str) -> str:
    return f"track_{k:02d}_{slug(prompt)}.wav"


def take_names(k: int, prompt: str, takes: int) -> list[str]:
    """The files of step k's takes: one track, or ``track_kk_<prompt>.take<i>.wav`` each."""
    if takes == 1:
        return [track_name(k, prompt)]
    return [f"track_{k:02d}_{slug(prompt)}.take{i}.wav" for i in range(takes)]


def foley_video_name(video: Path) -> str:
    """``<stem>.foley<suffix>``: the input's container when it is one the muxer writes."""
    suffix = video.suffix.lower() if video.suffix.lower() in VIDEO_SUFFIXES else ".mp4"
    return f"{video.stem}.foley{suffix}"


# --------------------------------------------------------------------------- targets
def _is_free(path: Path) -> bool:
    """Nothing there, or an empty folder (a rename may take its place: nothing is lost)."""
    if not os.path.lexists(path):
        return True
    try:
        return path.is_dir() and not path.is_symlink() and not any(os.scandir(path))
    except OSError:
        return False


def free_target(out) -> Path:
    """The folder a new run into ``out`` lands in: ``out`` itself when it is absent or empty,
    else the first free ``out-2``, ``out-3``, ... beside it."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"output folder {out} is a file; give the path of a folder (it is "
                          "created if missing)")
    if _is_free(out):
        return out
    n = 2
    while not _is_free(out.with_name(f"{out.name}-{n}")):
        n += 1
    return out.with_name(f"{out.name}-{n}")


def leftovers(target: Path) -> list[Path]:
    """Hidden folders that interrupted (killed) runs into ``target`` left beside it."""
    try:
        return sorted(p for p in target.parent.glob(f".{glob_escape(target.name)}.*-*")
                      if p.is_dir() and p.name.rsplit(".", 1)[-1].split("-")[0]
                      in ("partial", "redo", "old"))
    except OSError:
        return []


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _os_problem(e: OSError, path: Path) -> ConfigError:
    why = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
           errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full",
           errno.ENOTDIR: "a part of the path is a file, not a folder",
           errno.EEXIST: "a part of the path is a file, not a folder"}.get(e.errno, e.strerror)
    return ConfigError(f"cannot create a run folder at {path}: {why}. Choose an output folder "
                       "you can write to (--out DIR)")


# --------------------------------------------------------------------------- staging
class RunStage:
    """A run folder being built, hidden beside ``target``; :meth:`publish` renames it to the
    target (or the next free numbered name), :meth:`swap_into` replaces an existing run folder,
    :meth:`discard` (also on any exception inside ``with``) deletes it with all it holds, which
    is only what this run wrote or linked there."""

    def __init__(self, target: Path, kind: str = "partial", requested: Optional[Path] = None):
        self.target = Path(os.path.abspath(target))
        self.requested = Path(os.path.abspath(requested)) if requested else self.target
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.{kind}-",
                                              dir=self.target.parent))
            os.chmod(self.path, 0o777 & ~_umask())  # mkdtemp's 0700 would stay after the rename
        except OSError as e:
            raise _os_problem(e, self.target) from None
        self.done = False

    def __enter__(self) -> "RunStage":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.discard()

    def new_file(self, name: str) -> Path:
        """The path for a file this run writes; refuses a name already there (a file that was
        linked in is never overwritten)."""
        path = self.path / name
        if os.path.lexists(path):
            raise ConfigError(f"{self.target} already holds a file named {name}, which this run "
                              "would overwrite; rename or move that file, or write the run to "
                              "another folder")
        return path

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.done = True

    def publish(self) -> Path:
        """Rename the finished folder to its target: an absent or empty target is taken, one
        that filled up meanwhile is left alone for the next free numbered name."""
        target = self.target
        while True:
            try:
                os.rename(self.path, target)
                self.done = True
                return target
            except OSError as e:
                if e.errno not in _TAKEN:
                    raise
                failed, target = target, free_target(self.requested)
                if target == failed:
                    raise

    def swap_into(self, old: Path, owned: Iterable[str], linked: Iterable[str],
                  log: Callable[[str], None]) -> Path:
        """Replace the run folder ``old`` by this one in one atomic exchange, then delete from
        the old state only the files its record ``owned`` and those ``linked`` here."""
        old = Path(os.path.abspath(old))
        shutil.copymode(old, self.path)
        aside = self.path
        if not _exchange(self.path, old):  # no atomic exchange here: two renames
            aside = Path(tempfile.mkdtemp(prefix=f".{old.name}.old-", dir=old.parent))
            os.rename(old, aside / "run")
            os.rename(self.path, old)
            aside = aside / "run"
        self.done = True
        removable = set(owned) | set(linked)
        for entry in os.scandir(aside):
            if entry.name in removable and not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.path)
        try:
            aside.rmdir()
            if aside.name == "run":
                aside.parent.rmdir()
        except OSError:
            log(f"kept {aside}: it holds files this redo neither wrote nor could link into "
                f"{old} (copies of them are there); delete it when you no longer need it")
        return old


def link_in(stage: RunStage, src: Path, skip: set[str]) -> list[str]:
    """Hard-link (copy where links are not possible) into the stage every entry of the run folder
    ``src`` not in ``skip``. A sub-folder is refused: an in-place redo never moves folders."""
    entries = sorted(os.scandir(src), key=lambda e: e.name)
    folders = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    if folders:
        raise ConfigError(f"{src} holds folders ({', '.join(folders)}) that a redo in place "
                          "would have to move; move them out, or redo into another folder with "
                          "--to DIR")
    linked = []
    for e in entries:
        if e.name in skip:
            continue
        dst = stage.path / e.name
        if e.is_symlink():
            os.symlink(os.readlink(e.path), dst)
            linked.append(e.name)
            continue
        try:
            os.link(e.path, dst, follow_symlinks=False)
            linked.append(e.name)
        except OSError:
            shutil.copy2(e.path, dst)
    return linked


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def describe_target(requested, target: Path) -> Optional[str]:
    """The line that says a run goes somewhere else than asked, or None."""
    requested = Path(os.path.abspath(Path(requested).expanduser()))
    if requested == target:
        return None
    return (f"{requested} already holds files (nothing in it is touched); this run goes to "
            f"{target}")
