"""`minriff bench unet --controlnet [FILE]`: what one ControlNet costs per guided step, as a ratio to a
plain UNet step measured in the same run (batch 2 = the guidance pair, 64×64 latents, 77 tokens,
full-size random weights unless --weights / FILE), rounds interleaved:
- `plain`: the UNet alone;
- `controlled`: the ControlNet on the batch (its hint embedding made once per run, as the pipeline
  does) and the UNet with its residuals: a step of `controls=[(controlnet, image, scale)]`;
- `controlled, guess mode`: the ControlNet on the conditional half only (batch 1), the UNet at 2;
- `controlnet only`: the ControlNet's part of a controlled step;
- `hint embedding`: the control image through the hint encoder, once per run (not per step).
`ratio_to_plain` - 1 is the extra cost of one ControlNet per step; with k ControlNets a step costs
about 1 + k · (ratio - 1) plain steps.
"""
from __future__ import annotations

import numpy as np

from minriff import kernels
from minriff.bench.common import emit, interleaved_medians, peak_rss_mb
from minriff.bench.ops import SETTLE_S
from minriff.configs import CONTROLNET_PRESETS
from minriff.controlnet import check_fits
from minriff.errors import InputError


def _controlnet(path, dtype, unet):
    """The ControlNet to time: FILE, or random weights of the preset that fits the UNet."""
    if path and path != "random":
        from minriff.weights.controlnet import load_controlnet

        net, source = load_controlnet(path), f"file {path}"
    else:
        from minriff.models import random_controlnet

        fits = [k for k, c in CONTROLNET_PRESETS.items() if c.block_out_channels == unet.config.block_out_channels]
        if not fits:
            raise InputError("--controlnet: no ControlNet preset fits this UNet; give a ControlNet FILE")
        net, source = random_controlnet(fits[0], dtype=dtype), f"random {fits[0]} ControlNet shapes"
    check_fits(net, unet.config, net.config.hint_downscale, "--controlnet")
    return net, source


def run(args, model, cfg, source: str, arrays: tuple, dtype) -> int:
    F = kernels.ops()
    x, t, ctx = (F.asarray(a) if a.ndim > 1 else a for a in arrays)
    net, net_source = _controlnet(args.controlnet, dtype, model)
    if args.backend == "cuda":
        net.apply_to_parameters(lambda a: F.asarray(a, dtype=np.float32))
    H, W = net.hint_size(*x.shape[2:])
    rng = np.random.default_rng(2)
    hint = F.asarray(rng.random((1, net.config.conditioning_channels, H, W), dtype=np.float32))
    emb = net.embed_hint(hint)
    emb2 = F.xp.concatenate([emb, emb])

    def controlled():
        down, mid = net(x, t, ctx, None, 1.0, hint_embedding=emb2)
        return model(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    def guessed():
        down, mid = net(x[1:], t[1:], ctx[1:], None, 1.0, True, hint_embedding=emb)
        xp = F.xp
        down = [xp.concatenate([xp.zeros_like(r), r]) for r in down]
        mid = xp.concatenate([xp.zeros_like(mid), mid])
        return model(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    steps = {"plain": lambda: model(x, t, ctx), "controlled": controlled, "controlled, guess mode": guessed,
             "controlnet only": lambda: net(x, t, ctx, None, 1.0, hint_embedding=emb2),
             "hint embedding (once per run)": lambda: net.embed_hint(hint)}
    plain = F.to_host(steps["plain"]())  # also the first calls (kernel compilation), untimed
    changed = float(np.abs(F.to_host(controlled()) - plain).max() / np.abs(plain).max())
    guessed()
    repeat = max(3, args.repeat or 3)
    medians = interleaved_medians(steps, repeat, SETTLE_S)
    base = medians["plain"]
    rows = [dict(step=name, seconds=s, ratio_to_plain=s / base) for name, s in medians.items()]
    hw = arrays[0].shape[-1]
    extra = dict(weights=source, controlnet=net_source, batch=arrays[0].shape[0], latent=f"{hw}x{hw}",
                 hint=f"{H}x{W}", repeat=repeat, peak_rss_mb=round(peak_rss_mb()),
                 controlnet_parameters_m=round(net.num_parameters() / 1e6, 1),
                 max_rel_change_by_the_controlnet=round(changed, 3))
    emit(rows, args.json, "ControlNet: a controlled UNet step vs a plain one (median seconds; ratio to plain)",
         extra)
    return 0 if np.isfinite(changed) else 1
