"""`minriff audio2image` and `minriff image2audio`. Outputs are checked before the conversion and
written atomically (minriff.atomic)."""
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
