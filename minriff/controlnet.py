"""ControlNet in the sampling loop: diffusers' StableDiffusionControlNet(Img2Img)Pipeline semantics.

`Riffusion.generate_spectrogram / interpolate_styles / riffuse(controls=[(controlnet, image, scale),
...], control_start=0.0, control_end=1.0, guess_mode=False)`:
- controlnet: a `models.controlnet.ControlNetModel` or a converted ControlNet file (loaded here);
  image: the control image, (H, W, 3) uint8 array, PIL image or image file; resized (Lanczos, as
  diffusers' control image processor) to the spectrogram's size unless it already has it, then fed
  as [0, 1] RGB; scale: the conditioning scale (default 1.0).
- Step i of a run of n steps is controlled iff i/n >= control_start and (i+1)/n <= control_end
  (outside the window the ControlNets are not run at all: their residuals would be exact zeros).
- Several ControlNets (MultiControlNet): their residuals are summed, in the order given.
- Classifier-free guidance: the ControlNet sees the doubled batch [uncond, cond] with the same
  image twice; in guess mode only the conditional half, and the unconditional half of the UNet
  gets zero residuals. Guess mode also ramps the down residuals from 0.1x to 1x (`ControlNetModel.scales`).
  A ControlNet with `global_pool_conditions` (the first one, as diffusers) turns guess mode on.
- Works with every scheduler (the loop is scheduler-agnostic) and with img2img; not with DeepCache
  (its cached steps skip the skips the residuals go to): refused.

`ControlledUNet` stands for the UNet in `Riffusion._sample` like deepcache.CachedUNet: call k is
step k of the run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minriff import images, kernels, values
from minriff.errors import InputError, WeightsError
from minriff.models.controlnet import ControlNetModel
from minriff.weights.controlnet import load_controlnet

MAX_SCALE = 100.0
MAX_CONTROL_PX = 8192  # either side of a control image, before it is resized


@dataclass
class Control:
    model: ControlNetModel
    image: np.ndarray  # (H, W, 3) uint8
    scale: float = 1.0


def check_window(start, end) -> tuple[float, float]:
    start = values.number(start, "control start", 0.0, 1.0)
    end = values.number(end, "control end", 0.0, 1.0)
    if start >= end:
        raise InputError(f"control start ({start}) must be below control end ({end})")
    return start, end


def control_image(image, what: str = "control image") -> np.ndarray:
    """A control image (array, PIL image or file path) -> (H, W, 3) uint8."""
    if isinstance(image, (str, os.PathLike)):
        image = images.open_image(image, what, max_width=MAX_CONTROL_PX, max_height=MAX_CONTROL_PX)
    shape = (image.size[1], image.size[0]) if isinstance(image, images.Image.Image) else np.shape(image)
    if len(shape) < 2 or not (1 <= shape[0] <= MAX_CONTROL_PX and 1 <= shape[1] <= MAX_CONTROL_PX):
        raise InputError(f"{what}: must be an image of 1 to {MAX_CONTROL_PX} px a side, got shape {tuple(shape)}")
    return images.rgb8(image, what)


def check_controls(controls, unet_config, vae_downscale: int) -> list[Control]:
    """`controls` as Controls: each (controlnet or file, image[, scale]) checked, files loaded, each
    ControlNet checked to fit this UNet and this VAE's image size."""
    if isinstance(controls, Control) or (isinstance(controls, tuple) and controls
                                         and not isinstance(controls[0], (tuple, list, Control))):
        controls = [controls]  # one (controlnet, image, scale) without the list
    if not isinstance(controls, (list, tuple)) or not controls:
        raise InputError("controls must be a non-empty list of (controlnet, image[, scale]) tuples")
    out = []
    for i, item in enumerate(controls):
        what = f"control {i + 1}"
        if isinstance(item, Control):
            item = (item.model, item.image, item.scale)
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise InputError(f"{what}: expected (controlnet, image[, scale]), got {values.show(item)}")
        model, image, scale = (*item, 1.0) if len(item) == 2 else item
        if isinstance(model, (str, os.PathLike)):
            model = load_controlnet(Path(model))
        if not isinstance(model, ControlNetModel):
            raise InputError(f"{what}: the controlnet must be a ControlNetModel or a ControlNet file, "
                             f"got {type(model).__name__}")
        check_fits(model, unet_config, vae_downscale, what)
        scale = values.number(scale, f"{what} scale", 0.0, MAX_SCALE)
        out.append(Control(model, control_image(image, f"{what} image"), scale))
    return out


def check_fits(model: ControlNetModel, unet_config, vae_downscale: int, what: str) -> None:
    """A WeightsError unless `model`'s residuals fit a UNet of `unet_config` and its control images
    are the size of the images a VAE of `vae_downscale` makes."""
    c, u = model.config, unet_config
    mine = (tuple(c.block_out_channels), c.layers_per_block, c.cross_attention_dim, c.in_channels)
    theirs = (tuple(u.block_out_channels), u.layers_per_block, u.cross_attention_dim, u.in_channels)
    if mine != theirs:
        raise WeightsError(f"{what}: this ControlNet is for a UNet of channels {mine[0]}, {mine[1]} layers per block, "
                           f"cross-attention {mine[2]}; the model's UNet has {theirs[0]}, {theirs[1]}, {theirs[2]} "
                           "(SD 1.5 ControlNets fit SD v1.x / Riffusion)")
    if c.hint_downscale != vae_downscale:
        raise WeightsError(f"{what}: this ControlNet takes control images at {c.hint_downscale}x the latent size, the "
                           f"model's VAE makes images at {vae_downscale}x")


@dataclass
class ControlRun:
    """The checked ControlNet options of one call."""

    controls: list
    start: float = 0.0
    end: float = 1.0
    guess_mode: bool = False

    def bind(self, unet, steps: int, guidance: bool) -> ControlledUNet:
        """The UNet (or what stands for it) of one run of `steps` steps; `guidance`: the batch is
        [uncond, cond]."""
        return ControlledUNet(unet, self, steps, guidance)


def options(riff, controls, start=0.0, end=1.0, guess_mode=False, cache=None) -> ControlRun | None:
    """The pipeline's keyword arguments, checked: a ControlRun, or None when `controls` is None."""
    if controls is None:
        return None
    start, end = check_window(start, end)
    if not isinstance(guess_mode, bool):
        raise InputError(f"guess_mode must be true or false, got {values.show(guess_mode)}")
    if cache is not None:
        raise InputError("ControlNet and DeepCache cannot be combined (DeepCache's cached steps skip the UNet layers "
                         "the ControlNet's residuals go to): drop cache_interval or controls")
    checked = check_controls(controls, riff.config.unet, riff.latent_downscale)  # (low_memory: no UNet loaded)
    if riff.backend == "cuda":  # the cuda kernels take float32 weights on the device
        F = kernels.ops("cuda")
        for c in checked:
            c.model.apply_to_parameters(lambda a: F.asarray(a, dtype=np.float32))
    guess_mode = guess_mode or checked[0].model.config.global_pool_conditions
    return ControlRun(checked, start, end, guess_mode)


class ControlledUNet:
    """`(x, t, context) -> eps`: the ControlNets' residuals summed and added to the UNet's skips."""

    def __init__(self, unet, run: ControlRun, steps: int, guidance: bool):
        self.unet, self.run, self.steps, self.guidance = unet, run, steps, guidance
        self.calls = 0
        self._hints = None  # per control: (hint (1, 3, H, W), its embedding (1, C0, h, w))

    def active(self, i: int) -> bool:
        n = self.steps
        return i / n >= self.run.start and (i + 1) / n <= self.run.end

    def __call__(self, x, t, context):
        i = self.calls
        self.calls += 1
        live = [(k, c) for k, c in enumerate(self.run.controls) if c.scale != 0.0] if self.active(i) else []
        if not live:
            return self.unet(x, t, context)
        F = kernels.ops()
        halve = self.run.guess_mode and self.guidance
        x_c, ctx_c = (x[1:], context[1:]) if halve else (x, context)
        down = mid = None
        for k, c in live:
            emb = self._embedding(F, k, x.shape[2:], x_c.shape[0])
            d, m = c.model(x_c, t, ctx_c, None, c.scale, self.run.guess_mode, hint_embedding=emb)
            if down is None:
                down, mid = d, m
            else:
                down, mid = [a + b for a, b in zip(down, d)], mid + m
        if halve:
            xp = F.xp
            down = [xp.concatenate([xp.zeros_like(r), r]) for r in down]
            mid = xp.concatenate([xp.zeros_like(mid), mid])
        return self.unet(x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    def _embedding(self, F, k: int, latent_hw, batch: int):
        """Control k's hint embedding for latents of `latent_hw` at `batch`: the image resized to
        the hint size once per run, embedded once (it depends on nothing else)."""
        if self._hints is None:
            self._hints = {}
        if k not in self._hints:
            c = self.run.controls[k]
            H, W = c.model.hint_size(*latent_hw)
            hint = F.asarray(resized(c.image, W, H).astype(np.float32)[None].transpose(0, 3, 1, 2) / np.float32(255))
            self._hints[k] = c.model.embed_hint(F.xp.ascontiguousarray(hint))
        emb = self._hints[k]
        return emb if batch == 1 else F.xp.concatenate([emb] * batch)


def resized(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 at (height, width): unchanged when it has that size, else Lanczos (PIL), as
    diffusers' VaeImageProcessor resizes control images."""
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(images.Image.fromarray(rgb).resize((width, height), resample=images.Image.LANCZOS))
