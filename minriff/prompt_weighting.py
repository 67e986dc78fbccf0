"""Prompt weighting as the original Riffusion does it (the diffusers community "lpw" scheme).

Syntax (reference/riffusion.md §2.2):
    (text)       weight × 1.1            [text]      weight ÷ 1.1
    (text:1.5)   weight × 1.5            nesting multiplies; an unclosed bracket acts to the end
    \\( \\) \\[ \\] \\\\   literal characters;  a lone backslash is dropped; an unmatched ')' or ']' is text

Each span is tokenised on its own (no BOS/EOS) and its tokens carry the span's weight; BOS, EOS
and padding carry 1.0. The text encoder runs on the plain ids; then every token vector is
multiplied by its weight and the whole (T, C) block is rescaled so its mean equals the mean before
weighting (`apply_weights`). With all weights 1 this is exactly the plain embedding.

Weights are bounded: an explicit weight, and the product of the weights around a token, must lie
in [-MAX_WEIGHT, MAX_WEIGHT] (the original let `(x:1e39)` overflow float32 to NaN and wrote noise);
text states that still come out non-finite are an InputError.

Difference from the original: it embeds prompts longer than 75 tokens in up to three 77-token
chunks, and Riffusion then fails to concatenate them with the 77-long unconditional embedding;
here such prompts are truncated to 75 tokens like the plain tokenizer does.
"""
from __future__ import annotations

import numpy as np

from minriff import kernels
from minriff.errors import InputError

MAX_WEIGHT = 100.0  # typical weights are 0.5-2; (x:100) already drowns every other token
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
ESCAPES = ("\\(", "\\)", "\\[", "\\]", "\\\\")
SPECIAL_CHARS = "\\()[]:"


def _scan(text: str):
    """Yield the parser's tokens: ('literal', s), ('open', '('|'['), ('weight', s) for ':<w>)',
    ('close', ')'|']'), ('text', s). Same token boundaries as the original's regular expression."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            pair = text[i : i + 2]
            if pair in ESCAPES:
                yield "literal", pair[1]
                i += 2
            else:
                yield "literal", ""  # a backslash escaping nothing vanishes
                i += 1
        elif ch in "([":
            yield "open", ch
            i += 1
        elif ch in ")]":
            yield "close", ch
            i += 1
        elif ch == ":":
            j = i + 1
            if j < n and text[j] in "+-":
                j += 1
            k = j
            while k < n and (text[k] == "." or text[k].isdecimal()):
                k += 1
            if k > j and k < n and text[k] == ")":
                yield "weight", text[i : k + 1]
                i = k + 1
            else:
                yield "text", ":"
                i += 1
        else:
            j = i
            while j < n and text[j] not in SPECIAL_CHARS:
                j += 1
            yield "text", text[i:j]
            i = j


def parse(prompt: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) spans; neighbouring spans of equal weight are joined."""
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    spans: list[list] = []  # [text, weight], mutable while brackets close
    open_round: list[int] = []  # index of the first span inside each open '('
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for span in spans[start:]:
            span[1] *= factor

    for kind, s in _scan(prompt):
        if kind == "open":
            (open_round if s == "(" else open_square).append(len(spans))
        elif kind == "weight" and open_round:
            scale_from(open_round.pop(), _weight_value(s))
        elif kind == "close" and s == ")" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
        elif kind == "close" and s == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            spans.append([s, 1.0])
    for start in open_round:
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)
    for text, weight in spans:
        if not abs(weight) <= MAX_WEIGHT:
            raise InputError(f"prompt weight of {text.strip()[:40]!r} is {weight:.3g} after nesting; the limit is "
                             f"{MAX_WEIGHT:g} in magnitude")
    if not spans:
        spans = [["", 1.0]]
    joined = [spans[0]]
    for text, weight in spans[1:]:
        if weight == joined[-1][1]:
            joined[-1][0] += text
        else:
            joined.append([text, weight])
    return [(text, weight) for text, weight in joined]


def _weight_value(token: str) -> float:
    number = token[1:-1]  # ':1.5)' -> '1.5'
    try:
        w = float(number)
    except ValueError:
        raise InputError(f"prompt weight {token[:40]!r}: {number[:40]!r} is not a number") from None
    if not abs(w) <= MAX_WEIGHT:
        raise InputError(f"prompt weight {token[:40]!r} is out of range: weights must lie in "
                         f"[-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}]")
    return w


def weighted_ids(tokenizer, prompt: str, max_length: int = 77) -> tuple[np.ndarray, np.ndarray]:
    """ids (max_length,) int64 = BOS, span tokens..., EOS, PAD...; weights (max_length,) float32."""
    if max_length < 2:
        raise InputError(f"max_length must be at least 2 (BOS and EOS), got {max_length}")
    tokens: list[int] = []
    weights: list[float] = []
    for text, weight in parse(prompt):
        ids = tokenizer.encode(text)
        tokens += ids
        weights += [weight] * len(ids)
    room = max_length - 2
    tokens, weights = tokens[:room], weights[:room]
    ids = np.full(max_length, tokenizer.pad_id, dtype=np.int64)
    ids[: len(tokens) + 2] = [tokenizer.bos_id, *tokens, tokenizer.eos_id]
    w = np.ones(max_length, dtype=np.float32)
    w[1 : len(weights) + 1] = weights
    return ids, w


def apply_weights(embedding, weights):
    """embedding (B, T, C) or (T, C), weights (B, T) or (T,) -> same shape: scale each token
    vector by its weight, then rescale each sample so its mean over (T, C) is unchanged."""
    xp = np if isinstance(embedding, np.ndarray) else kernels.ops().xp
    emb = embedding.astype(xp.float32, copy=False)
    w = xp.asarray(weights, dtype=emb.dtype)
    before = emb.mean(axis=(-2, -1), keepdims=True)  # (B, 1, 1) or (1, 1)
    scaled = emb * w[..., None]
    after = scaled.mean(axis=(-2, -1), keepdims=True)
    safe_after = xp.where(after == 0, 1, after)  # the original would divide by zero here
    return (scaled * xp.where(after == 0, 1, before / safe_after)).astype(embedding.dtype, copy=False)


def weighted_embeddings(tokenizer, text_encoder, prompt: str, max_length: int = 77):
    """Riffusion's weighted text embedding of one prompt: (1, max_length, C). `text_encoder` is
    anything that maps ids (1, max_length) to states (1, max_length, C), e.g. a CLIPTextModel."""
    ids, w = weighted_ids(tokenizer, prompt, max_length)
    states = apply_weights(text_encoder(ids[None]), w[None])
    xp = np if isinstance(states, np.ndarray) else kernels.ops().xp
    if not bool(xp.all(xp.isfinite(states))):
        raise InputError(f"the weights in {prompt[:60]!r} make the text states overflow to NaN or infinity")
    return states

