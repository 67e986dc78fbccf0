"""minriff.stream.RiffLoop: the web app's request loop (reference/riffusion.md §3.3), without a model."""
from __future__ import annotations

import pytest

from minriff.errors import InputError
from minriff.stream import APP_SEEDS, LoopSettings, RiffLoop


def plan(loop, n):
    out = []
    for _ in range(n):
        r = loop.next_request()
        out.append((loop.state, r.alpha, r.start.prompt, r.start.seed, r.end.prompt, r.end.seed))
    return out


def test_same_prompt_cycles_alpha_and_rolls_the_seed_over():
    loop = RiffLoop("lofi", seed=10)
    got = plan(loop, 9)
    assert [g[1] for g in got] == [0.25, 0.5, 0.75, 1.0, 0.25, 0.5, 0.75, 1.0, 0.25]
    # start (P, s) -> end (P, s + 1); after alpha 1 the seed rolls over: the new start is the old end
    assert [(g[3], g[5]) for g in got] == [(10, 11)] * 4 + [(11, 12)] * 4 + [(12, 13)]
    assert {g[2] for g in got} == {g[4] for g in got} == {"lofi"}


def test_up_next_transitions_with_one_seed_then_settles():
    loop = RiffLoop("lofi", seed=5)
    first = plan(loop, 2)
    loop.up_next("jazz")  # queued mid-cycle: taken at the next rollover
    rest = plan(loop, 2 + 4 + 2)
    got = first + rest
    assert [g[0] for g in got] == ["SAME_PROMPT"] * 4 + ["TRANSITION"] * 4 + ["SAME_PROMPT"] * 2
    transition = got[4:8]
    assert [g[1] for g in transition] == [0.25, 0.5, 0.75, 1.0]
    assert {(g[2], g[3], g[4], g[5]) for g in transition} == {("lofi", 6, "jazz", 6)}  # only the text moves
    # alpha 1 of the transition is (jazz, 6): the next cycle starts there
    assert got[8][2:] == ("jazz", 6, "jazz", 7) and got[8][1] == 0.25


def test_a_prompt_queued_during_the_last_clip_of_a_cycle_is_taken():
    loop = RiffLoop("a", seed=1)
    plan(loop, 4)  # ... the alpha 1 request is out
    loop.up_next("b")
    assert plan(loop, 1)[0][:5] == ("TRANSITION", 0.25, "a", 2, "b")


def test_queued_prompts_chain_transitions():
    loop = RiffLoop("a", seed=1)
    loop.up_next("b")
    loop.up_next("c")
    got = plan(loop, 4 + 4 + 4 + 1)
    assert [(g[0], g[2], g[4]) for g in got[4::4]] == [("TRANSITION", "a", "b"), ("TRANSITION", "b", "c"),
                                                       ("SAME_PROMPT", "c", "c")]
    assert [g[3] for g in got] == [1] * 4 + [2] * 8 + [2]  # the seed moves only in SAME_PROMPT rollovers


def test_settings_apply_from_the_next_request_and_are_checked():
    loop = RiffLoop("a", seed=1, settings=LoopSettings(steps=4))
    assert loop.next_request().num_inference_steps == 4
    loop.update(denoising=0.85, seed_image_id="vibes", negative_prompt="drums")
    r = loop.next_request()
    assert (r.start.denoising, r.end.denoising, r.seed_image_id, r.start.negative_prompt) == \
        (0.85, 0.85, "vibes", "drums")
    for bad in ({"denoising": 0}, {"steps": 0}, {"guidance": -1}, {"seed_image_id": ""}, {"tempo": 1}):
        with pytest.raises(InputError):
            loop.update(**bad)
    assert loop.settings.denoising == 0.85  # a refused update changes nothing


def test_start_checks_and_the_apps_seeds():
    with pytest.raises(InputError, match="prompt is empty"):
        RiffLoop("  ")
    with pytest.raises(InputError, match="alpha velocity"):
        RiffLoop("a", alpha_velocity=0)
    assert RiffLoop("a").seed in APP_SEEDS["og_beat"]
    assert isinstance(RiffLoop("a", settings=LoopSettings(seed_image_id="mine")).seed, int)
    loop = RiffLoop("a", seed=1, alpha_velocity=0.5)
    assert [loop.next_request().alpha for _ in range(4)] == [0.25, 0.75, 0.25, 0.75]
