"""nag_core.atomic: a target is never half-written; a failure keeps the old file and leaves no
temporary file; every writer of the package goes through it."""

import errno
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from nag_core import atomic
from nag_core.atomic import atomic_path, write_bytes, write_text, write_with


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if atomic.TEMP_MARK in p.name)


def test_the_target_holds_the_old_content_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old")
    seen = []

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write("new, first half ")
            f.flush()
            seen.append(target.read_text())  # mid-write: the real name still holds the old file
            f.write("second half")
    write_with(target, write)
    assert seen == ["old"]
    assert target.read_text() == "new, first half second half"
    assert _leftovers(tmp_path) == []


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old weights")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half of the n")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as e:
        write_with(target, write)
    assert e.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old weights"
    assert _leftovers(tmp_path) == []


def test_a_failure_at_the_flush_or_an_interrupt_also_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "index.json"
    target.write_text("old")

    def no_space(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic, "_fsync_file", no_space)  # the data only fails to reach the disk
    with pytest.raises(OSError):
        write_text(target, "new")
    monkeypatch.undo()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_new_files_get_the_usual_permissions_and_keep_their_extension(tmp_path):
    names = []

    def write(tmp: Path) -> None:
        names.append(tmp.name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors creates its files
        os.write(fd, b"x")
        os.close(fd)
    target = write_with(tmp_path / "clip.safetensors", write)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert names[0].startswith(".") and names[0].endswith(".safetensors")
    assert write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"


def test_umask_is_read_without_changing_it():
    before = os.umask(0o027)
    try:
        assert atomic._umask() == 0o027
        assert atomic._umask() == 0o027  # reading it left it as it was
    finally:
        os.umask(before)


def test_no_module_renames_a_file_by_itself():
    """One helper: any other os.replace / rename in the package is a second copy of it."""
    root = Path(atomic.__file__).parent
    offenders = []
    checked = 0
    for path in root.rglob("*.py"):
        if path.name in ("atomic.py", "run_folder.py"):  # run_folder renames whole folders
            continue
        checked += 1
        text = path.read_text(encoding="utf-8")
        if re.search(r"os\.replace\(|os\.rename\(|\.rename\(|\.replace\(\s*\w+\s*\)\s*$", text, re.M):
            offenders.append(str(path.relative_to(root)))
    assert checked > 10
    assert offenders == []


def test_checkpoint_writers_keep_the_old_file_on_failure(tmp_path):
    from nag_core.checkpoint import write_torch
    path = tmp_path / "w.pth"
    path.write_bytes(b"old")
    with pytest.raises(Exception):
        write_torch({"f": lambda: 0}, path)  # a lambda cannot pickle: fails half way
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []
    write_torch({"a": torch.ones(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
