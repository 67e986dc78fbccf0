"""`minriff bench ops --backend cuda` runs: CUDA-event timings on a GPU host; here it says that
timings need a GPU and labels the emulator run it does instead."""
from __future__ import annotations

import json
import shutil

import pytest

from minriff.cli import main
from minriff.kernels.cuda import loader


@pytest.mark.skipif(shutil.which("g++") is None and not loader.gpu_available(), reason="needs a GPU or g++")
def test_bench_ops_cuda_reports_every_op(capsys):
    assert main(["bench", "ops", "--backend", "cuda", "--json", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    ops = [r["op"] for r in report["rows"]]
    assert any(o.startswith("attention") for o in ops) and any(o.startswith("lincomb") for o in ops)
    assert all(r["ms"] > 0 for r in report["rows"])
    if loader.gpu_available():
        assert "CUDA-event" in report["title"]
    else:
        assert "timings need a GPU" in out and "EMULATOR" in report["title"]
