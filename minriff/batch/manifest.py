"""`OUTDIR/manifest.jsonl`: one JSON line per finished attempt (id, kind, seed, params, image, method,
worker, status ok|error, error, timings, seconds), appended by the driver only.

Each record is one `write` of a whole line on an O_APPEND descriptor, then fsync'ed, and written only
after the job's files were renamed into place: a line means its files are complete. A process killed
mid-write can leave at most a cut last line, which `read` ignores (and `append` starts a fresh line
after). The last record of an id wins."""
from __future__ import annotations

import json
import os
from pathlib import Path

NAME = "manifest.jsonl"


def path_in(outdir) -> Path:
    return Path(outdir) / NAME


def read(outdir) -> dict[str, dict]:
    """id -> its last complete record (missing file: empty)."""
    records = {}
    try:
        data = path_in(outdir).read_bytes()
    except FileNotFoundError:
        return records
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut by a kill; its job is simply run again
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            records[rec["id"]] = rec
    return records


def finished(job, record: dict | None, outdir) -> bool:
    """The job ran to the end with the same parameters and its files are there."""
    if not record or record.get("status") != "ok":
        return False
    same = {k: record.get(k) for k in job.key()} == json.loads(json.dumps(job.key()))
    files = [f"{job.id}.wav"] + ([f"{job.id}.png"] if job.image else [])
    return same and all((Path(outdir) / f).is_file() for f in files)


class Writer:
    def __init__(self, outdir):
        self.path = path_in(outdir)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(self.fd).st_size
        if size:  # a cut last line (killed mid-write) gets its own line ended, so the next record parses
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self.fd, b"\n")

    def append(self, record: dict) -> None:
        os.write(self.fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
