"""`minriff batch --ray` on one local Ray instance (2 CPUs, 2 actors, shared by the module): the
sequential run's bytes; an actor killed mid-batch (`ray.kill`) -> restarted, its job retried, manifest complete.
Needs the `ray` extra (pip install -e '.[ray]'; .ci/run installs it)."""
from __future__ import annotations

import threading
import time

import pytest

from minriff.batch import read_jobs, run_batch

from .conftest import JOBS, manifest_lines, outputs, write_jobs

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_two_actors_give_the_sequential_bytes(local_ray, sequential_run, tiny, tmp_path):
    jobs = read_jobs(write_jobs(tmp_path / "jobs.jsonl"))
    summary = run_batch(jobs, tmp_path / "out", weights=tiny, mode="ray", workers=2, quiet=True)
    assert (summary.ok, summary.failed) == (len(JOBS), 0)
    assert outputs(tmp_path / "out") == sequential_run
    records = manifest_lines(tmp_path / "out")
    assert sorted(r["id"] for r in records) == sorted(j["id"] for j in JOBS)
    assert {r["worker"].split(":ray-")[0] != r["worker"] for r in records} == {True}  # ran in Ray actors
    assert len({r["worker"] for r in records}) == 2


def test_an_actor_killed_mid_job_is_retried_and_nothing_is_lost(local_ray, sequential_run, tiny, tmp_path):
    from minriff.batch import manifest, ray_pool

    jobs = read_jobs(write_jobs(tmp_path / "jobs.jsonl"))
    out = tmp_path / "out"
    out.mkdir()
    actors = ray_pool.start_actors(ray, tiny, "cpu", 2, 1)
    pids = ray.get([a.pid.remote() for a in actors])  # both loaded: the kill lands in a job, not in loading
    victim = actors[0]
    killed = threading.Event()

    def kill_when_busy():
        time.sleep(0.3)  # the first jobs were just handed out; a tiny job takes longer than this here
        ray.kill(victim, no_restart=False)  # Ray restarts it (max_restarts); its job goes back on the queue
        killed.set()

    threading.Thread(target=kill_when_busy, daemon=True).start()
    with manifest.Writer(out) as w:
        for rec in ray_pool.actors_pool(jobs, out, actors, ray):
            w.append(rec)
    assert killed.is_set()
    records = manifest_lines(out)
    assert sorted(r["id"] for r in records) == sorted(j["id"] for j in JOBS)  # complete, each once
    assert all(r["status"] == "ok" for r in records)
    restarted = {r["worker"] for r in records if int(r["worker"].split(":")[1]) not in pids}
    assert restarted, records  # a job ran in the restarted actor (a new process): the killed job, retried
    assert outputs(out) == sequential_run
    for a in actors:
        ray.kill(a)
