"""`minriff batch` in this process and with --workers 2: the same bytes as a sequential run, a
manifest line per job, failures recorded while the batch goes on, resume after the driver is
interrupted (SIGINT, SIGKILL) losing nothing that finished."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from minriff.batch import read_jobs, run_batch
from minriff.cli import main
from support import FIXTURES

from .conftest import JOBS, child_env, manifest_lines, outputs, write_jobs


def test_sequential_run_writes_every_file_and_a_complete_manifest(sequential_run, tiny, tmp_path, capsys):
    names = {f"{j['id']}.wav" for j in JOBS} | {"gen-a.png"}
    assert set(sequential_run) == names
    # the CLI, again in this process (--workers 0), gives the same bytes, then a rerun skips everything
    jobs = write_jobs(tmp_path / "jobs.jsonl")
    assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), "--workers", "0", "--weights", tiny]) == 0
    assert outputs(tmp_path / "out") == sequential_run
    records = manifest_lines(tmp_path / "out")
    assert sorted(r["id"] for r in records) == sorted(j["id"] for j in JOBS)
    for r in records:
        assert r["status"] == "ok" and r["error"] is None and r["worker"] and r["timings"]["spectrogram_s"] >= 0
        assert r["worker_peak_rss_mb"] > 20  # a process holding numpy and the tiny model
    gen_b = next(r for r in records if r["id"] == "gen-b")
    from minriff.batch import seed_for

    assert gen_b["seed"] == seed_for("gen-b") and gen_b["params"]["prompt"] == "techno"
    capsys.readouterr()
    assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), "--workers", "0", "--weights", tiny]) == 0
    assert f"{len(JOBS)} of {len(JOBS)} jobs already finished" in capsys.readouterr().err
    assert len(manifest_lines(tmp_path / "out")) == len(JOBS)  # nothing ran again


def test_a_failing_job_is_recorded_and_the_batch_goes_on(tiny, tmp_path, capsys):
    from PIL import Image

    init = tmp_path / "init.png"
    Image.new("L", (64, 512), 128).save(init)
    jobs = [JOBS[1], {"id": "broken", "kind": "generate", "prompt": "x", "steps": 1, "init_image": str(init)},
            JOBS[3]]
    parsed = read_jobs(write_jobs(tmp_path / "jobs.jsonl", jobs))
    init.write_bytes(b"not a png any more")  # valid when checked, broken when the job runs
    out = tmp_path / "out"
    summary = run_batch(parsed, out, weights=tiny, mode="sequential", quiet=True)
    assert (summary.ok, summary.failed, summary.failed_ids) == (2, 1, ["broken"])
    rec = {r["id"]: r for r in manifest_lines(out)}
    assert rec["broken"]["status"] == "error" and "init image" in rec["broken"]["error"]
    assert not (out / "broken.wav").exists()
    assert {"gen-b.wav", "gen-c.wav"} <= set(outputs(out))
    # the CLI: exit 1, and a rerun retries only the failed job
    capsys.readouterr()
    assert main(["batch", str(tmp_path / "jobs.jsonl"), "-o", str(out), "--workers", "0", "--weights", tiny,
                 "--quiet"]) == 1
    assert len(manifest_lines(out)) == 4


def test_workers_2_gives_the_sequential_bytes(sequential_run, tiny, tmp_path, capsys):
    jobs = write_jobs(tmp_path / "jobs.jsonl")
    assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), "--workers", "2", "--weights", tiny]) == 0
    assert outputs(tmp_path / "out") == sequential_run
    records = manifest_lines(tmp_path / "out")
    assert len(records) == len(JOBS) and all(r["status"] == "ok" for r in records)
    assert len({r["worker"] for r in records}) == 2  # both processes worked


def test_default_workers_follow_cores_and_memory(tiny):
    from minriff.batch import default_workers

    gb = 1 << 30
    assert default_workers(tiny, cores=8, memory=64 * gb)[0] == 8
    assert default_workers(tiny, cores=8, memory=gb // 2)[0] == 1
    n, why = default_workers(str(FIXTURES / "absent"), cores=16, memory=24 * gb)  # full size assumed: ~5.8 GB
    assert n == 4 and "16 cores" in why and "24.0 GB" in why


@pytest.mark.parametrize("how, workers", [(signal.SIGKILL, "0"), (signal.SIGINT, "2")])
def test_resume_after_the_driver_is_interrupted(how, workers, sequential_run, tiny, tmp_path):
    # Padding jobs after the compared ones keep the batch running well after the first record, so the
    # signal lands mid-batch even when a loaded machine bunches the first jobs' completions together.
    padding = [{"id": f"pad-{i}", "kind": "generate", "prompt": "pad", "steps": 4, "seed": i, "duration_s": 0.5}
               for i in range(10)]
    jobs, out = write_jobs(tmp_path / "jobs.jsonl", JOBS + padding), tmp_path / "out"
    cmd = [sys.executable, "-m", "minriff", "batch", str(jobs), "-o", str(out), "--workers", workers,
           "--weights", tiny, "--quiet"]
    child = subprocess.Popen(cmd, env=child_env(), stderr=subprocess.PIPE, text=True)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:  # until the first job is in the manifest
        if manifest.exists() and manifest.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert child.poll() is None, f"the batch ended before it could be interrupted: {child.stderr.read()}"
    child.send_signal(how)
    err = child.communicate(timeout=120)[1]
    assert child.returncode != 0, err
    before = manifest_lines(out)
    assert 1 <= len(before) < len(JOBS) + len(padding)
    assert not [p for p in out.iterdir() if p.name.endswith(".minriff-tmp") and how == signal.SIGINT]
    rerun = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    after = manifest_lines(out)
    assert sorted(r["id"] for r in after) == sorted(j["id"] for j in JOBS + padding)  # each once: none twice
    assert [r for r in after[: len(before)]] == before
    assert {k: v for k, v in outputs(out).items() if not k.startswith("pad-")} == sequential_run


def test_preset_fast_reaches_every_job(tiny, tmp_path, capsys):
    """--preset fast in the manifest's parameters, a job's own value kept, and the full VAE with a note
    when no TAESD file is found."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"id": "f1", "kind": "generate", "prompt": "jazz", "duration_s": 0.3, "seed": 1},
        {"id": "f2", "kind": "generate", "prompt": "rock", "duration_s": 0.3, "seed": 2, "steps": 2}])
    code = main(["batch", str(jobs), "-o", str(tmp_path / "out"), "--workers", "0", "--weights", tiny,
                 "--preset", "fast"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "no TAESD weights found" in err
    records = {r["id"]: r for r in manifest_lines(tmp_path / "out")}
    assert records["f1"]["params"]["scheduler"] == "lcm" and records["f1"]["params"]["steps"] == 4
    assert records["f1"]["params"]["guidance"] == 1.0 and records["f1"]["params"]["cache_interval"] == 2
    assert records["f2"]["params"]["steps"] == 2 and "decoder" not in records["f2"]["params"]


def test_lora_is_merged_in_every_worker(tiny, tmp_path, capsys):
    """--lora FILE:W: each job's image is the API's with that LoRA merged, in this process and in
    --workers 2 processes; a missing LoRA file is refused before any work."""
    import numpy as np
    from PIL import Image

    from minriff import Riffusion

    lora = FIXTURES / "lora" / "kohya.safetensors"
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"id": "l1", "kind": "generate", "prompt": "jazz", "duration_s": 0.3, "seed": 1, "steps": 2, "image": True},
        {"id": "l2", "kind": "generate", "prompt": "rock", "duration_s": 0.3, "seed": 2, "steps": 2,
         "image": True}])
    riff = Riffusion.load(tiny, quiet=True)
    plain = riff.generate_spectrogram("jazz", duration_s=0.3, seed=1, steps=2)
    riff.load_lora(lora, weight=0.8)
    want = {"l1": riff.generate_spectrogram("jazz", duration_s=0.3, seed=1, steps=2),
            "l2": riff.generate_spectrogram("rock", duration_s=0.3, seed=2, steps=2)}
    assert not np.array_equal(plain, want["l1"])  # the LoRA changes the image, so the check can fail
    for workers in ("0", "2"):
        out = tmp_path / f"out{workers}"
        code = main(["batch", str(jobs), "-o", str(out), "--workers", workers, "--weights", tiny,
                     "--lora", f"{lora}:0.8", "--quiet"])
        assert code == 0, capsys.readouterr().err
        for job_id, image in want.items():
            assert np.array_equal(np.asarray(Image.open(out / f"{job_id}.png").convert("RGB")), image), workers
    capsys.readouterr()
    assert main(["batch", str(jobs), "-o", str(tmp_path / "x"), "--weights", tiny, "--lora", "nope.safetensors"]) == 2
    assert "LoRA file nope.safetensors not found" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    assert main(["batch", str(jobs), "-o", str(tmp_path / "y"), "--weights", tiny, "--lora", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.safetensors" in err and "Traceback" not in err and not (tmp_path / "y" / "manifest.jsonl").exists()
