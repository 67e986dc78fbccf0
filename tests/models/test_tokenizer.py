"""CLIP tokenizer without torch: the committed transformers ids for the fixed prompts on the tiny
vocabulary (tests/fixtures/tokenizer, made by make_clip.py), hand-worked pre-tokenisation and BPE
cases, round trips, padding/truncation, loading and errors."""
from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minriff.configs import TINY
from minriff.errors import InputError, WeightsError
from minriff.models.tokenizer import (
    BYTE_CHARS,
    CLIPTokenizer,
    bpe,
    bytes_to_unicode,
    normalize,
    pre_tokenize,
    tiny_vocab,
)
from minriff.weights.convert import tokenizer_from_files, tokenizer_from_json
from support import FIXTURES, fixture_script

FIXTURE = json.loads((FIXTURES / "tokenizer" / "tiny_ids.json").read_text(encoding="utf-8"))
# Characters Python's Unicode tables know (unassigned code points are classified differently by
# newer Unicode versions: see the tokenizer notes in the report / test_tokenizer_oracle.py).
ASSIGNED_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=60)


TINY_TOKENIZER = CLIPTokenizer(*tiny_vocab())


@pytest.fixture
def tok():
    return TINY_TOKENIZER


def decode(tok, ids) -> str:
    """ids -> text with the end-of-word marks dropped (so: the pre-tokenised pieces, concatenated)."""
    inverse = {i: s for s, i in tok.vocab.items()}
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    chars = "".join(inverse[i] for i in ids).replace("</w>", "")
    return bytes(byte_of[c] for c in chars).decode("utf-8")


# ----------------------------------------------------------------------------- oracle fixture


def test_fixture_matches_current_tiny_vocab():
    vocab_digest = fixture_script("make_clip").vocab_digest

    vocab, merges = tiny_vocab()
    assert FIXTURE["vocab_digest"] == vocab_digest(vocab, merges), \
        "tiny_vocab() changed: rerun tests/fixtures/make_clip.py (and the tiny weights)"


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: repr(c["text"][:24]))
def test_ids_equal_transformers_fixture(tok, case):
    assert tok(case["text"])[0].tolist() == case["ids"]


# ----------------------------------------------------------------------------- vocabulary


def test_tiny_vocab_fits_tiny_config():
    vocab, merges = tiny_vocab()
    assert len(vocab) == TINY.text_encoder.vocab_size
    assert len(merges) == 400
    assert tiny_vocab() == (vocab, merges)  # deterministic


def test_tiny_vocab_layout():
    vocab, merges = tiny_vocab()
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(vocab)))
    assert tokens[:256] == list(bytes_to_unicode().values())
    assert tokens[256:512] == [c + "</w>" for c in bytes_to_unicode().values()]
    assert tokens[-2:] == ["<|startoftext|>", "<|endoftext|>"]
    assert all(a + b in vocab for a, b in (m.split(" ") for m in merges))


def test_byte_map():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(table[b] == chr(b) for b in b"azAZ09!~")
    assert table[ord(" ")] == "\u0120" and table[0] == "\u0100"  # GPT-2's well-known 'Ġ' and 'Ā'
    assert not any(unicodedata.category(c)[0] in "CZ" for c in table.values())


# ----------------------------------------------------------------------------- text -> pieces


@pytest.mark.parametrize("text, expected", [
    ("A\t\n B\u3000C", "a b c"),
    ("e\u0301", "\u00e9"),  # NFC
    ("ΟΔΟΣ", "οδοσ"),  # char by char: no final sigma
    ("x\x1cy", "x\x1cy"),  # U+001C is not White_Space, though str.isspace() says so
    ("İ", "i\u0307"),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, pieces", [
    ("don't", ["don", "'t"]),
    ("we're they'll i'd you've i'm it's", ["we", "'re", "they", "'ll", "i", "'d", "you", "'ve", "i", "'m", "it", "'s"]),
    ("x'''s", ["x", "'''", "s"]),
    ("?'s", ["?'", "s"]),
    ("'x", ["'", "x"]),
    ("abc123", ["abc", "1", "2", "3"]),
    ("½²٣", ["½", "²", "٣"]),
    ("東京の夜", ["東京の夜"]),
    ("ok👍🏽!", ["ok", "👍🏽!"]),
    ("ก่", ["ก", "่"]),  # a combining mark is not a letter
    ("hello<|endoftext|>x", ["hello", "<|", "endoftext", "|>", "x"]),
    ("<|startoftext|>!!", ["<|", "startoftext", "|>", "!!"]),  # not "|>!!": the literal matched first
    ("!<|endoftext|>", ["!<|", "endoftext", "|>"]),
    ("  a  b ", ["a", "b"]),
    ("", []),
])
def test_pre_tokenize(text, pieces):
    assert pre_tokenize(text) == pieces


def test_bpe_merges_lowest_rank_everywhere():
    ranks = {("a", "a"): 0, ("aa", "b</w>"): 1, ("a", "b</w>"): 2}
    assert bpe(["a", "a", "a", "a", "b</w>"], ranks) == ["aa", "aab</w>"]
    assert bpe(["a", "a", "a", "b</w>"], ranks) == ["aa", "ab</w>"]
    assert bpe(["a", "a", "b</w>"], ranks) == ["aab</w>"]
    assert bpe(["b", "a"], ranks) == ["b", "a"]
    assert bpe(["x</w>"], ranks) == ["x</w>"]


def test_encode_known_words(tok):
    v = tok.vocab
    assert tok.encode("jazz") == [v["jazz</w>"]]  # learnt from the corpus
    assert tok.encode("piano piano") == [v["piano</w>"]] * 2
    assert tok.encode("qqq") == [v["q"], v["q"], v["q</w>"]]  # nothing learnt: bytes
    assert tok.encode("é") == [v[BYTE_CHARS[0xC3]], v[BYTE_CHARS[0xA9] + "</w>"]]


@given(ASSIGNED_TEXT)
def test_round_trip_keeps_everything_but_spaces(text):
    tok = TINY_TOKENIZER
    text = text.replace("<|", "")
    assert decode(tok, tok.encode(text)) == normalize(text).replace(" ", "")


@given(ASSIGNED_TEXT)
def test_pre_tokenize_equals_the_clip_regex(text):
    regex = pytest.importorskip("regex")  # only as a reference here; not a runtime dependency
    pattern = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
    text = normalize(text).replace("<|", "")  # special-token strings: see test_pre_tokenize
    if any(unicodedata.category(c) == "Cn" for c in text):
        return
    assert pre_tokenize(text) == pattern.findall(text)


# ----------------------------------------------------------------------------- ids


def test_call_pads_and_marks(tok):
    out = tok(["jazz", ""])
    assert out.shape == (2, 77) and out.dtype == np.int64
    bos, eos = tok.vocab["<|startoftext|>"], tok.vocab["<|endoftext|>"]
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (bos, eos, eos)
    assert out[0, :3].tolist() == [bos, tok.vocab["jazz</w>"], eos]
    assert (out[0, 3:] == eos).all()
    assert out[1, 0] == bos and (out[1, 1:] == eos).all()


def test_truncation_keeps_eos_last(tok):
    ids = tok("piano " * 200)[0]
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert (ids[1:76] == tok.vocab["piano</w>"]).all()
    assert tok("piano " * 200, max_length=5)[0].tolist() == [tok.bos_id] + [tok.vocab["piano</w>"]] * 3 + [tok.eos_id]


def test_literal_special_tokens(tok):
    assert tok.encode("a<|endoftext|>b") == tok.encode("a") + [tok.eos_id] + tok.encode("b")
    assert tok.eos_id not in tok.encode("<|ENDOFTEXT|>")  # lower-cased text is not the special token


def test_bad_input(tok):
    with pytest.raises(InputError):
        tok.encode(3)
    with pytest.raises(InputError):
        tok(["ok", None])
    with pytest.raises(InputError):
        tok("x", max_length=1)


# ----------------------------------------------------------------------------- loading


def test_from_files_and_tokenizer_json_agree(tmp_path, tok):
    vocab, merges = tiny_vocab()
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (tmp_path / "plain.txt").write_text("\n".join(merges), encoding="utf-8")
    (tmp_path / "str.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": merges}}))
    pairs = [m.split(" ") for m in merges]
    (tmp_path / "pairs.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": pairs}}))
    text = ["Funky bass, 120 bpm; déjà vu 😀", ""]
    expected = tok(text)
    for t in (tokenizer_from_files(tmp_path / "vocab.json", tmp_path / "merges.txt"),
              tokenizer_from_files(tmp_path / "vocab.json", tmp_path / "plain.txt"),
              tokenizer_from_json(tmp_path / "str.json"),
              tokenizer_from_json(tmp_path / "pairs.json")):
        np.testing.assert_array_equal(t(text), expected)
        assert t.merges == merges


def test_loading_errors(tmp_path):
    vocab, merges = tiny_vocab()
    with pytest.raises(WeightsError, match="startoftext"):
        CLIPTokenizer({k: v for k, v in vocab.items() if k != "<|startoftext|>"}, merges)
    with pytest.raises(WeightsError, match="missing from vocab"):
        CLIPTokenizer(vocab, merges + ["zq qz"])
    with pytest.raises(WeightsError, match="bad merge"):
        CLIPTokenizer(vocab, ["a b c"])
    with pytest.raises(WeightsError, match="cannot read"):
        tokenizer_from_files(tmp_path / "nope.json", tmp_path / "nope.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WeightsError, match="cannot read"):
        tokenizer_from_json(tmp_path / "bad.json")
    (tmp_path / "wp.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(WeightsError, match="model.merges"):
        tokenizer_from_json(tmp_path / "wp.json")
