"""`minriff audio2image`, `image2audio`, and the original's audio tools `exif` (print-exif) and
`clips` (sample-clips). Outputs are checked before the work and written atomically (minriff.atomic)."""
from __future__ import annotations

from pathlib import Path

from minriff.atomic import check_target
from minriff.cli import int_arg
from minriff.errors import AudioError
from minriff.progress import StageProgress


def _params(preset: str, stereo: bool):
    from minriff.audio.spectrogram import SpectrogramParams

    p = SpectrogramParams.riffusion_20k() if preset == "20k" else SpectrogramParams()
    return p if not stereo or p.stereo else SpectrogramParams(**{**p.__dict__, "stereo": True})


class audio2image:
    @staticmethod
    def add_arguments(p):
        p.add_argument("input", help="audio file (wav, flac, ogg, mp3), up to an hour; resampled to 44.1 kHz")
        p.add_argument("-o", "--output", help="output PNG (default: INPUT with .png)")
        p.add_argument("--stereo", action="store_true", help="stereo image: R=0, G=left, B=right")
        p.add_argument("--preset", choices=["riffusion", "20k"], default="riffusion",
                       help="riffusion: 0-10 kHz mono (default); 20k: 10 Hz-20 kHz stereo")
        p.add_argument("--quiet", action="store_true", help="print nothing on success")

    @staticmethod
    def run(args) -> int:
        from minriff.audio.io import AudioFile
        from minriff.audio.spectrogram import audio_to_image, save_image

        params = _params(args.preset, args.stereo)
        out = Path(args.output) if args.output else Path(args.input).with_suffix(".png")
        if out.suffix.lower() != ".png":
            raise AudioError(f"output must be a .png (EXIF parameters need a lossless image), got {out}")
        check_target(out)  # before reading and converting the audio
        # read, resampled and analysed block by block: an hour of audio needs ~1 GB, mostly the image
        image = audio_to_image(AudioFile(args.input, params.sample_rate), params)
        save_image(image, out, format="PNG")
        if not args.quiet:
            print(f"wrote {out} ({image.width}x{image.height}, {'stereo' if params.stereo else 'mono'})")
        return 0


class image2audio:
    @staticmethod
    def add_arguments(p):
        p.add_argument("input", help="spectrogram image (PNG with or without Riffusion EXIF), up to 360,001 px wide")
        p.add_argument("-o", "--output", help="output audio (.wav, .flac, .ogg, .mp3; default INPUT with .wav)")
        p.add_argument("--method", choices=["nnls", "sgd"], default="nnls",
                       help="inverse mel: exact NNLS (default) or the original's 200-step SGD")
        p.add_argument("--iters", type=int_arg, default=None,
                       help="Griffin-Lim iterations (default 32, as the original; at most 10000)")
        p.add_argument("--seed", type=int_arg, default=0, help="seed of the random initial phase (and SGD init)")
        p.add_argument("--phase", choices=["random", "peaks"], default="random",
                       help="Griffin-Lim start: random (the original) or peaks (peak-locked phase vocoder; cleaner)")
        p.add_argument("--loudness", choices=["riffusion", "peak", "none"], default="riffusion",
                       help="riffusion: the original's -12 dBFS + -0.1 dB peak stage (default); peak: peak only")
        p.add_argument("--stereo", action="store_true", help="treat the image as stereo (G/B) even without EXIF")
        p.add_argument("--quiet", action="store_true", help="no progress or summary output")

    @staticmethod
    def run(args) -> int:
        import dataclasses

        from minriff import values
        from minriff.audio.io import write_audio
        from minriff.audio.spectrogram import image_to_audio, open_spectrogram, params_from_image

        if args.iters is not None:
            values.integer(args.iters, "--iters", 0, 10000)
        out = Path(args.output) if args.output else Path(args.input).with_suffix(".wav")
        check_target(out, make_parents=True)  # before the conversion
        image = open_spectrogram(args.input)  # size checked from the header before decoding
        params = params_from_image(image)
        if args.stereo:
            params = dataclasses.replace(params, stereo=True)
        if not params.stereo and image.mode in ("RGB", "RGBA"):
            image = image.getchannel("R")  # mono reads R alone: 1 byte a pixel instead of Pillow's 4
        # images wider than 4096 px (mono) are converted in pieces: memory stays ~2 GB at any width
        wave = image_to_audio(image, params, method=args.method, seed=args.seed, n_iter=args.iters,
                              loudness=None if args.loudness == "none" else args.loudness, phase=args.phase,
                              progress=StageProgress(args.quiet))
        write_audio(out, wave, params.sample_rate)
        if not args.quiet:
            print(f"wrote {out} ({wave.shape[1] / params.sample_rate:.3f} s, {wave.shape[0]} ch)")
        return 0


class exif:
    """The original's `print-exif`: one `NAME = value` line per EXIF entry, in the file's order, with
    the original's names for Riffusion's tags (SAMPLE_RATE ... MAX_VALUE) and format
    (`{name:<20} = {value:>15}`). Other EXIF tags are shown by their EXIF name (the original stopped
    with an error on them). An image without EXIF prints nothing on stdout: a note on stderr, status 1."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("image", help="spectrogram image (a PNG from `minriff audio2image` or the original's)")

    @staticmethod
    def run(args) -> int:
        import sys

        from PIL import ExifTags

        from minriff.audio.spectrogram import EXIF_MAX_VALUE, EXIF_TAGS, open_spectrogram

        names = {tag: name.upper() for name, tag in EXIF_TAGS.items()} | {EXIF_MAX_VALUE: "MAX_VALUE"}
        items = list(open_spectrogram(args.image).getexif().items())
        if not items:
            print(f"{args.image} has no EXIF: no spectrogram parameters stored (image2audio would use the "
                  "defaults)", file=sys.stderr)
            return 1
        for tag, value in items:
            name = names.get(tag) or ExifTags.TAGS.get(tag) or f"TAG_{tag}"
            print(f"{name:<20} = {value:>15}")
        return 0


class clips:
    """The original's `sample-clips`: N clips of S seconds at random starts (whole milliseconds drawn
    by numpy's legacy generator: with the same --seed, the original picks the same starts), each
    written as DIR/clip_{i}_start_{ms}_ms_duration_{ms}_ms.{format} at the file's own sample rate and
    channels (`--mono`: the channels averaged). Defaults as the original: 1 clip of 5.12 s, wav."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("input", help="audio file (wav, flac, ogg, mp3); read only where the clips are")
        p.add_argument("-o", "--output-dir", required=True, help="folder for the clips (made if missing)")
        p.add_argument("-n", "--num-clips", type=int_arg, default=1, help="how many clips (default 1)")
        p.add_argument("--seconds", type=float, default=5.12, help="length of each clip (default 5.12)")
        p.add_argument("--seed", type=int_arg, help="seed of the random starts, 0 .. 2^32-1 (default: random)")
        p.add_argument("--mono", action="store_true", help="average the channels into one")
        p.add_argument("--format", choices=("wav", "flac", "ogg", "mp3"), default="wav", help="default wav")
        p.add_argument("--quiet", action="store_true", help="print nothing on success")

    @staticmethod
    def run(args) -> int:
        import numpy as np

        from minriff.atomic import check_target
        from minriff.audio.io import audio_info, read_frames, write_audio
        from minriff.errors import InputError
        from minriff.inputs import check_clip_request

        count, seconds = check_clip_request(args.num_clips, args.seconds)
        if args.seed is not None and not 0 <= args.seed < 2**32:
            raise InputError(f"--seed must be between 0 and 2^32 - 1, got {args.seed}")
        folder = Path(args.output_dir)
        if folder.exists() and not folder.is_dir():
            raise AudioError(f"cannot write clips into {folder}: it exists and is not a folder")
        frames, sr, _ = audio_info(args.input)
        length_ms, clip_ms = int(frames / sr * 1000), int(round(seconds * 1000))
        if length_ms <= clip_ms:
            raise InputError(f"{args.input} is {length_ms / 1000:.3f} s long; clips of {clip_ms / 1000:g} s need a "
                             "longer file")
        rng = np.random.RandomState(args.seed)  # the original: np.random.seed(seed); np.random.randint(...)
        starts = [int(rng.randint(0, length_ms - clip_ms)) for _ in range(count)]
        paths = [folder / f"clip_{i}_start_{s}_ms_duration_{clip_ms}_ms.{args.format}" for i, s in enumerate(starts)]
        check_target(paths[0], make_parents=True)  # before any decoding
        for start, path in zip(starts, paths):
            a, b = int(start * sr / 1000), int((start + clip_ms) * sr / 1000)  # pydub's ms -> frames
            wave = read_frames(args.input, a, b)
            write_audio(path, wave.mean(axis=0, keepdims=True) if args.mono else wave, sr)
            if not args.quiet:
                print(f"wrote {path}")
        return 0
