"""`minriff serve`: the original Riffusion server's API (`POST /run_inference/`), a streaming
WebSocket (`/stream`) and a web page (`/`) on one loaded model. Needs the server extra:
`pip install -e ".[server]"` (Starlette + uvicorn)."""
from __future__ import annotations

import sys

from minriff.errors import InputError


class _Serve:
    def add_arguments(self, p):
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=3013, help="port (default 3013, the original's)")
        p.add_argument("--weights", help="converted weights file or folder (default: as for generate)")
        p.add_argument("--seed-images", help="folder of seed/mask images for the ids requests name "
                                             "(default: $MINRIFF_SEED_IMAGES, ./seed_images)")
        p.add_argument("--max-queue", type=int, default=16,
                       help="jobs waiting for the model before requests get 503 (default 16)")
        p.add_argument("--max-listeners", type=int, default=8, help="streams at once (default 8)")
        p.add_argument("--scheduler", help="sampler for every request (default pndm, the original's); "
                                           "lcm/tcd want an LCM-/TCD-LoRA (--lora)")
        p.add_argument("--steps", type=int,
                       help="run every request with this many steps whatever it asks (e.g. 4 with lcm); "
                            "default: the request's own num_inference_steps")
        p.add_argument("--max-steps", type=int, default=100,
                       help="refuse requests asking for more steps (default 100; the web app asks 50)")
        p.add_argument("--decoder", choices=("full", "taesd"), default="full",
                       help="latents -> spectrogram: full VAE (default) or taesd (fast, rougher)")
        p.add_argument("--encoder", choices=("full", "taesd"), default="full", help="seed image -> latents")
        p.add_argument("--taesd", help="TAESD weights (also enables per-step previews on /stream)")
        p.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                       help="merge a LoRA (repeatable); requests may set its weight with {\"lora\": {NAME: W}}")
        p.add_argument("--threads", type=int, help="CPU threads for the model (default: all cores)")
        p.add_argument("--backend", default="cpu", help="kernel backend: cpu (default), ref or cuda")
        p.add_argument("--shutdown-grace", type=float, default=30.0,
                       help="seconds SIGTERM waits for the running job before cancelling it (default 30)")
        p.add_argument("--log-level", default="info", help="uvicorn's log level (default info)")

    def run(self, args) -> int:
        from minriff import inputs

        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise InputError('minriff serve needs the server extra: pip install "minriff[server]" '
                             '(Starlette and uvicorn)') from None
        for name in ("max_queue", "max_listeners", "max_steps", "threads"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 <= args.shutdown_grace <= 3600:
            raise InputError(f"--shutdown-grace must be from 0 to 3600 s, got {args.shutdown_grace}")
        if args.steps is not None:
            inputs.check_steps(args.steps)
        if args.scheduler is not None:
            inputs.check_scheduler(args.scheduler)
        from minriff.pipeline import Riffusion
        from minriff.server import ServeConfig, serve

        riff = Riffusion.load(args.weights, backend=args.backend, taesd=args.taesd, decoder=args.decoder,
                              encoder=args.encoder, scheduler=args.scheduler)
        loras = load_loras(riff, args.lora)
        config = ServeConfig(seed_images=args.seed_images, max_queue=args.max_queue,
                             max_listeners=args.max_listeners, steps=args.steps, max_steps=args.max_steps,
                             threads=args.threads, shutdown_grace_s=args.shutdown_grace)
        print(f"minriff serve: http://{args.host}:{args.port}/ (POST /run_inference/, GET /stream, GET /health)",
              file=sys.stderr)
        serve(riff, config, host=args.host, port=args.port, loras=loras, log_level=args.log_level)
        return 0


def load_loras(riff, specs: list[str]) -> dict:
    """--lora FILE[:WEIGHT] -> {name: weight}, merged into riff.
    TODO(issue 14): use the shared --lora helper of minriff/cli once LoRA support lands on main."""
    if not specs:
        return {}
    if not hasattr(riff, "load_lora"):
        raise InputError("--lora needs LoRA support (riff.load_lora, issue 14), which this build does not have yet")
    loras = {}
    for spec in specs:
        path, _, weight = spec.rpartition(":") if ":" in spec else (spec, "", "1")
        try:
            w = float(weight)
        except ValueError:
            path, w = spec, 1.0
        loras[riff.load_lora(path, weight=w)] = w
    return loras


serve = _Serve()
