"""minriff.server.jobs.FairQueue: one worker, round-robin over owners, bounded, cancellable."""
from __future__ import annotations

import threading

import pytest

from minriff.server.jobs import Cancelled, FairQueue, Job, QueueFull


def blocker():
    """A job that holds the worker until released (so the queue can be filled deterministically)."""
    started, release = threading.Event(), threading.Event()

    def run(job):
        started.set()
        while not release.wait(0.01):
            job.check()
        return "blocker"
    return run, started, release


def test_round_robin_over_owners_fifo_within_one():
    q = FairQueue(max_waiting=20)
    run, started, release = blocker()
    order = []
    q.start()
    q.submit(Job("x", run))
    assert started.wait(10)
    jobs = [q.submit(Job(owner, lambda job, o=owner, i=i: order.append((o, i)))) for owner, i in
            [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("b", 2)]]
    release.set()
    for j in jobs:
        j.future.result(10)
    assert order == [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2), ("a", 3)]
    q.close(timeout=10)


def test_bounded_cancellable_and_closed():
    q = FairQueue(max_waiting=2)
    run, started, release = blocker()
    q.start()
    running = q.submit(Job("s1", run, kind="stream"))
    assert started.wait(10)
    a = q.submit(Job("h", lambda job: 1))
    b = q.submit(Job("s2", lambda job: 2))
    with pytest.raises(QueueFull, match="2 jobs waiting"):
        q.submit(Job("h", lambda job: 3))
    q.submit(Job("s3", lambda job: 4), bounded=False)  # a stream's one job is never refused
    assert q.snapshot()["waiting"] == 3 and q.snapshot()["running"]["owner"] == "s1"
    q.cancel(a)
    with pytest.raises(Cancelled):
        a.future.result(1)
    assert q.cancel_owner("s1") == 1  # the running job stops at its next check
    with pytest.raises(Cancelled):
        running.future.result(10)
    assert b.future.result(10) == 2
    q.close(timeout=10)
    with pytest.raises(QueueFull, match="shutting down"):
        q.submit(Job("h", lambda job: 5))
    snap = q.snapshot()
    assert snap["running"] is None and snap["waiting"] == 0 and snap["failed"] == 0


def test_a_failing_job_reaches_its_waiter_and_the_worker_goes_on():
    q = FairQueue()
    q.start()
    bad = q.submit(Job("a", lambda job: 1 / 0))
    with pytest.raises(ZeroDivisionError):
        bad.future.result(10)
    gave_up = Job("b", lambda job: "late")
    gave_up.future.cancel()  # the waiting side went away first (an asyncio task cancelled)
    q.submit(gave_up)
    assert q.submit(Job("c", lambda job: "ok")).future.result(10) == "ok"
    assert q.snapshot()["failed"] == 1
    q.close(timeout=10)


def test_close_cancels_waiting_and_lets_the_running_job_finish():
    q = FairQueue()
    run, started, release = blocker()
    q.start()
    running = q.submit(Job("a", run))
    assert started.wait(10)
    waiting = q.submit(Job("b", lambda job: 1))
    closer = threading.Thread(target=q.close, kwargs={"timeout": 10})
    closer.start()
    with pytest.raises(Cancelled):
        waiting.future.result(10)
    release.set()
    assert running.future.result(10) == "blocker"
    closer.join(10)
    assert not closer.is_alive()
