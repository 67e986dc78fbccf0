"""`minriff bench batch`: the batch runner's overheads with the tiny model. The same small jobs run
sequentially in this process, with --workers 2 (spawned processes) and, when Ray is installed, on a
local Ray instance with 2 actors; each mode's wall time includes its start-up (processes, Ray, loading
the model), and jobs per second are reported with the ratio to the sequential run of this same run."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from minriff.batch import parse_lines, run_batch


def _jobs(n: int, steps: int):
    return parse_lines([json.dumps({"id": f"j{i}", "kind": "generate", "prompt": f"bench {i}", "steps": steps,
                                    "duration_s": 0.5}) for i in range(n)])


def run(args) -> int:
    from minriff.cli import main as cli

    n = 4 if args.quick else 12
    with tempfile.TemporaryDirectory(prefix="minriff-bench-batch-") as tmp:
        weights = Path(tmp) / "tiny.safetensors"
        cli(["init-random", "--config", "tiny", "-o", str(weights)])
        rows = []
        modes = [("sequential", {}), ("--workers 2", {"mode": "local", "workers": 2})]
        try:
            import ray  # noqa: F401

            modes.append(("--ray, 2 actors", {"mode": "ray", "workers": 2, "ray_num_cpus": 2}))
        except ImportError:
            rows.append(("--ray, 2 actors", None, "ray not installed (pip install 'minriff[ray]')"))
        for name, kw in modes:
            t0 = time.perf_counter()
            summary = run_batch(_jobs(n, 2), Path(tmp) / name.replace(" ", "_"), weights=str(weights),
                                backend=args.backend, quiet=True, **({"mode": "sequential"} | kw))
            secs = time.perf_counter() - t0
            rows.append((name, n / secs, f"{summary.ok}/{n} ok, {secs:.1f} s"))
        _shutdown_ray()
    base = rows[0][1]
    if args.json:
        print(json.dumps([{"mode": m, "jobs_per_s": r, "vs_sequential": r / base if r else None, "note": note}
                          for m, r, note in rows]))
        return 0
    print(f"batch of {n} tiny-model jobs (2 steps, 0.5 s clips), start-up included")
    print(f"{'mode':<18}{'jobs/s':>8}{'x sequential':>14}  note")
    for m, r, note in rows:
        print(f"{m:<18}{r if r else float('nan'):>8.2f}{(r / base) if r else float('nan'):>14.2f}  {note}")
    return 0


def _shutdown_ray():
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()
