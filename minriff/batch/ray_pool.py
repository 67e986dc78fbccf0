"""Jobs on a Ray cluster: Ray Core actors, each loading the model once.

Why actors (and not Ray Data `map_batches` with an actor class): a job is seconds to minutes of work
and makes files, not rows; the driver needs each job's record as soon as it ends (the manifest is the
resume point) and must decide per job what a failure means (a job's own error is recorded and not
retried, a lost worker is retried). A queue of jobs fed to idle actors gives exactly that in a page,
with Ray doing placement, restarts and transport; Ray Data would add a streaming executor, block
batching and a dataset layer around one call per job.

Weights reach the actors by path: a converted file is memory-mapped (`Riffusion.load`), so on a node
every actor shares the page cache and nothing crosses the network once per actor; the object store
would hold a second copy per node (2.1 GB at full size) and need each actor to deserialize it. So the
path must be on storage every node sees (NFS, a shared volume, or the same file copied to the same
path on each node).

Each actor gets `num_cpus=threads` and, before its process imports NumPy, the Numba/BLAS thread
variables for that count (`runtime_env={"env_vars": ...}`), so actors on one node do not fight over
cores. A lost actor (killed, out of memory, its node gone) is restarted by Ray (`max_restarts`, on
another node if its node is gone) and the job it was running is retried there (`max_task_retries`);
an actor whose restarts are used up is dropped and its job goes back on the queue for the other
actors, at most `MAX_ATTEMPTS` times."""
from __future__ import annotations

import collections

from minriff.batch.work import load_model, run_job, thread_env, worker_name
from minriff.errors import InputError

MAX_ATTEMPTS = 3
MAX_RESTARTS = 4


class BatchWorker:  # made a Ray actor class by `actor_class()` (ray is an optional import)
    def __init__(self, weights, backend: str, threads: int, loras=()):
        import numba

        numba.set_num_threads(threads)
        self.riff = load_model(weights, backend, loras)
        import ray

        self.name = worker_name("ray-" + ray.get_runtime_context().get_actor_id()[:8])

    def run(self, job, outdir: str) -> dict:
        return run_job(self.riff, job, outdir, self.name)

    def pid(self) -> int:
        import os

        return os.getpid()


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'minriff[ray]'") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None):
    """Join the cluster at `address` ('auto': the one `ray start` made on this node), else start a local one."""
    ray = import_ray()
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=False)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    return ray


def start_actors(ray, weights, backend: str, n: int, threads: int, loras=()) -> list:
    cls = ray.remote(BatchWorker)
    return [cls.options(num_cpus=threads, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                        runtime_env={"env_vars": thread_env(threads)}).remote(weights, backend, threads, tuple(loras))
            for _ in range(n)]


def default_actors(ray, threads: int) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)


def actors_pool(jobs, outdir, actors, ray):
    """Records in completion order (module docstring). A job whose actor is killed is retried by Ray
    on the restarted actor (max_task_retries); an actor that is gone for good (restarts used up) is
    dropped and its job goes back on the queue for the others."""
    from ray.exceptions import RayActorError

    from minriff.batch.local import _lost

    queue = collections.deque(jobs)
    attempts = collections.Counter()
    idle = list(actors)
    running = {}  # object ref -> (job, actor)
    while queue or running:
        while idle and queue:
            actor, job = idle.pop(0), queue.popleft()
            running[actor.run.remote(job, str(outdir))] = (job, actor)
        if not running:  # every actor is gone
            while queue:
                job = queue.popleft()
                yield _lost(job, "every Ray actor died", attempts[job.id])
            return
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            job, actor = running.pop(ref)
            try:
                record = ray.get(ref)
            except RayActorError as e:
                attempts[job.id] += 1
                if attempts[job.id] < MAX_ATTEMPTS:
                    queue.appendleft(job)
                else:
                    yield _lost(job, f"its Ray actor died ({type(e).__name__})", attempts[job.id])
                continue  # the actor is dead for good: not given more work
            idle.append(actor)
            yield record
