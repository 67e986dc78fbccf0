"""`minriff serve`: the original Riffusion server's API (`POST /run_inference/`), a streaming
WebSocket (`/stream`) and a web page (`/`) on one loaded model. Needs the server extra:
`pip install -e ".[server]"` (Starlette + uvicorn)."""
from __future__ import annotations

import sys

from minriff import presets
from minriff.cli.lora import add_lora_argument, apply_loras, check_lora_files
from minriff.deepcache import DeepCache
from minriff.errors import InputError


class _Serve:
    needs = {"cache_branch": ("cache_interval", "preset")}  # DeepCache is off without an interval

    def add_arguments(self, p):
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=3013, help="port (default 3013, the original's)")
        p.add_argument("--weights", help="converted weights file or folder (default: as for generate)")
        p.add_argument("--seed-images", help="folder of seed/mask images for the ids requests name "
                                             "(default: $MINRIFF_SEED_IMAGES, ./seed_images)")
        p.add_argument("--max-queue", type=int, default=16,
                       help="jobs waiting for the model before requests get 503 (default 16)")
        p.add_argument("--max-listeners", type=int, default=8, help="streams at once (default 8)")
        p.add_argument("--preset", choices=presets.NAMES,
                       help="quality: the original's sampling (the request's steps and guidance, PNDM, full VAE). "
                            "fast: every request with LCM 4 steps, guidance 1, DeepCache (interval "
                            f"{presets.FAST_CACHE_INTERVAL}, branch {presets.FAST_CACHE_BRANCH}), TAESD to encode "
                            "the seed image and decode (the full VAE, with a note, without TAESD weights); wants an "
                            "LCM-LoRA (--lora) for good images. Flags you give override the preset's")
        p.add_argument("--scheduler", help="sampler for every request (default pndm, the original's); "
                                           "lcm/tcd want an LCM-/TCD-LoRA (--lora)")
        p.add_argument("--steps", type=int,
                       help="run every request with this many steps whatever it asks (e.g. 4 with lcm); "
                            "default: the request's own num_inference_steps")
        p.add_argument("--guidance", type=float,
                       help="run every request with this guidance whatever it asks (1 with lcm: the UNet at batch 1); "
                            "default: the request's own")
        p.add_argument("--max-steps", type=int, default=100,
                       help="refuse requests asking for more steps (default 100; the web app asks 50)")
        p.add_argument("--cache-interval", type=int, metavar="N",
                       help="DeepCache for every request: the whole UNet every N steps, its shallow branch between "
                            "(faster, approximate; default off)")
        p.add_argument("--cache-branch", type=int, metavar="B", help="DeepCache's shallow branch (default 0)")
        p.add_argument("--decoder", choices=("full", "taesd"),
                       help="latents -> spectrogram: full VAE (default) or taesd (fast, rougher)")
        p.add_argument("--encoder", choices=("full", "taesd"), help="seed image -> latents (default full)")
        p.add_argument("--taesd", help="TAESD weights (also enables per-step previews on /stream)")
        add_lora_argument(p)
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
        _apply_preset(args)
        if args.steps is not None:
            inputs.check_steps(args.steps)
        if args.guidance is not None:
            inputs.check_guidance(args.guidance)
        if args.scheduler is not None:
            inputs.check_scheduler(args.scheduler)
        sampling = {}
        if args.cache_interval is not None:
            cache = DeepCache(args.cache_interval, args.cache_branch or 0)
            sampling = dict(cache_interval=cache.interval, cache_branch=cache.branch)
        check_lora_files(args.lora)
        from minriff.pipeline import Riffusion
        from minriff.server import ServeConfig, serve

        riff = Riffusion.load(args.weights, backend=args.backend, taesd=args.taesd, decoder=args.decoder or "full",
                              encoder=args.encoder or "full", scheduler=args.scheduler)
        if args.decoder == "taesd" and args.preset and not {"decoder", "taesd"} & args.given and not riff.has_taesd:
            riff.decoder = "full"
            if "encoder" not in args.given:
                riff.encoder = "full"
            print(f"minriff serve: no TAESD weights found, so --preset {args.preset} decodes with the full VAE "
                  "(slower); `minriff download --taesd` gets them", file=sys.stderr)
        names = apply_loras(riff, args.lora, lambda msg: print(f"minriff serve: {msg}", file=sys.stderr))
        loras = {name: weight for name, (_, weight) in zip(names, args.lora)}
        config = ServeConfig(seed_images=args.seed_images, max_queue=args.max_queue,
                             max_listeners=args.max_listeners, steps=args.steps, max_steps=args.max_steps,
                             threads=args.threads, shutdown_grace_s=args.shutdown_grace, guidance=args.guidance,
                             sampling=sampling)
        print(f"minriff serve: http://{args.host}:{args.port}/ (POST /run_inference/, GET /stream, GET /health)",
              file=sys.stderr)
        serve(riff, config, host=args.host, port=args.port, loras=loras, log_level=args.log_level)
        return 0



def _apply_preset(args) -> None:
    """--preset NAME: each of the preset's riffuse options whose flag was not typed takes its value
    (`quality` is the original's sampling: nothing to set). The fast preset also fixes every
    request's guidance at its value (the web app asks 7; LCM wants 1)."""
    args.given = getattr(args, "given", set())
    if args.preset in (None, "quality"):
        return
    table = {**presets.options(args.preset, "riffuse"), "guidance": presets.options(args.preset)["guidance"]}
    for key, value in table.items():
        if key in ("cache_schedule",) or key in args.given:
            continue
        setattr(args, key, value)
    if "encoder" not in args.given and args.decoder == "taesd" and "decoder" not in args.given:
        args.encoder = "taesd"

serve = _Serve()
