"""The page in a real browser: Debian's Chromium, headless, driven by Playwright (never a downloaded
browser). With the tiny model: press play, >= 3 clips arrive and are scheduled back to back on the
AudioContext timeline (no gap > 10 ms), no console errors; a screenshot is kept in the test's tmp
folder (and copied to $MINRIFF_SCREENSHOT if set). The browser also decodes two /run_inference/ MP3s:
the same length, about 5.12 s.

Chromium missing: skipped with the reason, except under MINRIFF_REQUIRE_BROWSER=1 (CI installs it)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]


def need_browser():
    missing = [] if Path(CHROMIUM).exists() else [CHROMIUM]
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        if os.environ.get("MINRIFF_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {', '.join(missing)} missing")
        pytest.skip(f"{', '.join(missing)} missing (apt-get install chromium; pip install playwright)")


SCHEDULE = """() => window.minriff.player ? window.minriff.player.schedule.map(
    e => ({index: e.index, start: e.start, duration: e.duration, samples: e.samples, repeat: e.repeat})) : []"""

DECODE_MP3 = """async (body) => {
    const ctx = new AudioContext({sampleRate: 44100});
    const lengths = [];
    for (const alpha of [0.25, 0.75]) {
        const r = await fetch("/run_inference/", {method: "POST", body: JSON.stringify({...body, alpha})});
        const data = await r.json();
        const bytes = await (await fetch(data.audio)).arrayBuffer();
        lengths.push((await ctx.decodeAudioData(bytes)).length);
    }
    return lengths;
}"""


def test_the_page_plays_clips_back_to_back(live_server, tmp_path):
    need_browser()
    from playwright.sync_api import sync_playwright

    live = live_server()
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1200, "height": 720})
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)  # a crowded machine: Playwright's 30 s for goto/click can pass
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{live.url}/?prompt=jazz&steps=1&prebuffer=3&ahead=4")
            page.click("#play")
            end = time.monotonic() + 300
            while True:
                schedule = page.evaluate(SCHEDULE)
                if sum(not e["repeat"] for e in schedule) >= 4:
                    break
                assert time.monotonic() < end, (schedule, problems)
                time.sleep(0.5)
            state = page.evaluate("() => ({ctx: window.minriff.player.ctx.state, errors: window.minriff.errors,"
                                  " t: window.minriff.player.ctx.currentTime, clips: window.minriff.clips})")
            time.sleep(1.0)  # let the canvas draw what is playing
            page.screenshot(path=str(tmp_path / "page.png"))
            if os.environ.get("MINRIFF_SCREENSHOT"):
                shutil.copy(tmp_path / "page.png", os.environ["MINRIFF_SCREENSHOT"])
            body = {"num_inference_steps": 1, "seed_image_id": "wide",
                    "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 2}}
            lengths = page.evaluate(DECODE_MP3, body)
        finally:
            browser.close()
    assert not problems and not state["errors"], (problems, state)
    assert state["ctx"] == "running" and state["t"] > 0  # the AudioContext runs headless, no sound device
    real = [e for e in schedule if not e["repeat"]]
    assert [e["index"] for e in real] == list(range(len(real)))
    # back to back: each entry starts where the previous ends (repeats, if generation fell behind,
    # keep the timeline continuous too); the first three clips were buffered before play
    gaps = [b["start"] - (a["start"] + a["duration"]) for a, b in zip(schedule, schedule[1:])]
    assert max(abs(g) for g in gaps) < 0.010, gaps
    assert [e["repeat"] for e in schedule[:3]] == [False] * 3
    assert real[0]["samples"] == 64 * 441 - 2205 and {e["samples"] for e in real[1:]} == {64 * 441}
    # the browser's MP3 decoder: both clips the same length, 5.12 s plus at most the encoder's padding
    assert lengths[0] == lengths[1] and 512 * 441 <= lengths[0] <= 512 * 441 + 2 * 1152, lengths
    print(f"\nchromium decodes a 5.12 s /run_inference/ MP3 to {lengths[0]} samples ({lengths[0] / 44100:.4f} s)")
