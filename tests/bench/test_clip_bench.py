"""`minriff bench clip` on the tiny model (--quick): it runs both presets and prints the per-stage
table, the real-time factor and peak RSS. No timing is checked; the diffusers baseline is left out
here (it is the bench's own business and needs torch in a child process)."""
from __future__ import annotations

import json

import pytest

from minriff.bench import clip
from minriff.cli import main

pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.mark.parametrize("preset", ["quality", "fast"])
def test_bench_clip_prints_the_stage_table(preset, capsys, monkeypatch):
    monkeypatch.setattr(clip, "torch_or_none", lambda: None)
    monkeypatch.setattr(clip.presets, "options", lambda name: {**_options(name), "steps": 2})
    assert main(["bench", "clip", "--quick", "--preset", preset, "--rounds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in out["rows"]] == ["text", "denoise", "decode", "audio", "total"]
    rows = {r["stage"]: r for r in out["rows"]}
    assert all(r["minriff_s"] > 0 for r in out["rows"])
    assert rows["total"]["minriff_s"] == pytest.approx(sum(rows[s]["minriff_s"] for s in clip.STAGES), rel=1e-9)
    assert out["real_time_factor"] == pytest.approx(round(rows["total"]["minriff_s"] / clip.CLIP_S, 3), abs=1e-3)
    assert out["peak_rss_mb"] > 0 and out["preset"].startswith(preset)
    assert "LoRA" in out["weights"] and "no baseline" in out["diffusers"]
    if preset == "fast":
        assert "decoder=taesd" in out["preset"] and "cache_interval=2" in out["preset"]


_options = clip.presets.options


def test_bench_clip_table_and_flag_checks(capsys, monkeypatch):
    monkeypatch.setattr(clip, "torch_or_none", lambda: None)
    monkeypatch.setattr(clip.presets, "options", lambda name: {**_options(name), "steps": 1})
    assert main(["bench", "clip", "--quick", "--preset", "fast", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("text", "denoise", "decode", "audio", "total", "real_time_factor", "peak_rss_mb"):
        assert word in out
    assert main(["bench", "unet", "--preset", "fast"]) == 2
    assert "--preset has no effect on `bench unet`" in capsys.readouterr().err
    assert main(["bench", "clip", "--rounds", "0"]) == 2
