"""`minriff bench serve --quick` runs the real app with one listener and reports time to first audio
and clips per minute (timings are never asserted, only that they were measured)."""
from __future__ import annotations

import json

import pytest

from minriff.cli import main

pytestmark = pytest.mark.usefixtures("serial_numba")


def test_bench_serve_quick(capsys):
    assert main(["bench", "serve", "--quick", "--json", "--setting", "fast", "--setting", "quality"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert [r["setting"] for r in report["rows"]] == ["fast", "quality"]
    for row in report["rows"]:
        assert row["clips"] == 2 and row["clip_s"] == 0.64
        assert row["first_audio_s"] > 0 and row["clips_per_min"] > 0
        assert row["realtime_factor"] == pytest.approx(60 / row["clips_per_min"] / 0.64, rel=0.05)
    assert report["weights"] == "random tiny" and report["peak_rss_mb"] > 0
