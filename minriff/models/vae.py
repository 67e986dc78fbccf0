"""AutoencoderKL (the Stable Diffusion VAE): image (B,3,H,W) in [-1,1] <-> latents (B,4,H/8,W/8).

    encoder: conv_in -> down_blocks (resnets, stride-2 conv with bottom/right pad) -> mid_block
             (resnet, single-head self-attention, resnet) -> GN -> SiLU -> conv_out (2·latent)
    quant_conv 1×1 -> (mean, logvar)          post_quant_conv 1×1 -> decoder:
    decoder: conv_in -> mid_block -> up_blocks (layers_per_block+1 resnets, nearest×2 + conv)
             -> GN -> SiLU -> conv_out
GroupNorm eps is 1e-6 everywhere. The scaling factor (cfg.scaling_factor) is applied by the pipeline.
"""
from __future__ import annotations

from minriff import kernels
from minriff.configs import VAEConfig
from minriff.errors import ConfigError, InputError
from minriff.models.blocks import Attention, Downsample2D, ResnetBlock2D, Upsample2D
from minriff.models.nn import Conv2d, GroupNorm, Module, activation_dtype

EPS = 1e-6


class SpatialSelfAttention(Attention):
    """The mid-block attention: GroupNorm, then one head over all h·w positions (T = 4096 at
    64×64 latents, d = 512: the tiled kernel attention keeps this O(T·d) in memory), + input."""

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, heads=1, qkv_bias=True)
        self.group_norm = GroupNorm(groups, channels, EPS)

    def __call__(self, x):  # (B, C, H, W) -> same
        xp = kernels.ops().xp
        B, C, H, W = x.shape
        h = xp.ascontiguousarray(self.group_norm(x).reshape(B, C, H * W).transpose(0, 2, 1))  # (B, T, C)
        h = super().__call__(h)
        return x + h.transpose(0, 2, 1).reshape(B, C, H, W)


class MidBlock(Module):
    def __init__(self, ch: int, groups: int):
        self.resnets = [ResnetBlock2D(ch, ch, None, groups, EPS) for _ in range(2)]
        self.attentions = [SpatialSelfAttention(ch, groups)]

    def __call__(self, x):
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class DownEncoderBlock2D(Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, last: bool):
        self.resnets = [ResnetBlock2D(cin if i == 0 else cout, cout, None, groups, EPS) for i in range(layers)]
        self.downsamplers = [] if last else [Downsample2D(cout, padding=0)]

    def __call__(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        for down in self.downsamplers:
            x = down(x)
        return x


class UpDecoderBlock2D(Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, last: bool):
        self.resnets = [ResnetBlock2D(cin if i == 0 else cout, cout, None, groups, EPS) for i in range(layers)]
        self.upsamplers = [] if last else [Upsample2D(cout)]

    def __call__(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        for up in self.upsamplers:
            x = up(x)
        return x


class Encoder(Module):
    def __init__(self, cfg: VAEConfig):
        ch, g, n = cfg.block_out_channels, cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = [
            DownEncoderBlock2D(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, g, i == n - 1) for i in range(n)
        ]
        self.mid_block = MidBlock(ch[-1], g)
        self.conv_norm_out = GroupNorm(g, ch[-1], EPS)
        self.conv_out = Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def __call__(self, x, rec):
        x = self.conv_in(x)
        rec("encoder.conv_in", x)
        for i, block in enumerate(self.down_blocks):
            x = block(x)
            rec(f"encoder.down_blocks.{i}", x)
        x = self.mid_block(x)
        rec("encoder.mid_block", x)
        x = self.conv_out(self.conv_norm_out(x, silu=True))
        rec("encoder", x)
        return x


class Decoder(Module):
    def __init__(self, cfg: VAEConfig):
        ch, g, n = cfg.block_out_channels[::-1], cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], g)
        self.up_blocks = [
            UpDecoderBlock2D(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, g, i == n - 1) for i in range(n)
        ]
        self.conv_norm_out = GroupNorm(g, ch[-1], EPS)
        self.conv_out = Conv2d(ch[-1], cfg.out_channels, 3, padding=1)

    def __call__(self, z, rec):
        x = self.conv_in(z)
        rec("decoder.conv_in", x)
        x = self.mid_block(x)
        rec("decoder.mid_block", x)
        for i, block in enumerate(self.up_blocks):
            x = block(x)
            rec(f"decoder.up_blocks.{i}", x)
        x = self.conv_out(self.conv_norm_out(x, silu=True))
        rec("decoder", x)
        return x


class AutoencoderKL(Module):
    def __init__(self, cfg: VAEConfig):
        bad = [t for t in cfg.down_block_types if t != "DownEncoderBlock2D"]
        bad += [t for t in cfg.up_block_types if t != "UpDecoderBlock2D"]
        if bad or len(cfg.down_block_types) != len(cfg.block_out_channels) \
                or len(cfg.up_block_types) != len(cfg.block_out_channels):
            raise ConfigError(f"VAE: block types must be DownEncoderBlock2D/UpDecoderBlock2D, one per "
                              f"block_out_channels entry; got {cfg.down_block_types} / {cfg.up_block_types}")
        self.config = cfg
        L = cfg.latent_channels
        self.encoder = Encoder(cfg)
        self.quant_conv = Conv2d(2 * L, 2 * L, 1)
        self.post_quant_conv = Conv2d(L, L, 1)
        self.decoder = Decoder(cfg)

    @property
    def downscale(self) -> int:
        return self.config.downscale

    @property
    def stages(self) -> int:
        """How many times `encode` / `decode` call their `progress` (conv_in, each block, mid block,
        conv_out, the quant conv)."""
        return len(self.config.block_out_channels) + 4

    def encode(self, img, trace: dict | None = None, progress=None):
        """img (B, in, H, W) in [-1, 1], H and W multiples of the downscale factor ->
        (mean, logvar), each (B, latent, H/f, W/f); logvar clamped to [-30, 20].
        `progress()` is called after each of the `stages` stages."""
        F = kernels.ops()
        x = self._check(F, img, self.config.in_channels, "image", self.downscale)
        rec = _recorder(F, trace, progress)
        moments = self.quant_conv(self.encoder(x, rec))
        rec("quant_conv", moments)
        L = self.config.latent_channels
        mean, logvar = moments[:, :L], F.xp.clip(moments[:, L:], -30.0, 20.0)
        return mean, logvar

    def sample(self, mean, logvar, noise):
        """z = mean + exp(logvar / 2) · noise (the reparameterised draw from the posterior)."""
        F = kernels.ops()
        noise = F.asarray(noise, dtype=mean.dtype)
        if noise.shape != mean.shape:
            raise InputError(f"VAE: noise shape {tuple(noise.shape)} differs from latent shape {tuple(mean.shape)}")
        return mean + F.xp.exp(0.5 * logvar) * noise

    def decode(self, z, trace: dict | None = None, progress=None):
        """z (B, latent, h, w) (already divided by the scaling factor) -> image (B, out, h·f, w·f).
        `progress()` is called after each of the `stages` stages."""
        F = kernels.ops()
        z = self._check(F, z, self.config.latent_channels, "latents", 1)
        rec = _recorder(F, trace, progress)
        z = self.post_quant_conv(z)
        rec("post_quant_conv", z)
        return self.decoder(z, rec)

    def _check(self, F, x, channels, what, multiple):
        x = F.asarray(x, dtype=activation_dtype(self.quant_conv.weight.dtype))
        if x.ndim != 4 or x.shape[1] != channels:
            raise InputError(f"VAE: {what} must be (B, {channels}, H, W), got shape {tuple(x.shape)}")
        H, W = x.shape[2:]
        if H == 0 or W == 0 or H % multiple or W % multiple:
            raise InputError(f"VAE: {what} size {H}×{W} must be a positive multiple of {multiple}")
        return x


def _recorder(F, trace, progress=None):
    def rec(name, v):
        if trace is not None:
            trace[name] = F.to_host(v).copy()
        if progress is not None:
            progress()
    return rec
