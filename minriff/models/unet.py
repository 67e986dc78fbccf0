"""UNet2DConditionModel of the Stable Diffusion v1.x family (Riffusion's denoiser).

    x (B,4,h,w), t, text (B,77,768)
    time_proj (sinusoid) -> time_embedding (linear_1, SiLU, linear_2) -> temb
    conv_in -> down_blocks (resnets [+ transformers], stride-2 downsampler) -> skips
    mid_block (resnet, transformer, resnet)
    up_blocks (concat a skip before each resnet, [transformers], nearest×2 upsampler)
    conv_norm_out -> SiLU -> conv_out -> eps (B,4,h,w)

Any latent size the downsamplers take works, as in diffusers: a side n that is not a multiple of
2^(levels-1) is halved to ceil(n/2) somewhere (SD's padding 1), and the upsampler coming back up
resizes (nearest, as torch) to the size of the skip it meets next instead of doubling. The
pipeline still rounds widths up to 64 px (inputs.py).

Heads per block come from `cfg.heads()` (diffusers calls the head *count* attention_head_dim);
the mid block uses the last down block's value and the up blocks the reversed list.

DeepCache: `deep_cache_full` (a full step that also returns the deep feature) and `deep_cache_step`
(only a shallow branch, fed that feature); the comment above them says which skip tensors are
recomputed and where the cached feature enters. The sampling loop decides which steps are which
(minriff.deepcache).
"""
from __future__ import annotations

import numpy as np

from minriff import kernels
from minriff.configs import UNetConfig
from minriff.errors import ConfigError, InputError
from minriff.models.blocks import Attention, Downsample2D, ResnetBlock2D, Upsample2D
from minriff.models.nn import Conv2d, GroupNorm, LayerNorm, Linear, Module, activation_dtype


class GEGLUFeedForward(Module):
    """net.0.proj: Linear C -> 2·4C, a·gelu(b) of the halves; net.2: Linear 4C -> C."""

    def __init__(self, dim: int, mult: int = 4):
        self.net = [_GEGLUProj(dim, dim * mult), None, Linear(dim * mult, dim)]  # net.1 is Dropout

    def __call__(self, x):  # (B, T, C) -> (B, T, C)
        return self.net[2](kernels.ops().geglu(self.net[0].proj(x)))


class _GEGLUProj(Module):
    def __init__(self, dim: int, inner: int):
        self.proj = Linear(dim, 2 * inner)


class BasicTransformerBlock(Module):
    """Pre-LN: x += attn1(norm1 x); x += attn2(norm2 x, text); x += ff(norm3 x)."""

    def __init__(self, dim: int, heads: int, cross_dim: int, only_cross_attention: bool = False):
        self.norm1 = LayerNorm(dim)
        self.attn1 = Attention(dim, heads, cross_dim if only_cross_attention else None)
        self.norm2 = LayerNorm(dim)
        self.attn2 = Attention(dim, heads, cross_dim)
        self.norm3 = LayerNorm(dim)
        self.ff = GEGLUFeedForward(dim)
        self.only_cross_attention = only_cross_attention

    def __call__(self, x, context, shared: bool = False):  # (B, T, C), (B, S, Cc) -> (B, T, C)
        """shared: x is the first half of a batch whose halves are equal (see UNet2DConditionModel):
        self-attention runs on that half, and its result is doubled before the cross-attention."""
        if shared and self.only_cross_attention:
            x = twice(x)
        x += self.attn1(self.norm1(x), context if self.only_cross_attention else None)  # x is owned: update in place
        if shared and not self.only_cross_attention:
            x = twice(x)
        x += self.attn2(self.norm2(x), context)
        x += self.ff(self.norm3(x))
        return x


class Transformer2DModel(Module):
    """GroupNorm (eps 1e-6) -> proj_in (1×1 conv, or Linear after flattening) -> transformer
    blocks over the h·w positions -> proj_out -> + input."""

    def __init__(self, channels: int, heads: int, cross_dim: int, groups: int, linear_projection: bool,
                 only_cross_attention: bool = False):
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        proj = (lambda: Linear(channels, channels)) if linear_projection else (lambda: Conv2d(channels, channels, 1))
        self.proj_in = proj()
        self.transformer_blocks = [BasicTransformerBlock(channels, heads, cross_dim, only_cross_attention)]
        self.proj_out = proj()

    def __call__(self, x, context, shared: bool = False):  # (B, C, H, W) -> same
        """shared: x (B/2, C, H, W) is the first half of a batch of two equal halves; the output
        is the whole batch's (B, C, H, W), the layers before the first cross-attention run once."""
        B, C, H, W = x.shape
        # (B, T, C) as a view: the projections read the pixels in place (the cpu backend's GEMMs take
        # either layout; a transposing copy here and at the end cost ~2% of a step)
        h = _project(self.proj_in, self.norm(x).reshape(B, C, H * W).transpose(0, 2, 1))
        for i, block in enumerate(self.transformer_blocks):
            h = block(h, context, shared=shared and i == 0)
        if shared and not self.transformer_blocks:
            h = twice(h)
        if shared:
            x = twice(x)
        if isinstance(self.proj_out, Linear):
            return x + self.proj_out(h).transpose(0, 2, 1).reshape(x.shape)
        out = self.proj_out(h.transpose(0, 2, 1).reshape(x.shape))  # 1x1 conv on the tokens as a channels-last image
        out += x
        return out


def twice(x):
    """(B, ...) -> (2B, ...): the batch followed by itself."""
    return kernels.ops().xp.concatenate([x, x])


def _project(layer, h):
    """Linear, or a 1×1 Conv2d applied as the same Linear on (B, T, C) (no layout round trip)."""
    if isinstance(layer, Linear):
        return layer(h)
    w = layer.weight
    return kernels.ops().linear(h, w.reshape(w.shape[0], w.shape[1]), layer.bias)


class DownBlock(Module):
    """CrossAttnDownBlock2D (with attentions) or DownBlock2D; returns the output and its skips."""

    def __init__(self, cfg: UNetConfig, cin: int, cout: int, temb: int, heads: int, cross: bool, last: bool):
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = [ResnetBlock2D(cin if i == 0 else cout, cout, temb, g, eps) for i in range(cfg.layers_per_block)]
        self.attentions = [_transformer(cfg, cout, heads) for _ in range(cfg.layers_per_block)] if cross else []
        self.downsamplers = [] if last else [Downsample2D(cout, cfg.downsample_padding)]

    def __call__(self, x, temb_act, context, limit: int | None = None, shared: bool = False):
        """-> (output, skips). `limit`: stop once that many skips are made (DeepCache's shallow branch).
        `shared`: x is the first half of a batch of two equal halves (temb_act and context are the
        whole batch's); the first resnet runs on that half, the rest on the whole batch."""
        skips = []
        for i, resnet in enumerate(self.resnets):
            if len(skips) == limit:
                return x, skips
            half = shared and i == 0
            x = resnet(x, temb_act[: len(x)] if half else temb_act)
            if self.attentions:
                x = self.attentions[i](x, context, shared=half)
            elif half:
                x = twice(x)
            skips.append(x)
        for down in self.downsamplers:
            if len(skips) == limit:
                return x, skips
            x = down(x)
            skips.append(x)
        return x, skips


class UpBlock(Module):
    """UpBlock2D / CrossAttnUpBlock2D: layers_per_block+1 resnets, each fed the concatenation of
    the running activation and the most recent unused skip."""

    def __init__(self, cfg: UNetConfig, prev: int, cout: int, skip_last: int, temb: int, heads: int,
                 cross: bool, last: bool):
        g, eps, n = cfg.norm_num_groups, cfg.norm_eps, cfg.layers_per_block + 1
        self.resnets = [
            ResnetBlock2D((prev if i == 0 else cout) + (skip_last if i == n - 1 else cout), cout, temb, g, eps)
            for i in range(n)
        ]
        self.attentions = [_transformer(cfg, cout, heads) for _ in range(n)] if cross else []
        self.upsamplers = [] if last else [Upsample2D(cout)]

    def __call__(self, x, skips: list, temb_act, context, start: int = 0, stop: int | None = None):
        """Resnets start .. stop-1 only, and the upsampler only when running to the end: DeepCache
        stops a full step where the cached feature is taken and starts a cached step there."""
        xp = kernels.ops().xp
        for i in range(start, len(self.resnets) if stop is None else stop):
            x = xp.concatenate([x, skips.pop()], axis=1)  # pop: the skip is freed once used
            x = self.resnets[i](x, temb_act)
            if self.attentions:
                x = self.attentions[i](x, context)
        if stop is None:
            for up in self.upsamplers:  # to the size of the skip it meets next (twice x's, unless odd)
                x = up(x, skips[-1].shape[2:] if skips else None)
        return x


class MidBlock(Module):
    """UNetMidBlock2DCrossAttn: resnet, transformer, resnet (output_scale_factor = mid_block_scale_factor)."""

    def __init__(self, cfg: UNetConfig, ch: int, temb: int, heads: int):
        g, eps, s = cfg.norm_num_groups, cfg.norm_eps, cfg.mid_block_scale_factor
        self.resnets = [ResnetBlock2D(ch, ch, temb, g, eps, s) for _ in range(2)]
        self.attentions = [_transformer(cfg, ch, heads)]

    def __call__(self, x, temb_act, context):
        x = self.resnets[0](x, temb_act)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb_act)


def _transformer(cfg: UNetConfig, ch: int, heads: int) -> Transformer2DModel:
    if ch % heads:
        raise ConfigError(f"UNet: {ch} channels cannot be split into {heads} attention heads")
    return Transformer2DModel(ch, heads, cfg.cross_attention_dim, cfg.norm_num_groups, cfg.use_linear_projection,
                              bool(cfg.only_cross_attention))


class TimestepEmbedding(Module):
    def __init__(self, cin: int, dim: int):
        self.linear_1 = Linear(cin, dim)
        self.linear_2 = Linear(dim, dim)

    def __call__(self, x):  # (B, cin) -> (B, dim)
        return self.linear_2(kernels.ops().silu(self.linear_1(x)))


class _TimedInput(Module):
    """What the UNet and the ControlNet share ahead of conv_in: the input checks and the time
    embedding (needs `conv_in`, `time_embedding` and a config with the UNet's input fields)."""

    def _prepare(self, x, t, context, rec=lambda *a: None):
        """Checked inputs (centred if the config says so) and SiLU(time embedding) (B, 4·C0)."""
        F = kernels.ops()
        dtype = activation_dtype(self.conv_in.weight.dtype)  # fp16-held weights compute in float32
        x, t, context = self._check_inputs(F, x, t, context, dtype)
        c = self.config
        t_emb = F.timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, float(c.freq_shift))
        temb = self.time_embedding(t_emb.astype(dtype, copy=False))
        rec("time_embedding", temb)
        if c.center_input_sample:
            x = 2 * x - 1.0
        return x, context, F.silu(temb)  # every ResNet applies SiLU to temb first: do it once

    def _down_size(self, n: int, levels: int) -> int | None:
        """A side of n latents after `levels` stride-2 3x3 downsamplers (ceil(n/2) each with SD's
        padding 1); None when one of them cannot take it (a padded input narrower than 3)."""
        pad = self.config.downsample_padding
        for _ in range(levels):
            padded = n + (2 * pad if pad else 1)  # padding 0: diffusers pads one at the end only
            if padded < 3:
                return None
            n = (padded - 3) // 2 + 1
        return n

    def _fits(self, n: int) -> bool:
        m = self._down_size(n, len(self.config.block_out_channels) - 1)
        return m is not None and m > 0

    def _check_inputs(self, F, x, t, context, dtype):
        xp, c = F.xp, self.config
        x = F.asarray(x, dtype=dtype)
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise InputError(f"UNet: latents must be (B, {c.in_channels}, h, w), got shape {tuple(x.shape)}")
        B, _, h, w = x.shape
        if not (self._fits(h) and self._fits(w)):  # other sizes work, as in diffusers (upsamplers meet the skips)
            raise InputError(f"UNet: latent size {h}×{w} is too small for its {len(c.block_out_channels) - 1} "
                             f"downsamplers (padding {c.downsample_padding})")
        t = xp.asarray(F.asarray(t), dtype=xp.float32).reshape(-1)
        if t.shape[0] == 1:
            t = xp.broadcast_to(t, (B,)).copy()
        if t.shape[0] != B:
            raise InputError(f"UNet: {t.shape[0]} timesteps for a batch of {B}")
        context = F.asarray(context, dtype=dtype)
        if context.ndim != 3 or context.shape[0] != B or context.shape[2] != c.cross_attention_dim:
            raise InputError(f"UNet: text states must be (B={B}, S, {c.cross_attention_dim}), "
                             f"got shape {tuple(context.shape)}")
        return x, t, context


class UNet2DConditionModel(_TimedInput):
    def __init__(self, cfg: UNetConfig):
        if isinstance(cfg.only_cross_attention, (list, tuple)):
            raise ConfigError("UNet: per-block only_cross_attention is unsupported")
        self.config = cfg
        ch = cfg.block_out_channels
        n = len(ch)
        temb = ch[0] * 4
        heads = cfg.heads()
        if len(heads) != n:
            raise ConfigError(f"UNet: {len(heads)} attention head counts for {n} blocks")
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.conv_in = Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = [
            DownBlock(cfg, ch[max(i - 1, 0)], ch[i], temb, heads[i], t == "CrossAttnDownBlock2D", i == n - 1)
            for i, t in enumerate(cfg.down_block_types)
        ]
        self.mid_block = MidBlock(cfg, ch[-1], temb, heads[-1])
        rch, rheads = ch[::-1], heads[::-1]
        self.up_blocks = [
            UpBlock(cfg, rch[max(i - 1, 0)], rch[i], rch[min(i + 1, n - 1)], temb, rheads[i],
                    t == "CrossAttnUpBlock2D", i == n - 1)
            for i, t in enumerate(cfg.up_block_types)
        ]
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, ch[0], cfg.norm_eps)
        self.conv_out = Conv2d(ch[0], cfg.out_channels, 3, padding=1)

    def __call__(self, x, t, context, trace: dict | None = None, down_block_additional_residuals=None,
                 mid_block_additional_residual=None):
        """x (B, in, h, w) noisy latents, t scalar or (B,) timesteps, context (B, S, cross_dim) text
        states -> predicted noise (B, out, h, w). `trace`, when given, receives each block's output
        under its diffusers module name (for layer-by-layer comparisons).
        ControlNet (as diffusers): `down_block_additional_residuals`, one array per skip tensor (12
        for SD 1.5, each shaped like its skip), are added to the skips before the up path takes
        them; `mid_block_additional_residual` to the mid block's output. Give both or neither."""
        F = kernels.ops()
        rec = (lambda name, v: trace.__setitem__(name, F.to_host(v).copy())) if trace is not None else (lambda *a: None)
        control = self._check_residuals(down_block_additional_residuals, mid_block_additional_residual)
        x, context, temb_act = self._prepare(x, t, context, rec)
        x, skips = self._down(x, temb_act, context, rec=rec)
        if control:  # new arrays: the last skip is also the mid block's input, which stays as it is
            skips = [s + self._residual(F, r, s) for s, r in zip(skips, down_block_additional_residuals)]
        x = self.mid_block(x, temb_act, context)
        if control:
            x += self._residual(F, mid_block_additional_residual, x)
        rec("mid_block", x)
        for i, block in enumerate(self.up_blocks):
            x = block(x, skips, temb_act, context)
            rec(f"up_blocks.{i}", x)
        x = self._head(x)
        rec("conv_out", x)
        return x

    # Classifier-free guidance calls the UNet on [x, x] with [uncond, cond] text: until the first
    # cross-attention both halves compute the same thing. When the latents' halves (and so the
    # timesteps' embedding) are equal, conv_in, the first resnet and the first transformer's
    # self-attention run on one half (SD 1.5 at 64x64: one 4096-token self-attention of the five,
    # ~3% of a step) and are doubled there. The result equals the whole batch's within float32
    # rounding (a GEMM over one half may be blocked differently than over both).

    def _down(self, x, temb_act, context, branch: int | None = None, rec=lambda *a: None):
        """conv_in and the down blocks -> (h, skips); with `branch`, only until skips 0..branch
        are made (DeepCache's shallow branch; h is then not meaningful)."""
        shared = _equal_halves(x, temb_act)
        h = self.conv_in(x[: len(x) // 2] if shared else x)
        skips = [twice(h) if shared else h]
        rec("conv_in", skips[0])
        for i, block in enumerate(self.down_blocks):
            if branch is not None and len(skips) > branch:
                break
            limit = None if branch is None else branch + 1 - len(skips)
            h, s = block(h, temb_act, context, limit=limit, shared=shared and i == 0)
            skips += s
            rec(f"down_blocks.{i}", h)
        return h, skips

    def _check_residuals(self, down, mid) -> bool:
        if down is None and mid is None:
            return False
        n = self.deep_cache_branches  # = the skip tensors: conv_in's and the down blocks'
        if down is None or mid is None:
            raise InputError("UNet: give both down_block_additional_residuals and mid_block_additional_residual "
                             "(a ControlNet's outputs), or neither")
        if len(down) != n:
            raise InputError(f"UNet: {len(down)} down-block residuals for {n} skip tensors")
        return True

    @staticmethod
    def _residual(F, r, like):
        r = F.asarray(r, dtype=like.dtype)
        if tuple(r.shape) != tuple(like.shape):
            raise InputError(f"UNet: a ControlNet residual of shape {tuple(r.shape)} for a tensor of shape "
                             f"{tuple(like.shape)}")
        return r

    def _head(self, x):  # (B, C0, h, w) -> (B, out, h, w)
        return self.conv_out(self.conv_norm_out(x, silu=True))

    # ---- DeepCache (Ma et al. 2023): reuse the deep features between denoising steps -------------
    # Number the skip tensors in the order the down path makes them: 0 = conv_in's output, then per
    # down block its (resnet [+ transformer]) outputs and its downsampler's; the up resnets take them
    # back newest first. Branch b keeps skips 0..b fresh: a cached step runs conv_in and the down
    # layers that make skips 1..b, then the up resnets that take skips b..0 (with their transformers
    # and upsamplers) and the output head. The first of those up resnets takes as its running input
    # the feature cached by the last full step, which stands for everything deeper: the rest of the
    # down path, the mid block and the deeper up layers. For SD 1.5 (layers_per_block 2) b is the
    # DeepCache package's cache_branch_id (0..11).

    @property
    def deep_cache_branches(self) -> int:
        """How many DeepCache branches this UNet has (= skip tensors; 12 for SD 1.5)."""
        return len(self.down_blocks) * (self.config.layers_per_block + 1)

    def deep_cache_full(self, x, t, context, branch: int):
        """A full step that also returns the cache -> (eps (B, out, h, w), feature): the running
        input of the up resnet that takes skip `branch`, which `deep_cache_step` starts from."""
        x, context, temb_act = self._prepare(x, t, context)
        block_i, resnet_i = self._cache_entry(branch)
        h, skips = self._down(x, temb_act, context)
        h = self.mid_block(h, temb_act, context)
        for block in self.up_blocks[:block_i]:
            h = block(h, skips, temb_act, context)
        feature = self.up_blocks[block_i](h, skips, temb_act, context, stop=resnet_i)
        # skips 0..branch are left, as in a cached step
        return self._shallow_up(feature, skips, temb_act, context, block_i, resnet_i), feature

    def deep_cache_step(self, x, t, context, branch: int, feature):
        """A cached step: only the shallow branch `branch`, entered with a full step's `feature`
        (the same branch; the batch it was made at, e.g. doubled for guidance) -> eps (B, out, h, w).
        On the inputs of that full step it returns the full step's eps exactly."""
        x, context, temb_act = self._prepare(x, t, context)
        block_i, resnet_i = self._cache_entry(branch)
        feature = self._check_feature(feature, x, block_i, resnet_i)
        _, skips = self._down(x, temb_act, context, branch=int(branch))  # skips 0..branch, made fresh
        return self._shallow_up(feature, skips, temb_act, context, block_i, resnet_i)

    def _shallow_up(self, h, skips, temb_act, context, block_i: int, resnet_i: int):
        """The up path from resnet `resnet_i` of up block `block_i` on, then the output head."""
        h = self.up_blocks[block_i](h, skips, temb_act, context, start=resnet_i)
        for block in self.up_blocks[block_i + 1:]:
            h = block(h, skips, temb_act, context)
        return self._head(h)

    def _cache_entry(self, branch) -> tuple[int, int]:
        """(up block, resnet) that takes skip `branch`: counting every up resnet in order, the k-th
        takes skip (branches - 1 - k)."""
        n = self.deep_cache_branches
        if isinstance(branch, bool) or not isinstance(branch, (int, np.integer)) or not 0 <= branch < n:
            raise InputError(f"DeepCache branch must be an integer from 0 to {n - 1} for this UNet "
                             f"({len(self.down_blocks)} blocks of {self.config.layers_per_block} layers), "
                             f"got {branch!r}")
        return divmod(n - 1 - int(branch), self.config.layers_per_block + 1)

    def _check_feature(self, feature, x, block_i: int, resnet_i: int):
        """The cached feature as a backend array, refused unless it has the shape a full step of
        the same branch leaves for these latents: (B, C, h', w') at up block `block_i`'s level."""
        F = kernels.ops()
        rch = self.config.block_out_channels[::-1]
        channels = rch[max(block_i - 1, 0)] if resnet_i == 0 else rch[block_i]
        levels = len(rch) - 1 - block_i
        B, _, h, w = x.shape
        want = (B, channels, self._down_size(h, levels), self._down_size(w, levels))
        got = tuple(getattr(feature, "shape", ()))
        if got != want:
            raise InputError(f"DeepCache feature has shape {got}, but this branch and these latents need {want}: "
                             "pass the feature that deep_cache_full returned for the same branch and batch")
        return F.asarray(feature, dtype=x.dtype)


def _equal_halves(x, temb_act) -> bool:
    """True when the batch is two equal halves (classifier-free guidance's doubled latents)."""
    B = x.shape[0]
    if B % 2:
        return False
    xp = kernels.ops().xp
    h = B // 2
    return bool(xp.array_equal(x[:h], x[h:]) and xp.array_equal(temb_act[:h], temb_act[h:]))
