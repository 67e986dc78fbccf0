"""`minriff generate`, `minriff interpolate`, `minriff riffuse`: the pipeline on the command line."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from minriff.cli.lora import add_lora_argument, apply_loras
from minriff.errors import InputError

FORMATS = ("wav", "flac", "mp3", "ogg")


def _common(p, steps: int, scheduler: str):
    p.add_argument("--steps", type=int, default=steps, help=f"denoising steps (default {steps})")
    default = scheduler or "dpmpp2m, pndm with --seed-image"
    p.add_argument("--scheduler", default=scheduler, help=f"pndm|ddim|dpmpp2m|euler|euler_a|lms (default {default})")
    p.add_argument("--format", choices=FORMATS, help="audio format (default: from the -o suffix, else wav)")
    p.add_argument("--method", choices=("nnls", "sgd"), default="nnls",
                   help="inverse mel: nnls (exact, default) or sgd (the original's, for parity)")
    p.add_argument("--weights",
                   help="converted weights file or folder (default: newest in $MINRIFF_WEIGHTS or ./weights/)")
    p.add_argument("--backend", default="cpu", help="kernel backend: cpu (default), ref or cuda")
    add_lora_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _say(args, msg: str):
    if not args.quiet:
        print(msg, file=sys.stderr)


def _load(args):
    from minriff.pipeline import Riffusion

    riff = Riffusion.load(args.weights, backend=args.backend, quiet=args.quiet)
    apply_loras(riff, args.lora, lambda msg: _say(args, msg))
    return riff


def _audio_format(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "wav"


def _write(args, riff, image: np.ndarray, out: str | None, image_out: str | None):
    """Spectrogram -> audio file (and PNG/JPEG of the spectrogram). Returns the clip length in s."""
    from PIL import Image

    from minriff.audio import io as audio

    if image_out:
        try:
            Image.fromarray(image).save(image_out)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot write image {image_out}: {e}") from None
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
    def add_arguments(self, p):
        p.add_argument("prompt", help='what the music should be, e.g. "jazz piano solo"; (word:1.5) weights words')
        p.add_argument("-o", "--output", help="audio file to write (.wav, .flac, .mp3, .ogg)")
        p.add_argument("--seconds", type=float, default=5.0, help="clip length (default 5 -> 512 px = 5.11 s; max 30)")
        p.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance scale (default 7)")
        p.add_argument("--seed", type=int, help="random seed (default: random, printed)")
        p.add_argument("--negative", help="negative prompt: what the music should not be")
        p.add_argument("--image", help="also write the spectrogram image here (PNG)")
        p.add_argument("--init-image",
                       help="start from this spectrogram image (img2img) instead of noise; its width sets the length")
        p.add_argument("--strength", type=float, default=0.75, help="img2img denoising strength (default 0.75)")
        _common(p, steps=30, scheduler="dpmpp2m")

    def run(self, args) -> int:
        from minriff.inputs import random_seed

        if not (args.output or args.image):
            raise InputError("nothing to write: give -o AUDIO and/or --image PNG")
        init = _open_image(args.init_image) if args.init_image else None
        riff = _load(args)
        seed = random_seed() if args.seed is None else args.seed
        _say(args, f"seed {seed}")
        image = riff.generate_spectrogram(
            args.prompt, negative_prompt=args.negative, duration_s=args.seconds, steps=args.steps,
            guidance=args.guidance, seed=seed, scheduler=args.scheduler, init_image=init, strength=args.strength)
        _write(args, riff, image, args.output, args.image)
        return 0


class _Interpolate:
    def add_arguments(self, p):
        p.add_argument("prompt_a", help="where the music starts")
        p.add_argument("prompt_b", help="where it ends")
        p.add_argument("-o", "--output", required=True, help="audio file to write")
        p.add_argument("--frames", type=int, default=8, help="number of clips, alpha = 0 .. 1 (default 8)")
        p.add_argument("--seconds", type=float, default=5.0, help="length of each clip (default 5 -> 5.12 s)")
        p.add_argument("--guidance", type=float, default=7.0)
        p.add_argument("--seed", type=int, default=42, help="seed of prompt A (default 42)")
        p.add_argument("--seed-b", type=int, help="seed of prompt B (default: the same, so only the text moves)")
        p.add_argument("--negative", help="negative prompt for every clip")
        p.add_argument("--seed-image", help="riffuse every clip from this seed image (id or PNG), as the original")
        p.add_argument("--seed-images", help="folder of seed images for ids like og_beat")
        p.add_argument("--denoising", type=float, default=0.75, help="img2img strength with --seed-image")
        p.add_argument("--image", help="also write the joined spectrogram (PNG)")
        _common(p, steps=30, scheduler=None)

    def run(self, args) -> int:
        if args.frames < 2:
            raise InputError(f"--frames must be at least 2, got {args.frames}")
        seed_image = None
        if args.seed_image:
            from minriff.riffuse import resolve_image

            seed_image = _open_image(resolve_image(args.seed_image, "seed image", args.seed_images))
        riff = _load(args)
        clips = []
        for i, alpha in enumerate(np.linspace(0.0, 1.0, args.frames)):
            _say(args, f"clip {i + 1}/{args.frames}: alpha {alpha:.3f}")
            clips.append(riff.interpolate_styles(
                args.prompt_a, args.prompt_b, float(alpha), seed_a=args.seed, seed_b=args.seed_b,
                negative_prompt=args.negative, duration_s=args.seconds, steps=args.steps,
                guidance=args.guidance, scheduler=args.scheduler, seed_image=seed_image,
                denoising=args.denoising))
        # Seamless join: the clips' spectrograms side by side, turned into audio in one pass, so the
        # phase (Griffin-Lim) runs continuously across every boundary instead of restarting per clip
        # (past 4096 px: long overlapping pieces, crossfaded; see Riffusion.spectrogram_to_audio).
        _write(args, riff, np.concatenate(clips, axis=1), args.output, args.image)
        return 0


class _Riffuse:
    def add_arguments(self, p):
        p.add_argument("--json", help="the server's InferenceInput as a JSON file ('-' = stdin); overrides the flags")
        p.add_argument("--start", dest="start_prompt", help="start prompt")
        p.add_argument("--end", dest="end_prompt", help="end prompt (default: the start prompt)")
        p.add_argument("--start-seed", type=int, default=42)
        p.add_argument("--end-seed", type=int, help="default: start seed + 1 (the web app's drift)")
        p.add_argument("--alpha", type=float, default=0.5, help="0 = start, 1 = end (default 0.5)")
        p.add_argument("--denoising", type=float, default=0.75, help="img2img strength of both ends")
        p.add_argument("--guidance", type=float, default=7.0, help="guidance of both ends")
        p.add_argument("--negative", help="negative prompt of both ends (the original ignored it)")
        p.add_argument("--seed-image", default="og_beat", help="seed image id or PNG (default og_beat)")
        p.add_argument("--mask", help="mask image id or PNG (black keeps the seed, white regenerates)")
        p.add_argument("--seed-images", help="folder of seed images (default: $MINRIFF_SEED_IMAGES, ./seed_images)")
        p.add_argument("-o", "--output", help="audio file to write")
        p.add_argument("--image", help="spectrogram image to write (PNG or JPEG)")
        p.add_argument("--output-json",
                       help="write the server's InferenceOutput JSON (base64 JPEG + MP3) here ('-' = stdout)")
        _common(p, steps=50, scheduler="pndm")

    def request(self, args):
        from minriff.riffuse import InferenceInput

        if args.json:
            text = sys.stdin.read() if args.json == "-" else _read_text(args.json)
            return InferenceInput.from_json(text)
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
        from minriff.riffuse import resolve_image

        if not (args.output or args.output_json or args.image):
            raise InputError("nothing to write: give -o AUDIO, --image IMAGE and/or --output-json FILE")
        req = self.request(args)
        seed_image = _open_image(resolve_image(req.seed_image_id, "seed image", args.seed_images))
        mask = None
        if req.mask_image_id:
            mask = _open_image(resolve_image(req.mask_image_id, "mask image", args.seed_images))
        riff = _load(args)
        image = riff.riffuse(req.start, req.end, req.alpha, seed_image, mask=mask,
                             steps=req.num_inference_steps, scheduler=args.scheduler)
        _write(args, riff, image, args.output, args.image)
        if args.output_json:
            self.write_json(args, riff, image)
        return 0

    def write_json(self, args, riff, image):
        """The original server's response: JPEG (PIL quality 75) and MP3 as base64 data URLs."""
        import tempfile

        from PIL import Image

        from minriff.audio import io as audio
        from minriff.riffuse import InferenceOutput, data_url

        jpeg = io.BytesIO()
        Image.fromarray(image).save(jpeg, format="JPEG", quality=75)
        wave = riff.spectrogram_to_audio(image, method=args.method)
        with tempfile.TemporaryDirectory() as tmp:
            mp3 = Path(tmp) / "clip.mp3"
            audio.write_audio(str(mp3), wave, 44100, format="mp3")
            payload = mp3.read_bytes()
        out = InferenceOutput(image=data_url("image/jpeg", jpeg.getvalue()), audio=data_url("audio/mpeg", payload),
                              duration_s=round(wave.shape[-1] / 44100, 6)).to_json()
        if args.output_json == "-":
            sys.stdout.write(out + "\n")
        else:
            try:
                Path(args.output_json).write_text(out)
            except OSError as e:
                raise InputError(f"cannot write {args.output_json}: {e.strerror}") from None
            _say(args, f"wrote {args.output_json}")


def _read_text(path) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None


def _open_image(path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"cannot read image {path}: {e}") from None


generate = _Generate()
interpolate = _Interpolate()
riffuse = _Riffuse()
