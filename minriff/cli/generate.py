"""`minriff generate`, `minriff interpolate`, `minriff riffuse`: the pipeline on the command line.

`generate` makes one clip (up to 30 s, one image), or a long piece clip by clip (minriff.longform)
when `--seconds` is above 30 or a long-piece option is given (`--prompt-at`, `--seed-image`,
`--clip-px`, `--overlap-px`).

`--control` (all three; minriff/cli/controlnet.py) steers a clip with ControlNets.

Every output (-o, --image, --output-json) is checked before any work (`_check_outputs`) and written
atomically (minriff.atomic). Seed and mask images given as flags are ids or PNG paths (a value with
a `/` or an image suffix is a path); ids in a JSON request are only ids (minriff.riffuse)."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from minriff import atomic, presets
from minriff.cli import controlnet as control_flags
from minriff.cli import int_arg
from minriff.cli.lora import add_lora_argument, apply_loras, check_lora_files
from minriff.errors import InputError

FORMATS = ("wav", "flac", "mp3", "ogg")
CACHE_NEEDS = {"cache_branch": "cache_interval", "cache_schedule": "cache_interval"}  # DeepCache is off without N


def _common(p, steps: int, scheduler: str):
    p.add_argument("--preset", choices=presets.NAMES,
                   help="quality: the defaults below (best output, slowest). fast: --scheduler lcm --steps 4 "
                        f"--guidance 1 --cache-interval {presets.FAST_CACHE_INTERVAL} --cache-branch "
                        f"{presets.FAST_CACHE_BRANCH} --decoder taesd: a clip in a fraction of the time, but rougher "
                        "(DeepCache's approximate steps, TAESD's approximate decode), and LCM's 4 steps give good "
                        "images only with an LCM-LoRA (--lora) merged; whether one suits Riffusion is not measured "
                        "here. Without TAESD weights, fast decodes with the full VAE (one-line note). "
                        "Flags you give override the preset's")
    p.add_argument("--steps", type=int_arg, default=steps, help=f"denoising steps (default {steps}, at most 1000)")
    default = scheduler or "dpmpp2m, pndm with --seed-image"
    p.add_argument("--scheduler", default=scheduler,
                   help=f"pndm|ddim|dpmpp2m|euler|euler_a|lms|lcm|tcd (default {default}); lcm and tcd are "
                        "few-step samplers for LCM-LoRA / TCD-LoRA weights (2-8 steps, --guidance 1)")
    p.add_argument("--tcd-gamma", type=float,
                   help="TCD's gamma (diffusers' eta): 0 deterministic .. 1 most noise (default 0.3)")
    p.add_argument("--cache-interval", type=int_arg, metavar="N",
                   help="DeepCache: run the whole UNet every N steps and only its shallow branch in between, from "
                        "the cached deep features (faster, approximate; default off; 1 = every step whole)")
    p.add_argument("--cache-branch", type=int_arg, metavar="B",
                   help="DeepCache's shallow branch: 0 (default) recomputes the least, higher recomputes more "
                        "(0-11 for SD 1.5)")
    p.add_argument("--cache-schedule", choices=("uniform", "quadratic"),
                   help="where DeepCache's whole-UNet steps fall: every N (uniform, default) or ceil(steps/N) "
                        "steps, denser at 30%% of the run and sparser towards its end (quadratic)")
    p.add_argument("--format", choices=FORMATS, help="audio format (default: from the -o suffix, else wav)")
    p.add_argument("--method", choices=("nnls", "sgd"), default="nnls",
                   help="inverse mel: nnls (exact, default) or sgd (the original's, for parity)")
    p.add_argument("--weights",
                   help="converted weights file or folder (default: newest in $MINRIFF_WEIGHTS, ./weights/ or "
                        "~/.cache/minriff/; with none anywhere, riffusion-model-v1 is taken from the Hugging Face "
                        "cache or downloaded once, unless MINRIFF_OFFLINE=1)")
    p.add_argument("--decoder", choices=("full", "taesd"), default="full",
                   help="latents -> spectrogram: full (the VAE, default) or taesd (the tiny autoencoder: "
                        "much faster, a rougher spectrogram and so rougher audio)")
    p.add_argument("--encoder", choices=("full", "taesd"), default="full",
                   help="seed/init image -> latents: full (default) or taesd (faster, rougher; no sampling)")
    p.add_argument("--taesd", help="TAESD weights file (default: $MINRIFF_TAESD, else beside the weights file, "
                                   "else in ./weights/; get it with `minriff download --taesd`)")
    p.add_argument("--backend", default="cpu", help="kernel backend: cpu (default), ref or cuda")
    add_lora_argument(p)
    control_flags.add_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _say(args, msg: str):
    if not args.quiet:
        print(msg, file=sys.stderr)


def _check_flags(args, prompts: dict) -> None:
    """Every flag checked before the weights load (that takes seconds at full size, and a first run
    downloads gigabytes): the same checks the pipeline runs again, so a bad value costs nothing."""
    from minriff import inputs

    for what, prompt in prompts.items():
        inputs.check_prompt(prompt, what)
    inputs.check_negative_prompt(args.negative)
    inputs.check_steps(args.steps)
    inputs.check_guidance(args.guidance)
    if args.scheduler is not None:
        inputs.check_scheduler(args.scheduler)
    _scheduler(args), _cache(args)
    for flag in ("seed", "seed_b"):
        if getattr(args, flag, None) is not None:
            inputs.check_seed(getattr(args, flag), "--" + flag.replace("_", "-"))


def _scheduler(args, riff=None):
    """--scheduler, made a TCDScheduler object with --tcd-gamma; without `riff` only checks the flags
    (before the weights load)."""
    if args.tcd_gamma is None:
        return args.scheduler
    if args.scheduler != "tcd":
        raise InputError(f"--tcd-gamma needs --scheduler tcd (got {args.scheduler or 'the default scheduler'})")
    from minriff.schedulers.tcd import TCDScheduler, check_gamma

    check_gamma(args.tcd_gamma)
    return None if riff is None else TCDScheduler(riff.scheduler_config, gamma=args.tcd_gamma)


# the preset keys are the flags' dests
def _apply_preset(args, request_flags: bool = True) -> None:
    """--preset NAME: every preset option whose flag was not typed takes the preset's value (typed
    flags win). `quality` is the flags' own defaults, so it changes nothing. request_flags=False
    (riffuse --json): steps and guidance stay the request's."""
    if getattr(args, "preset", None) in (None, "quality"):
        return
    given = getattr(args, "given", set())
    for key, value in presets.options(args.preset).items():
        if key in given or (not request_flags and key in ("steps", "guidance")):
            continue
        setattr(args, key, value)


def _cache(args) -> dict:
    """--cache-interval/--cache-branch/--cache-schedule as the pipeline's keyword arguments, checked
    (the branch's upper bound needs the UNet and is checked by the pipeline; without --cache-interval
    the other two are refused by CACHE_NEEDS)."""
    from minriff.deepcache import DeepCache

    if args.cache_interval is None:
        return {}
    cache = DeepCache(args.cache_interval, args.cache_branch or 0, args.cache_schedule or "uniform")
    return dict(cache_interval=cache.interval, cache_branch=cache.branch, cache_schedule=cache.schedule)


def _load(args, one_shot: bool = True):
    """The pipeline for one command. one_shot (one image): low_memory, each network loaded when its
    stage comes and the others dropped (peak RSS of an SD 1.5 clip 2.39 GB instead of 3.39, measured), unless
    LoRAs are merged (they need every network resident)."""
    from minriff.pipeline import Riffusion

    check_lora_files(args.lora)
    riff = Riffusion.load(args.weights, backend=args.backend, quiet=args.quiet, taesd=args.taesd,
                          decoder=args.decoder, encoder=args.encoder, low_memory=one_shot and not args.lora)
    typed = getattr(args, "given", set())
    if args.decoder == "taesd" and getattr(args, "preset", None) and not {"decoder", "taesd"} & typed:
        _fall_back_without_taesd(args, riff)
    apply_loras(riff, args.lora, lambda msg: _say(args, msg))
    return riff


def _fall_back_without_taesd(args, riff) -> None:
    """A preset's TAESD decoder with no TAESD file anywhere: the full VAE instead, and a note (a
    preset must not fail for want of an optional 5 MB file). A typed --decoder taesd still fails."""
    from minriff.weights import taesd as taesd_weights

    if taesd_weights.find_taesd(beside=riff.source or None) is None:
        print(f"minriff: no TAESD weights found, so --preset {args.preset} decodes with the full VAE (slower); "
              "get TAESD with `minriff download --taesd`", file=sys.stderr)
        args.decoder = riff.decoder = "full"


def _audio_format(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "wav"


def _check_outputs(args, *names: str):
    """Refuse unwritable outputs (a device, a folder, a missing folder, an unknown image suffix)
    before loading weights or generating anything."""
    from minriff.audio.spectrogram import image_format

    for name in names:
        path = getattr(args, name, None)
        if path and path != "-":
            atomic.check_target(path, make_parents=name == "output")  # audio files get their folders made
            if name == "image":
                image_format(path)


def _write(args, riff, image: np.ndarray, out: str | None, image_out: str | None):
    """Spectrogram -> audio file (and PNG/JPEG of the spectrogram). Returns the clip length in s."""
    from PIL import Image

    from minriff.audio import io as audio
    from minriff.audio.spectrogram import save_image

    if image_out:
        save_image(Image.fromarray(image), image_out)
        _say(args, f"wrote {image_out} ({image.shape[1]}x{image.shape[0]} px)")
    if not out:
        return None
    wave = riff.spectrogram_to_audio(image, method=args.method)
    sr = 44100
    audio.write_audio(out, wave, sr, format=_audio_format(out, args.format))
    seconds = wave.shape[-1] / sr
    _say(args, f"wrote {out} ({seconds:.2f} s, {wave.shape[0]} channel{'s' if wave.shape[0] > 1 else ''}, {sr} Hz)")
    return seconds


class _Generate:
    needs = {"strength": ("init_image", "seed_image"), "format": "output", "method": "output",
             "seed_images": "seed_image", **CACHE_NEEDS, **control_flags.NEEDS}
    excludes = {"seconds": "init_image", "init_image": "seed_image"}  # the init image's width sets the length

    def add_arguments(self, p):
        p.add_argument("prompt", help='what the music should be, e.g. "jazz piano solo"; (word:1.5) weights words')
        p.add_argument("-o", "--output", help="audio file to write (.wav, .flac, .mp3, .ogg)")
        p.add_argument("--seconds", type=float, default=5.0,
                       help="length (default 5 -> 512 px = 5.11 s): up to 30 s is one clip; longer (up to 600 s) "
                            "grows clip by clip, each outpainted from the end of the one before")
        p.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance (default 7, max 100)")
        p.add_argument("--seed", type=int_arg, help="random seed (default: random, printed)")
        p.add_argument("--negative", help="negative prompt: what the music should not be (needs --guidance > 1)")
        p.add_argument("--image", help="also write the spectrogram image here (PNG)")
        p.add_argument("--init-image",
                       help="start from this spectrogram image (img2img) instead of noise; its width sets the length "
                            "(512 px high, at most 3008 px wide)")
        p.add_argument("--strength", type=float, default=0.75,
                       help="img2img denoising strength, with --init-image or --seed-image (default 0.75)")
        long = p.add_argument_group("long pieces (clip by clip; any of these, or --seconds above 30, selects it)")
        long.add_argument("--prompt-at", nargs=2, action="append", metavar=("TIME", "PROMPT"), default=[],
                          help="the prompt to have reached at TIME (20, 20s, 1:30); text morphs linearly from the "
                               "previous one (the main prompt holds at 0 s); repeat for more")
        long.add_argument("--seed-image", help="start every clip from this seed image tiled along the piece, so its "
                                               "beat grid runs through: an id (og_beat) or a PNG path")
        long.add_argument("--seed-images", help="folder of seed images for ids like og_beat")
        long.add_argument("--clip-px", type=int_arg,
                          help="width of each clip's window (default 512 = 5.12 s; a multiple of 64)")
        long.add_argument("--overlap-px", type=int_arg,
                          help="known part of each window: the end of the previous clip (default 128 = 1.28 s)")
        _common(p, steps=30, scheduler="dpmpp2m")

    def is_long(self, args) -> bool:
        from minriff.inputs import MAX_SECONDS

        return bool(args.prompt_at or args.seed_image or args.clip_px or args.overlap_px) or (
            isinstance(args.seconds, float) and not args.init_image and args.seconds > MAX_SECONDS)

    def run(self, args) -> int:
        from minriff.inputs import check_duration, check_strength, image_width, open_model_image, random_seed

        _apply_preset(args)
        if not (args.output or args.image):
            raise InputError("nothing to write: give -o AUDIO and/or --image PNG")
        _check_outputs(args, "output", "image")
        _check_flags(args, {"prompt": args.prompt})
        if self.is_long(args):
            if args.control:
                raise InputError("--control steers one clip (up to 30 s, without the long-piece options)")
            return self.run_long(args)
        if args.init_image:
            check_strength(args.strength)
            init = open_model_image(args.init_image, "init image")
        else:
            check_duration(args.seconds)
            init = None
        control = control_flags.controls(args, init.shape[1] if init is not None else image_width(args.seconds))
        riff = _load(args)
        seed = random_seed() if args.seed is None else args.seed
        _say(args, f"seed {seed}")
        image = riff.generate_spectrogram(
            args.prompt, negative_prompt=args.negative, duration_s=args.seconds, steps=args.steps,
            guidance=args.guidance, seed=seed, scheduler=_scheduler(args, riff), init_image=init,
            strength=args.strength, **_cache(args), **control)
        _write(args, riff, image, args.output, args.image)
        return 0

    def run_long(self, args) -> int:
        """A long piece: minriff.longform (checks first, then the weights)."""
        from minriff import inputs
        from minriff.longform import CLIP_PX, OVERLAP_PX

        if args.init_image:
            raise InputError("--init-image makes one clip; for a long piece use --seed-image")
        seconds = inputs.piece_width(args.seconds) * inputs.MS_PER_PIXEL / 1000.0
        clip_px, overlap_px = inputs.check_clip_geometry(args.clip_px or CLIP_PX, args.overlap_px or OVERLAP_PX)
        schedule = inputs.check_prompt_schedule([(inputs.parse_time(t), p) for t, p in args.prompt_at], seconds)
        seed_image = None
        if args.seed_image:
            from minriff.riffuse import resolve_image

            inputs.check_strength(args.strength)
            seed_image = inputs.open_model_image(resolve_image(args.seed_image, "seed image", args.seed_images,
                                                               allow_path=True))
        riff = _load(args, one_shot=False)
        seed = inputs.random_seed() if args.seed is None else args.seed
        _say(args, f"seed {seed}")
        image = riff.generate_long(
            args.prompt, args.seconds, negative_prompt=args.negative, steps=args.steps, guidance=args.guidance,
            seed=seed, scheduler=_scheduler(args, riff), seed_image=seed_image, strength=args.strength,
            prompt_schedule=schedule, clip_px=clip_px, overlap_px=overlap_px, **_cache(args))
        _write(args, riff, image, args.output, args.image)
        return 0


class _Interpolate:
    needs = {"denoising": "seed_image", "seed_images": "seed_image", **CACHE_NEEDS,  # -o is required here
             **control_flags.NEEDS}
    excludes = {"seconds": "seed_image"}  # the seed image's width sets the length

    def add_arguments(self, p):
        p.add_argument("prompt_a", help="where the music starts")
        p.add_argument("prompt_b", help="where it ends")
        p.add_argument("-o", "--output", required=True, help="audio file to write")
        p.add_argument("--frames", type=int_arg, default=8, help="clips, alpha = 0 .. 1 (default 8, 2 to 100)")
        p.add_argument("--seconds", type=float, default=5.0, help="length of each clip (default 5 -> 5.12 s)")
        p.add_argument("--guidance", type=float, default=7.0)
        p.add_argument("--seed", type=int_arg, default=42, help="seed of prompt A (default 42)")
        p.add_argument("--seed-b", type=int_arg, help="seed of prompt B (default: the same, so only the text moves)")
        p.add_argument("--negative", help="negative prompt for every clip (needs --guidance > 1)")
        p.add_argument("--seed-image", help="riffuse every clip from this seed image, as the original: an id "
                                            "(og_beat -> SEED_IMAGES/og_beat.png) or a PNG path (has a / or .png)")
        p.add_argument("--seed-images", help="folder of seed images for ids like og_beat")
        p.add_argument("--denoising", type=float, default=0.75, help="img2img strength, with --seed-image (0.75)")
        p.add_argument("--image", help="also write the joined spectrogram (PNG)")
        _common(p, steps=30, scheduler=None)

    def run(self, args) -> int:
        from minriff.inputs import check_duration, check_frames, check_strength, image_width, open_model_image

        _apply_preset(args)
        check_frames(args.frames, "--frames")
        _check_outputs(args, "output", "image")
        _check_flags(args, {"prompt A": args.prompt_a, "prompt B": args.prompt_b})
        seed_image = None
        if args.seed_image:
            from minriff.riffuse import resolve_image

            check_strength(args.denoising, "--denoising")
            seed_image = open_model_image(resolve_image(args.seed_image, "seed image", args.seed_images,
                                                        allow_path=True))
        else:
            check_duration(args.seconds)
        control = control_flags.controls(args, seed_image.shape[1] if seed_image is not None
                                         else image_width(args.seconds))
        riff = _load(args)
        scheduler = _scheduler(args, riff)
        clips = []
        for i, alpha in enumerate(np.linspace(0.0, 1.0, args.frames)):
            _say(args, f"clip {i + 1}/{args.frames}: alpha {alpha:.3f}")
            clips.append(riff.interpolate_styles(
                args.prompt_a, args.prompt_b, float(alpha), seed_a=args.seed, seed_b=args.seed_b,
                negative_prompt=args.negative, duration_s=args.seconds, steps=args.steps,
                guidance=args.guidance, scheduler=scheduler, seed_image=seed_image,
                denoising=args.denoising, **_cache(args), **control))
        # Seamless join: the clips' spectrograms side by side, turned into audio in one pass, so the
        # phase (Griffin-Lim) runs continuously across every boundary instead of restarting per clip
        # (past 4096 px: long overlapping pieces, crossfaded; see Riffusion.spectrogram_to_audio).
        _write(args, riff, np.concatenate(clips, axis=1), args.output, args.image)
        return 0


class _Riffuse:
    # the JSON request replaces every request flag: giving both would silently drop the flags
    excludes = {flag: "json" for flag in ("start_prompt", "end_prompt", "start_seed", "end_seed", "alpha", "denoising",
                                          "guidance", "negative", "seed_image", "mask", "steps")}
    needs = {"format": "output", **CACHE_NEEDS, **control_flags.NEEDS}

    def add_arguments(self, p):
        p.add_argument("--json", help="the server's InferenceInput as a JSON file ('-' = stdin, at most 64 KiB), "
                                      "instead of the request flags; its seed_image_id/mask_image_id are ids only, "
                                      "never paths")
        p.add_argument("--start", dest="start_prompt", help="start prompt")
        p.add_argument("--end", dest="end_prompt", help="end prompt (default: the start prompt)")
        p.add_argument("--start-seed", type=int_arg, default=42)
        p.add_argument("--end-seed", type=int_arg, help="default: start seed + 1 (the web app's drift)")
        p.add_argument("--alpha", type=float, default=0.5, help="0 = start, 1 = end (default 0.5)")
        p.add_argument("--denoising", type=float, default=0.75, help="img2img strength of both ends")
        p.add_argument("--guidance", type=float, default=7.0, help="guidance of both ends")
        p.add_argument("--negative",
                       help="negative prompt of both ends (the original ignored it; needs --guidance > 1)")
        p.add_argument("--seed-image", default="og_beat",
                       help="seed image id or PNG path (a value with a / or .png is a path; default og_beat)")
        p.add_argument("--mask", help="mask image id or PNG path (black keeps the seed, white regenerates)")
        p.add_argument("--seed-images", help="folder of seed images (default: $MINRIFF_SEED_IMAGES, ./seed_images)")
        p.add_argument("-o", "--output", help="audio file to write")
        p.add_argument("--image", help="spectrogram image to write (PNG or JPEG)")
        p.add_argument("--output-json",
                       help="write the server's InferenceOutput JSON (base64 JPEG + MP3) here ('-' = stdout)")
        _common(p, steps=50, scheduler="pndm")

    def request(self, args):
        from minriff.riffuse import InferenceInput

        if args.json:
            return InferenceInput.from_json(_read_json(args.json))
        if not args.start_prompt:
            raise InputError("give the request as --json FILE or at least --start PROMPT")
        end_seed = args.start_seed + 1 if args.end_seed is None else args.end_seed
        side = dict(negative_prompt=args.negative, denoising=args.denoising, guidance=args.guidance)
        return InferenceInput.from_dict(dict(
            start=dict(prompt=args.start_prompt, seed=args.start_seed, **side),
            end=dict(prompt=args.end_prompt or args.start_prompt, seed=end_seed, **side),
            alpha=args.alpha, num_inference_steps=args.steps, seed_image_id=args.seed_image,
            mask_image_id=args.mask))

    def run(self, args) -> int:
        from minriff.inputs import check_scheduler, open_model_image
        from minriff.riffuse import resolve_image

        _apply_preset(args, request_flags=not args.json)
        if not (args.output or args.output_json or args.image):
            raise InputError("nothing to write: give -o AUDIO, --image IMAGE and/or --output-json FILE")
        _check_outputs(args, "output", "image", "output_json")
        if args.scheduler is not None:
            check_scheduler(args.scheduler)
        _scheduler(args), _cache(args)
        req = self.request(args)
        paths_ok = not args.json  # ids from a JSON request are never paths (the server takes the same JSON)
        seed_image = open_model_image(resolve_image(req.seed_image_id, "seed image", args.seed_images,
                                                    allow_path=paths_ok))
        mask = None
        if req.mask_image_id:
            mask = open_model_image(resolve_image(req.mask_image_id, "mask image", args.seed_images,
                                                  allow_path=paths_ok), "mask image")
        control = control_flags.controls(args, seed_image.shape[1])
        riff = _load(args)
        image = riff.riffuse(req.start, req.end, req.alpha, seed_image, mask=mask,
                             steps=req.num_inference_steps, scheduler=_scheduler(args, riff), **_cache(args),
                             **control)
        _write(args, riff, image, args.output, args.image)
        if args.output_json:
            self.write_json(args, riff, image)
        return 0

    def write_json(self, args, riff, image):
        """The original server's response: JPEG (PIL quality 75) and MP3 as base64 data URLs."""
        from PIL import Image

        from minriff.audio import io as audio
        from minriff.riffuse import InferenceOutput, data_url

        jpeg = io.BytesIO()
        Image.fromarray(image).save(jpeg, format="JPEG", quality=75)
        wave = riff.spectrogram_to_audio(image, method=args.method)
        payload = audio.encode_audio(wave, 44100, "mp3")
        out = InferenceOutput(image=data_url("image/jpeg", jpeg.getvalue()), audio=data_url("audio/mpeg", payload),
                              duration_s=round(wave.shape[-1] / 44100, 6)).to_json()
        if args.output_json == "-":
            sys.stdout.write(out + "\n")
        else:
            atomic.write_text(args.output_json, out)
            _say(args, f"wrote {args.output_json}")


def _read_json(path) -> bytes | str:
    """The request's bytes from a file or stdin ('-'), read no further than the JSON size limit
    (so `--json /dev/zero` ends at once); parsing and every check is InferenceInput.from_json's."""
    from minriff.values import MAX_JSON_BYTES

    try:
        if path == "-":
            return getattr(sys.stdin, "buffer", sys.stdin).read(MAX_JSON_BYTES + 1)
        with open(path, "rb") as f:
            return f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None


generate = _Generate()
interpolate = _Interpolate()
riffuse = _Riffuse()
