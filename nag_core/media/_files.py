"""Safe output paths: never overwrite an input, write under a temporary name then rename."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ..errors import ConfigError


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


def temp_beside(out_path: Path) -> Path:
    """A temporary name in the destination folder (same file system, so the final rename is
    atomic), keeping the extension so the container format is recognised."""
    token = secrets.token_hex(4)
    return out_path.with_name(f".{out_path.stem}.partial-{os.getpid()}-{token}{out_path.suffix}")


def prepare_output(out_path) -> Path:
    p = Path(os.fspath(out_path)).expanduser()
    if p.is_dir():
        raise ConfigError(f"output path {p} is a folder; give a file name such as {p / 'out.mp4'}")
    if not p.parent.exists():
        raise ConfigError(f"output folder {p.parent} does not exist; create it first")
    return p


def finish_atomic(tmp: Path, out: Path) -> None:
    os.replace(tmp, out)


def discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except OSError:
        pass
