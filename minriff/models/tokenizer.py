"""The CLIP byte-level BPE tokenizer (what Stable Diffusion v1.x and Riffusion use), in plain Python.

Pipeline for one prompt, matching transformers' `CLIPTokenizer` (the `tokenizers`-backed one):

    raw text ── split out the literal special tokens `<|startoftext|>` / `<|endoftext|>`
             ── normalise: NFC, every run of Unicode White_Space -> one space, lower-case char by char
             ── pre-tokenise: special-token strings, 's 't 're 've 'm 'll 'd, letter runs,
                single digits, runs of anything else that is not a space; spaces are dropped.
                (transformers then re-splits each piece with GPT-2's pattern; that only changes
                a lower-cased special-token string: '<|endoftext|>' -> '<|' 'endoftext' '|>')
             ── bytes of each piece -> printable stand-in characters (GPT-2 byte map)
             ── BPE with `</w>` marking the word end -> ids

`__call__` adds BOS and EOS and pads with PAD (= EOS) / truncates to 77 keeping EOS last.
The pre-tokenisation regex of the original uses `\\p{L}` / `\\p{N}`; here a small scanner over
`unicodedata` categories does the same, so the `regex` package is not needed.

Known differences (tests/models/test_tokenizer_oracle.py):
- vs transformers' CLIPTokenizer: none for characters Python's Unicode tables assign. Code points
  unassigned there (Cn; ~9400 with Python 3.11 = Unicode 14) but letters/digits in the newer tables
  inside `tokenizers` fall into the "other" class here.
- vs the Python ("slow") CLIPTokenizer of 2022 that Riffusion ran: without ftfy it cleaned text with
  BERT's BasicTokenizer (drops control characters, puts each CJK ideograph in its own word); with
  ftfy it ran ftfy.fix_text and str.lower() (final sigma -> 'ς'); and (by its source) it mapped a typed
  '<|ENDOFTEXT|>' (any case) to the special id. English prompts tokenise identically.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from minriff.errors import InputError, WeightsError

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")  # tried in this order, as the regex does

# Unicode White_Space (what `\s` matches in the Oniguruma regexes of `tokenizers`). Python's str.isspace()
# differs: it also counts U+001C..U+001F, which CLIP treats as punctuation.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> character map: printable Latin-1 bytes map to themselves, the
    other 68 bytes to U+0100 onwards (in byte order), so a BPE symbol is never a space or control.
    The dict order (printable bytes first, then the others) is the order of the first 256 vocab ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHARS = bytes_to_unicode()


# ----------------------------------------------------------------------------- text -> pieces


def normalize(text: str) -> str:
    """NFC, whitespace runs -> ' ', then lower-case each character on its own (no final-sigma rule)."""
    text = unicodedata.normalize("NFC", text)
    out, in_space = [], False
    for ch in text:
        if ch in WHITESPACE:
            if not in_space:
                out.append(" ")
            in_space = True
        else:
            out.append(ch.lower())
            in_space = False
    return "".join(out)


def _char_class(ch: str) -> str:
    """'s' space, 'L' letter, 'N' number, 'P' anything else (punctuation, symbols, marks, controls)."""
    if ch in WHITESPACE:
        return "s"
    major = unicodedata.category(ch)[0]
    return major if major in "LN" else "P"


def pre_tokenize(text: str) -> list[str]:
    """Split normalised text into the pieces BPE works on (the CLIP regex, leftmost alternative wins)."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        special = next((t for t in (BOS_TOKEN, EOS_TOKEN) if text.startswith(t, i)), None)
        if special:  # matched whole, then split again by the byte-level step's GPT-2 pattern
            pieces += ["<|", special[2:-2], "|>"]
            i += len(special)
            continue
        if text[i] == "'":
            hit = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
            if hit:
                pieces.append(hit)
                i += len(hit)
                continue
        kind = _char_class(text[i])
        if kind == "s":
            i += 1
            continue
        j = i + 1
        if kind != "N":  # letters and "other" form greedy runs; a number is one character
            while j < n and _char_class(text[j]) == kind:
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


# ----------------------------------------------------------------------------- BPE


def _bpe_symbols(word: str) -> list[str]:
    """A piece as byte characters, the last one carrying the end-of-word mark."""
    chars = [BYTE_CHARS[b] for b in word.encode("utf-8")]
    chars[-1] += END_OF_WORD
    return chars


def bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Repeatedly merge the adjacent pair with the lowest merge rank (all its occurrences, left to right)."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        symbols = merge_pair(symbols, best)
    return symbols


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every occurrence of `pair` (scanning left to right, no overlaps) by its concatenation."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _parse_merge(m, where: str) -> tuple[str, str]:
    if isinstance(m, str):
        parts = m.split(" ")
    elif isinstance(m, (list, tuple)):
        parts = list(m)
    else:
        parts = []
    if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
        raise WeightsError(f"tokenizer {where}: bad merge entry {m!r} (want 'a b' or [a, b])")
    return parts[0], parts[1]


class CLIPTokenizer:
    CACHE_SIZE = 20000

    def __init__(self, vocab: dict[str, int], merges: Sequence, *, where: str = "vocabulary"):
        if not isinstance(vocab, dict) or not vocab:
            raise WeightsError(f"tokenizer {where}: vocab must be a non-empty mapping token -> id")
        for tok in (BOS_TOKEN, EOS_TOKEN):
            if tok not in vocab:
                raise WeightsError(f"tokenizer {where}: vocab has no {tok} token")
        self.vocab = {str(k): int(v) for k, v in vocab.items()}
        pairs = [_parse_merge(m, where) for m in merges]
        missing = [a + b for a, b in pairs if a + b not in self.vocab]
        if missing:
            raise WeightsError(f"tokenizer {where}: {len(missing)} merge results missing from vocab, "
                               f"e.g. {missing[0]!r}")
        self.merges = [f"{a} {b}" for a, b in pairs]
        self.ranks = {p: r for r, p in enumerate(pairs)}
        self.bos_id = self.vocab[BOS_TOKEN]
        self.eos_id = self.vocab[EOS_TOKEN]
        self.pad_id = self.eos_id
        self.unk_id = self.eos_id  # what transformers maps a symbol outside the vocab to
        self._cache: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    # -- encoding

    def _encode_piece(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            ids = [self.vocab.get(s, self.unk_id) for s in bpe(_bpe_symbols(piece), self.ranks)]
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS. Literal special-token strings map to their ids."""
        if not isinstance(text, str):
            raise InputError(f"prompt must be a string, got {type(text).__name__}")
        ids: list[int] = []
        for segment, special in _split_specials(text):
            if special:
                ids.append(self.vocab[segment])
                continue
            for piece in pre_tokenize(normalize(segment)):
                ids.extend(self._encode_piece(piece))
        return ids

    def __call__(self, texts: str | Iterable[str], max_length: int = 77) -> np.ndarray:
        """(B, max_length) int64: BOS, tokens, EOS, PAD...; long prompts are cut to keep EOS last."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if max_length < 2:
            raise InputError(f"max_length must be at least 2 (BOS and EOS), got {max_length}")
        out = np.full((len(texts), max_length), self.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.bos_id, *self.encode(text)[: max_length - 2], self.eos_id]
            out[row, : len(ids)] = ids
        return out


def _split_specials(text: str) -> list[tuple[str, bool]]:
    """Cut the raw text at literal special tokens (matched before normalisation, case-sensitive)."""
    out, start, i = [], 0, 0
    while i < len(text):
        tok = next((t for t in (BOS_TOKEN, EOS_TOKEN) if text.startswith(t, i)), None)
        if tok:
            if start < i:
                out.append((text[start:i], False))
            out.append((tok, True))
            i = start = i + len(tok)
        else:
            i += 1
    if start < len(text):
        out.append((text[start:], False))
    return out


# ----------------------------------------------------------------------------- tiny vocabulary

TINY_MERGES = 400

# Training text for the tiny vocabulary (written for minriff; any fixed text would do).
TINY_CORPUS = """
a photo of a cat playing jazz piano in a smoky club at night
funky bass line with tight drums and a bright brass section
church bells ringing over a quiet town, soft organ, reverb
lo-fi hip hop beat, vinyl crackle, mellow electric piano chords
acoustic folk guitar with warm vocals and a slow steady rhythm
techno kick drum at 128 bpm, dark synth pads, hypnotic arpeggio
classical string quartet, violin melody, cello harmony, andante
reggae guitar skank, deep dub bass, echo and spring reverb
heavy metal riff with distorted guitars and double kick drums
ambient drone, shimmering textures, field recordings of rain
the sound of the ocean with seagulls and distant thunder
an upbeat pop song with catchy hooks and handclaps
a sad piano ballad in a minor key with a soft female voice
latin percussion, congas and timbales, salsa piano montuno
country fiddle and banjo, bluegrass picking, a fast tempo
orchestral film score, epic drums, choir and french horns
chiptune melody from an old video game, square waves and noise
smooth saxophone solo over a walking upright bass and brushes
deep house groove, four on the floor, filtered disco samples
trap hi-hats, booming 808 bass, dark minor chords, 140 bpm
indian sitar and tabla, a raga in the evening, slow drone
african drums and call and response singing, polyrhythm
a music box lullaby, gentle bells, a child's dream
rock and roll guitar, piano boogie, shuffle rhythm, live crowd
"""


def tiny_vocab(num_merges: int = TINY_MERGES) -> tuple[dict[str, int], list[str]]:
    """A small but real byte-level BPE vocabulary: the 256 byte characters, their `</w>` forms,
    `num_merges` merges learnt greedily from TINY_CORPUS (most frequent pair; ties -> the
    lexicographically smallest pair), then the two special tokens. Deterministic."""
    word_counts: dict[tuple[str, ...], int] = {}
    for piece in pre_tokenize(normalize(TINY_CORPUS)):
        word = tuple(_bpe_symbols(piece))
        word_counts[word] = word_counts.get(word, 0) + 1
    tokens = list(BYTE_CHARS.values())
    tokens += [c + END_OF_WORD for c in tokens]
    merges: list[str] = []
    for _ in range(num_merges):
        counts: dict[tuple[str, str], int] = {}
        for word, n in word_counts.items():
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(f"{best[0]} {best[1]}")
        tokens.append(best[0] + best[1])
        word_counts = _merge_counts(word_counts, best)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab: dict[str, int] = {}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    return vocab, merges


def _merge_counts(word_counts, pair):
    out: dict[tuple[str, ...], int] = {}
    for word, n in word_counts.items():
        merged = tuple(merge_pair(list(word), pair))
        out[merged] = out.get(merged, 0) + n
    return out
