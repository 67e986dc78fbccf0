"""The job bar: done/total, failures, clips per minute and an ETA from the rate so far."""
from __future__ import annotations

import io

from minriff import progress


def test_job_bar_shows_rate_and_eta(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    out = io.StringIO()
    bar = progress.JobProgress(10, stream=out)
    assert "ETA ?" in bar._line()
    now[0] += 60.0
    bar.job_done(True)
    bar.job_done(False)
    line = bar._line()  # 2 jobs in 60 s: 2 clips/min, 8 left -> 4 minutes
    assert "2/10" in line and "1 failed" in line and "2.0 clips/min" in line and "ETA 4m00s" in line
    for _ in range(8):
        bar.job_done(True)
    assert out.getvalue().endswith("\n") and "10/10" in out.getvalue()  # the finished line, even in a pipe
