"""The OpenAI CLIP byte-level BPE tokenizer (open_clip's SimpleTokenizer, as MMAudio uses it
through ``open_clip.get_tokenizer('ViT-H-14-378-quickgelu')``), re-implemented without
open_clip, ftfy or regex.

Pipeline: clean the text (ftfy-style fix, HTML unescape twice, strip, whitespace collapse,
lowercase), split it with the CLIP pattern, map UTF-8 bytes to printable characters, apply BPE
merges, then ``[SOT] + ids + [EOT]`` zero-padded to 77 (too long: cut to 77, last id EOT).

Text fixing: if the ``ftfy`` package is importable, ``ftfy.fix_text`` is used exactly as open_clip
does. Otherwise a built-in subset of ftfy's default fixes runs (HTML entities, C1 controls,
Latin ligatures, full-width forms, curly quotes, line breaks, surrogates, terminal escapes,
control characters, NFC). What the fallback skips is ftfy's mojibake repair
(re-decoding text that was decoded with the wrong codec); only such damaged text can tokenize
differently.

The pattern ``'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`` needs Unicode
classes that Python's ``re`` lacks; ``split_words`` scans with ``unicodedata`` categories instead.

The vocabulary (``bpe_simple_vocab_16e6.txt.gz``) is not bundled; ``find_bpe_vocab`` says where
it is looked for.
"""

from __future__ import annotations

import gzip
import html
import os
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import WeightsError
from ..filecheck import MAX_GZIP_BYTES, read_gzip

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_NAMES = (VOCAB_NAME, "bpe_simple_vocab_16e6.txt")
CLIP_MERGES = 49152 - 256 - 2  # CLIP uses only the first 48894 merges of the file
CONTEXT_LENGTH = 77
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")  # open_clip 3.x spelling
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_NO_RANK = float("inf")
VOCAB_URL = "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz"

# Unicode White_Space (what \s means in the `regex` package open_clip uses).
WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                        "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_WS_RUN = re.compile("[" + "".join(sorted(WHITE_SPACE)) + "]+")


# ---------------------------------------------------------------- text cleaning

def _build_fix_tables() -> tuple[dict, dict, dict]:
    controls = {i: None for i in [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F,
                                  *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]}
    ligatures = {ord(c): unicodedata.normalize("NFKC", c)
                 for c in "\u0132\u0133\u01c4\u01c5\u01c6\u01c7\u01c8\u01c9\u01ca\u01cb\u01cc"
                          "\u01f1\u01f2\u01f3\ufb00\ufb01\ufb02\ufb03\ufb04\ufb06"}
    ligatures[0x0149] = "\u02bcn"
    ligatures[0xFB05] = "\u017ft"
    width = {0x3000: " "}
    for i in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize("NFKC", chr(i))
        if alt != chr(i):
            width[i] = alt
    return controls, ligatures, width


_CONTROLS, _LIGATURES, _WIDTH = _build_fix_tables()
_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_C1 = re.compile("[\x80-\x9f]")
_TERMINAL_ESCAPE = re.compile("\x1b\\[((?:\\d|;)*)([a-zA-Z])")
_LINE_BREAKS = re.compile("\r\n|[\r\u2028\u2029\x85]")
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")


def _c1_to_cp1252(m: re.Match) -> str:
    # C1 controls are almost always Windows-1252 punctuation decoded as Latin-1; the five
    # bytes cp1252 leaves undefined stay as they are (ftfy's "sloppy" codec).
    try:
        return m.group(0).encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:
        return m.group(0)


def _fix_surrogates(text: str) -> str:
    # Join surrogate pairs into real characters and replace lone ones (which cannot be UTF-8).
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def fix_text_fallback(text: str) -> str:
    """ftfy's default fixes minus mojibake repair. Like ftfy, lines are fixed one at a time,
    each until nothing changes, and HTML entities are left alone from the first line that
    contains "<" onwards (it may be markup)."""
    out, unescape = [], True
    for line in _split_lines(text):
        unescape = unescape and "<" not in line
        out.append(_fix_segment(line, unescape))
    return "".join(out)


def _split_lines(text: str) -> list[str]:
    return [seg for seg in re.split("(?<=\n)", text) if seg]


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        before = text
        if unescape:
            text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
        text = _C1.sub(_c1_to_cp1252, text)
        text = text.translate(_LIGATURES).translate(_WIDTH)
        text = _DOUBLE_QUOTES.sub('"', _SINGLE_QUOTES.sub("'", text))
        text = _LINE_BREAKS.sub("\n", text)
        text = _fix_surrogates(text)
        text = _TERMINAL_ESCAPE.sub("", text).translate(_CONTROLS)
        text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


def _fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        return fix_text_fallback(text)
    return ftfy.fix_text(text)


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning: fix, unescape HTML twice, strip, collapse whitespace,
    strip, lowercase."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return _WS_RUN.sub(" ", text).strip().lower()


# ---------------------------------------------------------------- pre-tokenization

def _char_class(ch: str) -> str:
    """'L' letter, 'N' number, 'S' white space, 'P' anything else (the CLIP pattern's classes)."""
    if ch in WHITE_SPACE:
        return "S"
    major = unicodedata.category(ch)[0]
    return major if major in "LN" else "P"


def _same_ignoring_case(c: str, t: str) -> bool:
    # `regex` IGNORECASE uses simple case folding, under which the long s also equals "s".
    return c == t or c.lower() == t or (c == "\u017f" and t == "s")


def _fixed_token_at(text: str, i: int) -> str | None:
    for token in SPECIAL_TOKENS + CONTRACTIONS:  # the pattern tries these first, in this order
        piece = text[i:i + len(token)]
        if len(piece) == len(token) and all(map(_same_ignoring_case, piece, token)):
            return piece
    return None


def split_words(text: str) -> list[str]:
    """``regex.findall`` of the CLIP pattern: special tokens, contractions, letter runs, single
    digits, runs of other non-space characters."""
    words, i, n = [], 0, len(text)
    while i < n:
        kind = _char_class(text[i])
        if kind == "S":
            i += 1
            continue
        fixed = _fixed_token_at(text, i) if text[i] in "<'" else None
        if fixed is not None:
            j = i + len(fixed)
        elif kind == "N":
            j = i + 1
        else:
            j = i + 1
            while j < n and _char_class(text[j]) == kind:
                j += 1
        words.append(text[i:j])
        i = j
    return words


# ---------------------------------------------------------------- byte-level BPE

@lru_cache(maxsize=None)
def byte_symbols() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The 256 printable stand-ins for bytes: (symbols in CLIP's vocabulary order, symbol of each
    byte value). Bytes that are printable Latin-1 stand for themselves and come first; the others
    map to U+0100 onwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    by_byte = {b: chr(b) for b in printable}
    by_byte.update({b: chr(256 + n) for n, b in enumerate(others)})
    order = tuple(by_byte[b] for b in printable + others)
    return order, tuple(by_byte[b] for b in range(256))


def _read_merges(path: Path, max_merges: int) -> list[tuple[str, str]]:
    raw = _read_bounded(path)
    try:
        lines = raw.decode("utf-8").split("\n")[1:]  # line 0 is a version header
    except UnicodeDecodeError:
        raise WeightsError(f"{path} is not a UTF-8 BPE merges file") from None
    merges = []
    for line in lines:
        if len(merges) == max_merges:
            break
        if not line.strip():
            continue
        pair = tuple(line.split())
        if len(pair) != 2:
            raise WeightsError(f"{path} is not a CLIP BPE merges file (bad line {line[:40]!r}); "
                               f"expected {VOCAB_NAME}")
        merges.append(pair)
    if not merges:
        raise WeightsError(f"{path} holds no BPE merges; expected {VOCAB_NAME}")
    return merges


def _read_bounded(path: Path) -> bytes:
    """The merges text, packed or not, never more than MAX_GZIP_BYTES of it in memory (a
    gzip bomb or a huge file under the vocabulary's name is refused, not read)."""
    try:
        with open(path, "rb") as f:
            packed = f.read(2) == b"\x1f\x8b"
        size = path.stat().st_size
    except OSError as e:
        raise WeightsError(f"cannot read the CLIP BPE vocabulary {path}: {e.strerror or e}") \
            from None
    if packed:
        return read_gzip(path, MAX_GZIP_BYTES)
    if size > MAX_GZIP_BYTES:
        raise WeightsError(f"{path} is {size >> 20} MB, far more than a CLIP BPE vocabulary; "
                           f"expected {VOCAB_NAME}")
    return path.read_bytes()


class ClipTokenizer:
    """``tokenizer(texts) -> LongTensor (N, context_length)``. Any merges file works: the vocabulary
    is 256 byte symbols, the same with ``</w>``, one entry per merge, then SOT and EOT
    (49408 entries for the real file, so SOT = 49406 and EOT = 49407)."""

    def __init__(self, vocab_path: str | os.PathLike, context_length: int = CONTEXT_LENGTH,
                 max_merges: int = CLIP_MERGES):
        self.vocab_path = Path(vocab_path)
        merges = _read_merges(self.vocab_path, max_merges)
        base = list(byte_symbols()[0])
        vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges]
        vocab += list(SPECIAL_TOKENS)
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.vocab_size = len(vocab)
        self.sot_id, self.eot_id = (self.encoder[t] for t in SPECIAL_TOKENS)
        self.context_length = context_length
        self._cache: dict[str, list[str]] = {t: [t] for t in SPECIAL_TOKENS}

    def bpe(self, word: str) -> list[str]:
        """Merge the symbols of one word (its last symbol carries ``</w>``), lowest rank first."""
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda p: self.ranks.get(p, _NO_RANK))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):  # merge every left-to-right occurrence of the pair
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT."""
        table = byte_symbols()[1]
        ids = []
        for word in split_words(clean_text(text)):
            symbols = "".join(table[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(symbols))
        return ids

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_id
            out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


# ---------------------------------------------------------------- finding the vocabulary

def _installed_open_clip_vocab() -> Path | None:
    """The vocabulary inside an installed open_clip_torch, found from package metadata and the
    import system's path search; open_clip itself is never imported (it pulls torchvision)."""
    try:
        from importlib import metadata
        dist = metadata.distribution("open_clip_torch")
        for f in dist.files or ():
            if f.name == VOCAB_NAME:
                p = Path(dist.locate_file(f))
                if p.is_file():
                    return p
    except Exception:  # no such distribution, or broken metadata: try the path search below
        pass
    try:
        import importlib.util
        spec = importlib.util.find_spec("open_clip")  # top-level: locates, does not execute
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        p = Path(folder) / VOCAB_NAME
        if p.is_file():
            return p
    return None


def find_bpe_vocab(path: str | os.PathLike | None = None,
                   weights_path: str | os.PathLike | None = None) -> Path:
    """Locate the CLIP BPE vocabulary, in this order:

    1. ``path``, when given (it must exist);
    2. ``bpe_simple_vocab_16e6.txt.gz`` (or the unpacked ``.txt``) beside the CLIP weights:
       ``weights_path`` is the weight file or its folder (e.g. models/mmaudio/);
    3. the copy inside an installed ``open_clip_torch`` distribution.

    Raises WeightsError listing the places looked at and how to get the file."""
    if path is not None:
        p = Path(path)
        if p.is_file():
            return p
        raise WeightsError(f"CLIP BPE vocabulary not found at {p}; point to an existing "
                           f"{VOCAB_NAME} (download: {VOCAB_URL})")
    looked = []
    folder = _weights_folder(weights_path)
    if folder is not None:
        for name in VOCAB_NAMES:
            looked.append(str(folder / name))
            if (folder / name).is_file():
                return folder / name
    found = _installed_open_clip_vocab()
    if found is not None:
        return found
    looked.append("the installed open_clip_torch package (not installed, or without the file)")
    target = f"into {folder}" if folder is not None else "beside the CLIP weights"
    raise WeightsError(
        f"the CLIP BPE vocabulary ({VOCAB_NAME}) was not found. Looked at: {'; '.join(looked)}. "
        "To get it, either run `pip install --no-deps open_clip_torch` (harmless: it only adds "
        f"files, pulls no dependencies and is never imported), or download {VOCAB_URL} {target}.")


def _weights_folder(weights_path: str | os.PathLike | None) -> Path | None:
    if weights_path is None:
        return None
    p = Path(weights_path)
    return p if p.is_dir() or not p.suffix else p.parent  # a weight file has an extension


@lru_cache(maxsize=4)
def _cached_tokenizer(path: str, size: int, mtime_ns: int, context_length: int) -> ClipTokenizer:
    return ClipTokenizer(path, context_length)


def load_tokenizer(vocab_path: str | os.PathLike | None = None,
                   weights_path: str | os.PathLike | None = None,
                   context_length: int = CONTEXT_LENGTH) -> ClipTokenizer:
    """The tokenizer for the vocabulary ``find_bpe_vocab`` locates, cached per file as it is now
    (its size and modification time are in the key): a vocabulary replaced under the same name,
    say after "does not belong to this CLIP model", is read again on the next load."""
    path = find_bpe_vocab(vocab_path, weights_path).resolve()
    st = path.stat()
    return _cached_tokenizer(str(path), st.st_size, st.st_mtime_ns, context_length)


# ---------------------------------------------------------------- tiny vocabulary for tests

TINY_WORDS = ("a dog barks then a car horn honks rain on a tin roof thunder in the distance "
              "waves seagulls music the quick brown fox jumps over the lazy dog near a loud "
              "waterfall footsteps on gravel birds singing wind blowing through trees engine "
              "running door slams glass breaking people talking crowd cheering water dripping "
              "fire crackling clock ticking typing on a keyboard guitar piano drums speech")


def learn_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training on a word list (most frequent adjacent pair first, ties by first
    appearance), over the same byte symbols and ``</w>`` convention as CLIP."""
    table = byte_symbols()[1]
    counts = Counter("".join(table[b] for b in w.encode("utf-8")) for w in words)
    corpus = {tuple(w[:-1]) + (w[-1] + "</w>",): c for w, c in counts.items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs: Counter = Counter()
        for symbols, c in corpus.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += c
        if not pairs:
            break
        best = max(pairs, key=pairs.__getitem__)  # Counter keeps first-seen order on ties
        merges.append(best)
        new_corpus = {}
        for symbols, c in corpus.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            new_corpus[tuple(out)] = c
        corpus = new_corpus
    return merges


def write_tiny_bpe_vocab(path: str | os.PathLike, words: str = TINY_WORDS,
                         num_merges: int = 200) -> Path:
    """Write a small but valid gzipped merges file learned from ``words``, so the pipeline runs
    with a tiny CLIP when the real vocabulary is absent. Its vocabulary size is
    512 + merges + 2 (at most 714 with the defaults): a tiny CLIP needs at least that many
    token-embedding rows (``ClipTokenizer(path).vocab_size``)."""
    merges = learn_merges(words.lower().split(), num_merges)
    text = "#version: tiny test vocabulary\n" + "".join(f"{a} {b}\n" for a, b in merges)
    from ..atomic import write_bytes
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(p, gzip.compress(text.encode("utf-8"), mtime=0))
