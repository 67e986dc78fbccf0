"""ControlNetModel (Zhang, Rao and Agrawala 2023) for the SD v1.x UNet: a trainable copy of the
UNet's encoder that turns a control image ("hint") into residuals added to the UNet's skips.

    hint (B, 3, H, W) in [0, 1]  (H, W = 2^(n-1) × the latent size; n = len(conditioning_embedding_out_channels))
    controlnet_cond_embedding: conv_in, SiLU, [conv, SiLU, stride-2 conv, SiLU] × (n-1), conv_out -> (B, C0, h, w)
    conv_in(x) + that -> down_blocks -> the 12 skip tensors (SD 1.5) -> mid_block
    controlnet_down_blocks.k (1×1 conv) on skip k, controlnet_mid_block (1×1 conv) on the mid output
    each × conditioning_scale (guess mode: × logspace(-1, 0, 13)[k] · scale, the mid one × scale)

The encoder is the UNet's own code (`unet.DownBlock`, `unet.MidBlock`, `unet.TimestepEmbedding`,
the input checks of `unet._TimedInput`); attribute paths are diffusers' state-dict keys. The
UNet adds the residuals (`UNet2DConditionModel.__call__(..., down_block_additional_residuals=,
mid_block_additional_residual=)`); the pipeline's window, guidance and MultiControlNet sum are in
minriff/controlnet.py.
"""
from __future__ import annotations

import numpy as np

from minriff import kernels
from minriff.configs import ControlNetConfig
from minriff.errors import InputError
from minriff.models.nn import Conv2d, Module, activation_dtype
from minriff.models.unet import DownBlock, MidBlock, TimestepEmbedding, _TimedInput


class ControlNetConditioningEmbedding(Module):
    """The hint encoder: 3×3 convs with SiLU, every second one stride 2; conv_out is zero at init."""

    def __init__(self, out_channels: int, in_channels: int, channels: tuple):
        self.conv_in = Conv2d(in_channels, channels[0], 3, padding=1)
        self.blocks = []
        for a, b in zip(channels[:-1], channels[1:]):
            self.blocks += [Conv2d(a, a, 3, padding=1), Conv2d(a, b, 3, stride=2, padding=1)]
        self.conv_out = Conv2d(channels[-1], out_channels, 3, padding=1)

    def __call__(self, hint):  # (B, cin, H, W) -> (B, out, H/2^(n-1), W/2^(n-1))
        F = kernels.ops()
        h = F.silu(self.conv_in(hint))
        for conv in self.blocks:
            h = F.silu(conv(h))
        return self.conv_out(h)


class ControlNetModel(_TimedInput):
    def __init__(self, cfg: ControlNetConfig):
        ucfg = cfg.unet_config()
        self.config = cfg
        ch, heads, n = cfg.block_out_channels, ucfg.heads(), len(cfg.block_out_channels)
        temb = ch[0] * 4
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.conv_in = Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.controlnet_cond_embedding = ControlNetConditioningEmbedding(
            ch[0], cfg.conditioning_channels, cfg.conditioning_embedding_out_channels)
        self.down_blocks = [
            DownBlock(ucfg, ch[max(i - 1, 0)], ch[i], temb, heads[i], t == "CrossAttnDownBlock2D", i == n - 1)
            for i, t in enumerate(cfg.down_block_types)
        ]
        self.controlnet_down_blocks = [Conv2d(c, c, 1) for c in self.skip_channels]
        self.mid_block = MidBlock(ucfg, ch[-1], temb, heads[-1])
        self.controlnet_mid_block = Conv2d(ch[-1], ch[-1], 1)

    @property
    def skip_channels(self) -> list[int]:
        """Channels of the skip tensors in the order the down path makes them (conv_in's first)."""
        cfg = self.config
        out = [cfg.block_out_channels[0]]
        for i, c in enumerate(cfg.block_out_channels):
            out += [c] * (cfg.layers_per_block + (i < len(cfg.block_out_channels) - 1))
        return out

    def hint_size(self, h: int, w: int) -> tuple[int, int]:
        """The hint's (H, W) for latents of h × w."""
        d = self.config.hint_downscale
        return h * d, w * d

    def __call__(self, x, t, context, hint, conditioning_scale: float = 1.0, guess_mode: bool = False,
                 hint_embedding=None):
        """x (B, 4, h, w) the UNet's (scaled) input, t, context (B, S, cross_dim), hint (B, 3, H, W)
        in [0, 1] -> (down residuals: a list, one per skip tensor, mid residual (B, C, h/8, w/8)).
        `hint_embedding`: `embed_hint(hint)` made before (it depends on the hint only), instead of hint."""
        F = kernels.ops()
        x, context, temb_act = self._prepare(x, t, context)
        if hint_embedding is None:
            hint_embedding = self.embed_hint(self._check_hint(F, hint, x))
        want = (x.shape[0], self.config.block_out_channels[0], *x.shape[2:])
        if tuple(hint_embedding.shape) != want:
            raise InputError(f"ControlNet: hint embedding of shape {tuple(hint_embedding.shape)} for latents of shape "
                             f"{tuple(x.shape)} (needs {want})")
        h = self.conv_in(x)
        h += hint_embedding
        skips = [h]
        for block in self.down_blocks:
            h, s = block(h, temb_act, context)
            skips += s
        h = self.mid_block(h, temb_act, context)
        down = [conv(s) for conv, s in zip(self.controlnet_down_blocks, skips)]
        del skips
        mid = self.controlnet_mid_block(h)
        scales = self.scales(len(down), conditioning_scale, guess_mode)
        down = [r * np.float32(s) for r, s in zip(down, scales)]
        mid = mid * np.float32(scales[-1])
        if self.config.global_pool_conditions:
            down = [r.mean(axis=(2, 3), keepdims=True) for r in down]
            mid = mid.mean(axis=(2, 3), keepdims=True)
        return down, mid

    def embed_hint(self, hint):
        """(B, 3, H, W) in [0, 1] -> (B, C0, h, w): the control image through the hint encoder."""
        F = kernels.ops()
        hint = F.asarray(hint, dtype=activation_dtype(self.conv_in.weight.dtype))
        if self.config.controlnet_conditioning_channel_order == "bgr":
            hint = F.xp.ascontiguousarray(hint[:, ::-1])
        return self.controlnet_cond_embedding(hint)

    def scales(self, n_down: int, conditioning_scale: float, guess_mode: bool) -> list[float]:
        """The factor of each down residual and (last) of the mid one: all `conditioning_scale`, or
        in guess mode 10^(-1 + k/n_down) · scale (0.1 .. 1 over the n_down + 1 residuals)."""
        if guess_mode and not self.config.global_pool_conditions:
            ramp = np.logspace(-1, 0, n_down + 1).astype(np.float32)  # torch.logspace(-1, 0, 13), float32
            return [float(v * np.float32(conditioning_scale)) for v in ramp]
        return [float(conditioning_scale)] * (n_down + 1)

    def _check_hint(self, F, hint, x):
        hint = F.asarray(hint, dtype=activation_dtype(self.conv_in.weight.dtype))
        want = (x.shape[0], self.config.conditioning_channels, *self.hint_size(*x.shape[2:]))
        if tuple(hint.shape) != want:
            raise InputError(f"ControlNet: the control image must be {want} (B, C, H, W) for latents of shape "
                             f"{tuple(x.shape)}, got {tuple(hint.shape)}")
        return hint
