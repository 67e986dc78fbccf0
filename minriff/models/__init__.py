"""The networks, as trees of small classes whose attribute paths are the diffusers state-dict keys.

    nn.py         Module, the layers that call kernels (Linear, Conv2d, GroupNorm, ...), `load`
    blocks.py     ResNet block, attention, down/upsampling (shared by UNet and VAE)
    clip.py       CLIP text encoder;  unet.py  the denoiser;  vae.py  AutoencoderKL
    taesd.py      AutoencoderTiny (TAESD): the tiny, fast stand-in for the VAE
    controlnet.py ControlNetModel: the UNet encoder's copy that turns a control image into UNet residuals
    tokenizer.py  CLIP BPE tokenizer (from vocab + merges already in memory)
    init.py       random initialisation (`init_random`, `random_models`, `random_taesd`, `random_controlnet`)

Rules: models import kernels, configs and errors only; no file I/O here (weights/ reads files and
fills these models through `nn.load`).
"""
from minriff.models.init import (  # noqa: F401
    build_models,
    init_random,
    random_controlnet,
    random_models,
    random_taesd,
)
