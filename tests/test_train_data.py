"""Training data: discovery, captions, probing, the segment rule, clear errors."""

from __future__ import annotations

import json

import pytest

from nag_core.errors import ConfigError, MediaError
from nag_core.train.data import (discover, probe_duration, segment_pairs, segment_starts)

from train_helpers import make_audio, make_video, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def test_segment_rule_hand_values():
    assert segment_starts(8.0) == [0.0, 4.0]
    assert segment_starts(9.5) == [0.0, 4.0]
    assert segment_starts(12.0) == [0.0, 4.0, 8.0]
    assert segment_starts(7.99) == [0.0, 4.0]  # container durations are rounded
    assert segment_starts(7.9) == [0.0]
    assert segment_starts(3.0, 1.5) == [0.0, 1.5]
    assert segment_pairs(1) == []
    assert segment_pairs(2) == [(0, 1), (1, 0)]
    assert segment_pairs(3) == [(0, 1), (1, 0), (1, 2), (2, 1)]


def test_discovery_kinds_and_captions(tmp_path):
    make_video(tmp_path / "v1.mp4", 0.5)
    make_audio(tmp_path / "a1.wav", 0.5)
    (tmp_path / "a1.txt").write_text("a door slams\n")
    sub = tmp_path / "more"
    sub.mkdir()
    make_audio(sub / "a2.flac", 0.5)
    make_audio(sub / "a3.mp3", 0.5)
    (tmp_path / "captions.csv").write_text("file,caption\nmore/a2.flac,rain on a roof\n")
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "a3.mp3", "caption": "dog"}) + "\n")
    (tmp_path / "notes.pdf").write_bytes(b"x")
    (tmp_path / ".hidden.wav").write_bytes(b"x")
    found = discover(tmp_path)
    got = {s.path.name: (s.kind, s.caption) for s in found.sources}
    assert got == {"v1.mp4": ("video", None), "a1.wav": ("audio", "a door slams"),
                   "a2.flac": ("audio", "rain on a roof"), "a3.mp3": ("audio", "dog")}
    assert [p.name for p in found.ignored] == ["notes.pdf"]


def test_empty_and_missing_data_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="no clips found"):
        discover(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        discover(tmp_path / "nope")


def test_probe_durations_and_unreadable(tmp_path):
    v = make_video(tmp_path / "v.mp4", 2.0)
    a = make_audio(tmp_path / "a.wav", 1.25)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    by_name = {s.path.name: s for s in discover(tmp_path).sources}
    assert abs(probe_duration(by_name["v.mp4"]) - 2.0) < 0.05
    assert abs(probe_duration(by_name["a.wav"]) - 1.25) < 1e-3
    with pytest.raises(MediaError, match="bad.mp4"):
        probe_duration(by_name["bad.mp4"])


def test_discovery_from_a_csv_or_tsv_list(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_audio(clips / "a.wav", 0.5)
    make_video(clips / "b.mp4", 0.5)
    (tmp_path / "list.csv").write_text(
        "file,caption\nclips/a.wav,a hum\nclips/gone.wav,lost\nclips/b.mp4,\nnotes.doc,x\n")
    found = discover(tmp_path / "list.csv")
    assert [(s.path.name, s.kind, s.caption) for s in found.sources] == [
        ("a.wav", "audio", "a hum"), ("b.mp4", "video", None)]
    assert [p.split("/")[-1] for p in found.missing] == ["gone.wav"]
    assert [p.name for p in found.ignored] == ["notes.doc"]
    (tmp_path / "list.tsv").write_text(f"caption\tfile\nthe ball\t{clips / 'b.mp4'}\n")
    found = discover(tmp_path / "list.tsv")  # absolute paths, any column order
    assert [(s.path, s.caption) for s in found.sources] == [(clips / "b.mp4", "the ball")]
    (tmp_path / "bad.csv").write_text("path,caption\nclips/a.wav,x\n")
    with pytest.raises(ConfigError, match="'file' column"):
        discover(tmp_path / "bad.csv")
    (tmp_path / "none.csv").write_text("file\nclips/gone.wav\n")
    with pytest.raises(ConfigError, match="no existing"):
        discover(tmp_path / "none.csv")
