"""Where jobs run on this machine: in this process (`sequential`) or in N spawned processes
(`processes`), each loading the model once (an initializer) with cores / N threads for Numba and BLAS.

Both are generators of manifest records in completion order. The thread variables are put in the
environment the children start with (spawn copies it at start), so they are in place before a child
imports NumPy. A worker process that dies (killed, out of memory) breaks the pool: the jobs it had
not finished are run again in a fresh pool, at most `MAX_ATTEMPTS` times each."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from minriff.batch.work import load_model, run_job, thread_env, worker_name

MAX_ATTEMPTS = 3
_riff = None  # the model, once per worker process


def sequential(jobs, outdir, weights, backend="cpu", loras=()):
    riff = load_model(weights, backend, loras)
    for job in jobs:
        yield run_job(riff, job, outdir, worker_name("main"))


def _init(weights, backend, loras=()):
    global _riff
    _riff = load_model(weights, backend, loras)


def _work(job, outdir):
    return run_job(_riff, job, outdir)


class _env:
    """Set environment variables for the duration of a with block (children inherit them)."""

    def __init__(self, values: dict):
        self.values, self.saved = values, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def processes(jobs, outdir, weights, backend="cpu", workers=2, threads=None, loras=()):
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    todo = list(jobs)
    attempts = dict.fromkeys((j.id for j in todo), 0)
    ctx = multiprocessing.get_context("spawn")
    while todo:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_init,
                                   initargs=(weights, backend, tuple(loras)))
        try:
            with _env(thread_env(threads)):  # processes start at submit (spawn starts them on demand)
                pending = {pool.submit(_work, job, str(outdir)): job for job in todo}
            todo = []
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        attempts[job.id] += 1
                        if attempts[job.id] < MAX_ATTEMPTS:
                            todo.append(job)
                        else:
                            yield _lost(job, "its worker process died", attempts[job.id])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _lost(job, why: str, attempts: int) -> dict:
    return {"id": job.id, "kind": job.kind, "seed": job.seed, "params": job.params, "image": job.image,
            "method": job.method, "worker": None, "status": "error",
            "error": f"{why} on each of {attempts} attempts"}
