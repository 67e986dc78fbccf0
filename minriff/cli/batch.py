"""`minriff batch JOBS.jsonl -o OUTDIR`: many clips from a job file (minriff.batch), in this process,
in --workers N local processes, or with --ray on a Ray cluster. Exit 0 when every job finished, 1 when
some failed (their errors are in OUTDIR/manifest.jsonl), 2 for a bad job file or option."""
from __future__ import annotations

import sys
from pathlib import Path

from minriff.cli import int_arg
from minriff.cli.lora import add_lora_argument, check_lora_files


def _say(args, msg):
    if not args.quiet:
        print(msg, file=sys.stderr)


class _Batch:
    needs = {"ray_cpus": "ray"}

    def add_arguments(self, p):
        p.add_argument("jobs", help='job file, JSON Lines: {"id": "a1", "kind": "generate", "prompt": "...", ...} '
                                    "a line (kinds: generate, interpolate, riffuse; parameters as in the Python API)")
        p.add_argument("-o", "--output", required=True, help="output folder: <id>.wav (+ <id>.png) and manifest.jsonl")
        p.add_argument("--workers", type=int_arg,
                       help="worker processes (or Ray actors) each holding the model once; default: from cores "
                            "and available memory (printed); 0 = run in this process")
        p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="run on Ray: alone, start a local Ray instance; with ADDRESS (or 'auto'), join that "
                            "cluster (needs pip install 'minriff[ray]')")
        p.add_argument("--ray-cpus", type=int_arg, help="CPUs of the local Ray instance (default: all)")
        p.add_argument("--preset", choices=("quality", "fast"),
                       help="sampling options for every generate/interpolate/riffuse job that does not set them "
                            "itself (as `minriff generate --preset`; fast: LCM 4 steps, guidance 1, DeepCache, "
                            "TAESD decode, or the full VAE with a note when no TAESD file is found)")
        add_lora_argument(p)
        p.add_argument("--seed-images", help="folder of seed images for ids like og_beat")
        p.add_argument("--weights", help="converted weights file, a path every worker can read (default: as for "
                                         "`minriff generate`)")
        p.add_argument("--backend", default="cpu", help="kernel backend: cpu (default), ref or cuda")
        p.add_argument("--quiet", action="store_true", help="no progress output")

    def run(self, args) -> int:
        from minriff import values
        from minriff.batch import read_jobs, run_batch

        jobs = read_jobs(args.jobs, args.seed_images)  # every line checked before anything runs
        if args.workers is not None:
            values.integer(args.workers, "--workers", 0, 1024)
        check_lora_files(args.lora)
        loras = [(str(Path(path).resolve()), weight) for path, weight in args.lora]  # workers may run elsewhere
        weights = _weights(args)
        _check_loras(loras, weights)
        if args.preset:
            jobs = _preset(args, jobs, weights)
        if args.ray is not None:
            mode = "ray"
        else:
            mode = "sequential" if args.workers == 0 else "local"
        summary = run_batch(jobs, args.output, weights=weights, mode=mode, workers=args.workers or None,
                            ray_address=args.ray or None, backend=args.backend, quiet=args.quiet,
                            say=lambda m: _say(args, m), ray_num_cpus=args.ray_cpus, loras=loras)
        _say(args, f"{summary.ok} done, {summary.failed} failed, {summary.skipped} skipped (already done) "
                   f"of {summary.total}; manifest: {args.output}/manifest.jsonl")
        return 1 if summary.failed else 0


def _weights(args) -> str:
    """The weights file, found (or downloaded, on a first run) once here so every worker loads the same file."""
    from minriff.weights.firstrun import ensure_weights

    return str(ensure_weights(args.weights, quiet=args.quiet))


def _preset(args, jobs, weights: str):
    from minriff.batch.jobs import apply_preset
    from minriff.weights.taesd import find_taesd

    taesd = find_taesd(weights) is not None
    if args.preset == "fast" and not taesd:
        _say(args, "minriff: no TAESD weights found, so --preset fast decodes with the full VAE (slower); "
                   "get TAESD with `minriff download --taesd`")
    return apply_preset(jobs, args.preset, taesd)


batch = _Batch()


def _check_loras(loras, weights: str) -> None:
    """Each LoRA file read against the model's layers here, once, so a bad file is one clear error
    before any worker starts (in a worker it would fail every job)."""
    if not loras:
        return
    from minriff.weights import WeightsFile
    from minriff.weights.lora import read_lora
    from minriff.weights.lora_names import Targets

    targets = Targets.for_config(WeightsFile(weights).config)
    for path, _ in loras:
        read_lora(path, targets)
