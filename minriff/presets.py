"""Presets: named bundles of sampling options, expanded into the options themselves.

- `quality`: today's defaults (the pipeline's own scheduler, 30 steps, 50 for `riffuse`, guidance 7,
  no DeepCache, the full VAE).
- `fast`: LCM at 4 steps, guidance 1 (the UNet at batch 1: no unconditional pass), DeepCache
  (interval FAST_CACHE_INTERVAL, branch FAST_CACHE_BRANCH) and the TAESD decoder. LCM makes a clip in
  4 steps only with an LCM-LoRA merged into the UNet (`Riffusion.load_lora`, `--lora`); without it
  the images are poor. Whether an LCM-LoRA trained on SD 1.5 suits Riffusion's fine-tuned UNet is the
  user's call: not measured here.

A preset is a plain dict of the entry point's keyword arguments, so it is visible and any option
overrides it the ordinary way:

    from minriff import Riffusion, presets
    riff = Riffusion.load()
    image = riff.generate_spectrogram("jazz", seed=1, **presets.options("fast"))
    image = riff.generate_spectrogram("jazz", seed=1, **presets.options("fast", steps=6))  # 6 steps

Why not a `preset=` argument on every call: the calls' keyword defaults are real values (steps=30,
guidance=7.0) that their signatures show; a preset argument would need a "not given" marker on each
of them and a precedence rule hidden inside. `riffuse` has no `guidance` keyword (each end's
`PromptInput` carries it), so give those `guidance=presets.options("fast")["guidance"]` yourself,
as `minriff riffuse --preset fast` does.

The command line's `--preset` (cli/generate.py) expands the same table into the flags not typed.

The DeepCache choice for `fast`: at 4 LCM steps, interval 2 and interval 3 both run 2 full steps
(positions 0 and 2, or 0 and 3) and interval 4 runs 1, so a run costs (2 + 2r) / 4 full steps at
interval 2 or 3, with r a cached step's cost relative to a full one (`minriff bench unet
--cache-branch B`). Interval 2 wins over 3 at the same cost: its cached steps reuse a feature one
step old, not two. Measured on the tiny random model (LCM, 4 steps, guidance 1; relative change of
the final latents against no DeepCache): interval 2: 8.6 / 7.8 / 5.5 / 4.5 % for branches 0 / 1 /
2 / 3; interval 3: 11.4 / 10.3 / 7.2 / 5.7 %; interval 4: 12.8 / 11.5 / 8.1 / 6.4 %. Branch 0
recomputes the least (the cheapest cached step) and is taken, because `fast` is for speed; a
higher `--cache-branch` trades some of it back for a result closer to the uncached one. What
either does to Riffusion's music with a real LCM-LoRA is not measured here.
"""
from __future__ import annotations

from minriff.errors import InputError

NAMES = ("quality", "fast")
ENTRIES = ("generate_spectrogram", "interpolate_styles", "riffuse")

FAST_CACHE_INTERVAL = 2
FAST_CACHE_BRANCH = 0

_TABLE = {
    "quality": dict(scheduler=None, steps=30, guidance=7.0, cache_interval=None, cache_branch=0,
                    cache_schedule="uniform", decoder="full"),
    "fast": dict(scheduler="lcm", steps=4, guidance=1.0, cache_interval=FAST_CACHE_INTERVAL,
                 cache_branch=FAST_CACHE_BRANCH, cache_schedule="uniform", decoder="taesd"),
}
_RIFFUSE_QUALITY_STEPS = 50  # the original server's num_inference_steps


def check_name(name) -> str:
    if not isinstance(name, str) or name not in NAMES:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(NAMES)}")
    return name


def options(name: str, entry: str = "generate_spectrogram", **overrides) -> dict:
    """The keyword arguments of preset `name` for `Riffusion.<entry>`, with `overrides` applied.
    `riffuse` gets no `guidance` (it lives in each end's PromptInput); an override the entry point
    does not take is an InputError (it would be ignored otherwise)."""
    check_name(name)
    if entry not in ENTRIES:
        raise InputError(f"unknown entry point {entry!r}; choose one of {', '.join(ENTRIES)}")
    out = dict(_TABLE[name])
    if entry == "riffuse":
        del out["guidance"]
        if name == "quality":
            out["steps"] = _RIFFUSE_QUALITY_STEPS
    unknown = sorted(set(overrides) - set(out))
    if unknown:
        raise InputError(f"preset options for {entry} are {', '.join(out)}; not {', '.join(unknown)}")
    out.update(overrides)
    return out
