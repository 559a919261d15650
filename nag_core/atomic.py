"""The one way this package writes a file: never half-written under its real name.

Every file goes to a temporary name in the destination folder (same file system, so the final
rename is atomic), is flushed to disk (fsync), gets the usual permissions (umask) and is then
renamed over the target with ``os.replace``. Until that rename the old file, if any, is
untouched; on any failure (a full disk, a bad tensor, Ctrl-C) the temporary file is removed and
the old file stays as it was.

Temporary names are hidden and keep the extension (``.name.partial-<pid>-<token>.ext``), so a
container writer that picks its format from the extension still recognises it, and two
processes writing the same target never share one.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

TEMP_MARK = ".partial-"


def temp_beside(target) -> Path:
    """A fresh temporary name in ``target``'s folder, keeping its extension."""
    t = Path(os.fspath(target))
    return t.with_name(f".{t.stem}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{t.suffix}")


def remove_quietly(path) -> None:
    """Delete ``path`` if it exists; a failure to delete a temporary file is not worth raising
    over the error that made it useless."""
    try:
        os.unlink(path)
    except OSError:
        pass


def commit(tmp, target) -> Path:
    """Make the finished ``tmp`` the file ``target``: fsync, usual permissions, rename, then
    fsync the folder so the rename itself survives a power cut (where the system allows)."""
    tmp, target = Path(os.fspath(tmp)), Path(os.fspath(target))
    _fsync_file(tmp)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    return target


@contextmanager
def atomic_path(target) -> Iterator[Path]:
    """Yields a temporary path to write ``target``'s content to (any way: a library writing by
    name, ``open``, ...). On success it becomes ``target``; on any failure it is removed."""
    target = Path(os.fspath(target))
    tmp = temp_beside(target)
    try:
        yield tmp
        commit(tmp, target)
    except BaseException:
        remove_quietly(tmp)
        raise


def write_with(target, write: Callable[[Path], object]) -> Path:
    """``write(tmp_path)`` writes the content; the result becomes ``target`` atomically."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(os.fspath(target))


def write_bytes(target, data: bytes) -> Path:
    def put(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            f.write(data)
    return write_with(target, put)


def write_text(target, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes(target, text.encode(encoding))


def set_aside(path, label: str = "damaged") -> Path:
    """Rename ``path`` to a free ``<name>.<label>[-n]`` beside it (a file that is kept, not
    deleted, but must stop answering to its name); returns the new path."""
    p = Path(os.fspath(path))
    n = 1
    while True:
        aside = p.with_name(f"{p.name}.{label}" + ("" if n == 1 else f"-{n}"))
        if not aside.exists():
            os.rename(p, aside)
            return aside
        n += 1


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a folder cannot be opened on Windows: the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows: setting it to probe it
    would, for an instant, give any file another thread creates open permissions. (Some writers,
    safetensors among them, create files readable by their owner only; a weight file trained by
    one user and served by ComfyUI as another must be readable like any other file.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic probe
    os.umask(mask)
    return mask
