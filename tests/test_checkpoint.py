"""Checkpoint reading/writing: atomic writes, usual permissions, clear errors on damaged files."""

import os
import stat

import pytest
import torch

from nag_core.checkpoint import read_state_dict, write_safetensors, write_torch
from nag_core.errors import WeightsError


def test_safetensors_are_written_with_the_usual_permissions(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors({"a": torch.ones(2)}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left
    assert torch.equal(read_state_dict(path)["a"], torch.ones(2))


def test_truncated_and_empty_files_say_download_again(tmp_path):
    good = tmp_path / "net.pth"
    write_torch({"a": torch.randn(1000)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        read_state_dict(cut)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        read_state_dict(empty)
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")


def test_an_unreadable_file_or_a_folder_is_named_for_what_it_is(tmp_path, monkeypatch):
    import pathlib
    locked = tmp_path / "locked.pth"
    write_torch({"a": torch.ones(2)}, locked)
    real_stat = pathlib.Path.stat

    def stat_refused(self, *a, **k):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *a, **k)
    monkeypatch.setattr(pathlib.Path, "stat", stat_refused)  # tests may run as root
    with pytest.raises(WeightsError, match="permission denied") as e:
        read_state_dict(locked)
    assert "not found" not in str(e.value)
    monkeypatch.undo()
    (tmp_path / "dir.pth").mkdir()
    with pytest.raises(WeightsError, match="dir.pth is a directory, expected a file; remove or "
                                           "rename it"):
        read_state_dict(tmp_path / "dir.pth")
