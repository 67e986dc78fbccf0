"""AutoencoderTiny (TAESD): a distilled stand-in for the SD VAE, 3×3 convs and ReLUs only.

Same latent space as the SD VAE's *scaled* latents (scaling_factor 1.0: no division before decode),
about 1.2 M parameters per half against the VAE's 84 M. Keys and conventions are diffusers'
`AutoencoderTiny`:

    encoder.layers: conv in->C, Block ×n0, then per stage: stride-2 conv C->C (no bias), Block ×n_i;
                    conv C->latent.        img in [-1, 1] -> (img + 1) / 2 -> layers -> latents
    decoder.layers: conv latent->C, ReLU, then per stage: Block ×n_i, nearest ×2, conv C->C (no bias);
                    the last stage ends in conv C->out (with bias) instead.
                    latents -> tanh(z / 3) · 3 -> layers -> out · 2 - 1 in about [-1, 1]
    Block:          relu(conv.4(relu(conv.2(relu(conv.0(x))))) + x)

Indices in `layers` count the parameter-free ReLU and Upsample entries too, as in the checkpoints
(`decoder.layers.2.conv.0.weight` is the first block's first conv).
"""
from __future__ import annotations

from minriff import kernels
from minriff.configs import TAESDConfig
from minriff.errors import InputError
from minriff.models.nn import Conv2d, Module


class ReLU(Module):
    def __call__(self, x):
        return kernels.ops().relu(x)


class Upsample2x(Module):
    def __call__(self, x):  # (N, C, H, W) -> (N, C, 2H, 2W)
        return kernels.ops().upsample_nearest2x(x)


class Block(Module):
    """diffusers' AutoencoderTinyBlock with equal in/out channels (identity skip)."""

    def __init__(self, channels: int):
        self.conv = [Conv2d(channels, channels, 3, padding=1), ReLU(), Conv2d(channels, channels, 3, padding=1),
                     ReLU(), Conv2d(channels, channels, 3, padding=1)]

    def __call__(self, x):  # (N, C, H, W) -> same
        F = kernels.ops()
        h = F.relu(self.conv[0](x))
        h = F.relu(self.conv[2](h))
        return F.relu(self.conv[4](h), x)  # the skip add and the block's last ReLU in one pass


class EncoderTiny(Module):
    def __init__(self, cfg: TAESDConfig):
        C = cfg.encoder_block_out_channels[0]
        self.layers = []
        for i, n in enumerate(cfg.num_encoder_blocks):
            if i == 0:
                self.layers.append(Conv2d(cfg.in_channels, C, 3, padding=1))
            else:
                self.layers.append(Conv2d(C, C, 3, stride=2, padding=1, bias=False))
            self.layers += [Block(C) for _ in range(n)]
        self.layers.append(Conv2d(C, cfg.latent_channels, 3, padding=1))

    def __call__(self, x):  # (N, in, H, W) in [0, 1] -> (N, latent, H/f, W/f)
        for layer in self.layers:
            x = layer(x)
        return x


class DecoderTiny(Module):
    def __init__(self, cfg: TAESDConfig):
        C, stages = cfg.decoder_block_out_channels[0], len(cfg.num_decoder_blocks)
        self.layers = [Conv2d(cfg.latent_channels, C, 3, padding=1), ReLU()]
        for i, n in enumerate(cfg.num_decoder_blocks):
            self.layers += [Block(C) for _ in range(n)]
            if i < stages - 1:
                self.layers += [Upsample2x(), Conv2d(C, C, 3, padding=1, bias=False)]
            else:
                self.layers.append(Conv2d(C, cfg.out_channels, 3, padding=1))

    def __call__(self, z):  # (N, latent, h, w), already clamped -> (N, out, h·f, w·f) in about [0, 1]
        for layer in self.layers:
            z = layer(z)
        return z


class AutoencoderTiny(Module):
    def __init__(self, cfg: TAESDConfig):
        self.config = cfg
        self.encoder = EncoderTiny(cfg)
        self.decoder = DecoderTiny(cfg)

    @property
    def downscale(self) -> int:
        return self.config.downscale

    def encode(self, img):
        """img (B, in, H, W) in [-1, 1], H and W multiples of the downscale factor -> latents
        (B, latent, H/f, W/f) in the SD VAE's scaled latent space (about ±3). Deterministic: there is
        no distribution to sample (diffusers' `.latents`)."""
        F = kernels.ops()
        x = self._check(F, img, self.config.in_channels, "image", self.downscale)
        return self.encoder((x + 1) / 2)

    def decode(self, z):
        """latents (B, latent, h, w) -> image (B, out, h·f, w·f) in about [-1, 1]."""
        F = kernels.ops()
        z = self._check(F, z, self.config.latent_channels, "latents", 1)
        z = F.xp.tanh(z / 3) * 3  # soft clamp to ±3 (the original's Clamp layer)
        return self.decoder(z) * 2 - 1

    def _check(self, F, x, channels, what, multiple):
        x = F.asarray(x, dtype=self.decoder.layers[0].weight.dtype)
        if x.ndim != 4 or x.shape[1] != channels:
            raise InputError(f"TAESD: {what} must be (B, {channels}, H, W), got shape {tuple(x.shape)}")
        H, W = x.shape[2:]
        if H == 0 or W == 0 or H % multiple or W % multiple:
            raise InputError(f"TAESD: {what} size {H}×{W} must be a positive multiple of {multiple}")
        return x
