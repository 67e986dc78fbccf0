"""Text and JSON from users and the network (issue 13, cause 5): whatever arrives, the one parser
(`InferenceInput.from_json`, on `minriff.values.parse_json`) answers with a checked request or a
one-line InputError; invalid Unicode in prompts is refused on every path (argv, JSON, API)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from minriff.cli import main
from minriff.errors import InputError
from minriff.riffuse import InferenceInput, PromptInput
from support import ROOT
from support.hostile import json_bodies, render, requests

GOOD = {"alpha": 0.75, "start": {"prompt": "church bells", "seed": 42}, "end": {"prompt": "jazz", "seed": 123}}


def assert_checked(req: InferenceInput) -> None:
    """What a parsed request guarantees to the pipeline (and the server)."""
    for p in (req.start, req.end):
        assert isinstance(p.prompt, str) and p.prompt.strip() and len(p.prompt) <= 1000
        p.prompt.encode("utf-8")  # no lone surrogates
        assert p.negative_prompt is None or isinstance(p.negative_prompt, str)
        assert type(p.seed) is int and -(2**63) <= p.seed < 2**64
        assert type(p.denoising) is float and 0 < p.denoising <= 1
        assert type(p.guidance) is float and 0 <= p.guidance <= 100
    assert type(req.alpha) is float and 0 <= req.alpha <= 1
    assert type(req.num_inference_steps) is int and 1 <= req.num_inference_steps <= 1000
    assert isinstance(req.seed_image_id, str)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_bodies())
@example(b'{"alpha": ' + b"[" * 10000 + b"]" * 10000 + b"}")
@example(b'{"alpha": ' + b"9" * 5000 + b"}")
@example(json.dumps(GOOD).replace("church", "\\ud800").encode())
def test_any_body_is_a_checked_request_or_one_input_error(body):
    try:
        req = InferenceInput.from_json(body)
    except InputError as e:
        assert "\n" not in str(e) and len(str(e)) < 400
        return
    assert_checked(req)


@settings(max_examples=150)
@given(requests())
def test_text_and_bytes_bodies_give_the_same_answer(value):
    text = render(value)
    outcomes = []
    for body in (text, text.encode("utf-8", "surrogatepass")):
        try:
            outcomes.append(InferenceInput.from_json(body).to_dict())
        except InputError:
            outcomes.append("error")
    assert outcomes[0] == outcomes[1] or outcomes[1] == "error"  # bytes with a surrogate are not UTF-8


@pytest.mark.parametrize("body,message", [
    (b'{"alpha": ' + b"[" * 10000 + b"]" * 10000 + b"}", "nests 10001 levels deep"),
    (b'{"alpha": ' + b"9" * 5000 + b"}", "5,000 digits"),
    (b'{"alpha": NaN}', "NaN"),
    (b'{"alpha": 1e999}', "out of the floating-point range"),
    (b'{"alpha": 0.5, "start": {"prompt": "\xff jazz"}}', "not UTF-8: byte 0xff"),
    (json.dumps(dict(GOOD, start={"prompt": "jazz \ud800", "seed": 1})).encode(), "lone surrogate U+D800"),
    (json.dumps(GOOD).encode() + b" " * 70000, "the limit is 65,536"),
    (b'{"alpha": 0.5, "alpha": 0.7}', "key 'alpha' twice"),
    (json.dumps(dict(GOOD, start={"prompt": "a", "seed": 1, "guidence": 7})).encode(), "unknown field 'guidence'"),
    (json.dumps(dict(GOOD, start={"prompt": "a", "seed": 2**64})).encode(), "start seed must be an integer"),
    (json.dumps(dict(GOOD, num_inference_steps=10**6)).encode(), "num_inference_steps"),
    (json.dumps(dict(GOOD, start={"prompt": "x" * 5000, "seed": 1})).encode(), "5,000 characters long"),
])
def test_each_problem_has_its_message(body, message):
    with pytest.raises(InputError, match=re.escape(message)):
        InferenceInput.from_json(body)


JSON_KIND_BY_FIRST_CHAR = {"[": "an array", '"': "a string", "n": "null", "t": "a boolean", "f": "a boolean"}


@settings(max_examples=100)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3), max_leaves=6))
def test_a_request_that_is_not_an_object_is_named_in_json_words(value):
    """`[]` is "an array", `null` is "null" (not Python's list / NoneType), read off the text itself."""
    body = json.dumps(value)
    kind = JSON_KIND_BY_FIRST_CHAR.get(body[0], "a number")
    with pytest.raises(InputError, match=re.escape(f"request must be a JSON object, got {kind}")):
        InferenceInput.from_json(body)


@pytest.mark.parametrize("body", [
    b'{"alpha": ' + b"[" * 10000 + b"]" * 10000 + b"}",
    b'{"alpha": 0.5, "start": {"prompt": "a", "seed": ' + b"1" * 5000 + b'}, "end": {"prompt": "b", "seed": 1}}',
    b'{"alpha": 0.5, "start": {"prompt": "\xed\xa0\x80", "seed": 1}, "end": {"prompt": "b", "seed": 1}}',
])
def test_the_cli_reads_request_files_with_the_same_parser_before_loading_weights(tmp_path, capsys, body):
    req = tmp_path / "req.json"
    req.write_bytes(body)
    out = tmp_path / "x.wav"
    code = main(["riffuse", "--json", str(req), "-o", str(out), "--weights", str(tmp_path / "no-weights")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "weights" not in err, err
    assert not out.exists()


def test_a_request_file_of_endless_bytes_stops_at_the_limit(tmp_path, capsys):
    code = main(["riffuse", "--json", "/dev/zero", "-o", str(tmp_path / "x.wav")])
    assert code == 2 and "the limit is 65,536" in capsys.readouterr().err


@pytest.mark.parametrize("prompt", ["jazz \udcff", "\ud800", "a\udfffb"])
def test_invalid_unicode_prompts_are_refused_by_the_api(prompt):
    from minriff import Riffusion
    from minriff.models import random_models

    riff = Riffusion(random_models("tiny"), quiet=True)
    calls = [lambda: riff.generate_spectrogram(prompt, steps=1),
             lambda: riff.generate_spectrogram("x", negative_prompt=prompt, steps=1),
             lambda: riff.interpolate_styles("x", prompt, 0.5, steps=1),
             lambda: PromptInput(prompt, 1),
             lambda: riff.encode_prompt(prompt)]
    for call in calls:
        with pytest.raises(InputError, match="lone surrogate"):
            call()


def test_undecodable_argv_bytes_are_one_line_errors(tmp_path):
    """argv bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)."""
    out = tmp_path / "x.wav"
    for argv in ([b"generate", b"\xff\xfe jazz", b"-o", bytes(out)],
                 [b"generate", b"jazz", b"--negative", b"dr\xc3ums\xff", b"-o", bytes(out)],
                 [b"interpolate", b"a", b"\xed\xa0\x80", b"-o", bytes(out)]):
        proc = subprocess.run([sys.executable, "-m", "minriff", *argv], capture_output=True, cwd=ROOT, timeout=120)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 2 and err.count("\n") == 1 and "not valid Unicode" in err, err
        assert not out.exists()


@settings(max_examples=200)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("utf-8", "surrogateescape"))),
       st.integers(1, 2000))
def test_text_check_accepts_exactly_encodable_strings_within_the_limit(s, limit):
    from minriff import values

    try:
        got = values.text(s, "field", limit, allow_empty=True)
    except InputError as e:
        assert len(s) > limit or "lone surrogate" in str(e)
        if "lone surrogate" in str(e):
            with pytest.raises(UnicodeEncodeError):
                s.encode("utf-8")
    else:
        assert got == s and len(s) <= limit
        s.encode("utf-8")


def test_numbers_in_json_are_never_converted_past_the_digit_limit():
    from minriff import values

    with pytest.raises(InputError, match="digits"):
        values.parse_json("[" + "7" * (values.MAX_NUMBER_CHARS + 1) + "]")
    assert values.parse_json("[" + "7" * values.MAX_NUMBER_CHARS + "]") == [int("7" * values.MAX_NUMBER_CHARS)]
    assert np.isclose(values.parse_json("[0.5]")[0], 0.5)
