"""`minriff remix`: audio-to-audio (minriff.remix). Every argument, the input file and the range are
checked before the weights load; at --strength 0 no weights are loaded at all (the input's own
spectrogram round trip). The output is written atomically (minriff.atomic)."""
from __future__ import annotations

from minriff import deepcache
from minriff.cli import int_arg
from minriff.cli.generate import (
    CACHE_NEEDS,
    _apply_preset,
    _audio_format,
    _cache,
    _check_outputs,
    _common,
    _load,
    _say,
    _scheduler,
)
from minriff.errors import InputError


class remix:
    @staticmethod
    def add_arguments(p):
        p.add_argument("input", help="audio file (wav, flac, ogg, mp3; any sample rate and channel count)")
        p.add_argument("prompt", help='what it should become, e.g. "jazz piano"; (word:1.5) weights words')
        p.add_argument("-o", "--output", required=True, help="audio file to write (.wav, .flac, .mp3, .ogg)")
        p.add_argument("--strength", type=float, default=0.55,
                       help="how much changes: 0 = the input's own spectrogram round trip (no model), "
                            "1 = all new (default 0.55, as the original's audio-to-audio page)")
        p.add_argument("--start", help="start of the part to remix (seconds: 30, 30s, 1:30; default 0)")
        p.add_argument("--end", help="end of the part (default: the end of the file; at most 600 s after --start)")
        p.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance scale (default 7)")
        p.add_argument("--seed", type=int_arg, help="random seed (default: random, printed)")
        p.add_argument("--negative", help="negative prompt (needs --guidance > 1)")
        p.add_argument("--window-px", type=int_arg, default=512,
                       help="spectrogram window riffed at a time (default 512 = 5.12 s; a multiple of 64)")
        p.add_argument("--overlap-px", type=int_arg, default=128,
                       help="overlap of neighbouring windows, crossfaded (default 128 = 1.28 s)")
        p.add_argument("--join", choices=("spectrogram", "audio"), default="spectrogram",
                       help="crossfade the windows' spectrograms and make audio in one pass (default), or make "
                            "each window's audio and crossfade that (the original's way)")
        _common(p, steps=25, scheduler="dpmpp2m")

    @staticmethod
    def run(args) -> int:
        from minriff import inputs
        from minriff import remix as remix_mod
        from minriff.audio import io as audio

        _apply_preset(args)
        _check_outputs(args, "output")
        given = getattr(args, "given", set())
        for flag, needed in CACHE_NEEDS.items():
            if flag in given and needed not in given and getattr(args, needed) is None:
                raise InputError(f"--{flag.replace('_', '-')} has no effect without --{needed.replace('_', '-')}")
        cache = _cache(args)
        _scheduler(args)
        strength = inputs.check_remix_strength(args.strength)
        if strength > 0:
            inputs.check_prompt(args.prompt)
        inputs.check_steps(args.steps), inputs.check_guidance(args.guidance), inputs.check_scheduler(args.scheduler)
        inputs.check_clip_geometry(args.window_px, args.overlap_px)
        start = None if args.start is None else inputs.parse_time(args.start)
        end = None if args.end is None else inputs.parse_time(args.end)
        frames, sr, channels = audio.audio_info(args.input)
        start, end = inputs.check_time_range(start, end, frames / sr)
        if end - start < remix_mod.MIN_SECONDS:
            raise InputError(f"the part to remix is {end - start:.3f} s long; at least {remix_mod.MIN_SECONDS:g} s")
        riff, seed = None, args.seed
        if strength > 0:
            riff = _load(args)
            seed = inputs.random_seed() if seed is None else seed
            _say(args, f"seed {seed}")
        wave, out_sr = remix_mod.remix(
            riff, args.input, args.prompt, strength, start_s=start, end_s=end, negative_prompt=args.negative,
            steps=args.steps, guidance=args.guidance, seed=seed, scheduler=_scheduler(args, riff) if riff else None,
            window_px=args.window_px, overlap_px=args.overlap_px, join=args.join, method=args.method,
            quiet=args.quiet, cache=_deepcache(riff, cache))
        audio.write_audio(args.output, wave, out_sr, format=_audio_format(args.output, args.format))
        _say(args, f"wrote {args.output} ({wave.shape[1] / out_sr:.2f} s from {start:g}-{end:g} s of {args.input}, "
                   f"{wave.shape[0]} channel{'s' if wave.shape[0] > 1 else ''}, {out_sr} Hz)")
        return 0


def _deepcache(riff, cache: dict):
    """`_cache`'s keyword arguments as the DeepCache remix takes (None: off, or no model at strength 0)."""
    if riff is None or not cache:
        return None
    return deepcache.options(riff.unet, cache["cache_interval"], cache["cache_branch"], cache["cache_schedule"])
