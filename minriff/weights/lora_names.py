"""Which layers a LoRA may change, and the names LoRA files give them.

A LoRA targets a Linear or Conv2d layer. minriff's module paths are the diffusers / transformers
names (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`,
`text_model.encoder.layers.3.mlp.fc1`); files also use
- kohya-ss names: `lora_unet_` / `lora_te_` + the path with every "." replaced by "_". That cannot
  be undone by splitting (`to_q`, `time_emb_proj`, `transformer_blocks` contain "_"), so the table
  holds the flattened name of every layer of minriff's own models;
- LDM block names (kohya files made from original checkpoints): `lora_unet_input_blocks_4_1_proj_in`,
  `lora_unet_output_blocks_2_2_conv`, ...: `ldm_unet_path` is the inverse of convert.ldm_unet_key
  (the tests check one against the other on every layer).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from minriff.configs import ModelConfig
from minriff.models.init import build_models
from minriff.models.nn import Conv2d, Linear, Module

COMPONENTS = ("text_encoder", "unet")  # the VAE has no LoRA format
KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
LDM_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
              "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
LDM_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_out": "out.2"}


@dataclass(frozen=True)
class Target:
    """One layer a LoRA can change: component, module path, weight shape (out, in[, kh, kw])."""
    component: str
    module: str
    shape: tuple

    @property
    def kernel(self) -> tuple:
        return tuple(self.shape[2:]) or (1, 1)

    @property
    def label(self) -> str:
        return f"{self.component}.{self.module}"


class Targets:
    """Every Linear and Conv2d of a text encoder and a UNet, by module path and by kohya name."""

    def __init__(self, models: Mapping[str, Module]):
        self.layers: dict[tuple[str, str], Target] = {}
        self.kohya: dict[str, Target] = {}
        self.unet_roots = set()
        for comp in COMPONENTS:
            for path, m in models[comp].named_modules():
                if isinstance(m, (Linear, Conv2d)):
                    t = Target(comp, path, tuple(m.weight.shape))
                    self.layers[comp, path] = t
                    self.kohya[KOHYA_PREFIX[comp] + path.replace(".", "_")] = t
        unet = models["unet"]
        self.unet_roots = {name.split(".")[0] for name, _ in unet.named_children()}
        for (comp, path), t in list(self.layers.items()):
            ldm = ldm_unet_path(path, unet) if comp == "unet" else None
            if ldm is not None:
                self.kohya.setdefault(KOHYA_PREFIX["unet"] + ldm.replace(".", "_"), t)

    @classmethod
    def for_config(cls, config: ModelConfig) -> Targets:
        """From empty models of a config (placeholders, no memory touched)."""
        return cls(build_models(config))

    def find(self, component: str, path: str) -> Target | None:
        """A module path as files write it: transformers 5 drops the text encoder's `text_model.`."""
        t = self.layers.get((component, path))
        if t is None and component == "text_encoder":
            t = self.layers.get((component, "text_model." + path))
        return t


def ldm_unet_path(path: str, unet) -> str | None:
    """diffusers UNet module path -> the original LDM one (`down_blocks.1.resnets.0.conv1` ->
    `input_blocks.4.0.in_layers.2`), or None for layers LDM names differently or not at all."""
    if path in LDM_FIXED:
        return LDM_FIXED[path]
    layers = unet.config.layers_per_block
    per = layers + 1
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", path)
    if m:
        side, b, kind, j, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        index = 1 + b * per + j if side == "down" else b * per + j
        if kind == "resnets":
            layer = LDM_RESNET.get(rest)
            return layer and f"{'input' if side == 'down' else 'output'}_blocks.{index}.0.{layer}"
        if kind == "attentions":
            return f"{'input' if side == 'down' else 'output'}_blocks.{index}.1.{rest}"
        if kind == "downsamplers" and rest == "conv":
            return f"input_blocks.{1 + b * per + layers}.0.op"
        if kind == "upsamplers" and rest == "conv":
            sub = 2 if unet.up_blocks[b].attentions else 1
            return f"output_blocks.{b * per + layers}.{sub}.conv"
        return None
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", path)
    if m:
        if m[1] == "resnets":
            layer = LDM_RESNET.get(m[3])
            return layer and f"middle_block.{2 * int(m[2])}.{layer}"
        return f"middle_block.1.{m[3]}"
    return None
