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


def test_bench_vae_taesd_quick_times_the_full_vae_too(capsys, monkeypatch):
    from minriff import configs
    from minriff.bench import unet as bench_models
    from minriff.models.init import init_random
    from minriff.models.vae import AutoencoderKL

    real = bench_models._minriff_model

    def tiny_full_vae(kind, weights_path, dtype):  # the full VAE only as the second row: tiny, to stay fast
        if kind != "vae":
            return real(kind, weights_path, dtype)
        return init_random(AutoencoderKL(configs.TINY.vae), dtype=dtype), configs.TINY.vae, "tiny"

    monkeypatch.setattr(bench_models, "_minriff_model", tiny_full_vae)
    assert main(["bench", "vae", "--decoder", "taesd", "--quick", "--json", "--repeat", "3", "--profile"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    (row,) = report["rows"]
    assert report["finite"] and report["title"].startswith("TAESD decode to 256x256 px")
    assert report["parameters_m"] == 2.4 and row["minriff_s"] > 0 and row["full_vae_s"] > 0
    assert row["full_vae_over_taesd"] == row["full_vae_s"] / row["minriff_s"]
    by_op = {r["op"]: r for r in report["profile"]["by_op"]}
    assert by_op["conv2d"]["calls"] == 35 and by_op["relu"]["calls"] == 31  # TAESD's decoder, ReLUs fused in
    assert by_op["upsample_nearest2x"]["calls"] == 3 and "attention" not in by_op
    if row["torch_s"] is not None:
        assert row["max_rel_diff_vs_torch"] < 1e-4


def test_bench_unet_loop_keeps_the_transforms(capsys):
    """--loop: the step runs with CFG's equal halves and the weight cache filled by the first call."""
    assert main(["bench", "unet", "--quick", "--json", "--repeat", "3", "--loop", "--no-torch"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert report["finite"]
    kept = float(report["loop"].split("kept: ")[1].split(" GiB")[0])
    assert kept > 1.0  # SD 1.5's transformed conv weights (4.1 GiB when the budget allows)


def test_loop_flag_is_for_a_plain_unet_step(capsys):
    assert main(["bench", "vae", "--loop"]) == 2
    assert "--loop has no effect on `bench vae`" in capsys.readouterr().err
    assert main(["bench", "unet", "--loop", "--cache-branch", "1"]) == 2
    assert "not with --cache-branch" in capsys.readouterr().err
