"""Model configurations as dataclasses, read from diffusers/transformers `config.json` values.

`from_dict` keeps the fields minriff knows, ignores bookkeeping keys (`_class_name`, ...) and
refuses values it cannot run (a ConfigError naming the field): wrong types, non-finite numbers,
values outside `LIMITS`, unknown block types and activations. `check_model_config(raw)` is the one
check of the three component configs a weights file carries (convert and load both call it): each
`from_dict`, plus what the pipeline needs of them together. Presets: `SD15` (Stable Diffusion
v1.5 = Riffusion shapes) and `TINY` (a few-thousand-parameter model with the same structure, for
tests: it still decodes 64-row latents to 512-px-high spectrograms). `TAESDConfig` is the tiny
autoencoder's (diffusers' AutoencoderTiny), with presets in `TAESD_PRESETS` ("taesd", "tiny").
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from minriff import values
from minriff.errors import ConfigError

# Inclusive ranges of the numeric fields (and of each entry of the channel tuples). Far above any
# SD v1.x value; they keep a corrupt or hostile config from asking for absurd models or NaN/inf.
LIMITS = {
    "text encoder": dict(vocab_size=(1, 1 << 20), hidden_size=(1, 16384), intermediate_size=(1, 65536),
                         num_hidden_layers=(1, 128), num_attention_heads=(1, 256), max_position_embeddings=(1, 4096),
                         layer_norm_eps=(1e-12, 1.0), projection_dim=(1, 16384)),
    "UNet": dict(sample_size=(1, 4096), in_channels=(1, 64), out_channels=(1, 64), block_out_channels=(1, 8192),
                 layers_per_block=(1, 16), attention_head_dim=(1, 1024), num_attention_heads=(1, 1024),
                 cross_attention_dim=(1, 16384), norm_num_groups=(1, 1024), norm_eps=(1e-12, 1.0),
                 freq_shift=(0, 1), downsample_padding=(0, 2), mid_block_scale_factor=(1e-6, 1e6)),
    "VAE": dict(in_channels=(1, 16), out_channels=(1, 16), latent_channels=(1, 64), block_out_channels=(1, 8192),
                layers_per_block=(1, 16), norm_num_groups=(1, 1024), sample_size=(1, 16384),
                scaling_factor=(1e-6, 1e6)),
    "TAESD": dict(in_channels=(1, 16), out_channels=(1, 16), encoder_block_out_channels=(1, 4096),
                  decoder_block_out_channels=(1, 4096), latent_channels=(1, 64), upsampling_scaling_factor=(1, 8),
                  num_encoder_blocks=(0, 64), num_decoder_blocks=(0, 64), latent_magnitude=(1e-6, 1e6),
                  latent_shift=(-1e6, 1e6), scaling_factor=(1e-6, 1e6), shift_factor=(-1e6, 1e6)),
    "ControlNet": dict(in_channels=(1, 64), conditioning_channels=(1, 16), block_out_channels=(1, 8192),
                       layers_per_block=(1, 16), attention_head_dim=(1, 1024), num_attention_heads=(1, 1024),
                       cross_attention_dim=(1, 16384), norm_num_groups=(1, 1024), norm_eps=(1e-12, 1.0),
                       freq_shift=(0, 1), downsample_padding=(0, 2), mid_block_scale_factor=(1e-6, 1e6),
                       conditioning_embedding_out_channels=(1, 8192)),
}
MAX_BLOCKS = 8


def _from_dict(cls, d: dict, what: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{what} config must be a JSON object, got {values.json_kind(d)}")
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    try:
        cfg = cls(**kw)
    except TypeError as e:
        raise ConfigError(f"{what} config: {e}") from None
    for f in dataclasses.fields(cls):
        _check_field(what, f.name, f.type, getattr(cfg, f.name))
    cfg.validate()
    return cfg


def _check_field(what: str, name: str, kind: str, v) -> None:
    limits = LIMITS[what].get(name)
    if kind == "bool" and not isinstance(v, bool):
        raise ConfigError(f"{what} config: {name} must be true or false, got {v!r}")
    if kind == "str" and not isinstance(v, str):
        raise ConfigError(f"{what} config: {name} must be a string, got {v!r}")
    if kind == "tuple":
        if not isinstance(v, tuple) or not 1 <= len(v) <= MAX_BLOCKS:
            raise ConfigError(f"{what} config: {name} must be a list of 1 to {MAX_BLOCKS} entries, got {v!r}")
        for item in v:
            _check_field(what, name, "int" if limits else "str", item)
    if kind in ("int", "float") or (kind == "object" and limits and v is not None):
        for item in (v if isinstance(v, tuple) and kind == "object" else (v,)):
            _check_number(what, name, "float" if kind == "float" else "int", item, limits)


def _check_number(what: str, name: str, kind: str, v, limits) -> None:
    if isinstance(v, bool) or not isinstance(v, int if kind == "int" else (int, float)):
        raise ConfigError(f"{what} config: {name} must be {'an integer' if kind == 'int' else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise ConfigError(f"{what} config: {name} must be finite, got {v!r}")
    lo, hi = limits or (0, math.inf)
    if not lo <= v <= hi:
        raise ConfigError(f"{what} config: {name} = {v!r} is outside [{lo}, {hi}]")


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    projection_dim: int = 768

    @classmethod
    def from_dict(cls, d):
        return _from_dict(cls, d, "text encoder")

    def to_dict(self):
        return dataclasses.asdict(self)

    def validate(self):
        if self.num_attention_heads < 1 or self.hidden_size < 1:
            raise ConfigError("text encoder: hidden_size and num_attention_heads must be >= 1")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"text encoder: hidden_size {self.hidden_size} not divisible by "
                              f"{self.num_attention_heads} heads")
        if self.hidden_act not in ("quick_gelu", "gelu"):
            raise ConfigError(f"text encoder: unsupported hidden_act {self.hidden_act!r} "
                              "(SD 2.x uses OpenCLIP; unsupported)")


@dataclass(frozen=True)
class UNetConfig:
    sample_size: int = 64
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    attention_head_dim: object = 8  # diffusers' name; for SD v1.x it is the number of heads (int or per-block tuple)
    num_attention_heads: object = None  # newer diffusers spelling; wins when set
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    act_fn: str = "silu"
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    use_linear_projection: bool = False
    upcast_attention: bool = False
    only_cross_attention: bool = False
    dual_cross_attention: bool = False
    center_input_sample: bool = False
    num_class_embeds: object = None
    transformer_layers_per_block: object = 1

    @property
    def deep_cache_branches(self) -> int:
        """DeepCache branches of a UNet of this config (= its skip tensors; 12 for SD 1.5)."""
        return len(self.down_block_types) * (self.layers_per_block + 1)

    @classmethod
    def from_dict(cls, d):
        return _from_dict(cls, d, "UNet")

    def to_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def heads(self) -> tuple:
        """Number of attention heads per down block (diffusers' attention_head_dim quirk)."""
        h = self.num_attention_heads if self.num_attention_heads is not None else self.attention_head_dim
        return tuple(h) if isinstance(h, (list, tuple)) else (h,) * len(self.block_out_channels)

    def validate(self):
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ConfigError("UNet: block_out_channels, down_block_types and up_block_types differ in length")
        if self.in_channels != 4:
            raise ConfigError(f"UNet: in_channels={self.in_channels} is unsupported (9 = inpainting UNet, 8 = pix2pix)")
        if self.num_class_embeds is not None or self.dual_cross_attention:
            raise ConfigError("UNet: class embeddings / dual cross-attention are unsupported")
        if self.transformer_layers_per_block not in (1, None) and self.transformer_layers_per_block != (1,) * n:
            raise ConfigError("UNet: transformer_layers_per_block > 1 (SDXL) is unsupported")
        if self.act_fn != "silu":
            raise ConfigError(f"UNet: unsupported act_fn {self.act_fn!r}")
        if self.norm_num_groups < 1:
            raise ConfigError(f"norm_num_groups must be >= 1, got {self.norm_num_groups}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ConfigError(f"UNet: block_out_channels entry {c} not divisible by "
                                  f"norm_num_groups={self.norm_num_groups}")
        known = {"CrossAttnDownBlock2D", "DownBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"}
        for t in self.down_block_types + self.up_block_types:
            if t not in known:
                raise ConfigError(f"UNet: unsupported block type {t!r}")
        heads = self.heads()
        if not all(isinstance(h, int) and not isinstance(h, bool) for h in heads):
            raise ConfigError(f"UNet: attention_head_dim / num_attention_heads must give integers, got {heads}")
        if len(heads) != n:
            raise ConfigError(f"UNet: {len(heads)} attention head counts (attention_head_dim) for {n} blocks "
                              "(block_out_channels)")
        attended = [i for i, t in enumerate(self.down_block_types) if t.startswith("CrossAttn")] + [n - 1]
        attended += [n - 1 - j for j, t in enumerate(self.up_block_types) if t.startswith("CrossAttn")]
        for i in attended:
            if self.block_out_channels[i] % heads[i]:
                raise ConfigError(f"UNet: {self.block_out_channels[i]} channels (block_out_channels) cannot be split "
                                  f"into {heads[i]} attention heads (attention_head_dim)")


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    act_fn: str = "silu"
    sample_size: int = 512
    scaling_factor: float = 0.18215
    down_block_types: tuple = ("DownEncoderBlock2D",) * 4
    up_block_types: tuple = ("UpDecoderBlock2D",) * 4

    @classmethod
    def from_dict(cls, d):
        return _from_dict(cls, d, "VAE")

    def to_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def validate(self):
        if self.norm_num_groups < 1:
            raise ConfigError(f"norm_num_groups must be >= 1, got {self.norm_num_groups}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ConfigError(f"VAE: block_out_channels entry {c} not divisible by "
                                  f"norm_num_groups={self.norm_num_groups}")
        if self.act_fn != "silu":
            raise ConfigError(f"VAE: unsupported act_fn {self.act_fn!r}")
        n = len(self.block_out_channels)
        if (set(self.down_block_types) != {"DownEncoderBlock2D"} or set(self.up_block_types) != {"UpDecoderBlock2D"}
                or len(self.down_block_types) != n or len(self.up_block_types) != n):
            raise ConfigError(f"VAE: down_block_types / up_block_types must be DownEncoderBlock2D / UpDecoderBlock2D, "
                              f"one per block_out_channels entry; got {self.down_block_types} / {self.up_block_types}")


@dataclass(frozen=True)
class TAESDConfig:
    """diffusers' `AutoencoderTiny` config.json values; the defaults are madebyollin/taesd's (SD v1.x
    latents). `latent_magnitude`, `latent_shift` and `shift_factor` are kept for the round trip only:
    StableDiffusionPipeline never uses them, and neither does minriff."""
    in_channels: int = 3
    out_channels: int = 3
    encoder_block_out_channels: tuple = (64, 64, 64, 64)
    decoder_block_out_channels: tuple = (64, 64, 64, 64)
    act_fn: str = "relu"
    upsample_fn: str = "nearest"
    latent_channels: int = 4
    upsampling_scaling_factor: int = 2
    num_encoder_blocks: tuple = (1, 3, 3, 3)
    num_decoder_blocks: tuple = (3, 3, 3, 1)
    latent_magnitude: float = 3.0
    latent_shift: float = 0.5
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    force_upcast: bool = False

    @classmethod
    def from_dict(cls, d):
        return _from_dict(cls, d, "TAESD")

    def to_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.decoder_block_out_channels) - 1)

    def validate(self):
        if self.act_fn != "relu" or self.upsample_fn != "nearest" or self.upsampling_scaling_factor != 2:
            raise ConfigError(f"TAESD: only act_fn 'relu', upsample_fn 'nearest' and upsampling_scaling_factor 2 are "
                              f"supported (every TAESD release), got {self.act_fn!r}, {self.upsample_fn!r}, "
                              f"{self.upsampling_scaling_factor!r}")
        for side in ("encoder", "decoder"):
            channels, blocks = getattr(self, f"{side}_block_out_channels"), getattr(self, f"num_{side}_blocks")
            if not channels or len(channels) != len(blocks):
                raise ConfigError(f"TAESD: {side}_block_out_channels {channels} and num_{side}_blocks {blocks} must "
                                  "be non-empty and of one length")
            if len(set(channels)) != 1 or not isinstance(channels[0], int) or channels[0] < 1:
                # diffusers' stride-2 and upsample convs keep block_out_channels[i] in and out, so
                # only equal entries make a model that runs
                raise ConfigError(f"TAESD: {side}_block_out_channels must be equal positive integers, got {channels}")
            if any(not isinstance(n, int) or n < 0 for n in blocks):
                raise ConfigError(f"TAESD: num_{side}_blocks must be non-negative integers, got {blocks}")
        if len(self.encoder_block_out_channels) != len(self.decoder_block_out_channels):
            raise ConfigError("TAESD: the encoder and decoder must have as many stages (one downscale factor)")
        if not self.scaling_factor > 0:
            raise ConfigError(f"TAESD: scaling_factor must be > 0, got {self.scaling_factor!r}")


@dataclass(frozen=True)
class ControlNetConfig:
    """diffusers' `ControlNetModel` config.json values (defaults: the SD 1.5 ControlNets'). The encoder
    fields mean what they mean in `UNetConfig`; `unet_config()` is that encoder's UNet config (the
    up path mirrored, never built). The hint embedding takes `conditioning_channels` at
    2^(len(conditioning_embedding_out_channels) - 1) times the latent size (8: the image size)."""
    in_channels: int = 4
    conditioning_channels: int = 3
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    only_cross_attention: bool = False
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 768
    transformer_layers_per_block: object = 1
    attention_head_dim: object = 8
    num_attention_heads: object = None
    use_linear_projection: bool = False
    upcast_attention: bool = False
    class_embed_type: object = None
    addition_embed_type: object = None
    num_class_embeds: object = None
    encoder_hid_dim: object = None
    resnet_time_scale_shift: str = "default"
    controlnet_conditioning_channel_order: str = "rgb"
    conditioning_embedding_out_channels: tuple = (16, 32, 96, 256)
    global_pool_conditions: bool = False
    center_input_sample: bool = False  # not a ControlNet field; the shared UNet input code reads it

    @classmethod
    def from_dict(cls, d):
        return _from_dict(cls, {k: v for k, v in d.items() if k != "center_input_sample"}, "ControlNet")

    def to_dict(self):
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        d.pop("center_input_sample")
        return d

    @property
    def hint_downscale(self) -> int:
        return 2 ** (len(self.conditioning_embedding_out_channels) - 1)

    def unet_config(self) -> UNetConfig:
        """The UNet config of the encoder copy (checked like a UNet's)."""
        up = tuple("CrossAttnUpBlock2D" if t == "CrossAttnDownBlock2D" else "UpBlock2D"
                   for t in reversed(self.down_block_types))
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(UNetConfig) if hasattr(self, f.name)}
        return UNetConfig(**dict(kw, up_block_types=up, out_channels=self.in_channels))

    def validate(self):
        for name in ("class_embed_type", "addition_embed_type", "num_class_embeds", "encoder_hid_dim"):
            if getattr(self, name) is not None:
                raise ConfigError(f"ControlNet: {name} (SDXL and other families) is unsupported")
        if self.mid_block_type != "UNetMidBlock2DCrossAttn":
            raise ConfigError(f"ControlNet: unsupported mid_block_type {self.mid_block_type!r}")
        if self.resnet_time_scale_shift != "default":
            raise ConfigError(f"ControlNet: unsupported resnet_time_scale_shift {self.resnet_time_scale_shift!r}")
        if self.controlnet_conditioning_channel_order not in ("rgb", "bgr"):
            raise ConfigError(f"ControlNet: controlnet_conditioning_channel_order must be rgb or bgr, got "
                              f"{self.controlnet_conditioning_channel_order!r}")
        self.unet_config().validate()


@dataclass(frozen=True)
class ModelConfig:
    text_encoder: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)


PROMPT_TOKENS = 77  # the CLIP tokenizer pads every prompt to this many ids


def check_model_config(raw) -> ModelConfig:
    """The component configs of a weights file, {"text_encoder": ..., "unet": ..., "vae": ...}
    (diffusers config.json values): each checked by its `from_dict`, then what the pipeline needs
    of the three together. The one check convert and load both run; raises ConfigError."""
    if not isinstance(raw, dict) or not all(isinstance(raw.get(c), dict) for c in ("text_encoder", "unet", "vae")):
        raise ConfigError("the model config must be an object with text_encoder, unet and vae objects")
    te, unet, vae = (CLIPTextConfig.from_dict(raw["text_encoder"]), UNetConfig.from_dict(raw["unet"]),
                     VAEConfig.from_dict(raw["vae"]))
    if unet.cross_attention_dim != te.hidden_size:
        raise ConfigError(f"UNet cross_attention_dim {unet.cross_attention_dim} differs from the text encoder's "
                          f"hidden_size {te.hidden_size}")
    if not unet.in_channels == unet.out_channels == vae.latent_channels:
        raise ConfigError(f"UNet in/out channels {unet.in_channels}/{unet.out_channels} and VAE latent_channels "
                          f"{vae.latent_channels} must be equal")
    if te.max_position_embeddings < PROMPT_TOKENS:
        raise ConfigError(f"text encoder: max_position_embeddings {te.max_position_embeddings} is below the "
                          f"{PROMPT_TOKENS} tokens of a prompt")
    return ModelConfig(te, unet, vae)


SD15 = ModelConfig()

# Tiny: same structure, a few thousand parameters per model. The VAE keeps 4 blocks (factor 8) so a
# 64×(W/8) latent still decodes to a 512-px-high spectrogram. vocab_size is set from the tiny
# tokenizer vocabulary: len(minriff.models.tokenizer.tiny_vocab()[0]) == 914 (a test checks it).
TINY = ModelConfig(
    text_encoder=CLIPTextConfig(vocab_size=914, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                num_attention_heads=2, projection_dim=16),
    unet=UNetConfig(block_out_channels=(8, 16), layers_per_block=1,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                    attention_head_dim=2, cross_attention_dim=16, norm_num_groups=4, sample_size=8),
    vae=VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64),
)

PRESETS = {"sd15": SD15, "tiny": TINY}

# TAESD for the tiny model above (same stages and block counts as madebyollin/taesd, 8 channels)
TAESD_PRESETS = {"taesd": TAESDConfig(),
                 "tiny": TAESDConfig(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4)}

# Riffusion's / SD v1.5's scheduler/scheduler_config.json (reference/riffusion.md §2.6)
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}

# ControlNets: SD 1.5's (lllyasviel's and every diffusers SD 1.5 ControlNet), and one matching TINY's
# UNet, whose hint embedding also downsizes 8 times (the tiny VAE's factor)
CONTROLNET_PRESETS = {
    "sd15": ControlNetConfig(),
    "tiny": ControlNetConfig(block_out_channels=(8, 16), layers_per_block=1,
                             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), attention_head_dim=2,
                             cross_attention_dim=16, norm_num_groups=4,
                             conditioning_embedding_out_channels=(4, 8, 8, 16)),
}
