"""One job on a loaded model, the same code in every mode (sequential, local processes, Ray actors):
the spectrogram, the audio, the files written atomically (`OUTDIR/<id>.wav`, `<id>.png`). Returns the
manifest record; a MinriffError (or any other exception) becomes a record with status "error", so the
batch goes on.

`thread_env(n)`: the environment that gives a worker n threads for Numba and every BLAS; it must be in
the worker's environment before it imports NumPy (BLAS reads it once, at load)."""
from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def thread_env(n: int) -> dict[str, str]:
    return {k: str(max(1, int(n))) for k in THREAD_VARS}


def worker_name(tag: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{tag}" if tag else "")


def load_model(weights, backend: str = "cpu", loras=()):
    """The worker's model: the weights file, with each (LoRA file, weight) of `loras` merged."""
    from minriff.pipeline import Riffusion

    riff = Riffusion.load(weights, backend=backend, quiet=True)
    for path, weight in loras:
        riff.load_lora(path, weight=weight)
    return riff


def run_job(riff, job, outdir, worker: str = "") -> dict:
    """Make one job's files; the record for the manifest (status ok or error, never raises for a job's fault)."""
    from minriff.errors import MinriffError

    record = {"id": job.id, "kind": job.kind, "seed": job.seed, "params": job.params, "image": job.image,
              "method": job.method, "worker": worker or worker_name()}
    t0 = time.perf_counter()
    try:
        timings = _make(riff, job, Path(outdir))
        record.update(status="ok", error=None, timings=timings)
    except MinriffError as e:
        record.update(status="error", error=f"{type(e).__name__}: {e}")
    except Exception as e:  # one job's bug must not end the batch: the manifest keeps it
        record.update(status="error", error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=8))
    record["seconds"] = round(time.perf_counter() - t0, 4)
    record["worker_peak_rss_mb"] = peak_rss_mb()  # sizing: what one worker/actor holds at its peak so far
    return record


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (0.0 where `resource` is missing, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return round(kb / 1024, 1)


def _make(riff, job, outdir: Path) -> dict:
    from PIL import Image

    from minriff.audio import io as audio
    from minriff.audio.spectrogram import save_image
    from minriff.batch.jobs import KINDS
    from minriff.inputs import open_model_image

    kind = KINDS[job.kind]
    kwargs = dict(job.params)
    for name, what in (("init_image", "init image"), ("seed_image", "seed image"), ("mask", "mask image")):
        if name in kwargs:
            kwargs[name] = open_model_image(kwargs[name], what)
    if kind.seed_arg:
        kwargs[kind.seed_arg] = job.seed
    t0 = time.perf_counter()
    image = getattr(riff, kind.method)(**kwargs)
    t1 = time.perf_counter()
    wave = riff.spectrogram_to_audio(image, method=job.method)
    t2 = time.perf_counter()
    if job.image:
        save_image(Image.fromarray(image), str(outdir / f"{job.id}.png"))
    audio.write_audio(str(outdir / f"{job.id}.wav"), wave, 44100, format="wav")
    return {"spectrogram_s": round(t1 - t0, 4), "audio_s": round(t2 - t1, 4),
            "write_s": round(time.perf_counter() - t2, 4)}
