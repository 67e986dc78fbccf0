"""`minriff batch`: many clips from a job file, in this process, in N local processes, or on a Ray
cluster. Pipeline level: it uses `Riffusion` and knows nothing of the CLI.

    jobs = read_jobs("jobs.jsonl")                     # every line checked first (jobs.py)
    summary = run_batch(jobs, "out/", weights="tiny.safetensors", mode="local", workers=2)

Modules: jobs.py (the job file and the KINDS table), work.py (one job on a loaded model: the files and
the record), manifest.py (OUTDIR/manifest.jsonl, resume), local.py (sequential and spawned processes),
ray_pool.py (Ray Core actors), run.py (the driver: skip finished jobs, run the rest, append records,
progress)."""
from minriff.batch.jobs import KINDS, Job, parse_lines, read_jobs, seed_for
from minriff.batch.run import Summary, default_workers, run_batch

__all__ = ["KINDS", "Job", "Summary", "default_workers", "parse_lines", "read_jobs", "run_batch", "seed_for"]
