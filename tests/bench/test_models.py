"""`minriff bench vae` (and, through the same code, `bench unet`) runs end to end on full-size
random weights at --quick size: a finite output, a timing, the op profile with the VAE's convs in
it. Torch is compared only when installed (the oracle stage); timings are never asserted."""
from __future__ import annotations

import json

from minriff.cli import main


def test_bench_vae_quick_with_profile(capsys):
    assert main(["bench", "vae", "--quick", "--json", "--repeat", "3", "--profile"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    (row,) = report["rows"]
    assert report["finite"] and report["title"].startswith("VAE decode to 256x256 px")
    assert row["batch"] == 1 and row["latent"] == "32x32" and row["minriff_s"] > 0
    by_op = {r["op"]: r for r in report["profile"]["by_op"]}
    assert by_op["conv2d"]["calls"] == 36 and by_op["attention"]["calls"] == 1  # SD's decoder
    if row["torch_s"] is not None:
        assert row["max_rel_diff_vs_torch"] < 1e-4
