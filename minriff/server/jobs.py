"""One worker thread runs the work of every client on the one loaded model, fairly.

Why one at a time: minriff's kernels already spread one inference over all cores (Numba's parallel
loops, BLAS), so two inferences side by side would only split the same cores, double the
activations in memory and finish both later; and a `Riffusion` keeps per-call state (its text
cache, the current kernel backend) that is not meant to be shared between threads. So jobs queue,
and the worker takes them round-robin over owners: each stream listener is one owner, and HTTP
requests are owned by their client's address, so eight listeners get one clip each in turn and a
client firing requests cannot starve them. Within an owner, jobs run in order.

Bounded: at most `max_waiting` jobs wait (`submit` raises QueueFull, which the server answers 503).
A stream never has more than one job waiting or running, so listeners are bounded by their own
count. `cancel_owner` drops an owner's waiting jobs and asks its running job to stop: the job's
`check()` (called by the pipeline between denoising steps and by the audio stage between
Griffin-Lim iterations) raises Cancelled, so a disconnected listener frees the model within one step.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, InvalidStateError


class QueueFull(Exception):
    pass


class Cancelled(Exception):
    pass


def _settle(future: Future, result=None, error: BaseException | None = None) -> None:
    """Set a result unless the waiting side gave up first (an asyncio task cancelled it)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class Job:
    def __init__(self, owner: str, fn, kind: str = "http"):
        self.owner, self.fn, self.kind = owner, fn, kind
        self.future: Future = Future()
        self.cancelled = threading.Event()
        self.queued_at = time.monotonic()
        self.started_at: float | None = None

    def check(self, *_):
        """Raise Cancelled if the job was cancelled (usable as a progress or step callback)."""
        if self.cancelled.is_set():
            raise Cancelled(self.owner)


class FairQueue:
    """Round-robin over owners, FIFO within one; a single worker thread (`start`) runs the jobs."""

    def __init__(self, max_waiting: int = 16, threads: int | None = None):
        self.max_waiting = int(max_waiting)
        self.threads = threads  # Numba threads of the worker (its own setting: Numba's is per thread)
        self._lanes: OrderedDict[str, deque] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self.running: Job | None = None
        self.done = 0
        self.failed = 0
        self._thread: threading.Thread | None = None

    @property
    def waiting(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._lanes.values())

    def submit(self, job: Job, bounded: bool = True) -> Job:
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if bounded and sum(len(q) for q in self._lanes.values()) >= self.max_waiting:
                raise QueueFull(f"the queue is full ({self.max_waiting} jobs waiting); try again later")
            self._lanes.setdefault(job.owner, deque()).append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop one job: out of the queue if waiting, stopped at its next check if running."""
        job.cancelled.set()
        with self._cond:
            lane = self._lanes.get(job.owner)
            if lane and job in lane:
                lane.remove(job)
                if not lane:
                    del self._lanes[job.owner]
                _settle(job.future, error=Cancelled(job.owner))

    def cancel_owner(self, owner: str) -> int:
        """Drop every job of an owner; returns how many were waiting or running."""
        with self._cond:
            jobs = list(self._lanes.pop(owner, ()))
            running = self.running if self.running is not None and self.running.owner == owner else None
        for job in jobs:
            job.cancelled.set()
            _settle(job.future, error=Cancelled(owner))
        if running is not None:
            running.cancelled.set()
        return len(jobs) + (running is not None)

    def _take(self) -> Job | None:
        with self._cond:
            while not self._lanes and not self._closed:
                self._cond.wait()
            if not self._lanes:
                return None
            owner, lane = next(iter(self._lanes.items()))
            job = lane.popleft()
            del self._lanes[owner]
            if lane:
                self._lanes[owner] = lane  # to the back of the round
            self.running = job
            return job

    def _work(self):
        if self.threads:
            import numba

            numba.set_num_threads(self.threads)
        while True:
            job = self._take()
            if job is None:
                return
            job.started_at = time.monotonic()
            try:
                job.check()
                result = job.fn(job)
            except BaseException as e:  # every failure goes to the waiting client
                self.failed += not isinstance(e, Cancelled)
                _settle(job.future, error=e)
            else:
                self.done += 1
                _settle(job.future, result)
            finally:
                with self._cond:
                    self.running = None
                    self._cond.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="minriff-worker", daemon=True)
        self._thread.start()

    def close(self, cancel_running: bool = False, timeout: float | None = None) -> None:
        """Stop taking jobs: waiting ones are cancelled; the running one finishes (or is cancelled
        with cancel_running); waits up to `timeout` s for the worker to end."""
        with self._cond:
            self._closed = True
            lanes, self._lanes = list(self._lanes.values()), OrderedDict()
            running = self.running
            self._cond.notify_all()
        for lane in lanes:
            for job in lane:
                job.cancelled.set()
                _settle(job.future, error=Cancelled("shutdown"))
        if cancel_running and running is not None:
            running.cancelled.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> dict:
        with self._cond:
            lanes = {owner: len(q) for owner, q in self._lanes.items()}
            running = self.running
        now = time.monotonic()
        return {"waiting": sum(lanes.values()), "max_waiting": self.max_waiting, "owners_waiting": lanes,
                "running": None if running is None else {
                    "owner": running.owner, "kind": running.kind,
                    "seconds": round(now - (running.started_at or now), 2)},
                "done": self.done, "failed": self.failed}
