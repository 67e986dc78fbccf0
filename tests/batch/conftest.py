"""Shared by the batch tests: a tiny random model and a small job file whose outputs are compared."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Three kinds, a png, a seedless job (seed from the id). Tiny model, 1-2 steps, short clips: each job
# is short (the machine is shared), and still long enough for a kill to land while jobs run.
JOBS = [
    {"id": "gen-a", "kind": "generate", "prompt": "jazz piano", "steps": 2, "seed": 1, "duration_s": 0.5,
     "image": True},
    {"id": "gen-b", "kind": "generate", "prompt": "techno", "steps": 1, "duration_s": 0.3},
    {"id": "morph", "kind": "interpolate", "prompt_a": "rock", "prompt_b": "folk", "alpha": 0.4, "steps": 1,
     "duration_s": 0.3, "seed_b": 9},
    {"id": "gen-c", "kind": "generate", "prompt": "(violin:1.3) solo", "steps": 1, "duration_s": 0.3, "seed": 3},
    {"id": "gen-d", "kind": "generate", "prompt": "drums", "steps": 1, "duration_s": 0.3, "guidance": 1.0},
]


def write_jobs(path: Path, jobs=JOBS) -> Path:
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return path


def outputs(outdir: Path) -> dict[str, bytes]:
    """Every output file's bytes (not the manifest, no temporaries)."""
    return {p.name: p.read_bytes() for p in sorted(Path(outdir).iterdir())
            if p.suffix in (".wav", ".png") and not p.name.startswith(".")}


def manifest_lines(outdir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(outdir) / "manifest.jsonl").read_text().splitlines() if line]


@pytest.fixture(scope="session")
def sequential_run(tiny, tmp_path_factory):
    """The reference: the jobs run one after another in this process."""
    from minriff.batch import read_jobs, run_batch

    root = tmp_path_factory.mktemp("sequential")
    jobs = read_jobs(write_jobs(root / "jobs.jsonl"))
    summary = run_batch(jobs, root / "out", weights=tiny, mode="sequential", quiet=True)
    assert summary.ok == len(JOBS) and summary.failed == 0
    return outputs(root / "out")


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")])
    return env
