"""`minriff control-image PREP SOURCE -o OUT.png`: a ControlNet control image from music
(minriff.audio.controlmaps), written atomically as an RGB PNG."""
from __future__ import annotations

from pathlib import Path

from minriff.atomic import check_target
from minriff.cli import int_arg
from minriff.errors import InputError


class control_image:
    @staticmethod
    def add_arguments(p):
        p.add_argument("prep", metavar="PREP", choices=("canny", "rhythm", "melody"),
                       help="canny: edges of the spectrogram (as the SD 1.5 canny ControlNet expects); "
                            "rhythm: onsets as vertical lines; melody: the dominant pitch as a line")
        p.add_argument("source", metavar="SOURCE",
                       help="audio file (wav, flac, ogg, mp3; made into a spectrogram as audio2image does) "
                            "or a spectrogram PNG")
        p.add_argument("-o", "--output", required=True, help="output PNG (white on black, RGB)")
        p.add_argument("--width", type=int_arg, default=None,
                       help="clip width in px = 10 ms columns (default 512, 5.12 s): the first WIDTH columns "
                            "of the music, padded with black when it is shorter; at most 3008")
        p.add_argument("--low", type=float, default=None, help="canny only: low threshold (default 100)")
        p.add_argument("--high", type=float, default=None, help="canny only: high threshold (default 200)")
        p.add_argument("--quiet", action="store_true", help="print nothing on success")

    @staticmethod
    def run(args) -> int:
        from PIL import Image

        from minriff.audio.controlmaps import control_image as make
        from minriff.audio.spectrogram import save_image

        out = Path(args.output)
        if out.suffix.lower() != ".png":
            raise InputError(f"output must be a .png (a lossless image: edges are single pixels), got {out}")
        options = {k: v for k, v in (("low", args.low), ("high", args.high)) if v is not None}
        if options and args.prep != "canny":
            raise InputError(f"--{next(iter(options))} has no effect with {args.prep} (canny thresholds only)")
        check_target(out)  # before reading and converting the music
        image = make(args.prep, args.source, args.width, **options)
        save_image(Image.fromarray(image, "RGB"), out, format="PNG")
        if not args.quiet:
            print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}, {args.prep})")
        return 0
