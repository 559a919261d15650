"""Safe output paths: never overwrite an input, write under a temporary name then rename
(:mod:`nag_core.atomic`)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import av

from ..atomic import atomic_path
from ..errors import ConfigError, MediaError


def same_file(a, b) -> bool:
    a, b = Path(os.fspath(a)).expanduser(), Path(os.fspath(b)).expanduser()
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_input(out_path, inputs) -> None:
    for src in inputs:
        if src is not None and same_file(out_path, src):
            raise ConfigError(f"refusing to write {out_path}: it is the input file {src}, which would "
                              f"be destroyed. Choose another output path.")


def prepare_output(out_path) -> Path:
    p = Path(os.fspath(out_path)).expanduser()
    if p.is_dir():
        raise ConfigError(f"output path {p} is a folder; give a file name such as {p / 'out.mp4'}")
    if not p.parent.exists():
        raise ConfigError(f"output folder {p.parent} does not exist; create it first")
    return p


@contextmanager
def written_atomically(out: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``out`` to write to; on success it is renamed to ``out``,
    on any failure it is deleted (an FFmpeg failure becomes a MediaError naming ``out``)."""
    try:
        with atomic_path(out) as tmp:
            yield tmp
    except av.FFmpegError as e:
        raise MediaError(f"could not write {out}: FFmpeg: {e.strerror or e}") from None
