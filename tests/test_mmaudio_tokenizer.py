"""CLIP BPE tokenizer: golden token ids (real vocabulary, when installed), the pre-tokenizer and
text cleaning against hand values, vocabulary discovery and its error, and the tiny vocabulary."""

import random
import sys

import pytest
import torch

from golden import Golden, golden_params
from nag_core.errors import WeightsError
from nag_core.mmaudio import tokenizer as tk
from nag_core.mmaudio.clip import tiny_clip


def _real_vocab():
    try:
        return tk.find_bpe_vocab()
    except WeightsError:
        pytest.skip("the CLIP BPE vocabulary is not installed here "
                    "(`pip install --no-deps open_clip_torch` provides it)")


@pytest.mark.parametrize("path", golden_params("clip_"))
def test_tokens_match_golden(path):
    g = Golden(path)
    tokenizer = tk.load_tokenizer(_real_vocab())
    assert torch.equal(tokenizer(g.meta["strings"]), g["out.tokens"])


def test_real_vocab_special_ids_and_truncation():
    tokenizer = tk.load_tokenizer(_real_vocab())
    assert (tokenizer.vocab_size, tokenizer.sot_id, tokenizer.eot_id) == (49408, 49406, 49407)
    assert tokenizer("").tolist() == [[49406, 49407] + [0] * 75]
    assert tokenizer("a")[0, :3].tolist() == [49406, 320, 49407]  # "a</w>" = 256 + 64
    long = tokenizer(["word " * 200])
    assert long.shape == (1, 77) and long[0, -1] == 49407 and (long[0, 1:-1] != 0).all()


def test_split_words_hand_values():
    assert tk.split_words("don't stop") == ["don", "'t", "stop"]
    assert tk.split_words("abc123def") == ["abc", "1", "2", "3", "def"]
    assert tk.split_words("hello!!! world") == ["hello", "!!!", "world"]
    assert tk.split_words("''s x!'ll") == ["''", "s", "x", "!'", "ll"]  # runs win inside runs
    assert tk.split_words("<start_of_text>x") == ["<start_of_text>", "x"]
    assert tk.split_words("日本語 ½ é") == ["日本語", "½", "é"]
    assert tk.split_words("'ſun") == ["'ſ", "un"]  # the long s case-folds to "s"


def test_split_words_matches_the_regex_package_on_random_text():
    regex = pytest.importorskip("regex")
    pattern = regex.compile(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|"
                            r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", regex.IGNORECASE)
    pool = list("abcxyz019 '\"!?.,_<>&\t\néßñ日本한привет΄Σ“’…—\u00a0\u2003\u3000ﬁＡ１½²٣ſ\u0301"
                "\u200b\x1c😀") + ["'s", "'ll", "'re", "<start_of_text>", "<end_of_text>"]
    rng = random.Random(0)
    for _ in range(1500):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 25)))
        assert tk.split_words(text) == pattern.findall(text), repr(text)


def test_clean_text_and_fallback_fixes():
    assert tk.clean_text("  A\tB \n\n C\u3000 ") == "a b c"
    assert tk.clean_text("Caf\u00e9 &amp; \u201cquotes\u201d") == 'caf\u00e9 & "quotes"'
    fix = tk.fix_text_fallback
    assert fix("\ufb01ne \uff21\uff11\uff01 \u2018x\u2019") == "fine A1! 'x'"
    assert fix("cafe\u0301") == "caf\u00e9"  # NFC
    assert fix("x &amp;amp;amp;") == "x &"  # ftfy unescapes until nothing changes
    assert fix("<b> &amp;amp;") == "<b> &amp;amp;"  # but leaves markup-looking text alone
    assert fix("a\x00b\x1b[31mc\ufeff") == "abc"
    assert fix("\x93hi\x94") == '"hi"'  # C1 controls read as Windows-1252 curly quotes
    assert fix("x\ud83d\ude00") == "x\U0001f600"  # surrogate pairs joined


def test_byte_symbols_are_clip_order():
    order, by_byte = tk.byte_symbols()
    assert len(set(order)) == 256 and order[0] == "!" and order[64] == "a"
    assert by_byte[ord(" ")] == "\u0120" and by_byte[0] == "\u0100"


def test_vocab_location_order(tmp_path, monkeypatch):
    installed = tmp_path / "site" / tk.VOCAB_NAME
    beside_dir = tmp_path / "models" / "mmaudio"
    explicit = tmp_path / "mine.txt.gz"
    for p in (installed, beside_dir / tk.VOCAB_NAME, explicit):
        tk.write_tiny_bpe_vocab(p, num_merges=5)
    weights = beside_dir / "open_clip_pytorch_model.bin"
    monkeypatch.setattr(tk, "_installed_open_clip_vocab", lambda: installed)
    assert tk.find_bpe_vocab(explicit, weights) == explicit
    assert tk.find_bpe_vocab(None, weights) == beside_dir / tk.VOCAB_NAME
    assert tk.find_bpe_vocab(None, beside_dir) == beside_dir / tk.VOCAB_NAME
    assert tk.find_bpe_vocab(None, tmp_path) == installed
    assert tk.find_bpe_vocab() == installed


def test_vocab_not_found_error_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(tk, "_installed_open_clip_vocab", lambda: None)
    with pytest.raises(WeightsError) as err:
        tk.load_tokenizer(weights_path=tmp_path / "open_clip_pytorch_model.bin")
    msg = str(err.value)
    assert str(tmp_path / tk.VOCAB_NAME) in msg and "open_clip_torch" in msg
    assert "pip install --no-deps open_clip_torch" in msg and tk.VOCAB_URL in msg
    with pytest.raises(WeightsError, match="not found at"):
        tk.find_bpe_vocab(tmp_path / "missing.txt.gz")


def test_installed_vocab_is_found_without_importing_open_clip():
    found = tk._installed_open_clip_vocab()
    if found is None:
        pytest.skip("open_clip_torch is not installed")
    assert found.name == tk.VOCAB_NAME and found.is_file()
    assert "open_clip" not in sys.modules


def test_rejects_files_that_are_not_merges(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("#version\nonly_one_symbol_here\n")
    with pytest.raises(WeightsError, match="not a CLIP BPE merges file"):
        tk.ClipTokenizer(bad)


def test_tiny_vocab_drives_a_tiny_clip(tmp_path):
    path = tk.write_tiny_bpe_vocab(tmp_path / tk.VOCAB_NAME)
    tokenizer = tk.ClipTokenizer(path)
    n_merges = len(tk.learn_merges(tk.TINY_WORDS.split(), 200))
    assert tokenizer.vocab_size == 512 + n_merges + 2 <= 714
    assert (tokenizer.sot_id, tokenizer.eot_id) == (tokenizer.vocab_size - 2, tokenizer.vocab_size - 1)
    ids = tokenizer(["the dog barks", "", "unseen words: zqx \u00e9\u00e9 \U0001f600"])
    assert ids.shape == (3, 77) and int(ids.max()) < tokenizer.vocab_size
    assert ids[0, :3].tolist()[0] == tokenizer.sot_id and ids[1, 1] == tokenizer.eot_id
    assert tokenizer.encode("the") == [tokenizer.encoder["the</w>"]]  # a learned whole word
    feats = tiny_clip(seed=0, vocab_size=tokenizer.vocab_size, width=64, layers=1).encode_text(ids)
    assert feats.shape == (3, 77, 64) and torch.isfinite(feats).all()


def test_a_gzip_bomb_is_refused_without_unpacking_it(tmp_path):
    import gzip
    import tracemalloc

    from nag_core.filecheck import MAX_GZIP_BYTES
    bomb = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    text = b"#version: 0.2\n" + b"a b\n" * ((2 * MAX_GZIP_BYTES) // 4)  # twice the bound
    bomb.write_bytes(gzip.compress(text, compresslevel=9))
    assert bomb.stat().st_size < len(text) // 100
    del text
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match="unpacks to more than") as e:
            tk.ClipTokenizer(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(bomb) in str(e.value)
    assert peak < 2 * MAX_GZIP_BYTES  # the bound, not the unpacked size, limits the memory


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_gzip_vocabulary_is_a_clear_error(tmp_path, damage):
    good = tk.write_tiny_bpe_vocab(tmp_path / "good.txt.gz").read_bytes()
    bad = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    bad.write_bytes(good[: len(good) // 2] if damage == "truncated"
                    else good[:10] + bytes(range(256)) * 4)
    with pytest.raises(WeightsError) as e:
        tk.ClipTokenizer(bad)
    msg = str(e.value)
    assert str(bad) in msg and "damaged" in msg and "download it again" in msg
    assert ("cut off" if damage == "truncated" else "not valid gzip") in msg


def test_a_vocabulary_replaced_under_its_name_is_read_again(tmp_path):
    """The tokenizer cache keys on the file as it is now: after a wrong vocabulary is replaced
    (same name), the next load reads the new one instead of keeping the old tokenizer."""
    import os
    path = tk.write_tiny_bpe_vocab(tmp_path / tk.VOCAB_NAME, num_merges=60)
    first = tk.load_tokenizer(path)
    assert tk.load_tokenizer(path) is first  # unchanged: cached
    tk.write_tiny_bpe_vocab(path, num_merges=120)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later modification time
    again = tk.load_tokenizer(path)
    assert again is not first
    assert (first.vocab_size, again.vocab_size) == (tk.ClipTokenizer(path, max_merges=60).vocab_size,
                                                    tk.ClipTokenizer(path).vocab_size)
