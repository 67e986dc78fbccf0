"""Prompt weighting: the original's syntax (reference/riffusion.md §2.2) with expectations worked
out by hand (the multi-bracket example is the one documented in the original source), the
77-token ids/weights layout, and the mean-preserving rescale."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minriff.errors import InputError
from minriff.models.tokenizer import CLIPTokenizer, tiny_vocab
from minriff.prompt_weighting import apply_weights, parse, weighted_embeddings, weighted_ids

TOK = CLIPTokenizer(*tiny_vocab())
UP, DOWN = 1.1, 1 / 1.1


@pytest.mark.parametrize("prompt, expected", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", UP), (" word", 1.0)]),
    ("a [quiet] word", [("a ", 1.0), ("quiet", DOWN), (" word", 1.0)]),
    ("((loud))", [("loud", UP * UP)]),
    ("[[soft]]", [("soft", DOWN * DOWN)]),
    ("(bass:1.5) line", [("bass", 1.5), (" line", 1.0)]),
    ("(x:+2)(y:-0.5)(z:.25)", [("x", 2.0), ("y", -0.5), ("z", 0.25)]),
    ("(a (b:2) c)", [("a ", UP), ("b", 2 * UP), (" c", UP)]),
    ("[(x)]", [("x", UP * DOWN)]),
    ("(unbalanced", [("unbalanced", UP)]),
    ("[open (both", [("open ", DOWN), ("both", UP * DOWN)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", UP)]),
    ("x) y] z", [("x) y] z", 1.0)]),  # closing brackets with nothing open are text
    ("a:1.5) b", [("a:1.5) b", 1.0)]),  # a weight with no open '(' is text
    ("time: 4/4 (x:y)", [("time: 4/4 ", 1.0), ("x:y", UP)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("a\\\\b \\[c\\) d", [("a\\b [c) d", 1.0)]),
    ("lone\\ slash", [("lone slash", 1.0)]),
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
    # documented in the original source: the first '(' never closes, so it scales all after it
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.3 * UP * UP), (" ", UP), ("on", DOWN * UP), (" a ", UP), ("hill", 0.5 * UP),
      (", sun, ", UP), ("sky", UP ** 4), (".", UP)]),
])
def test_parse(prompt, expected):
    got = parse(prompt)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_bad_weight_is_an_input_error():
    with pytest.raises(InputError, match="1.2.3"):
        parse("(x:1.2.3)")
    with pytest.raises(InputError):
        parse(None)


def v(word):
    return TOK.vocab[word + "</w>"]


def test_weighted_ids_by_hand():
    ids, w = weighted_ids(TOK, "a (jazz) piano")
    assert ids.shape == w.shape == (77,) and ids.dtype == np.int64 and w.dtype == np.float32
    assert ids[:5].tolist() == [TOK.bos_id, v("a"), v("jazz"), v("piano"), TOK.eos_id]
    assert (ids[5:] == TOK.pad_id).all()
    assert w[:5].tolist() == pytest.approx([1.0, 1.0, 1.1, 1.0, 1.0])
    assert (w[5:] == 1.0).all()


def test_spans_are_tokenised_separately():
    ids, w = weighted_ids(TOK, "(pia)no")
    pia, no = TOK.encode("pia"), TOK.encode("no")
    assert pia + no != TOK.encode("piano")  # so the split is visible
    n = len(pia) + len(no)
    assert ids[: n + 2].tolist() == [TOK.bos_id, *pia, *no, TOK.eos_id]
    assert w[1 : 1 + len(pia)].tolist() == pytest.approx([1.1] * len(pia))
    assert (w[1 + len(pia) :] == 1.0).all() and w[0] == 1.0


def test_truncation_keeps_eos_and_unit_weight():
    ids, w = weighted_ids(TOK, "(jazz) " * 100)
    assert ids[0] == TOK.bos_id and ids[-1] == TOK.eos_id
    assert (ids[1:76] == v("jazz")).all()
    assert w[1:76] == pytest.approx([1.1] * 75) and w[0] == w[76] == 1.0


def test_empty_prompt():
    ids, w = weighted_ids(TOK, "")
    np.testing.assert_array_equal(ids, TOK("")[0])
    assert (w == 1.0).all()


@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="()[]\\"), max_size=60))
def test_no_brackets_means_plain_ids_and_unit_weights(prompt):
    ids, w = weighted_ids(TOK, prompt)
    np.testing.assert_array_equal(ids, TOK(prompt)[0])
    assert (w == 1.0).all()


def test_apply_weights_by_hand():
    emb = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)  # mean 2.5
    # weighted: [[1, 2], [6, 8]], mean 4.25 -> scale by 2.5 / 4.25 = 10/17
    expected = np.array([[[10, 20], [60, 80]]], np.float32) / 17
    np.testing.assert_allclose(apply_weights(emb, np.array([[1.0, 2.0]])), expected, rtol=1e-6)
    np.testing.assert_allclose(apply_weights(emb[0], np.array([1.0, 2.0])), expected[0], rtol=1e-6)


@given(st.integers(0, 2**16))
def test_apply_weights_properties(seed):
    rng = np.random.default_rng(seed)
    emb = (rng.standard_normal((2, 7, 5)) + 0.5).astype(np.float32)
    np.testing.assert_array_equal(apply_weights(emb, np.ones((2, 7))), emb)
    w = rng.uniform(0.5, 1.5, (2, 7))
    out = apply_weights(emb, w)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), emb.mean(axis=(1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[1:], apply_weights(emb[1:], w[1:]), rtol=1e-6)
    # direction of each token vector kept; relative token norms follow the weights
    ratio = np.linalg.norm(out, axis=-1) / np.linalg.norm(emb, axis=-1)
    np.testing.assert_allclose(ratio / ratio[:, :1], w / w[:, :1], rtol=1e-4)


def test_weighted_embeddings_runs_the_encoder_on_plain_ids():
    seen = []

    def encoder(ids):
        seen.append(ids.copy())
        return np.random.default_rng(0).standard_normal((*ids.shape, 4)).astype(np.float32) + 1

    out = weighted_embeddings(TOK, encoder, "a (jazz) piano")
    assert out.shape == (1, 77, 4)
    np.testing.assert_array_equal(seen[0], TOK("a jazz piano"))
    ids, w = weighted_ids(TOK, "a (jazz) piano")
    np.testing.assert_allclose(out, apply_weights(encoder(ids[None]), w[None]), rtol=1e-6)
    plain = weighted_embeddings(TOK, encoder, "a jazz piano")
    np.testing.assert_array_equal(plain, encoder(TOK("a jazz piano")))
