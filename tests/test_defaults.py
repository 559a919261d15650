"""Each shared decision has one definition (nag_core.defaults) that the rest reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nag_core import defaults

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("METHODS", "MIN_DURATION", "DECODE_TIMEOUT_S", "VIDEO_SUFFIXES", "VIDEO_EXTENSIONS",
          "AUDIO_EXTENSIONS", "CLIP_FPS", "SYNC_FPS", "ALPHA_DEFAULT", "BETA_DEFAULT",
          "MAX_SEED", "SEED_MAX")


def test_no_module_of_nag_core_defines_a_shared_constant_again():
    # an assignment of a literal (a number, text, tuple, set or list); aliases of the one
    # definition (NAME = defaults.NAME) are reading it, not deciding again
    pattern = re.compile(rf"^\s*({'|'.join(SHARED)})\s*(?::[^=\n]*)?=\s*[-(\[{{\d\"'.]",
                         re.MULTILINE)
    files = sorted((ROOT / "nag_core").rglob("*.py"))
    assert len(files) > 20  # the scan saw the package
    again = {str(p.relative_to(ROOT)): pattern.findall(p.read_text())
             for p in files if p.name != "defaults.py"}
    assert {k: v for k, v in again.items() if v} == {}


def test_the_readers_see_the_one_definition():
    from nag_core import guidance, media, pipeline, run_folder
    from nag_core.media import audio, video
    from nag_core.mmaudio import variants
    assert pipeline.METHODS is defaults.METHODS
    assert media.MIN_DURATION == variants.MIN_DURATION == defaults.MIN_DURATION
    assert audio.DECODE_TIMEOUT_S == video.DECODE_TIMEOUT_S == defaults.DECODE_TIMEOUT_S
    assert run_folder.VIDEO_SUFFIXES is defaults.VIDEO_SUFFIXES
    from nag_core.train import data
    assert data.VIDEO_EXTENSIONS is defaults.VIDEO_INPUT_SUFFIXES
    assert (guidance.ALPHA_DEFAULT, guidance.BETA_DEFAULT) == (defaults.ALPHA_DEFAULT,
                                                               defaults.BETA_DEFAULT)


@pytest.mark.parametrize("duration", [0.64, 1.0, 1.5, 2.0, 4.0, 8.0, 10.01])
def test_sequence_lengths_follow_the_stream_facts(duration):
    from nag_core.mmaudio.variants import sequence_lengths
    n = sequence_lengths("16k", duration)
    assert n.clip == int(duration * defaults.CLIP_FPS)
    # every Synchformer token comes from a whole segment inside the clip's 25 fps frames
    assert defaults.sync_frames_needed(n.sync_segments) <= duration * defaults.SYNC_FPS
    assert defaults.sync_frames_needed(n.sync_segments + 1) > duration * defaults.SYNC_FPS
    assert n.sync == n.sync_segments * defaults.SYNC_TOKENS_PER_SEGMENT


def test_seeds_of_steps_and_takes():
    assert [defaults.step_seed(7, k) for k in (1, 2, 3)] == [7, 8, 9]
    assert defaults.take_seeds(7, 3) == [7, 8, 9]
    assert defaults.mode_of_variant("small_16k") == "16k"
    assert defaults.mode_of_variant("large_44k_v2") == "44k"
