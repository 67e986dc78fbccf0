"""The driver: skip what the manifest says is finished, run the rest in the chosen mode, append each
record to the manifest the moment it arrives (so Ctrl-C or a kill of the driver loses nothing that
finished), draw the progress bar. Outputs land in OUTDIR whatever the mode; only the driver writes the
manifest."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from minriff import atomic, sysinfo
from minriff.batch import local, manifest
from minriff.errors import InputError, OutputError
from minriff.progress import JobProgress

MODES = ("sequential", "local", "ray")
GB = 1 << 30


@dataclass
class Summary:
    total: int
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    failed_ids: list = field(default_factory=list)


def worker_memory(weights_file) -> int:
    """Bytes one worker needs: the fp16 file held as fp32 (x2) plus activations, from the measured
    full-size 5 s generate (2.1 GB file -> 5.8 GB peak RSS, README); 0.3 GB floor for tiny models."""
    try:
        size = os.path.getsize(weights_file)
    except (OSError, TypeError):
        size = 2_100_000_000  # unknown (found later by Riffusion.load): assume full size
    return int(0.3 * GB + 2.6 * size)


def available_memory() -> int:
    """Memory available now (sysinfo); 8 GB assumed where that cannot be read."""
    free = sysinfo.available_memory()
    return 8 * GB if free is None else free


def default_workers(weights_file, cores: int | None = None, memory: int | None = None) -> tuple[int, str]:
    """(N, why): one worker per core, fewer if their memory would not fit in what is available now."""
    cores = cores or os.cpu_count() or 1
    memory = available_memory() if memory is None else memory
    per = worker_memory(weights_file)
    n = max(1, min(cores, memory // per))
    why = (f"{n} worker{'s' if n > 1 else ''}: {cores} cores, {memory / GB:.1f} GB available, "
           f"~{per / GB:.1f} GB per worker")
    return n, why


def run_batch(jobs, outdir, weights=None, mode: str = "sequential", workers: int | None = None,
              ray_address: str | None = None, backend: str = "cpu", quiet: bool = False, say=None,
              ray_num_cpus: int | None = None, loras=()) -> Summary:
    """Run `jobs` (minriff.batch.read_jobs) into `outdir`, skipping those the manifest has finished.
    `loras`: (file, weight) pairs every worker merges into its model after loading `weights`."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    say = say or (lambda msg: None)
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the output folder {outdir}: {e.strerror}") from None
    atomic.check_target(outdir / manifest.NAME)
    done = manifest.read(outdir)
    todo = [j for j in jobs if not manifest.finished(j, done.get(j.id), outdir)]
    summary = Summary(len(jobs), skipped=len(jobs) - len(todo))
    if summary.skipped:
        say(f"{summary.skipped} of {len(jobs)} jobs already finished in {outdir}: skipped")
    if not todo:
        return summary
    records = _records(todo, outdir, weights, mode, workers, ray_address, backend, say, ray_num_cpus, tuple(loras))
    bar = JobProgress(len(todo), quiet=quiet)
    with manifest.Writer(outdir) as out:
        try:
            for rec in records:
                out.append(rec)
                ok = rec["status"] == "ok"
                summary.ok += ok
                if not ok:
                    summary.failed += 1
                    summary.failed_ids.append(rec["id"])
                    say(f"\njob {rec['id']} failed: {rec['error']}")
                bar.job_done(ok)
        finally:
            records.close()  # stops the pool; finished records are already in the manifest
            bar.close()
    return summary


def _records(todo, outdir, weights, mode, workers, ray_address, backend, say, ray_num_cpus, loras):
    if mode == "sequential":
        return local.sequential(todo, outdir, weights, backend, loras)
    if mode == "local":
        if workers is None:
            workers, why = default_workers(weights)
            say(why)
        return local.processes(todo, outdir, weights, backend, workers=workers, loras=loras)
    from minriff.batch import ray_pool

    ray = ray_pool.connect(ray_address, ray_num_cpus)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = workers or max(1, cpus)
    threads = max(1, cpus // n)
    say(f"Ray: {n} actor{'s' if n > 1 else ''} x {threads} CPU{'s' if threads > 1 else ''} "
        f"({cpus} CPUs in the cluster)")
    actors = ray_pool.start_actors(ray, weights, backend, n, threads, loras)
    return _ray_records(ray_pool.actors_pool(todo, outdir, actors, ray), ray, actors)


def _ray_records(records, ray, actors):
    try:
        yield from records
    finally:
        records.close()
        for a in actors:
            ray.kill(a)
