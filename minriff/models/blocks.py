"""Building blocks shared by the UNet and the VAE: ResNet block, attention, down/upsampling.

Attribute paths equal the diffusers state-dict keys (resnets.0.norm1.weight, attn1.to_q.weight,
downsamplers.0.conv.weight, ...). Every block takes and returns arrays of the current kernel
backend; intermediates are dropped as soon as they are used so peak memory stays near two
activations of the widest layer.
"""
from __future__ import annotations

import numpy as np

from minriff import kernels
from minriff.models.nn import Conv2d, GroupNorm, Linear, Module, merge_heads, split_heads


class ResnetBlock2D(Module):
    """GN→SiLU→conv3×3 (+ Linear(SiLU(temb)) per channel), GN→SiLU→conv3×3, plus the input
    (through a 1×1 conv when the channel count changes), divided by output_scale_factor."""

    def __init__(self, cin: int, cout: int, temb_channels: int | None, groups: int, eps: float,
                 output_scale_factor: float = 1.0):
        self.norm1 = GroupNorm(groups, cin, eps)
        self.conv1 = Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = None if temb_channels is None else Linear(temb_channels, cout)
        self.norm2 = GroupNorm(groups, cout, eps)
        self.conv2 = Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = Conv2d(cin, cout, 1) if cin != cout else None
        self.output_scale_factor = output_scale_factor

    def __call__(self, x, temb_act=None):
        """x (B, Cin, H, W); temb_act = SiLU(time embedding) (B, temb) or None -> (B, Cout, H, W)."""
        # one statement per step, so each intermediate is released as soon as the next exists
        h = self.norm1(x, silu=True)
        h = self.conv1(h)
        if temb_act is not None:
            h += self.time_emb_proj(temb_act)[:, :, None, None]
        h = self.norm2(h, silu=True)
        h = self.conv2(h)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h += shortcut
        if self.output_scale_factor != 1.0:
            h /= self.output_scale_factor
        return h


class Downsample2D(Module):
    """Stride-2 conv3×3. padding 0 means diffusers' asymmetric pad: one extra row/column at the
    bottom/right only (the VAE encoder, and UNets with downsample_padding=0)."""

    def __init__(self, channels: int, padding: int):
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding if padding else (0, 1, 0, 1))

    def __call__(self, x):  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(x)


class Upsample2D(Module):
    """Nearest ×2 then conv3×3 pad 1; or nearest to `size` when that is not twice the input (a UNet
    on latents whose size is not a multiple of its downscale: the skip it meets next is smaller)."""

    def __init__(self, channels: int):
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def __call__(self, x, size=None):  # (B, C, H, W) -> (B, C, 2H, 2W) or (B, C, *size)
        H, W = x.shape[2:]
        if size is None or tuple(size) == (2 * H, 2 * W):
            return self.conv(kernels.ops().upsample_nearest2x(x))
        return self.conv(resize_nearest(x, tuple(size)))


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position as torch's nearest interpolation picks it:
    min(floor(i · (float32) n_in/n_out), n_in - 1)."""
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


def resize_nearest(x, size: tuple):
    """(B, C, H, W) -> (B, C, *size), nearest (torch's F.interpolate(size=..., mode="nearest"))."""
    xp = kernels.ops().xp
    ih, iw = (xp.asarray(_nearest_index(n, m)) for n, m in zip(x.shape[2:], size))
    return xp.ascontiguousarray(x[:, :, ih][:, :, :, iw])


class Attention(Module):
    """Multi-head attention on sequences: to_q/to_k/to_v, softmax(q kᵀ/√d) v per head, to_out.0.
    Self-attention when context is None, cross-attention to context (B, S, cross_dim) otherwise."""

    def __init__(self, dim: int, heads: int, cross_dim: int | None = None, qkv_bias: bool = False):
        kv_dim = cross_dim or dim
        self.to_q = Linear(dim, dim, bias=qkv_bias)
        self.to_k = Linear(kv_dim, dim, bias=qkv_bias)
        self.to_v = Linear(kv_dim, dim, bias=qkv_bias)
        self.to_out = [Linear(dim, dim), None]  # to_out.1 is Dropout in diffusers
        self.heads = heads

    def __call__(self, x, context=None):  # (B, T, C) -> (B, T, C)
        src = x if context is None else context
        q = split_heads(self.to_q(x), self.heads)  # (B, H, T, D)
        k = split_heads(self.to_k(src), self.heads)  # (B, H, S, D)
        v = split_heads(self.to_v(src), self.heads)
        o = kernels.ops().attention(q, k, v)  # never a T×S matrix per head in the fast backends
        del q, k, v
        return self.to_out[0](merge_heads(o))
