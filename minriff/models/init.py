"""Models without a file: build empty models from configs, or fill them with random weights."""
from __future__ import annotations

import numpy as np

from minriff.configs import PRESETS, SD15_SCHEDULER, TAESD_PRESETS, ConfigError, ModelConfig, TAESDConfig
from minriff.errors import WeightsError
from minriff.models.clip import CLIPTextModel
from minriff.models.taesd import AutoencoderTiny
from minriff.models.tokenizer import CLIPTokenizer, tiny_vocab
from minriff.models.unet import UNet2DConditionModel
from minriff.models.vae import AutoencoderKL

COMPONENTS = ("text_encoder", "unet", "vae")


def build_models(config: ModelConfig, only: str | None = None) -> dict:
    """Empty (unallocated) models for a config: name -> nn.Module (`only`: just that one)."""
    models = {}
    for name, cls, cfg in (("text_encoder", CLIPTextModel, config.text_encoder),
                           ("unet", UNet2DConditionModel, config.unet), ("vae", AutoencoderKL, config.vae)):
        if only is not None and name != only:
            continue
        try:
            models[name] = cls(cfg)
        except (TypeError, ValueError, OverflowError, MemoryError, ZeroDivisionError, IndexError, KeyError) as e:
            # configs.from_dict checks what minriff runs, not every field's type: a corrupt stored
            # config surfaces here
            raise WeightsError(f"the {name} config cannot build a model ({type(e).__name__}: {e}): {cfg}") from None
    return models



POOL_SIZE = 1 << 24  # normals drawn per init_random call at most (64 MB of float32)


def init_random(module, seed=0, std: float | None = None, pool_size: int = POOL_SIZE, dtype=np.float32):
    """Fill every parameter of `module` (an nn.Module) with random values held as `dtype` (float32, or
    float16: the float32 values rounded, tensor by tensor, never a float32 model) and return it:
    weights (2-D and up) ~ N(0, 1/fan_in) (fan_in = inputs per output: in_features, or
    C_in·kh·kw) so activations stay O(1) through a deep network, or N(0, std²) if `std` is given;
    norm weights 1 + N(0, 0.05²); biases N(0, 0.05²). `seed`: anything np.random.default_rng takes.

    The values come from one pool of min(parameter count, pool_size) standard normals: a model
    that fits gets an independent stretch of it per tensor; a bigger one (SD 1.5's UNet has 860 M
    parameters) gets windows at random offsets, because drawing that many normals would dominate a
    benchmark's run time."""
    rng = np.random.default_rng(seed)
    params = list(module.named_parameters())
    total = sum(int(np.prod(p.shape)) for _, p in params)
    fits = total <= pool_size
    pool = rng.standard_normal(min(total, pool_size), dtype=np.float32)
    offset = 0
    for name, p in params:
        n = int(np.prod(p.shape))
        if fits:
            vals = pool[offset:offset + n]
            offset += n
        elif n <= pool.size:
            start = int(rng.integers(0, pool.size - n + 1))
            vals = pool[start:start + n]
        else:
            vals = np.resize(pool, n)
        vals = vals.reshape(p.shape)
        if p.ndim == 1:
            owner = name.rsplit(".", 2)[-2] if "." in name else ""
            base = 1.0 if "norm" in owner and name.endswith("weight") else 0.0
            value = base + np.float32(0.05) * vals
        else:
            fan_in = max(1, n // max(1, p.shape[0]))
            value = vals * np.float32(std if std is not None else 1.0 / np.sqrt(fan_in))
        module._set(name, np.ascontiguousarray(value, dtype=dtype))
    return module


def random_taesd(config="taesd", seed=0) -> AutoencoderTiny:
    """A randomly initialised TAESD (`init_random`); config: a TAESDConfig or a name of
    configs.TAESD_PRESETS ("taesd": madebyollin/taesd's shapes, "tiny": 8 channels)."""
    if isinstance(config, str):
        if config not in TAESD_PRESETS:
            raise ConfigError(f"unknown TAESD preset {config!r}; choose one of {', '.join(TAESD_PRESETS)}")
        config = TAESD_PRESETS[config]
    if not isinstance(config, TAESDConfig):
        raise ConfigError(f"config must be a TAESDConfig or a preset name, got {type(config).__name__}")
    return init_random(AutoencoderTiny(config), seed=seed)


def random_models(config="tiny", seed=0) -> dict:
    """Randomly initialised models in the shape of `load_models`' result: dict(text_encoder=...,
    unet=..., vae=..., tokenizer=..., scheduler_config=..., config=...), ready for
    `minriff.Riffusion(random_models("tiny"))`. `config`: a ModelConfig or a preset name
    ("tiny", "sd15"). Weights as `init_random` (each component from its own seed stream); the
    tokenizer is the small built-in vocabulary (`tokenizer.tiny_vocab`) and the scheduler config
    Stable Diffusion 1.5's. Nothing is written to disk (`minriff init-random` writes a file).
    The outputs are noise; shapes and code paths are the real ones."""

    if isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"unknown config preset {config!r}; choose one of {', '.join(PRESETS)}")
        config = PRESETS[config]
    if not isinstance(config, ModelConfig):
        raise ConfigError(f"config must be a ModelConfig or a preset name, got {type(config).__name__}")
    vocab, merges = tiny_vocab()
    if config.text_encoder.vocab_size < len(vocab):
        raise ConfigError(f"text_encoder.vocab_size {config.text_encoder.vocab_size} is smaller than the built-in "
                          f"tokenizer's {len(vocab)} tokens")
    models = build_models(config)
    for index, name in enumerate(COMPONENTS):
        init_random(models[name], seed=(seed, index))
    return dict(models, tokenizer=CLIPTokenizer(vocab, merges), scheduler_config=dict(SD15_SCHEDULER), config=config)
