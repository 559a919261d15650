"""nag_core.filecheck: the structural checks a download passes before it gets its name."""

import json

import pytest
import torch

from nag_core.checkpoint import write_safetensors, write_torch
from nag_core.filecheck import file_problem


@pytest.fixture
def good(tmp_path):
    st = tmp_path / "w.safetensors"
    write_safetensors({"a": torch.randn(300), "b": torch.ones(2, 3)}, st)
    pth = tmp_path / "w.pth"
    write_torch({"a": torch.randn(300)}, pth)
    return st, pth


def test_good_files_pass(good, tmp_path):
    st, pth = good
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"num_mels": 128}))
    assert file_problem(st) is None and file_problem(pth) is None and file_problem(cfg) is None


def test_safetensors_cut_or_padded_are_caught(good, tmp_path):
    data = good[0].read_bytes()
    cut, padded, garbage = (tmp_path / n for n in ("cut.safetensors", "pad.safetensors",
                                                    "junk.safetensors"))
    cut.write_bytes(data[:-10])
    padded.write_bytes(data + b"\0" * 10)
    garbage.write_bytes(b"\xff" * 64)
    assert "cut off" in file_problem(cut)
    assert "foreign bytes" in file_problem(padded)
    assert "header claims" in file_problem(garbage)


def test_a_torch_checkpoint_must_be_a_whole_zip(good, tmp_path):
    data = good[1].read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) - 40])
    assert "cut-off or damaged zip" in file_problem(cut)
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert file_problem(legacy) is None  # the pre-1.6 format is accepted as it is
    other = tmp_path / "notes.bin"
    other.write_bytes(b"hello world")
    assert "neither" in file_problem(other)


def test_a_temporary_name_is_checked_as_the_name_it_will_get(good, tmp_path):
    partial = tmp_path / "w.pth.partial"
    partial.write_bytes(b"plain text")
    assert file_problem(partial) is None  # no extension we know
    assert "neither" in file_problem(partial, name="w.pth")
