"""Which kernel sources were ever checked on a real GPU, by sha256 (gpu_verified.json).

The emulator and nvcc prove a lot but not everything (see README.md), so the record says which
exact sources passed the cuda tests on CuPy with a GPU. The test suite warns about the rest.
On a GPU host, after changing a kernel:

    python -m minriff.kernels.cuda.gpu_record --record    # runs the cuda tests on the GPU, then records
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from minriff import atomic
from minriff.kernels.cuda import loader

RECORD = loader.HERE / "gpu_verified.json"


def sources() -> list[Path]:
    return (sorted(loader.HERE.glob("*.cu")) + sorted(loader.HERE.glob("*.h"))
            + sorted((loader.HERE / "tests").glob("*.cu")))


def _key(p: Path) -> str:
    return p.relative_to(loader.HERE).as_posix()


def load() -> dict:
    return json.loads(RECORD.read_text()) if RECORD.exists() else {}


def unverified() -> list[str]:
    """Sources whose current content never passed the cuda tests on a GPU."""
    rec = load()
    return [_key(p) for p in sources()
            if loader.source_sha256(p) not in {e["sha256"] for e in rec.get(_key(p), [])}]


def record(device: str) -> list[str]:
    rec = load()
    today = datetime.date.today().isoformat()
    added = []
    for p in sources():
        sha = loader.source_sha256(p)
        entries = rec.setdefault(_key(p), [])
        if sha not in {e["sha256"] for e in entries}:
            entries.append({"sha256": sha, "device": device, "date": today})
            added.append(_key(p))
    atomic.write_text(RECORD, json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return added


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true",
                    help="run the cuda tests on the GPU and record the sources on success")
    args = ap.parse_args(argv)
    if not args.record:
        print("\n".join(unverified()) or "every kernel source was checked on a GPU")
        return 0
    if not loader.gpu_available():
        print("no GPU (or MINRIFF_CUDA_EMULATE=1): nothing recorded", file=sys.stderr)
        return 2
    tests = Path(__file__).resolve().parents[2] / "tests"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", str(tests / "cuda" / "test_emulator.py"),
                        str(tests / "cuda" / "test_ops.py")])
    if r.returncode:
        print("cuda tests failed on the GPU: nothing recorded", file=sys.stderr)
        return 1
    import cupy
    device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print("recorded:", ", ".join(record(device)) or "nothing new")
    return 0


if __name__ == "__main__":
    sys.exit(main())
